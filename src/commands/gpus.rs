//! `vramplan gpus`: the catalogue, or the cards on this machine.

use super::print_json;
use crate::budget::{catalogue, catalogue_table, live_table, nvml_from_env};
use crate::cli::GpusArgs;
use crate::error::Result;

/// The JSON's body: the list under one key, so the output is an object like every command's.
#[derive(serde::Serialize)]
struct Gpus<'a, T> {
    gpus: &'a [T],
}

pub fn run(args: &GpusArgs) -> Result<u8> {
    if args.live {
        let readings = nvml_from_env()?.devices()?;
        if args.json {
            print_json("gpus", None, &Gpus { gpus: &readings })?;
        } else {
            print!("{}", live_table(&readings));
        }
    } else if args.json {
        print_json("gpus", None, &Gpus { gpus: catalogue() })?;
    } else {
        print!("{}", catalogue_table(catalogue()));
    }
    Ok(0)
}
