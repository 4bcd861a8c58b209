//! The command line as a library call: what `main` runs, and what the Python bindings
//! (python/, `pip install vramplan`) call for the `vramplan` console script and for the
//! Python API, which reads the same `--json` document the CLI prints.

use crate::cli::{split_overrides, usage_error_line, Cli, Command};
use clap::Parser;
use std::cell::RefCell;

thread_local! {
    /// Where `print_json` writes while `run_cli_json` runs on this thread (None: stdout).
    static JSON_SINK: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// `vramplan ARGS...` (args[0] is the program name): parse, run, print; the exit code
/// (0 fits / diagnosed, 1 does not fit, 2 bad input or usage, reported as one line on stderr).
pub fn run_cli(args: Vec<String>) -> u8 {
    let cli = match parse(args) {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors; a usage error is one line on stderr.
            if !e.use_stderr() {
                let _ = e.print();
                return 0;
            }
            eprintln!("vramplan: {}", usage_error_line(&e));
            return 2;
        }
    };
    match super::run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vramplan: {}", one_line(e.message()));
            2
        }
    }
}

/// A message on one line whatever user text it quotes: line breaks become spaces.
pub fn one_line(message: &str) -> String {
    message
        .split(['\n', '\r'])
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `vramplan ARGS... --json` without printing the JSON: (exit code, the JSON text the CLI
/// would print, if the command printed one). Bad input or usage is the one-line message the
/// CLI would print after `vramplan: `.
pub fn run_cli_json(args: Vec<String>) -> Result<(u8, Option<String>), JsonError> {
    let cli = parse(args).map_err(|e| JsonError {
        message: usage_error_line(&e),
        key: None,
    })?;
    JSON_SINK.with(|s| *s.borrow_mut() = Some(String::new()));
    let outcome = super::run(&cli);
    let json = JSON_SINK
        .with(|s| s.borrow_mut().take())
        .filter(|t| !t.is_empty());
    match outcome {
        Ok(code) => Ok((code, json)),
        Err(e) => Err(JsonError {
            message: one_line(e.message()),
            key: e.key().map(str::to_string),
        }),
    }
}

/// Bad input met by [`run_cli_json`]: the line the CLI prints after `vramplan: `, and the
/// config key at fault where the error names one (`Error::key`), so that a caller (the Python
/// package) need not read it back out of the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    pub message: String,
    pub key: Option<String>,
}

/// The JSON text goes to the capture `run_cli_json` set up, else to stdout.
pub(crate) fn emit_json(text: &str) {
    let captured = JSON_SINK.with(|s| match s.borrow_mut().as_mut() {
        Some(sink) => {
            sink.push_str(text);
            true
        }
        None => false,
    });
    if !captured {
        println!("{text}");
    }
}

/// clap's parse with nanoGPT-style `--key=value` overrides split off first and handed to the
/// subcommand that takes them.
fn parse(args: Vec<String>) -> Result<Cli, clap::Error> {
    let (clap_args, overrides) = split_overrides(args);
    let mut cli = Cli::try_parse_from(clap_args)?;
    match &mut cli.command {
        Command::Check(a) => a.run.overrides = overrides,
        Command::Suggest(a) => a.run.overrides = overrides,
        Command::Diagnose(a) => a.overrides = overrides,
        Command::Probe(a) => a.overrides = overrides,
        Command::Explain(a) => a.run.overrides = overrides,
        Command::Gpus(_) | Command::Completions(_) => {}
    }
    Ok(cli)
}
