//! `vramplan gpus`: the catalogue, or the cards on this machine.

use super::print_json;
use crate::budget::{catalogue, catalogue_table, live_table, nvml_from_env};
use crate::cli::GpusArgs;
use crate::error::Result;

pub fn run(args: &GpusArgs) -> Result<u8> {
    if args.live {
        let readings = nvml_from_env()?.devices()?;
        if args.json {
            print_json(&readings)?;
        } else {
            print!("{}", live_table(&readings));
        }
    } else if args.json {
        print_json(&catalogue())?;
    } else {
        print!("{}", catalogue_table(catalogue()));
    }
    Ok(0)
}
