//! Thin: the process's arguments to `vramplan::commands::run_cli`, its code to the exit code.
//! 0 fits / diagnosed, 1 does not fit, 2 bad input or usage.

use std::process::ExitCode;
use vramplan::probe::meter::CountingAlloc;

/// Counts heap bytes (current and peak) so that `vramplan probe --device cpu` measures exactly;
/// two relaxed atomic adds per allocation cost nothing the other commands would notice.
#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn main() -> ExitCode {
    ExitCode::from(vramplan::commands::run_cli(std::env::args().collect()))
}
