//! Typed access to a GPU profile's TOML table. Each reader returns None when the key is absent
//! or wrong, and records what was wrong, so that one message lists every problem of a file.

use super::margin::parse_bytes_for;
use crate::plain::quote;
use crate::units::human;
use std::cell::RefCell;

const KNOWN_KEYS: [&str; 14] = [
    "key",
    "name",
    "aliases",
    "total_bytes",
    "measured",
    "bf16",
    "compute_capability",
    "sm_count",
    "bandwidth_gb_s",
    "bf16_tflops",
    "fp32_tflops",
    "cublas_workspace_bytes",
    "cublaslt_workspace_bytes",
    "context_bytes",
];

pub(super) struct Fields<'a> {
    table: &'a toml::Table,
    problems: RefCell<Vec<String>>,
}

impl<'a> Fields<'a> {
    pub fn new(table: &'a toml::Table) -> Self {
        Fields {
            table,
            problems: RefCell::new(Vec::new()),
        }
    }

    /// Every problem recorded, in the order found.
    pub fn problems(&self) -> Vec<String> {
        self.problems.borrow().clone()
    }

    pub fn has(&self, key: &str) -> bool {
        self.table.contains_key(key)
    }

    pub fn push(&self, problem: String) {
        self.problems.borrow_mut().push(problem);
    }

    pub fn bad(&self, key: &str, expected: &str, got: &str) {
        self.problems
            .borrow_mut()
            .push(format!("`{key}`: expected {expected}, got {got}"));
    }

    pub fn missing(&self, key: &str, expected: &str) {
        self.problems
            .borrow_mut()
            .push(format!("missing `{key}` (expected {expected})"));
    }

    pub fn reject_unknown(&self) {
        for key in self.table.keys() {
            if !KNOWN_KEYS.contains(&key.as_str()) {
                let closest = KNOWN_KEYS
                    .iter()
                    .min_by_key(|k| super::catalogue::edit_distance(k, key))
                    .copied()
                    .unwrap_or("key");
                self.problems.borrow_mut().push(format!(
                    "unknown key `{}` (did you mean `{closest}`?)",
                    quote(key).trim_matches('"')
                ));
            }
        }
    }

    /// Whether `value` of `key` lies in [min, max]; records the problem when not.
    pub fn within(&self, key: &str, value: u64, min: u64, max: u64, why: &str) -> bool {
        let ok = (min..=max).contains(&value);
        if !ok {
            self.bad(
                key,
                &format!("between {} and {} ({why})", human(min), human(max)),
                &human(value),
            );
        }
        ok
    }

    fn describe(v: &toml::Value) -> String {
        match v {
            toml::Value::String(s) => format!("the string {}", quote(s)),
            toml::Value::Integer(i) => format!("the integer {i}"),
            toml::Value::Float(x) => format!("the number {x}"),
            toml::Value::Boolean(b) => format!("{b}"),
            toml::Value::Datetime(d) => format!("the date {d}"),
            toml::Value::Array(_) => "a list".to_string(),
            toml::Value::Table(_) => "a table".to_string(),
        }
    }

    pub fn string(&self, key: &str, expected: &str) -> Option<String> {
        match self.table.get(key)? {
            toml::Value::String(s) => Some(s.clone()),
            v => {
                self.bad(key, &format!("a string: {expected}"), &Self::describe(v));
                None
            }
        }
    }

    pub fn string_list(&self, key: &str) -> Option<Vec<String>> {
        let expected = "a list of strings, e.g. [\"RTX 3060\", \"3060\"]";
        match self.table.get(key)? {
            toml::Value::Array(items) => {
                let strings: Vec<String> = items
                    .iter()
                    .filter_map(|v| match v {
                        toml::Value::String(s) => Some(s.clone()),
                        _ => None,
                    })
                    .collect();
                if strings.len() == items.len() {
                    return Some(strings);
                }
                let other = items.iter().find(|v| !v.is_str())?;
                self.bad(key, expected, &format!("{} in it", Self::describe(other)));
                None
            }
            v => {
                self.bad(key, expected, &Self::describe(v));
                None
            }
        }
    }

    pub fn boolean(&self, key: &str) -> Option<bool> {
        match self.table.get(key)? {
            toml::Value::Boolean(b) => Some(*b),
            v => {
                self.bad(key, "true or false", &Self::describe(v));
                None
            }
        }
    }

    /// Bytes: an integer, or a size string such as "300MiB".
    pub fn bytes(&self, key: &str) -> Option<u64> {
        let expected = "bytes: an integer, or a size such as \"300MiB\"";
        match self.table.get(key)? {
            toml::Value::Integer(i) => u64::try_from(*i).ok().or_else(|| {
                self.bad(key, expected, &Self::describe(&toml::Value::Integer(*i)));
                None
            }),
            toml::Value::String(s) => match parse_bytes_for(&format!("`{key}`"), s) {
                Ok(b) => Some(b),
                Err(e) => {
                    self.problems.borrow_mut().push(e.message().to_string());
                    None
                }
            },
            v => {
                self.bad(key, expected, &Self::describe(v));
                None
            }
        }
    }

    pub fn positive_u32(&self, key: &str, max: i64) -> Option<u32> {
        let expected = format!("a positive integer, at most {max}");
        match self.table.get(key)? {
            toml::Value::Integer(i) if *i > 0 && *i <= max => u32::try_from(*i).ok(),
            v => {
                self.bad(key, &expected, &Self::describe(v));
                None
            }
        }
    }

    /// A positive rate, at most 10^6 (the fastest cards run a few thousand TFLOPS and move
    /// 8 000 GB/s).
    pub fn positive_f64(&self, key: &str, what: &str) -> Option<f64> {
        let expected = format!("a positive number ({what}), at most 1000000");
        let x = match self.table.get(key)? {
            toml::Value::Float(x) => *x,
            toml::Value::Integer(i) => *i as f64,
            v => {
                self.bad(key, &expected, &Self::describe(v));
                return None;
            }
        };
        if x.is_finite() && x > 0.0 && x <= 1e6 {
            Some(x)
        } else {
            self.bad(key, &expected, &format!("the number {x}"));
            None
        }
    }

    /// "8.6" or [8, 6].
    pub fn compute_capability(&self) -> Option<(u32, u32)> {
        let key = "compute_capability";
        let expected = "a compute capability such as \"8.6\" or [8, 6]";
        let value = self.table.get(key)?;
        let pair = match value {
            toml::Value::String(s) => s.trim().split_once('.').and_then(|(a, b)| {
                Some((a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?))
            }),
            toml::Value::Array(items) => match items.as_slice() {
                [toml::Value::Integer(a), toml::Value::Integer(b)] => {
                    Some((u32::try_from(*a).ok(), u32::try_from(*b).ok()))
                        .and_then(|(a, b)| Some((a?, b?)))
                }
                _ => None,
            },
            _ => None,
        };
        match pair {
            Some((major, minor)) if (3..=20).contains(&major) && minor < 10 => Some((major, minor)),
            _ => {
                self.bad(key, expected, &Self::describe(value));
                None
            }
        }
    }
}
