//! Where each key was set, so that every error about a key starts with it (file:line,
//! override, init_from): shared by the checks of every family of keys.

use super::value::Origin;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::fmt;

/// Where each key was set: every error about a key starts with it.
pub(crate) struct Blame<'a>(pub &'a HashMap<&'static str, Origin>);

impl Blame<'_> {
    /// "path:line: ", "override --key=value: ", ... for `key`; empty when it kept its default.
    pub fn at(&self, key: &str) -> String {
        self.0.get(key).map_or(String::new(), |o| format!("{o}: "))
    }

    /// The error "<where>key = value: expected <expected>".
    pub fn fail<T>(
        &self,
        key: &str,
        value: impl fmt::Display,
        expected: impl fmt::Display,
    ) -> Result<T> {
        Err(Error::bad_value(
            key,
            format!("{}{key} = {value}: expected {expected}", self.at(key)),
        ))
    }
}
