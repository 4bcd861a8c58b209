//! Lists tensors still alive at the end of a simulated run, other than parameters, optimizer
//! state and workspaces: what the training loop still references, or a leak in an op's model.
//!
//!     cargo run --example leaks -- [--key=value ...]
use vramplan::config::{apply_overrides, TrainConfig};
use vramplan::run::simulate;
use vramplan::sim::{Category, Runtime};

fn main() {
    let overrides: Vec<String> = std::env::args().skip(1).collect();
    let mut cfg = TrainConfig {
        compile: false,
        ..TrainConfig::default()
    };
    apply_overrides(&mut cfg, &overrides).expect("overrides");
    let tl = simulate(&cfg, Runtime::pytorch(&cfg, None)).expect("simulate");
    let last = tl.events.len() - 1;
    for t in tl.live_after(last) {
        let r = &tl.tensors[t as usize];
        if !matches!(
            r.category,
            Category::Parameters | Category::Optimizer | Category::Workspace
        ) {
            println!(
                "{} {} {} {} {:?}",
                r.name,
                r.shape,
                r.dtype.short(),
                r.bytes,
                r.phase
            );
        }
    }
}
