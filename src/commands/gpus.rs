//! `vramplan gpus`: the catalogue, or the cards on this machine. Exit 0 when something is
//! listed, 1 when `--live` finds the driver but no card, 2 for bad input or no driver.

use super::print_json;
use crate::budget::{catalogue, catalogue_table, live_table, nvml_from_env, NO_CARD_MESSAGE};
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
        } else if !readings.is_empty() {
            print!("{}", live_table(&readings));
        }
        if readings.is_empty() {
            // The driver answered and lists no card (a container without --gpus, all cards
            // hidden by CUDA_VISIBLE_DEVICES/NVIDIA_VISIBLE_DEVICES): say so, exit 1.
            eprintln!("vramplan: {NO_CARD_MESSAGE}");
            return Ok(1);
        }
    } else if args.json {
        print_json("gpus", None, &Gpus { gpus: catalogue() })?;
    } else {
        print!("{}", catalogue_table(catalogue()));
    }
    Ok(0)
}
