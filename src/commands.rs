//! Dispatch from the parsed command line to each front-end. Returns the exit code.

use crate::cli::{Cli, Command};
use crate::error::Result;

pub fn run(cli: &Cli) -> Result<u8> {
    match &cli.command {
        Command::Check(_) => crate::bail!("check: not wired yet"),
        Command::Suggest(_) => crate::bail!("suggest: not wired yet"),
        Command::Diagnose(_) => crate::bail!("diagnose: not wired yet"),
        Command::Probe(_) => crate::bail!("probe: not wired yet"),
        Command::Gpus(_) => crate::bail!("gpus: not wired yet"),
    }
}
