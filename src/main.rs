//! Thin: the process's arguments to `vramplan::commands::run_cli`, its code to the exit code.
//! 0 fits / diagnosed, 1 does not fit, 2 bad input or usage.

use std::process::ExitCode;
use vramplan::commands::one_line;
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
        // `vramplan check --json | head`: the reader went away, which is no bug. print! panics
        // on EPIPE (Rust ignores SIGPIPE); leave quietly, as a process killed by it would
        // (128 + SIGPIPE).
        if what.contains("failed printing to stdout") && what.contains("Broken pipe") {
            std::process::exit(141);
        }
        let at = info
            .location()
            .map_or(String::new(), |l| format!(" at {}:{}", l.file(), l.line()));
        eprintln!(
            "vramplan: internal error (a bug in vramplan, please report it with the command): {}{at}",
            one_line(what)
        );
    }));
    ExitCode::from(vramplan::commands::run_cli(std::env::args().collect()))
}
