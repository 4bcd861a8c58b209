//! A framework file as a tree (JSON and YAML alike), where its keys are, and the layer of
//! assignments it becomes.

use super::Kind;
use crate::config::value::{Assignment, Origin, Rhs, Value};
use crate::error::{Error, Result};
use serde_json::{Map, Value as Json};

/// A parsed JSON or YAML mapping and its text, for line numbers.
pub(crate) struct Doc<'a> {
    pub path: &'a str,
    pub text: &'a str,
    pub map: Map<String, Json>,
}

impl<'a> Doc<'a> {
    /// JSON by extension or by a leading `{`, else YAML (a superset of JSON anyway).
    pub fn parse(path: &'a str, text: &'a str) -> Result<Doc<'a>> {
        let text_ = text.strip_prefix('\u{feff}').unwrap_or(text);
        let json_like =
            path.to_ascii_lowercase().ends_with(".json") || text_.trim_start().starts_with('{');
        let tree: Json = if json_like {
            serde_json::from_str(text_)
                .map_err(|e| Error::new(format!("{path}: expected a JSON object: {e}")))?
        } else {
            serde_yaml::from_str(text_).map_err(|e| {
                Error::new(format!(
                    "{path}: expected a YAML mapping with string keys: {}",
                    e.to_string().replace('\n', " ")
                ))
            })?
        };
        match tree {
            Json::Object(map) => Ok(Doc { path, text, map }),
            other => Err(Error::new(format!(
                "{path}: expected a mapping of keys to values at the top, found {}",
                kind_name(&other)
            ))),
        }
    }

    /// Where `key` is written: the first line naming it as a YAML key or a JSON field.
    pub fn origin(&self, key: &str) -> Origin {
        let line = self
            .text
            .lines()
            .position(|l| {
                let t = l.trim_start().trim_start_matches("- ");
                t.starts_with(&format!("{key}:")) || t.starts_with(&format!("\"{key}\""))
            })
            .map_or(1, |i| i + 1);
        Origin::File {
            path: self.path.to_string(),
            line,
        }
    }

    /// The value of a top-level key, None when absent or null (YAML `key:` with nothing).
    pub fn get(&self, key: &str) -> Option<&Json> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// "path:line: key = value: why" as an error.
    pub fn fail(&self, key: &str, v: &Json, why: impl std::fmt::Display) -> Error {
        Error::bad_value(
            key,
            format!("{}: {key} = {}: {why}", self.origin(key), brief(v)),
        )
    }

    pub fn bool(&self, key: &str, v: &Json) -> Result<bool> {
        match v {
            Json::Bool(b) => Ok(*b),
            Json::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
            Json::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
            _ => Err(self.fail(key, v, "expected true or false")),
        }
    }

    pub fn count(&self, key: &str, v: &Json) -> Result<u64> {
        v.as_u64()
            .ok_or_else(|| self.fail(key, v, "expected a non-negative integer"))
    }

    pub fn float(&self, key: &str, v: &Json) -> Result<f64> {
        v.as_f64()
            .ok_or_else(|| self.fail(key, v, "expected a number"))
    }

    pub fn str<'v>(&self, key: &str, v: &'v Json) -> Result<&'v str> {
        v.as_str()
            .ok_or_else(|| self.fail(key, v, "expected a string"))
    }

    /// A list of strings, also written as one comma- or space-separated string.
    pub fn strings(&self, key: &str, v: &Json) -> Result<Vec<String>> {
        match v {
            Json::String(s) => Ok(s
                .split([',', ' '])
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect()),
            Json::Array(items) => items
                .iter()
                .map(|i| self.str(key, i).map(str::to_string))
                .collect(),
            _ => Err(self.fail(key, v, "expected a list of names")),
        }
    }
}

/// The kind of file a mapping is, by the keys only its format has.
pub(crate) fn kind_of(doc: &Doc) -> Kind {
    let has = |k: &str| doc.map.contains_key(k);
    let component = |k: &str| {
        doc.map
            .get(k)
            .and_then(Json::as_object)
            .is_some_and(|m| m.contains_key("_component_"))
    };
    if has("zero_optimization") || has("train_micro_batch_size_per_gpu") {
        Kind::DeepSpeed
    } else if has("distributed_type") || has("compute_environment") {
        Kind::Accelerate
    } else if component("model") || component("optimizer") || component("tokenizer") {
        Kind::Torchtune
    } else if has("checkpoint_dir") || doc.map.get("train").is_some_and(Json::is_object) {
        Kind::Litgpt
    } else if has("base_model") || has("micro_batch_size") || has("sequence_len") || has("adapter")
    {
        Kind::Axolotl
    } else {
        Kind::Trainer
    }
}

/// What a framework file says, in vramplan's keys.
#[derive(Debug, Default)]
pub(crate) struct Mapped {
    pub assignments: Vec<Assignment>,
    /// Keys read and ignored because they do not change GPU memory (listed with --verbose).
    pub ignored: Vec<String>,
    /// Where a mechanism is mapped onto the closest one the simulator has: printed as warnings.
    pub notes: Vec<String>,
    /// The model the file names (a preset name, a Hub id, or a local path) and where.
    pub model: Option<(String, Origin)>,
    /// A DeepSpeed config the file names (a path, or inline as JSON text) and where.
    pub deepspeed: Option<(DeepSpeedRef, Origin)>,
}

#[derive(Debug, Clone)]
pub(crate) enum DeepSpeedRef {
    Path(String),
    Inline(String),
}

impl Mapped {
    /// `key = v`, read from the file's `from`.
    pub fn set(&mut self, doc: &Doc, from: &str, key: &str, v: Value) {
        self.assignments.push(Assignment {
            key: key.to_string(),
            rhs: Rhs::Known(v),
            origin: doc.origin(from),
        });
    }

    pub fn ignore(&mut self, doc: &Doc, key: &str) {
        self.ignored.push(format!("{}: {key}", doc.origin(key)));
    }

    pub fn note(&mut self, doc: &Doc, key: &str, what: impl std::fmt::Display) {
        self.notes
            .push(format!("{}: {key}: {what}", doc.origin(key)));
    }
}

/// A value cut to one readable line for messages.
pub(crate) fn brief(v: &Json) -> String {
    let s = v.to_string();
    if s.chars().count() > 80 {
        s.chars().take(79).chain(std::iter::once('…')).collect()
    } else {
        s
    }
}

fn kind_name(v: &Json) -> &'static str {
    match v {
        Json::Null => "nothing",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "a mapping",
    }
}

/// An unknown key of a framework's file: an error that names it and the format expected.
pub(crate) fn unknown(doc: &Doc, key: &str, format: &str) -> Error {
    let kind = crate::error::ErrorKind::UnknownKey { key: key.into() };
    Error::with(kind, format!(
        "{}: unknown key '{}' for {format}: vramplan cannot tell whether it changes memory; expected one of the format's documented keys (README.md, \"Framework config files\")",
        doc.origin(key),
        key.chars().take(80).collect::<String>()
    ))
}

/// A key that changes memory in a way the simulator does not model: an error naming it.
pub(crate) fn unsupported(doc: &Doc, key: &str, v: &Json, what: &str) -> Error {
    doc.fail(
        key,
        v,
        format!("{what} changes memory and is not modelled by vramplan"),
    )
}
