//! The largest micro-batch of one config that fits. Live bytes grow with the batch and are a
//! lower bound on reserved memory, so they bound the search from above without an allocator
//! replay; every batch under that bound is then checked from the top with the full replay —
//! reserved is not monotone in the batch (best-fit splitting makes it jump), so the first that
//! fits is the maximum: every larger batch either fails the bound or was simulated and failed.

use super::ctx::{Bound, Ctx};
use crate::config::TrainConfig;
use crate::error::Result;
use crate::run::Verdict;
use crate::sim::{spare, Timeline};

/// The largest micro-batch considered.
pub const MAX_BATCH: u64 = 1 << 14;

/// `cfg` at micro-batch `b`, with the smallest accumulation that keeps `tokens` per step.
pub fn with_batch(cfg: &TrainConfig, b: u64, tokens: u64) -> TrainConfig {
    let mut c = cfg.clone();
    c.batch_size = b;
    let per_micro = b.saturating_mul(cfg.block_size).max(1);
    c.gradient_accumulation_steps = tokens.div_ceil(per_micro).max(1);
    c
}

/// The largest batch for which `make(b)` fits, and its peak; None when batch 1 does not.
/// `cap` bounds the batch (beyond the batch that reaches the tokens per step in one micro-step,
/// a larger one only changes the optimisation).
pub fn max_batch(
    ctx: &Ctx,
    make: &dyn Fn(u64) -> TrainConfig,
    cap: u64,
) -> Result<Option<(u64, Verdict)>> {
    let cap = cap.clamp(1, MAX_BATCH);
    // The Timeline of the last batch whose bound fitted: every probe above `lo` that fits
    // becomes `lo`, so this is the search's `lo` when it ends, where the full check starts (it
    // needs only the allocator replay then).
    let mut top: Option<(u64, Timeline)> = None;
    let mut bound = |b: u64| -> Result<Bound> {
        let (bound, tl) = ctx.lower_bound(&make(b))?;
        let Some(tl) = tl else { return Ok(bound) };
        if bound.fits {
            if let Some((_, old)) = top.replace((b, tl)) {
                spare::give_back(old);
            }
        } else {
            spare::give_back(tl);
        }
        Ok(bound)
    };
    let first = bound(1)?;
    if !first.fits {
        return Ok(None);
    }
    let lo = largest_fitting_bound(&mut bound, ctx.budget.reserved_limit(), first.live, cap)?;
    first_that_fits(ctx, make, lo, top)
}

/// Rounds that look where live bytes are predicted to cross the limit before the search
/// falls back to halving (or, with no failing batch known, doubling) the interval.
const PREDICTED_ROUNDS: u32 = 4;

/// The largest b ≤ cap whose bound fits, given that b = 1 fits with `live_at_one` bytes.
///
/// Live bytes grow about linearly in the batch (activations, logits), so each round looks
/// where the line through two known points crosses `limit` — the smallest batch known to fail
/// and the largest known to fit, or with none known to fail, batch 1 and the largest that
/// fits — and at one batch above that. The prediction only decides where to look: the answer
/// is the largest b whose bound fits, as the bounds say, with `lo` always fitting and `hi`
/// always failing (cap + 1 where none is known to).
fn largest_fitting_bound(
    bound: &mut dyn FnMut(u64) -> Result<Bound>,
    limit: u64,
    live_at_one: u64,
    cap: u64,
) -> Result<u64> {
    let mut lo = (1, live_at_one);
    let mut hi: Option<(u64, u64)> = None;
    for round in 0.. {
        let hi_b = hi.map_or(cap + 1, |(b, _)| b);
        if hi_b - lo.0 <= 1 {
            break;
        }
        // A predicted crossing is probed with the batch above it: where the prediction is
        // right, that pair ends the search.
        let (guess, pair) = match (round < PREDICTED_ROUNDS, hi) {
            (true, Some(h)) => (crossing(lo, h, limit), true),
            (true, None) if lo.0 > 1 => (crossing((1, live_at_one), lo, limit), true),
            (true, None) => (lo.0 + 1, false),
            (false, Some(_)) => (lo.0 + (hi_b - lo.0) / 2, false),
            (false, None) => (lo.0.saturating_mul(2), false),
        };
        let guess = guess.clamp(lo.0 + 1, hi_b - 1);
        for b in [guess, guess + 1].into_iter().take(1 + usize::from(pair)) {
            if b >= hi.map_or(cap + 1, |(h, _)| h) {
                break;
            }
            let r = bound(b)?;
            if !r.fits {
                hi = Some((b, r.live));
                break;
            }
            lo = (b, r.live);
        }
    }
    Ok(lo.0)
}

