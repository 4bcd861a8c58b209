//! What the searches have simulated, kept so that a config is simulated once: verdicts,
//! configs known not to fit, and lower bounds. Shared by the searches `suggest` runs side by
//! side on several threads (`parallel`), so the tables are behind locks; a cache only saves
//! work: a value taken from it is the one the simulation would give.

use crate::budget::Budget;
use crate::config::TrainConfig;
use crate::error::Result;
use crate::run::{run_timeline_within, Verdict};
use crate::sim::replay::live_peak;
use crate::sim::{spare, Timeline};
use std::sync::{Mutex, MutexGuard, PoisonError};

pub struct Ctx<'a> {
    pub(super) budget: &'a Budget,
    /// Verdicts already simulated, by config: the searches meet the same configs again (the
    /// baseline is one of the batches searched), and a config is simulated once.
    verdicts: Mutex<Vec<(TrainConfig, Verdict)>>,
    /// Configs known not to fit without a verdict: their replay stopped where reserved memory
    /// passed what can fit (`if_fits`).
    too_large: Mutex<Vec<TrainConfig>>,
    /// Lower bounds already taken, by config with `alloc_conf` cleared: the Timeline does not
    /// depend on the allocator's configuration, so the expandable-segments knob's search
    /// repeats the plain one's bounds without simulating them.
    bounds: Mutex<Vec<(TrainConfig, Bound)>>,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(budget: &'a Budget) -> Ctx<'a> {
        Ctx {
            budget,
            verdicts: Mutex::new(Vec::new()),
            too_large: Mutex::new(Vec::new()),
            bounds: Mutex::new(Vec::new()),
        }
    }

    /// The verdict on `cfg` on this card.
    pub(super) fn peak(&self, cfg: &TrainConfig) -> Result<Verdict> {
        if let Some(v) = self.known_verdict(cfg) {
            return Ok(v);
        }
        let tl = crate::run::timeline(cfg, Some(&self.budget.profile))?;
        Ok(self
            .judge_timeline(cfg, tl, u64::MAX)
            .expect("no reserved figure is above u64::MAX"))
    }

    /// The verdict on `cfg` if it fits, None if it does not: the replay stops where reserved
    /// memory passes what can fit. `tl`: its Timeline, when it was simulated already.
    pub(super) fn if_fits(
        &self,
        cfg: &TrainConfig,
        tl: Option<Timeline>,
    ) -> Result<Option<Verdict>> {
        if let Some(v) = self.known_verdict(cfg) {
            return Ok(v.fits.then_some(v));
        }
        if locked(&self.too_large).contains(cfg) {
            return Ok(None);
        }
        let tl = match tl {
            Some(tl) => tl,
            None => crate::run::timeline(cfg, Some(&self.budget.profile))?,
        };
        let v = self.judge_timeline(cfg, tl, self.budget.reserved_limit());
        Ok(v.filter(|v| v.fits))
    }

    fn known_verdict(&self, cfg: &TrainConfig) -> Option<Verdict> {
        let verdicts = locked(&self.verdicts);
        verdicts.iter().find(|(c, _)| c == cfg).map(|&(_, v)| v)
    }

    /// The verdict on `cfg` from its Timeline, kept for the next time; None (and `cfg` kept as
    /// too large) when reserved memory passed `reserved_limit` and the replay stopped there.
    fn judge_timeline(
        &self,
        cfg: &TrainConfig,
        tl: Timeline,
        reserved_limit: u64,
    ) -> Option<Verdict> {
        let profile = Some(&self.budget.profile);
        match run_timeline_within(cfg, profile, tl, reserved_limit) {
            Ok(run) => {
                let v = self.budget.judge(&run);
                locked(&self.verdicts).push((cfg.clone(), v));
                spare::give_back(run.timeline);
                Some(v)
            }
            Err(tl) => {
                locked(&self.too_large).push(cfg.clone());
                spare::give_back(tl);
                None
            }
        }
    }

    /// Whether live bytes + context fit: no larger than the device peak, so a config that
    /// fails this fails the verdict too. With the Timeline when it was simulated here (None:
    /// the bound was known).
    pub(super) fn lower_bound(&self, cfg: &TrainConfig) -> Result<(Bound, Option<Timeline>)> {
        let key = TrainConfig {
            alloc_conf: None,
            ..cfg.clone()
        };
        if let Some(&(_, bound)) = locked(&self.bounds).iter().find(|(c, _)| *c == key) {
            return Ok((bound, None));
        }
        let tl = crate::run::timeline(cfg, Some(&self.budget.profile))?;
        let live = live_peak(&tl);
        let bound = Bound {
            live,
            fits: self.budget.live_within(live),
        };
        locked(&self.bounds).push((key, bound));
        Ok((bound, Some(tl)))
    }
}

/// A lower bound: the run's largest live bytes, and whether they fit with the context.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bound {
    pub(super) live: u64,
    pub(super) fits: bool,
}

/// A table's lock. A search that panicked while holding it left whole entries only (each is
/// pushed at once), so the table is still right and the panic is reported where it happened.
fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
