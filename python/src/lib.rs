//! `vramplan._vramplan`: the CLI, run in-process. The Python package (`vramplan/`) builds the
//! argument lists and reads the `--json` document, so the Python API returns exactly the fields
//! the CLI prints and no figure is computed twice.

use pyo3::prelude::*;
use vramplan::probe::meter::CountingAlloc;

/// As the `vramplan` binary: counts heap bytes so that `probe --device cpu` measures exactly.
#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// `vramplan ARGV...` (argv[0] is the program name) printing to this process's stdout/stderr,
/// as the command does; returns the exit code.
#[pyfunction]
fn run_cli(py: Python<'_>, argv: Vec<String>) -> u8 {
    py.allow_threads(|| vramplan::commands::run_cli(argv))
}

/// `vramplan ARGV... --json` without printing: (exit code, the JSON text or None, the error
/// line or None, the config key at fault or None). The error line is what the CLI prints
/// after `vramplan: ` for bad input; the key comes with errors about one key.
#[pyfunction]
fn run_json(
    py: Python<'_>,
    argv: Vec<String>,
) -> (u8, Option<String>, Option<String>, Option<String>) {
    match py.allow_threads(|| vramplan::commands::run_cli_json(argv)) {
        Ok((code, json)) => (code, json, None, None),
        Err(e) => (2, None, Some(e.message), e.key),
    }
}

#[pymodule]
fn _vramplan(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(run_cli, m)?)?;
    m.add_function(wrap_pyfunction!(run_json, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