/// The largest batch at which the line through points `a` and `b` (batch, live bytes) is at
/// most `limit`; u64::MAX where the line does not rise. A guess: the caller clamps it.
fn crossing(a: (u64, u64), b: (u64, u64), limit: u64) -> u64 {
    let ((b0, l0), (b1, l1)) = (a.min(b), a.max(b));
    if l1 <= l0 || b1 == b0 {
        return u64::MAX;
    }
    let per_batch = (l1 - l0) as f64 / (b1 - b0) as f64;
    let room = limit as f64 - l0 as f64;
    let at = b0 as f64 + (room / per_batch).floor();
    if at <= 0.0 {
        0
    } else {
        at.min(u64::MAX as f64) as u64
    }
}

/// The full simulation from the bound down: the first batch that fits, replaying the
/// Timeline the search kept for `lo` where it has one.
fn first_that_fits(
    ctx: &Ctx,
    make: &dyn Fn(u64) -> TrainConfig,
    lo: u64,
    mut top: Option<(u64, Timeline)>,
) -> Result<Option<(u64, Verdict)>> {
    for b in (1..=lo).rev() {
        let tl = match top.take() {
            Some((at, tl)) if at == b => Some(tl),
            Some((_, tl)) => {
                spare::give_back(tl);
                None
            }
            None => None,
        };
        if let Some(p) = ctx.if_fits(&make(b), tl)? {
            return Ok(Some((b, p)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::{largest_fitting_bound, Bound, MAX_BATCH};

    /// The search on a made-up curve of live bytes: its answer and the batches it probed.
    fn search(live: &dyn Fn(u64) -> u64, limit: u64, cap: u64) -> (u64, Vec<u64>) {
        let mut probes = Vec::new();
        let mut bound = |b: u64| {
            probes.push(b);
            Ok(Bound {
                live: live(b),
                fits: live(b) <= limit,
            })
        };
        let lo = largest_fitting_bound(&mut bound, limit, live(1), cap).unwrap();
        (lo, probes)
    }

    /// Live bytes that grow with the batch: linear, convex, flat, in steps, concave.
    fn curve(kind: u8, at_zero: u64, slope: u64) -> impl Fn(u64) -> u64 {
        move |b: u64| match kind {
            0 => at_zero + slope * b,
            1 => at_zero + slope * b * b / 64,
            2 => at_zero,
            3 => at_zero + slope * (b / 7) * 7,
            _ => at_zero + slope * (b as f64).sqrt() as u64,
        }
    }

    proptest::proptest! {
        /// The answer is the largest batch whose bound fits, as a scan from the top finds it;
        /// no batch is probed twice, none above the cap, none at or above one known to fail.
        #[test]
        fn finds_the_largest_fitting_batch(
            kind in 0u8..5,
            at_zero in 1u64..1 << 36,
            slope in 0u64..1 << 26,
            cap in 1u64..=MAX_BATCH,
            room in 0u64..1 << 40,
        ) {
            let live = curve(kind, at_zero, slope);
            let limit = live(1) + room;
            let (got, probes) = search(&live, limit, cap);
            let want = (1..=cap).rev().find(|&b| live(b) <= limit).unwrap();
            proptest::prop_assert_eq!(got, want);
            let mut failed = u64::MAX;
            for (i, &b) in probes.iter().enumerate() {
                proptest::prop_assert!((2..=cap).contains(&b) && b < failed, "{:?}", probes);
                proptest::prop_assert!(!probes[..i].contains(&b), "{:?}", probes);
                if live(b) > limit {
                    failed = failed.min(b);
                }
            }
            // Where live bytes are a line, the line's crossing ends it: 2, then the pair.
            if kind == 0 {
                proptest::prop_assert!(probes.len() <= 3, "{:?}", probes);
            }
        }
    }

    #[test]
    fn a_cap_of_one_probes_nothing() {
        let (got, probes) = search(&|b| 10 * b, 1_000, 1);
        assert_eq!((got, probes.len()), (1, 0));
    }
}
