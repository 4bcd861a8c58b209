//! Flat TOML configs: one `key = value` per nanoGPT key, e.g. `dtype = "bfloat16"`. TOML has no
//! None: leave an optional key out to keep its default. Keys keep their spans so that errors
//! name the line.

use super::registry::{self, Effect, KEYS};
use super::value::{Assignment, Origin, Rhs, Value};
use super::TrainConfig;
use crate::error::{Error, Result};
use crate::plain;
use std::collections::BTreeMap;
use toml::Spanned;

/// The assignments of a flat TOML file, in file order.
pub(crate) fn parse(src: &str, path: &str) -> Result<Vec<Assignment>> {
    let line_of = |offset: usize| src.get(..offset).map_or(1, |s| s.matches('\n').count() + 1);
    let table: BTreeMap<Spanned<String>, Spanned<toml::Value>> = match toml::from_str(src) {
        Ok(table) => table,
        Err(e) => {
            return Err(not_flat(src, path).unwrap_or_else(|| plain::toml_error(&e, src, path)))
        }
    };
    let mut entries: Vec<_> = table.into_iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    let mut out = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        let origin = Origin::File {
            path: path.to_string(),
            line: line_of(key.span().start),
        };
        let key = key.into_inner();
        let shown: String = key.chars().take(80).collect();
        let v = match value.into_inner() {
            toml::Value::Integer(i) => Value::Int(i.into()),
            toml::Value::Float(x) => Value::Float(x),
            toml::Value::Boolean(b) => Value::Bool(b),
            toml::Value::String(s) => Value::Str(s),
            toml::Value::Table(_) => {
                return Err(Error::new(format!(
                    "{origin}: [{shown}] is a table: expected a flat file of `key = value` lines with nanoGPT's key names"
                )))
            }
            other => {
                return Err(Error::new(format!("{origin}: {shown}: expected an integer, float, boolean or string, got a {}", other.type_str())));
            }
        };
        out.push(Assignment {
            key,
            rhs: Rhs::Known(v),
            origin,
        });
    }
    Ok(out)
}

/// Valid TOML that is not flat (a `[section]` or a dotted key `a.b = 1`): the error naming the
/// first table's key and line; None when the text is not valid TOML at all.
fn not_flat(src: &str, path: &str) -> Option<Error> {
    let table: toml::Table = toml::from_str(src).ok()?;
    let (key, _) = table.iter().find(|(_, v)| v.is_table())?;
    let line = src
        .lines()
        .position(|l| {
            let l = l.trim_start().trim_start_matches('[').trim_start();
            l.starts_with(key.as_str())
                || l.trim_start_matches(['"', '\'']).starts_with(key.as_str())
        })
        .map_or(String::new(), |i| format!(":{}", i + 1));
    let shown: String = key.chars().take(80).collect();
    Some(Error::new(format!(
        "{path}{line}: [{shown}] is a table: expected a flat file of `key = value` lines with nanoGPT's key names"
    )))
}

/// The config as a flat TOML file that loads back to the same config: every field in
/// registry order, None fields left out (their default), each with its description.
pub fn to_toml(config: &TrainConfig) -> String {
    let mut out = String::from(
        "# vramplan config: nanoGPT's train.py key names (`vramplan check this.toml`)\n",
    );
    for spec in KEYS.iter().filter(|k| k.effect == Effect::Field) {
        let value = match registry::get(config, spec) {
            Value::Int(i) => i64::try_from(i)
                .map_or_else(|_| i.to_string(), |i| toml::Value::Integer(i).to_string()),
            Value::Float(x) => toml::Value::Float(x).to_string(),
            Value::Bool(b) => toml::Value::Boolean(b).to_string(),
            Value::Str(s) => toml::Value::String(s).to_string(),
            Value::None => continue,
        };
        out.push_str(&format!("{} = {value}  # {}\n", spec.name, spec.doc));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_flat_toml_in_file_order_with_lines() {
        let a = parse(
            "# c\nbatch_size = 8\n\ndtype = 'float16'\ndropout = 0.1\n",
            "r.toml",
        )
        .unwrap();
        let keys: Vec<(&str, &Origin)> = a.iter().map(|a| (a.key.as_str(), &a.origin)).collect();
        assert_eq!(
            keys[0],
            (
                "batch_size",
                &Origin::File {
                    path: "r.toml".into(),
                    line: 2
                }
            )
        );
        assert_eq!(keys[1].0, "dtype");
        assert_eq!(
            keys[2],
            (
                "dropout",
                &Origin::File {
                    path: "r.toml".into(),
                    line: 5
                }
            )
        );
    }

    #[test]
    fn tables_and_arrays_are_errors_with_lines() {
        let e = parse("batch_size = 8\n[model]\nn_layer = 2\n", "r.toml").unwrap_err();
        assert!(
            e.message().starts_with("r.toml:2: [model] is a table"),
            "{e}"
        );
        let e = parse("batch_size = [8]\n", "r.toml").unwrap_err();
        assert!(
            e.message()
                .starts_with("r.toml:1: batch_size: expected an integer"),
            "{e}"
        );
        let e = parse("a = 1\nbatch_size = = 8\n", "r.toml").unwrap_err();
        assert!(
            e.message().starts_with("r.toml:2:14: not valid TOML"),
            "{e}"
        );
    }
}
