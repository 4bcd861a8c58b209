//! nanoGPT's python config files (`config/train_gpt2.py`): nanoGPT `exec`s them into train.py's
//! globals; vramplan reads the same assignments without running anything. Imports are skipped;
//! a value we cannot evaluate becomes `Rhs::Unknown`, which the apply step turns into a warning
//! (the key does not change memory) or an error naming the line (it does, and nothing later
//! sets it).

use super::pyexpr::{eval, tokenize, Env, Line, Tok};
use super::registry::{self, Effect, KEYS};
use super::value::{Assignment, Origin, Rhs};
use super::TrainConfig;
use crate::error::{Error, Result};

/// Keywords that open an indented block.
const BLOCK_KEYWORDS: &[&str] = &[
    "if", "elif", "else", "for", "while", "def", "class", "with", "try", "except", "finally",
    "async", "match", "case",
];
/// Simple statements with no effect on train.py's globals that we can see.
const SKIPPED_KEYWORDS: &[&str] = &[
    "pass", "del", "assert", "global", "nonlocal", "raise", "return", "print", "break", "continue",
];
const AUG_OPS: &[&str] = &["+=", "-=", "*=", "/=", "//=", "%=", "**="];

/// The assignments of a nanoGPT config file, in order, and warnings for what was skipped.
pub(crate) fn parse(src: &str, path: &str) -> Result<(Vec<Assignment>, Vec<String>)> {
    let lines = tokenize(src).map_err(|(line, what)| {
        Error::file(path, format!("{path}:{line}: not valid Python: {what}"))
    })?;
    let defaults = TrainConfig::default();
    let mut env: Env = KEYS
        .iter()
        .map(|k| (k.name.to_string(), Some(registry::get(&defaults, k))))
        .collect();
    let (mut out, mut warnings) = (Vec::new(), Vec::new());
    // The innermost open block: (keyword, indent of its header).
    let mut block: Option<(String, usize)> = None;
    for l in &lines {
        let at = Origin::File {
            path: path.to_string(),
            line: l.line,
        };
        if let Some((_, header_indent)) = &block {
            if l.indent <= *header_indent {
                block = None;
            }
        }
        if l.indent > 0 && block.is_none() {
            return Err(Error::new(format!(
                "{at}: unexpected indent (not valid Python)"
            )));
        }
        for stmt in l
            .toks
            .split(|t| *t == Tok::Op(";"))
            .filter(|s| !s.is_empty())
        {
            let keyword = match stmt.first() {
                Some(Tok::Name(n)) => n.as_str(),
                _ => "",
            };
            if BLOCK_KEYWORDS.contains(&keyword) && top_level_colon(stmt).is_some() {
                if block.is_none() {
                    block = Some((keyword.to_string(), l.indent));
                    if !matches!(keyword, "def" | "class") {
                        warnings.push(format!("{at}: `{}` skipped: vramplan does not run Python, only top-level `key = value` lines are read", l.text));
                    }
                }
                // A one-line body (`if x: batch_size = 8`) is inside the block too.
                let body_start = top_level_colon(stmt).map_or(stmt.len(), |c| c + 1);
                if body_start < stmt.len() {
                    let inner = block.clone().unwrap_or_default();
                    in_block(&stmt[body_start..], &inner.0, l, &at, &mut env, &mut out);
                }
                continue;
            }
            if let Some((kw, _)) = &block {
                let kw = kw.clone();
                in_block(stmt, &kw, l, &at, &mut env, &mut out);
                continue;
            }
            top_level(stmt, l, &at, &mut env, &mut out, &mut warnings)?;
        }
    }
    Ok((out, warnings))
}

