//! `--key=value` overrides with nanoGPT's configurator semantics (configurator.py): the value is
//! read with `ast.literal_eval`, and if that fails it is taken as a string; the key must exist
//! and the type must match the default's (we also allow an int for a float key). And the way
//! back: the overrides that turn one config into another, for `suggest` to print.

use super::apply::apply;
use super::pyexpr::{eval, tokenize, Env};
use super::registry::{self, Effect, KEYS};
use super::value::{str_repr, Assignment, Origin, Rhs, Value};
use super::TrainConfig;
use crate::error::{Error, Result};

/// Parse one `--key=value` (the leading `--` may be omitted).
pub(crate) fn parse_override(arg: &str) -> Result<Assignment> {
    let origin = Origin::Override(arg.chars().take(120).collect());
    let body = arg.strip_prefix("--").unwrap_or(arg);
    let Some((key, raw)) = body.split_once('=') else {
        return Err(Error::new(format!(
            "{origin}: expected --key=value, e.g. --batch_size=8"
        )));
    };
    if registry::spec(key).is_none() {
        return Err(registry::unknown_key(origin, key));
    }
    let value = if TEXT_KEYS.contains(&key) && raw != "None" {
        match literal_or_string(raw) {
            Value::Str(s) => Value::Str(s),
            _ => Value::Str(raw.to_string()),
        }
    } else {
        literal_or_string(raw)
    };
    Ok(Assignment {
        key: key.to_string(),
        rhs: Rhs::Known(value),
        origin,
    })
}

/// vramplan's keys whose value is text even where it reads as a number: a release number
/// (`--transformers_version=4.40` is 4.40, not the float 4.4).
const TEXT_KEYS: &[&str] = &["transformers_version"];

/// `ast.literal_eval(val)`, falling back to the raw string as nanoGPT does.
pub(crate) fn literal_or_string(raw: &str) -> Value {
    match tokenize(raw) {
        Ok(lines) if lines.len() == 1 => {
            eval(&lines[0].toks, &Env::new(), true).unwrap_or_else(|_| Value::Str(raw.to_string()))
        }
        _ => Value::Str(raw.to_string()),
    }
}

/// Apply `--key=value` overrides to a resolved config (shape re-derived where an override
/// touches it, e.g. `--init_from=gpt2-xl`), then validate. On error `config` is unchanged.
/// Returns warnings.
pub fn apply_overrides(config: &mut TrainConfig, overrides: &[String]) -> Result<Vec<String>> {
    let assignments = overrides
        .iter()
        .map(|o| parse_override(o))
        .collect::<Result<Vec<_>>>()?;
    apply(config, &assignments)
}

/// The `--key=value` list that turns `base` into `config`, in registry order (nanoGPT's key
/// order), values spelled as nanoGPT reads them: `True`, `0.1`, bare simple words (`gpt2-xl`),
/// quoted strings otherwise. `apply_overrides(base, to_overrides(config, base))` gives `config`
/// for every config that loading can produce. Keys that shape resolution derives (n_layer under
/// `init_from='gpt2*'`, vocab_size from a dataset) are left out when they follow anyway, so
/// the line stays one nanoGPT accepts; see `registry::is_nanogpt_key` for vramplan-only keys.
pub fn to_overrides(config: &TrainConfig, base: &TrainConfig) -> Vec<String> {
    let field_keys = || KEYS.iter().filter(|k| k.effect == Effect::Field);
    let arg = |name: &str| {
        registry::spec(name).map(|s| format!("--{name}={}", spell(&registry::get(config, s))))
    };
    let mut keys: Vec<&str> = field_keys()
        .filter(|k| registry::get(config, k) != registry::get(base, k))
        .map(|k| k.name)
        .collect();
    let reaches = |keys: &[&str]| {
        let mut c = base.clone();
        let args: Vec<String> = keys.iter().filter_map(|k| arg(k)).collect();
        apply_overrides(&mut c, &args).is_ok_and(|_| c == *config)
    };
    const DERIVED: &[&str] = &[
        "n_layer",
        "n_head",
        "n_embd",
        "bias",
        "block_size",
        "vocab_size",
    ];
    if !reaches(&keys) {
        // Resolution re-derived something the config keeps as it is (a vocab_size the file chose
        // for its dataset): pin the derivable keys, then drop the ones that follow by themselves.
        for k in DERIVED {
            if !keys.contains(k) {
                keys.push(k);
            }
        }
        keys.sort_by_key(|k| KEYS.iter().position(|s| s.name == *k));
    }
    if reaches(&keys) {
        for k in DERIVED.iter().rev() {
            if let Some(i) = keys.iter().position(|x| x == k) {
                let mut fewer = keys.clone();
                fewer.remove(i);
                if reaches(&fewer) {
                    keys = fewer;
                }
            }
        }
    }
    keys.iter().filter_map(|k| arg(k)).collect()
}

