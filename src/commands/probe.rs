//! `vramplan probe`: run the real model in candle and measure its peak.

use super::print_json;
use crate::cli::ProbeArgs;
use crate::config;
use crate::error::Result;
use crate::probe::render_text;
use crate::probe::run::{run_with, Progress};

pub fn run(args: &ProbeArgs) -> Result<u8> {
    let cfg = config::load(args.config.as_deref(), &args.overrides)?.config;
    let progress = if args.json {
        Progress::silent()
    } else {
        Progress::new()
    };
    let report = run_with(args, &cfg, None, &progress)?;
    if args.json {
        print_json(&report)?;
    } else {
        print!("{}", render_text(&report));
    }
    Ok(0)
}
