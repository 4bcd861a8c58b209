//! `explain` and `completions`.

use super::{load_budget, load_config};
use crate::cli::{Cli, CompletionsArgs, ExplainArgs};
use crate::error::Result;
use crate::report::explain::{explanation, render};
use clap::CommandFactory;

pub fn explain(args: &ExplainArgs) -> Result<u8> {
    let cfg = load_config(&args.run)?.config;
    let budget = load_budget(&args.run)?;
    let x = explanation(&args.what, &cfg, budget.as_ref().map(|b| &b.profile))?;
    if args.run.json {
        super::print_json("explain", Some(cfg.mode), &x)?;
    } else {
        print!("{}", render(&x));
    }
    Ok(0)
}

pub fn completions(args: &CompletionsArgs) -> Result<u8> {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "vramplan", &mut std::io::stdout());
    Ok(0)
}