fn top_level(
    stmt: &[Tok],
    l: &Line,
    at: &Origin,
    env: &mut Env,
    out: &mut Vec<Assignment>,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let keyword = match stmt.first() {
        Some(Tok::Name(n)) => n.as_str(),
        _ => "",
    };
    if keyword == "import" || keyword == "from" {
        return Ok(());
    }
    if SKIPPED_KEYWORDS.contains(&keyword) {
        warnings.push(format!(
            "{at}: `{}` skipped: vramplan does not run Python",
            l.text
        ));
        return Ok(());
    }
    // `key += 1` and friends: evaluate as `key = key + (1)`.
    if let (Some(Tok::Name(name)), Some(Tok::Op(op))) = (stmt.first(), stmt.get(1)) {
        if AUG_OPS.contains(op) {
            let mut toks = vec![Tok::Name(name.clone()), Tok::Op(strip_eq(op)), Tok::Op("(")];
            toks.extend_from_slice(&stmt[2..]);
            toks.push(Tok::Op(")"));
            assign(std::slice::from_ref(name), &toks, l, at, env, out)?;
            return Ok(());
        }
    }
    let eqs: Vec<usize> = top_level_positions(stmt, "=");
    let Some(&last_eq) = eqs.last() else {
        if stmt.iter().all(|t| matches!(t, Tok::Str(_))) {
            return Ok(()); // a docstring
        }
        if is_call(stmt) {
            warnings.push(format!(
                "{at}: `{}` skipped: vramplan does not run Python",
                l.text
            ));
            return Ok(());
        }
        if let [Tok::Name(_), Tok::Op(":"), ..] = stmt {
            return Ok(()); // a bare annotation, `x: int`
        }
        return Err(Error::new(format!(
            "{at}: cannot read `{}`: expected `key = value` (a nanoGPT config assignment)",
            l.text
        )));
    };
    let mut names = Vec::new();
    let mut start = 0;
    for &eq in &eqs {
        match &stmt[start..eq] {
            [Tok::Name(n)] | [Tok::Name(n), Tok::Op(":"), ..] => names.push(n.clone()),
            target => {
                // `a, b = 1, 2`, `x.y = 1`, `d['k'] = 1`: not a plain global we can follow.
                let memory = target.iter().any(|t| matches!(t, Tok::Name(n) if registry::spec(n).is_some_and(|s| s.effect == Effect::Field)));
                if memory {
                    return Err(Error::new(format!(
                        "{at}: cannot read `{}`: assign one key per line, e.g. `batch_size = 8`",
                        l.text
                    )));
                }
                warnings.push(format!(
                    "{at}: `{}` skipped: only `key = value` assignments are read",
                    l.text
                ));
                return Ok(());
            }
        }
        start = eq + 1;
    }
    assign(&names, &stmt[last_eq + 1..], l, at, env, out)
}

/// Record `names... = rhs`. Unknown keys are an error here, where the line is known.
fn assign(
    names: &[String],
    rhs: &[Tok],
    l: &Line,
    at: &Origin,
    env: &mut Env,
    out: &mut Vec<Assignment>,
) -> Result<()> {
    for n in names {
        if registry::spec(n).is_none() {
            return Err(registry::unknown_key(at, n));
        }
    }
    let rhs = match eval(rhs, env, false) {
        Ok(v) => Rhs::Known(v),
        Err(why) => Rhs::Unknown {
            text: l.text.clone(),
            why,
        },
    };
    for n in names {
        env.insert(
            n.clone(),
            if let Rhs::Known(v) = &rhs {
                Some(v.clone())
            } else {
                None
            },
        );
        out.push(Assignment {
            key: n.clone(),
            rhs: rhs.clone(),
            origin: at.clone(),
        });
    }
    Ok(())
}

/// A statement inside an `if`/`for`/... block: we cannot know whether it runs. Assignments to
/// config keys become Unknown (an error only if the key changes memory and nothing later sets
/// it); other names are the block's own variables. Function bodies assign locals: skipped.
fn in_block(
    stmt: &[Tok],
    keyword: &str,
    l: &Line,
    at: &Origin,
    env: &mut Env,
    out: &mut Vec<Assignment>,
) {
    if matches!(keyword, "def" | "class") {
        return;
    }
    let eqs = top_level_positions(stmt, "=");
    let end = eqs.last().copied().or_else(|| {
        stmt.iter()
            .position(|t| matches!(t, Tok::Op(o) if AUG_OPS.contains(o)))
    });
    let Some(end) = end else { return };
    for t in &stmt[..end] {
        if let Tok::Name(n) = t {
            if registry::spec(n).is_some() {
                env.insert(n.clone(), None);
                let why = format!(
                    "is assigned inside an `{keyword}` block, which vramplan cannot evaluate"
                );
                let rhs = Rhs::Unknown {
                    text: l.text.clone(),
                    why,
                };
                out.push(Assignment {
                    key: n.clone(),
                    rhs,
                    origin: at.clone(),
                });
            }
        }
    }
}

