//! One step shared by every way in: apply a layer of assignments (a file and its overrides, or
//! overrides alone) to a config, then resolve the shape as nanoGPT does and validate. The config
//! is only changed when the whole layer is valid.

use super::registry::{self, Effect, Ty};
use super::value::{Assignment, Origin, Rhs, Value};
use super::{presets, validate, TrainConfig};
use crate::error::{Error, Result};
use std::collections::HashMap;

pub(crate) fn apply(cfg: &mut TrainConfig, assignments: &[Assignment]) -> Result<Vec<String>> {
    let mut work = cfg.clone();
    let mut origins: HashMap<&'static str, Origin> = HashMap::new();
    // Memory keys whose last assignment we could not evaluate: an error unless set again later.
    let mut pending: Vec<(&'static str, &Assignment)> = Vec::new();
    let mut warnings = Vec::new();
    for a in assignments {
        let Some(spec) = registry::spec(&a.key) else {
            return Err(registry::unknown_key(&a.origin, &a.key));
        };
        pending.retain(|(k, _)| *k != spec.name);
        let v = match &a.rhs {
            Rhs::Known(v) => v,
            Rhs::Unknown { text, why } => {
                if spec.effect == Effect::Field {
                    pending.push((spec.name, a));
                } else {
                    warnings.push(format!(
                        "{}: `{text}` {why}; ignored ({} does not change memory)",
                        a.origin, spec.name
                    ));
                }
                continue;
            }
        };
        match spec.effect {
            Effect::Field => {
                registry::set(&mut work, spec, v).map_err(|e| {
                    Error::bad_value(
                        spec.name,
                        format!(
                            "{}: {} = {}: {e}{}",
                            a.origin,
                            spec.name,
                            v.brief(),
                            hint(spec.ty, v, &a.origin)
                        ),
                    )
                })?;
                origins.insert(spec.name, a.origin.clone());
            }
            Effect::Ignored(_) => ignored_key(spec, v, a, &mut warnings)?,
        }
    }
    if let Some(&(key, a)) = pending.first() {
        return Err(unevaluated(key, a));
    }
    presets::resolve(&mut work, &mut origins, &mut warnings);
    validate::validate(&work, &origins)?;
    *cfg = work;
    Ok(warnings)
}

/// A key with no memory effect: a value of the wrong type is an error in an override (nanoGPT's
/// configurator asserts the type) and a warning in a file; a non-CUDA `device` is a warning.
fn ignored_key(
    spec: &registry::KeySpec,
    v: &Value,
    a: &Assignment,
    warnings: &mut Vec<String>,
) -> Result<()> {
    if !spec.ty.accepts(v) {
        let msg = format!(
            "{}: {} = {}: expected {}, got a {}",
            a.origin,
            spec.name,
            v.brief(),
            spec.ty.expected(),
            v.type_name()
        );
        // nanoGPT's configurator asserts the type of an override; a file it just execs.
        if matches!(a.origin, Origin::Override(_)) {
            let msg = format!("{msg}{}", hint(spec.ty, v, &a.origin));
            return Err(Error::bad_value(spec.name, msg));
        }
        warnings.push(format!(
            "{msg}; ignored ({} does not change memory)",
            spec.name
        ));
        return Ok(());
    }
    if spec.name == "device" {
        if let Value::Str(d) = v {
            if !d.starts_with("cuda") {
                warnings.push(format!("{}: device = {}: nanoGPT would not use a CUDA GPU; vramplan predicts the run on a CUDA GPU", a.origin, v.brief()));
            }
        }
    }
    Ok(())
}

/// A memory key whose last assignment could not be evaluated (not a literal).
fn unevaluated(key: &str, a: &Assignment) -> Error {
    let (text, why) = match &a.rhs {
        Rhs::Unknown { text, why } => (text.as_str(), why.as_str()),
        Rhs::Known(_) => ("", ""),
    };
    let example = registry::spec(key)
        .map(|s| registry::get(&TrainConfig::default(), s))
        .unwrap_or(Value::None);
    Error::bad_value(
        key,
        format!(
            "{}: `{text}` {why}, and {key} changes memory: expected a literal (e.g. `{key} = {example}`) or an override --{key}=...",
            a.origin
        ),
    )
}

/// nanoGPT reads `--key=value` with `ast.literal_eval`, and a value that is not a literal
/// arrives as a string: say so when that is why the type is wrong.
fn hint(ty: Ty, v: &Value, origin: &Origin) -> &'static str {
    match (origin, v, ty) {
        (Origin::Override(_), Value::Str(_), Ty::Int | Ty::Float | Ty::OptInt | Ty::OptFloat) => {
            " (an override is read as a Python literal, as nanoGPT's configurator does: no arithmetic or names)"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(line: usize) -> Origin {
        Origin::File {
            path: "c.py".into(),
            line,
        }
    }

    fn known(key: &str, v: Value, line: usize) -> Assignment {
        Assignment {
            key: key.into(),
            rhs: Rhs::Known(v),
            origin: file(line),
        }
    }

    fn unknown(key: &str, line: usize) -> Assignment {
        Assignment {
            key: key.into(),
            rhs: Rhs::Unknown {
                text: format!("{key} = f()"),
                why: "calls a function".into(),
            },
            origin: file(line),
        }
    }

    #[test]
    fn unevaluated_memory_key_is_an_error_unless_set_later() {
        let mut cfg = TrainConfig::default();
        let e = apply(&mut cfg, &[unknown("batch_size", 3)]).unwrap_err();
        assert!(
            e.message().starts_with(
                "c.py:3: `batch_size = f()` calls a function, and batch_size changes memory"
            ),
            "{e}"
        );
        assert_eq!(cfg, TrainConfig::default());
        let w = apply(
            &mut cfg,
            &[
                unknown("batch_size", 3),
                known("batch_size", Value::Int(8), 4),
            ],
        )
        .unwrap();
        assert!(w.is_empty());
        assert_eq!(cfg.batch_size, 8);
    }

    #[test]
    fn unevaluated_ignored_key_is_a_warning() {
        let mut cfg = TrainConfig::default();
        let w = apply(&mut cfg, &[unknown("wandb_run_name", 7)]).unwrap();
        assert_eq!(w.len(), 1);
        assert!(w[0].starts_with("c.py:7: `wandb_run_name = f()`"), "{w:?}");
    }

    #[test]
    fn wrong_type_names_the_line() {
        let mut cfg = TrainConfig::default();
        let e = apply(&mut cfg, &[known("batch_size", Value::Float(12.0), 5)]).unwrap_err();
        assert_eq!(
            e.message(),
            "c.py:5: batch_size = 12.0: expected an int, got a float"
        );
        let e = apply(&mut cfg, &[known("dtype", Value::Str("bf16".into()), 2)]).unwrap_err();
        assert!(
            e.message().starts_with(
                "c.py:2: dtype = 'bf16': expected one of 'float32', 'bfloat16', 'float16'"
            ),
            "{e}"
        );
    }
}
