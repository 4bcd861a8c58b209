//! suggest's picture: peak device memory against batch_size for the user's knobs and each knob
//! that changes the curve, the card's limit and the chosen point. Every point is simulated.
//!
//! (Moved from plan/sweep.rs: the picture is report's, so plan no longer depends on report.)

use super::sweep::{batch_grid, sweep_series, sweep_svg, SweepSeries};
use crate::budget::Budget;
use crate::config::TrainConfig;
use crate::error::Result;
use crate::plan::knobs::knobs;
use crate::plan::search::{with_batch, Origin, SuggestReport};

/// Batch sizes drawn per curve at most.
const POINTS: usize = 24;

pub fn sweep_chart(cfg: &TrainConfig, budget: &Budget, report: &SuggestReport) -> Result<String> {
    let tokens = cfg.tokens_per_step().unwrap_or(u64::MAX);
    let knobs: Vec<_> = knobs()
        .iter()
        .filter(|k| (k.applies)(cfg, budget.profile.bf16))
        .collect();
    let fits: Vec<u64> = report
        .best
        .iter()
        .chain(&report.alternatives)
        // Each knob's own candidate; not the smaller batch that keeps the tokens per step
        // exactly, whose label says so.
        .filter(|c| {
            knobs
                .iter()
                .any(|k| c.origin == Origin::Knob(k.id) && c.label == k.label)
        })
        .map(|c| c.config.batch_size)
        .collect();
    let grid = batch_grid(&fits, POINTS);
    let mut series: Vec<SweepSeries> = Vec::new();
    let mut chosen = None;
    for knob in &knobs {
        let mut v = cfg.clone();
        (knob.apply)(&mut v);
        let peak = |b: u64| -> Result<u64> {
            let run = crate::run::run(&with_batch(&v, b, tokens), Some(&budget.profile))?;
            Ok(budget.judge(&run).device.band.high)
        };
        let s = sweep_series(knob.label, &grid, &peak)?;
        if let Some(best) = &report.best {
            if best.origin == Origin::Knob(knob.id) {
                chosen = Some((knob.label.to_string(), best.config.batch_size));
            }
        }
        // A knob that does not change the curve adds nothing to the picture.
        if series.iter().any(|o| o.points == s.points)
            && chosen.as_ref().map(|c| &c.0) != Some(&s.label)
        {
            continue;
        }
        series.push(s);
    }
    Ok(sweep_svg(&series, budget.usable_bytes, chosen))
}
