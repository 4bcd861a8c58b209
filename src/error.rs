//! One error type for everything the user can get wrong. Every kind is exit code 2: bad input
//! or usage. "Does not fit" is not an error, it is a verdict (exit 1).
//!
//! The message is the one line the user reads, already naming the file, line or key and what
//! was expected; the kind says what went wrong and carries that context for programs (the
//! Python wheel, tests) that should not parse the message.

/// What went wrong, with the key or path it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// A key set to a value it cannot take (a config file, an override, a framework's file).
    BadValue { key: String },
    /// A key that no loader knows.
    UnknownKey { key: String },
    /// A file that cannot be read as what it should be: missing, not a regular file, too large,
    /// not valid TOML/JSON/Python.
    File { path: String },
    /// A card the catalogue cannot name, or a GPU profile that cannot be used.
    Gpu,
    /// Anything else the user can fix: a usage error, a combination that cannot run.
    Usage,
}

/// A user-facing error: one line that names the file, line or key and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    /// A usage error (no more specific kind).
    pub fn new(message: impl Into<String>) -> Self {
        Error::with(ErrorKind::Usage, message)
    }

    pub fn with(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }

    /// `key` set to a value it cannot take.
    pub fn bad_value(key: &str, message: impl Into<String>) -> Self {
        Error::with(ErrorKind::BadValue { key: key.into() }, message)
    }

    /// A file at `path` that cannot be read as what it should be.
    pub fn file(path: impl std::fmt::Display, message: impl Into<String>) -> Self {
        Error::with(
            ErrorKind::File {
                path: path.to_string(),
            },
            message,
        )
    }

    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// The config key at fault, where the error is about one (a bad value, an unknown key).
    pub fn key(&self) -> Option<&str> {
        match &self.kind {
            ErrorKind::BadValue { key } | ErrorKind::UnknownKey { key } => Some(key),
            _ => None,
        }
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Shorthand for returning a user-facing error.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => { return Err($crate::error::Error::new(format!($($arg)*))) };
}
