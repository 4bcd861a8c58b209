//! Thin: parse the command line, dispatch, turn the outcome into an exit code.
//! 0 fits / diagnosed, 1 does not fit, 2 bad input or usage.

use clap::Parser;
use std::process::ExitCode;
use vramplan::cli::{split_overrides, usage_error_line, Cli, Command};
use vramplan::probe::meter::CountingAlloc;

/// Counts heap bytes (current and peak) so that `vramplan probe --device cpu` measures exactly;
/// two relaxed atomic adds per allocation cost nothing the other commands would notice.
#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn main() -> ExitCode {
    // A panic is a bug of ours, never the user's input: one line that says so, no backtrace.
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("a panic");
        let at = info
            .location()
            .map_or(String::new(), |l| format!(" at {}:{}", l.file(), l.line()));
        eprintln!(
            "vramplan: internal error (a bug in vramplan, please report it with the command): {}{at}",
            one_line(what)
        );
    }));
    let (clap_args, overrides) = split_overrides(std::env::args().collect());
    let mut cli = match Cli::try_parse_from(clap_args) {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors; a usage error is one line on stderr.
            if !e.use_stderr() {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            eprintln!("vramplan: {}", usage_error_line(&e));
            return ExitCode::from(2);
        }
    };
    match &mut cli.command {
        Command::Check(a) => a.run.overrides = overrides,
        Command::Suggest(a) => a.run.overrides = overrides,
        Command::Diagnose(a) => a.overrides = overrides,
        Command::Probe(a) => a.overrides = overrides,
        Command::Explain(a) => a.run.overrides = overrides,
        Command::Gpus(_) | Command::Completions(_) => {}
    }
    match vramplan::commands::run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("vramplan: {}", one_line(e.message()));
            ExitCode::from(2)
        }
    }
}

/// A message on one line whatever user text it quotes: line breaks become spaces.
fn one_line(message: &str) -> String {
    message
        .split(['\n', '\r'])
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
