//! Dumps the simulated Timeline as CSV, one row per event, in the reference traces' columns
//! (shared/reference/traces/*.csv), to compare the simulator with them event by event.
//!
//!     cargo run --example trace -- CONFIG [--key=value ...] [--arch sm90]

use vramplan::calibration::reference_runtime;
use vramplan::run::simulate;
use vramplan::sim::allocator::{round_size, CachingAllocator};
use vramplan::sim::timeline::EventKind;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut major = 9;
    if let Some(i) = args.iter().position(|a| a == "--arch") {
        major = args
            .get(i + 1)
            .and_then(|a| a.get(2..3))
            .and_then(|d| d.parse().ok())
            .unwrap_or(9);
        args.drain(i..(i + 2).min(args.len()));
    }
    let overrides: Vec<String> = args
        .iter()
        .filter(|a| a.starts_with("--"))
        .cloned()
        .collect();
    let mut cfg = vramplan::config::TrainConfig::default();
    for o in &overrides {
        let (k, v) = o[2..].split_once('=').expect("--key=value");
        let v = v.trim_matches('\'');
        match k {
            "n_layer" => cfg.n_layer = v.parse().unwrap(),
            "n_head" => cfg.n_head = v.parse().unwrap(),
            "n_embd" => cfg.n_embd = v.parse().unwrap(),
            "block_size" => cfg.block_size = v.parse().unwrap(),
            "batch_size" => cfg.batch_size = v.parse().unwrap(),
            "vocab_size" => cfg.vocab_size = v.parse().unwrap(),
            "gradient_accumulation_steps" => cfg.gradient_accumulation_steps = v.parse().unwrap(),
            "dropout" => cfg.dropout = v.parse().unwrap(),
            "bias" => cfg.bias = v == "True",
            "flash" => cfg.flash = v == "True",
            "dtype" => {
                cfg.dtype = match v {
                    "float32" => vramplan::config::Precision::Float32,
                    _ => vramplan::config::Precision::BFloat16,
                }
            }
            _ => panic!("unknown key {k}"),
        }
    }
    let tl = simulate(&cfg, reference_runtime(&cfg, major)).expect("simulate");
    let mut alloc = CachingAllocator::new(false);
    let mut blocks = vec![None; tl.tensors.len()];
    let mut live = 0u64;
    println!("id,phase,event,name,shape,dtype,bytes,live_rounded_after,sim_allocated_after");
    for ev in &tl.events {
        let t = &tl.tensors[ev.tensor as usize];
        let kind = match ev.kind {
            EventKind::Alloc => {
                blocks[ev.tensor as usize] = alloc.malloc(t.bytes);
                if t.bytes > 0 {
                    live += round_size(t.bytes);
                }
                "alloc"
            }
            EventKind::Free => {
                if let Some(b) = blocks[ev.tensor as usize].take() {
                    alloc.free(b);
                    live -= round_size(t.bytes);
                }
                "free"
            }
        };
        let shape: Vec<String> = t.shape.dims().iter().map(|d| d.to_string()).collect();
        println!(
            "{},{},{},{},{},{},{},{},{}",
            ev.tensor,
            ev.phase.key(),
            kind,
            t.name,
            shape.join("x"),
            t.dtype.short(),
            t.bytes,
            live,
            alloc.allocated
        );
    }
}
