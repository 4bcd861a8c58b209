//! `vramplan check`: simulate the run and judge it against the card.

use super::{load_budget, load_config, print_json, use_color, write_file};
use crate::cli::CheckArgs;
use crate::error::Result;
use crate::report::check::build_from;
use crate::report::svg::timeline_svg;
use crate::report::text::{render, verdict, Style};

pub fn run(args: &CheckArgs) -> Result<u8> {
    let loaded = load_config(&args.run)?;
    let budget = load_budget(&args.run)?;
    let run = crate::run::run(&loaded.config, budget.as_ref().map(|b| &b.profile))?;
    let mut report = build_from(&loaded.config, &run, budget.as_ref())?;
    let mut warnings = loaded.warnings.clone();
    if let Some(b) = &budget {
        warnings.extend(b.warnings.iter().cloned());
        if let Some(others) = &b.others {
            warnings.push(others.clone());
        }
    }
    warnings.append(&mut report.warnings);
    report.warnings = warnings;
    if let Some(path) = &args.svg {
        let svg = timeline_svg(
            &run.timeline,
            &run.profile,
            report.gpu.as_ref().map(|g| g.usable_bytes),
            report.context_bytes,
        );
        write_file(path, &svg)?;
    }
    let code = match report.fits {
        Some(false) => 1,
        _ => 0,
    };
    let style = Style {
        exact_bytes: args.bytes,
        color: use_color(),
    };
    if args.run.json {
        print_json("check", Some(report.config.mode), &report)?;
    } else if args.quiet {
        if code != 0 {
            eprintln!("vramplan: {}", verdict(&report, style));
        }
    } else {
        print!("{}", render(&report, style));
    }
    Ok(code)
}
