//! Reading a config file: its format (nanoGPT's Python or TOML, by extension, else by
//! content), its assignments, then the `--key=value` overrides on top, as train.py does.

use super::{apply, nanogpt_py, overrides, pyexpr, toml_file, value, TrainConfig};
use std::path::Path;

/// A config as loaded: the resolved `TrainConfig`, what was skipped or derived along the way,
/// and where it came from (for the report's header).
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub config: TrainConfig,
    pub warnings: Vec<String>,
    /// The file's path as given, or "nanoGPT defaults".
    pub source: String,
    /// Keys of a framework file read and ignored because they do not change GPU memory, each
    /// with where it is (`--verbose` lists them).
    pub ignored: Vec<String>,
}

/// The formats a config file can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// nanoGPT's `config/*.py`: Python assignments.
    NanoGptPy,
    /// A flat TOML file with the same key names.
    Toml,
}

/// Load a config file (or nanoGPT's defaults when `path` is None), then apply `--key=value`
/// overrides, as `python train.py config/x.py --batch_size=8` would. The format follows the
/// extension (.py, .toml), else the content.
pub fn load(path: Option<&Path>, overrides: &[String]) -> crate::error::Result<Loaded> {
    let Some(path) = path else {
        return resolve(
            Vec::new(),
            Vec::new(),
            overrides,
            "nanoGPT defaults".to_string(),
        );
    };
    let (name, text) = read_text(path, "a UTF-8 text config (.py or .toml)")?;
    load_str(&name, &text, overrides)
}

/// A text file's name as given and its content; `what` says what was expected.
pub(crate) fn read_text(path: &Path, what: &str) -> crate::error::Result<(String, String)> {
    let name = path.display().to_string();
    let bytes = crate::input::read_file(path, "the config file", crate::input::MAX_CONFIG_BYTES)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        crate::error::Error::new(format!(
            "{name}: expected {what}, found invalid UTF-8 at byte {}",
            e.utf8_error().valid_up_to()
        ))
    })?;
    Ok((name, text))
}

/// `load` on text already in memory; `name` gives the format (by extension) and names the
/// file in messages.
pub fn load_str(name: &str, text: &str, overrides: &[String]) -> crate::error::Result<Loaded> {
    let (assignments, warnings) = file_assignments(name, text)?;
    resolve(assignments, warnings, overrides, name.to_string())
}

/// The layers' assignments with `--key=value` overrides last, applied to nanoGPT's defaults
/// as one layer and validated once: every loader ends here.
pub(crate) fn resolve(
    mut assignments: Vec<value::Assignment>,
    mut warnings: Vec<String>,
    overrides: &[String],
    source: String,
) -> crate::error::Result<Loaded> {
    for o in overrides {
        assignments.push(overrides::parse_override(o)?);
    }
    let mut config = TrainConfig::default();
    warnings.extend(apply::apply(&mut config, &assignments)?);
    Ok(Loaded {
        config,
        warnings,
        source,
        ignored: Vec::new(),
    })
}

/// The assignments of a config file's text, in file order, and the loader's warnings.
pub(crate) fn file_assignments(
    name: &str,
    text: &str,
) -> crate::error::Result<(Vec<value::Assignment>, Vec<String>)> {
    // Python and TOML both accept a leading UTF-8 byte-order mark; so do we.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    Ok(match format_of(name, text)? {
        Format::NanoGptPy => nanogpt_py::parse(text, name)?,
        Format::Toml => (toml_file::parse(text, name)?, Vec::new()),
    })
}

/// By extension; without one we know, by content: TOML parses as TOML, nanoGPT's Python does
/// not (True/False, `5 * 8`, imports, comments after bare words).
pub fn format_of(name: &str, text: &str) -> crate::error::Result<Format> {
    let ext = Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("py") => return Ok(Format::NanoGptPy),
        Some("toml") => return Ok(Format::Toml),
        _ => {}
    }
    if toml::from_str::<toml::Table>(text).is_ok() {
        return Ok(Format::Toml);
    }
    let python_like = pyexpr::tokenize(text).is_ok_and(|lines| {
        !lines.is_empty()
            && lines.iter().all(|l| {
                matches!(
                    l.toks.first(),
                    Some(pyexpr::Tok::Name(_) | pyexpr::Tok::Str(_))
                )
            })
            && lines.iter().any(|l| l.toks.contains(&pyexpr::Tok::Op("=")))
    });
    if python_like {
        return Ok(Format::NanoGptPy);
    }
    Err(crate::error::Error::new(format!(
        "{name}: cannot tell the config format: expected a nanoGPT python config (.py) or a flat TOML file (.toml)"
    )))
}
