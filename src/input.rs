//! Reading the files a user names (configs, config.json, GPU profiles, fake NVML readings,
//! logs): only regular files, and at most a size limit. A FIFO would block forever and
//! /dev/urandom never ends; a huge file would be read whole before the first error. Every
//! failure is one line naming the path and what was expected.

use crate::error::{Error, Result};
use crate::units::{human, MIB};
use std::io::Read;
use std::path::Path;

/// Config files, config.json, GPU profiles and fake NVML readings: 1 MiB. nanoGPT's configs
/// are under 2 KiB; the largest Hugging Face config.json files (with id2label tables) are
/// tens of KiB.
pub const MAX_CONFIG_BYTES: u64 = MIB;

/// OOM logs: 16 MiB, a few hundred thousand lines of training output.
pub const MAX_LOG_BYTES: u64 = 16 * MIB;

/// The bytes of the regular file at `path`; `what` names it in errors ("the config file").
pub fn read_file(path: &Path, what: &str, limit: u64) -> Result<Vec<u8>> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| {
        Error::file(
            &shown,
            format!("{shown}: cannot read {what}: {}", io_reason(&e)),
        )
    })?;
    if !meta.is_file() {
        return Err(Error::file(
            &shown,
            format!(
                "{shown}: cannot read {what}: expected a regular file, found {}",
                kind_of(&meta)
            ),
        ));
    }
    if meta.len() > limit {
        return Err(too_large(&shown.to_string(), what, limit));
    }
    let file = std::fs::File::open(path).map_err(|e| {
        Error::file(
            &shown,
            format!("{shown}: cannot read {what}: {}", io_reason(&e)),
        )
    })?;
    read_limited(file, &shown.to_string(), what, limit)
}

/// At most `limit` bytes of `reader` (a file that grows while read, standard input).
pub fn read_limited(reader: impl Read, shown: &str, what: &str, limit: u64) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| {
            Error::file(
                shown,
                format!("{shown}: cannot read {what}: {}", io_reason(&e)),
            )
        })?;
    if bytes.len() as u64 > limit {
        return Err(too_large(shown, what, limit));
    }
    Ok(bytes)
}

fn too_large(shown: &str, what: &str, limit: u64) -> Error {
    Error::file(
        shown,
        format!(
            "{shown}: {what} is larger than {}: expected a file of at most that size",
            human(limit)
        ),
    )
}

/// What a path that is not a regular file is, in words.
fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_fifo() {
            return "a named pipe (FIFO)";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if meta.is_dir() {
        "a directory"
    } else {
        "something that is not a file"
    }
}

/// An I/O error in words, without Rust's "(os error 2)".
pub fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        NotFound => "no such file".to_string(),
        PermissionDenied => "permission denied".to_string(),
        IsADirectory => "it is a directory".to_string(),
        _ => {
            let text = e.to_string();
            match text.find(" (os error") {
                Some(i) => text[..i].to_string(),
                None => text,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_regular_file_or_too_large() {
        let dir = std::env::temp_dir();
        let e = read_file(&dir, "the config file", MIB).unwrap_err();
        assert!(
            e.message()
                .ends_with("expected a regular file, found a directory"),
            "{e}"
        );
        #[cfg(unix)]
        {
            let e = read_file(Path::new("/dev/zero"), "the log", MIB).unwrap_err();
            assert!(e.message().ends_with("found a device"), "{e}");
        }
        let e = read_limited(&[0u8; 11][..], "x", "the log", 10).unwrap_err();
        assert_eq!(
            e.message(),
            "x: the log is larger than 10 bytes: expected a file of at most that size"
        );
        assert_eq!(
            read_limited(&[1u8; 10][..], "x", "the log", 10)
                .unwrap()
                .len(),
            10
        );
        let e = read_file(Path::new("/no/such/file"), "the config file", MIB).unwrap_err();
        assert_eq!(
            e.message(),
            "/no/such/file: cannot read the config file: no such file"
        );
    }
}