fn strip_eq(op: &str) -> &'static str {
    match op {
        "+=" => "+",
        "-=" => "-",
        "*=" => "*",
        "/=" => "/",
        "//=" => "//",
        "%=" => "%",
        _ => "**",
    }
}

/// Positions of `op` outside brackets.
fn top_level_positions(stmt: &[Tok], op: &str) -> Vec<usize> {
    let mut depth = 0usize;
    let mut found = Vec::new();
    for (i, t) in stmt.iter().enumerate() {
        match t {
            Tok::Op("(" | "[" | "{") => depth += 1,
            Tok::Op(")" | "]" | "}") => depth = depth.saturating_sub(1),
            Tok::Op(o) if *o == op && depth == 0 => found.push(i),
            _ => {}
        }
    }
    found
}

fn top_level_colon(stmt: &[Tok]) -> Option<usize> {
    top_level_positions(stmt, ":").first().copied()
}

/// `print(...)`, `torch.manual_seed(0)`: a dotted name called.
fn is_call(stmt: &[Tok]) -> bool {
    let mut i = 0;
    while let (Some(Tok::Name(_)), Some(Tok::Op("."))) = (stmt.get(i), stmt.get(i + 1)) {
        i += 2;
    }
    matches!(
        (stmt.get(i), stmt.get(i + 1), stmt.last()),
        (Some(Tok::Name(_)), Some(Tok::Op("(")), Some(Tok::Op(")")))
    )
}

#[cfg(test)]
mod tests {
    use super::super::value::Value;
    use super::*;

    fn known(a: &Assignment) -> Option<&Value> {
        match &a.rhs {
            Rhs::Known(v) => Some(v),
            Rhs::Unknown { .. } => None,
        }
    }

    #[test]
    fn reads_assignments_and_skips_imports() {
        let src = "import time\nfrom os import path\n# c\n\nbatch_size = 12 # micro\ngradient_accumulation_steps = 5 * 8\nwandb_run_name = 'ft-' + str(time.time())\nlr_decay_iters = max_iters\nmax_iters += 10; eval_iters = 2\n";
        let (a, w) = parse(src, "c.py").unwrap();
        let kv: Vec<(&str, Option<&Value>)> =
            a.iter().map(|a| (a.key.as_str(), known(a))).collect();
        assert_eq!(kv[0], ("batch_size", Some(&Value::Int(12))));
        assert_eq!(
            kv[1],
            ("gradient_accumulation_steps", Some(&Value::Int(40)))
        );
        assert_eq!(kv[2], ("wandb_run_name", None));
        assert_eq!(kv[3], ("lr_decay_iters", Some(&Value::Int(600000))));
        assert_eq!(kv[4], ("max_iters", Some(&Value::Int(600010))));
        assert_eq!(kv[5], ("eval_iters", Some(&Value::Int(2))));
        assert_eq!(
            a[5].origin,
            Origin::File {
                path: "c.py".into(),
                line: 9
            }
        );
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn blocks_make_their_keys_unknown() {
        let src = "if big:\n    batch_size = 8\n    tmp = 1\nelse: n_layer = 2\nbias = True\ndef f():\n    dropout = 0.5\n";
        let (a, w) = parse(src, "c.py").unwrap();
        let keys: Vec<&str> = a.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, ["batch_size", "n_layer", "bias"]);
        assert!(known(&a[0]).is_none() && known(&a[1]).is_none());
        assert_eq!(known(&a[2]), Some(&Value::Bool(true)));
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn unknown_key_names_line_and_closest() {
        let e = parse("\nbatchsize = 8\n", "x.py").unwrap_err();
        assert!(
            e.message().contains("x.py:2:") && e.message().contains("'batch_size'"),
            "{e}"
        );
    }

    #[test]
    fn garbage_is_an_error_with_line() {
        let e = parse("batch_size 12\n", "x.py").unwrap_err();
        assert!(e.message().starts_with("x.py:1:"), "{e}");
        let e = parse("x = 'abc\n", "x.py").unwrap_err();
        assert!(e.message().starts_with("x.py:1: not valid Python"), "{e}");
    }
}
