//! The one verdict: a run's device peak against a budget, with each figure's provenance and
//! band (DESIGN.md, "Honest numbers"). The verdict is taken at the pessimistic end of the band.

use super::Run;
use crate::budget::Budget;
use crate::sim::runtime::RuntimeKind;
use crate::sim::Phase;
use serde::Serialize;

/// Where a figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provenance {
    /// Bytes of tensors whose shapes and dtypes the mechanism fixes.
    Exact,
    /// The allocator's reserved memory: depends on allocation order, can jump by a segment.
    Modelled,
    /// A constant measured on real cards (the CUDA context).
    Calibrated,
    /// Rules never checked on a real GPU (torch.compile's partition and fusion).
    Unmeasured,
}

/// The range a figure may take; `low <= high`. A zero-width band is a figure with nothing
/// known to widen it (not a claim of certainty: the provenance says how it was obtained).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Band {
    pub low: u64,
    pub high: u64,
}

/// One figure of the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Figure {
    /// The simulator's figure; the verdict reads `band.high`.
    pub bytes: u64,
    pub provenance: Provenance,
    pub band: Band,
}

impl Figure {
    fn point(bytes: u64, provenance: Provenance) -> Figure {
        Figure {
            bytes,
            provenance,
            band: Band {
                low: bytes,
                high: bytes,
            },
        }
    }
}

/// A run judged against a budget.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Verdict {
    /// The device peak's pessimistic end fits in the usable bytes.
    pub fits: bool,
    /// usable − the device peak's pessimistic end; negative when the run does not fit.
    pub headroom_bytes: i64,
    /// The first phase whose device peak goes over the usable bytes.
    pub first_overflow: Option<Phase>,
    /// torch.cuda.max_memory_allocated().
    pub allocated: Figure,
    /// torch.cuda.max_memory_reserved(), every phase included.
    pub reserved: Figure,
    /// The process's memory outside the allocator (CUDA context, kernels).
    pub context: Figure,
    /// reserved + context: what nvidia-smi shows, what the card must hold.
    pub device: Figure,
}

impl Run {
    /// The figures, without a card to judge them against. `context_bytes` is the card's
    /// (or the default) CUDA context.
    pub fn figures(&self, context_bytes: u64) -> (Figure, Figure, Figure, Figure) {
        let p = &self.profile;
        // Rules derived from PyTorch's source but never measured on a GPU are unmeasured;
        // eager's tensor bytes are fixed by shapes and dtypes.
        let tensors = if self.runtime.kind == RuntimeKind::PytorchCompile {
            Provenance::Unmeasured
        } else {
            Provenance::Exact
        };
        let allocated = Figure::point(p.peak_allocated, tensors);
        // Reserved never falls (no empty_cache: sim/allocator.rs), so the reserved bytes after
        // the last event are the peak over every phase, the later eval included. Segments hold
        // every allocated block: the allocated peak is the band's floor.
        let reserved = Figure {
            bytes: p.final_reserved,
            provenance: if tensors == Provenance::Unmeasured {
                tensors
            } else {
                Provenance::Modelled
            },
            band: Band {
                low: p.peak_allocated.min(p.final_reserved),
                high: p.final_reserved,
            },
        };
        let context = Figure::point(context_bytes, Provenance::Calibrated);
        let device = Figure {
            bytes: reserved.bytes.saturating_add(context_bytes),
            provenance: reserved.provenance,
            band: Band {
                low: reserved.band.low.saturating_add(context.band.low),
                high: reserved.band.high.saturating_add(context.band.high),
            },
        };
        (allocated, reserved, context, device)
    }

    /// The device peak's pessimistic end: reserved + context.
    pub fn device_peak_bytes(&self, context_bytes: u64) -> u64 {
        self.figures(context_bytes).3.band.high
    }
}

impl Budget {
    /// The most reserved memory a run that fits can reach: [`judge`](Budget::judge) reads
    /// reserved + context against the usable bytes, so a run whose reserved memory ever
    /// passes this does not fit (reserved never falls).
    pub fn reserved_limit(&self) -> u64 {
        self.usable_bytes.saturating_sub(self.profile.context_bytes)
    }

    /// Whether a run whose live bytes peak at `live` can fit: live bytes are a lower bound
    /// on reserved memory, so a run above [`reserved_limit`](Budget::reserved_limit) here
    /// does not fit whatever the allocator does (suggest's lower bound).
    pub fn live_within(&self, live: u64) -> bool {
        live <= self.reserved_limit()
    }

    /// The verdict on `run` for this card: its usable bytes against the pessimistic end of
    /// the run's device peak, with this card's CUDA context. The one place a verdict is made.
    pub fn judge(&self, run: &Run) -> Verdict {
        let context_bytes = self.profile.context_bytes;
        let (allocated, reserved, context, device) = run.figures(context_bytes);
        let first_overflow = Phase::ALL.into_iter().find(|&ph| {
            let s = run.profile.phase(ph);
            s.seen && !self.fits(s.peak_reserved.saturating_add(context_bytes))
        });
        Verdict {
            fits: self.fits(device.band.high),
            headroom_bytes: self.headroom_bytes(device.band.high),
            first_overflow,
            allocated,
            reserved,
            context,
            device,
        }
    }
}