/// A value as an override: strings bare when nanoGPT (and we) would read them back as that
/// same string and a shell leaves them alone, else as a Python literal.
fn spell(v: &Value) -> String {
    match v {
        Value::Str(s) => {
            let simple = !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.:,/+".contains(c));
            if simple && literal_or_string(s) == *v {
                s.clone()
            } else {
                str_repr(s)
            }
        }
        v => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply_args(args: &[&str]) -> Result<TrainConfig> {
        let mut c = TrainConfig::default();
        apply_overrides(
            &mut c,
            &args.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )?;
        Ok(c)
    }

    #[test]
    fn literal_eval_semantics() {
        assert_eq!(literal_or_string("8"), Value::Int(8));
        assert_eq!(literal_or_string("False"), Value::Bool(false));
        assert_eq!(literal_or_string("'float16'"), Value::Str("float16".into()));
        assert_eq!(literal_or_string("float16"), Value::Str("float16".into()));
        assert_eq!(literal_or_string("gpt2-xl"), Value::Str("gpt2-xl".into()));
        assert_eq!(literal_or_string("5*8"), Value::Str("5*8".into()));
        assert_eq!(literal_or_string("1e-4"), Value::Float(1e-4));
        assert_eq!(literal_or_string("None"), Value::None);
    }

    #[test]
    fn overrides_follow_the_configurator() {
        let c = apply_args(&[
            "--batch_size=8",
            "--compile=False",
            "--dtype=float16",
            "--dropout=0",
            "--init_from=gpt2-medium",
        ])
        .unwrap();
        assert_eq!(
            (c.batch_size, c.compile, c.dtype.as_str(), c.dropout),
            (8, false, "float16", 0.0)
        );
        assert_eq!(
            (c.n_layer, c.n_head, c.n_embd, c.vocab_size),
            (24, 16, 1024, 50257)
        );
        let e = apply_args(&["--batch_size=5*8"]).unwrap_err();
        assert!(
            e.message().starts_with(
                "override --batch_size=5*8: batch_size = '5*8': expected an int, got a str"
            ),
            "{e}"
        );
        let e = apply_args(&["--learning_rate=fast"]).unwrap_err();
        assert!(
            e.message()
                .contains("learning_rate = 'fast': expected a float"),
            "{e}"
        );
        let e = apply_args(&["--batchsize=8"]).unwrap_err();
        assert!(
            e.message()
                .contains("unknown key 'batchsize' (did you mean 'batch_size'?)"),
            "{e}"
        );
        let e = apply_args(&["--batch_size"]).unwrap_err();
        assert!(e.message().contains("expected --key=value"), "{e}");
        assert!(
            apply_args(&["--compile=1"]).is_err(),
            "nanoGPT asserts type(1) == type(True)"
        );
    }

    #[test]
    fn to_overrides_spells_like_nanogpt() {
        let base = TrainConfig::default();
        let c = TrainConfig {
            batch_size: 8,
            gradient_accumulation_steps: 60,
            compile: false,
            dropout: 0.1,
            ..base.clone()
        };
        assert_eq!(
            to_overrides(&c, &base),
            [
                "--gradient_accumulation_steps=60",
                "--batch_size=8",
                "--dropout=0.1",
                "--compile=False"
            ]
        );
        let mut xl = base.clone();
        apply_overrides(&mut xl, &["--init_from=gpt2-xl".to_string()]).unwrap();
        assert_eq!(to_overrides(&xl, &base), ["--init_from=gpt2-xl"]);
        let c = TrainConfig {
            dataset: "12".into(),
            alloc_conf: Some("expandable_segments:True".into()),
            ..base.clone()
        };
        assert_eq!(
            to_overrides(&c, &base),
            ["--dataset='12'", "--alloc_conf=expandable_segments:True"]
        );
    }
}
