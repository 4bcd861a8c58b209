//! Values as nanoGPT's configurator sees them: Python literals (int, float, bool, str, None),
//! and where each one came from, so that every error can name the file and line or the override.

use std::fmt;

/// A Python literal. Ints are i128 so that Python's unbounded ints give a clean "too large"
/// error instead of a wrap-around.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Int(i128),
    Float(f64),
    Bool(bool),
    Str(String),
    None,
}

impl Value {
    /// Python's type name, for "expected an int, got a str" messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Bool(_) => "bool",
            Value::Str(_) => "str",
            Value::None => "NoneType",
        }
    }
}

impl Value {
    /// `repr` cut to one readable line: a pasted megabyte must not become the error message.
    pub fn brief(&self) -> String {
        let r = self.to_string();
        if r.chars().count() > 80 {
            r.chars().take(79).chain(std::iter::once('…')).collect()
        } else {
            r
        }
    }
}

impl fmt::Display for Value {
    /// Python's `repr`, which is also what `ast.literal_eval` reads back: `True`, `'gpt2'`,
    /// `0.1`, `1e-05`. Floats always carry a `.` or an exponent, so that nanoGPT's configurator,
    /// which asserts `type(new) == type(default)`, reads them back as floats.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => f.write_str(&float_repr(*x)),
            Value::Bool(true) => f.write_str("True"),
            Value::Bool(false) => f.write_str("False"),
            Value::Str(s) => f.write_str(&str_repr(s)),
            Value::None => f.write_str("None"),
        }
    }
}

/// An optional count as Python has it: the int, or None.
pub(crate) fn opt_int(v: Option<u64>) -> Value {
    v.map_or(Value::None, |v| Value::Int(v.into()))
}

/// A number (its type already checked to be an int or a float) as an f64.
pub(crate) fn float(v: &Value) -> f64 {
    match v {
        Value::Int(i) => *i as f64,
        Value::Float(x) => *x,
        _ => 0.0,
    }
}

/// A count or size: a non-negative int that fits u64 (zero is refused later, by validation,
/// so that a zero from any source gets the same message).
pub(crate) fn count(v: &Value) -> Result<u64, String> {
    count_or(v, "")
}

/// A [`count`] or None. `offer_none`: the messages name None among what is expected.
pub(crate) fn opt_count(v: &Value, offer_none: bool) -> Result<Option<u64>, String> {
    match v {
        Value::None => Ok(None),
        v => count_or(v, if offer_none { " or None" } else { "" }).map(Some),
    }
}

/// [`count`], with `or` after what its messages expect.
fn count_or(v: &Value, or: &str) -> Result<u64, String> {
    match v {
        Value::Int(i) if *i < 0 => Err(format!(
            "expected a positive integer{or}, got a negative one"
        )),
        Value::Int(i) => {
            u64::try_from(*i).map_err(|_| "expected an integer below 2^64".to_string())
        }
        other => Err(format!("expected an int{or}, got a {}", other.type_name())),
    }
}

/// A float as Python writes it: Rust's `{:?}` already keeps a `.0` or an exponent.
pub(crate) fn float_repr(x: f64) -> String {
    if x.is_nan() {
        "nan".to_string()
    } else if x.is_infinite() {
        if x > 0.0 { "inf" } else { "-inf" }.to_string()
    } else {
        format!("{x:?}")
    }
}

/// A Python single-quoted string literal.
pub(crate) fn str_repr(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Where a value was set. Errors and warnings start with it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Origin {
    /// A line of a config file (1-based).
    File { path: String, line: usize },
    /// A `--key=value` argument, as the user typed it.
    Override(String),
    /// Derived by shape resolution from `init_from` (e.g. `gpt2-xl`).
    Preset(String),
    /// Derived from `dataset` (nanoGPT reads the vocabulary from its meta.pkl).
    Dataset(String),
    /// A framework's default for a key its file left out (e.g. "the Trainer's default").
    Default(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, line } => write!(f, "{path}:{line}"),
            Origin::Override(arg) => write!(f, "override {arg}"),
            Origin::Preset(name) => write!(f, "init_from={}", str_repr(name)),
            Origin::Dataset(name) => write!(f, "dataset={}", str_repr(name)),
            Origin::Default(whose) => write!(f, "{whose}'s default"),
        }
    }
}

/// The right-hand side of one assignment: a literal we could evaluate, or source text we could
/// not (a function call, a condition) together with the reason.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Rhs {
    Known(Value),
    Unknown { text: String, why: String },
}

/// `key = value`, from a file line or an override.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Assignment {
    pub key: String,
    pub rhs: Rhs,
    pub origin: Origin,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repr_is_python_repr() {
        assert_eq!(Value::Float(1.0).to_string(), "1.0");
        assert_eq!(Value::Float(0.1).to_string(), "0.1");
        assert_eq!(Value::Float(6e-5).to_string(), "6e-5");
        assert_eq!(Value::Bool(true).to_string(), "True");
        assert_eq!(Value::Str("it's".into()).to_string(), r"'it\'s'");
        assert_eq!(Value::None.to_string(), "None");
    }
}
