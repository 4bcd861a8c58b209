//! Peaks read off a Timeline by replaying it through the caching-allocator model.

use super::allocator::{round_size, BlockId, CachingAllocator};
use super::timeline::{EventKind, Phase, Timeline};

/// One phase's figures. A phase that happens several times (forward in every micro-step)
/// reports its largest peak; `end_allocated` is the value when the phase last ended.
#[derive(Debug, Clone, Copy, Default)]
pub struct PhasePeak {
    /// Block-accounted, as torch.cuda.max_memory_allocated() reports.
    pub peak_allocated: u64,
    pub end_allocated: u64,
    /// Caching allocator segments, as torch.cuda.max_memory_reserved() reports.
    pub peak_reserved: u64,
    /// Live storage bytes, each rounded up to 512 (no block accounting).
    pub peak_live: u64,
    /// Event index of this phase's allocated peak.
    pub peak_event: usize,
    pub seen: bool,
}

#[derive(Debug, Clone)]
pub struct MemoryProfile {
    pub phases: [PhasePeak; Phase::ALL.len()],
    /// The run's largest allocated figure and where it happened.
    pub peak_allocated: u64,
    pub peak_event: usize,
    pub peak_phase: Phase,
    /// max_memory_reserved() over init, eval and the training steps.
    pub peak_reserved: u64,
    /// Reserved after the later eval too.
    pub final_reserved: u64,
    /// The allocator block each tensor occupied (0 for empty tensors).
    pub block_bytes: Vec<u64>,
    /// torch.cuda.memory_allocated() right after each event.
    pub allocated_after: Vec<u64>,
    /// torch.cuda.memory_reserved() right after each event.
    pub reserved_after: Vec<u64>,
}

impl MemoryProfile {
    pub fn phase(&self, p: Phase) -> &PhasePeak {
        &self.phases[p.index()]
    }
}

pub fn replay(tl: &Timeline, expandable_segments: bool) -> MemoryProfile {
    replay_within(tl, expandable_segments, u64::MAX).expect("no reserved figure is above u64::MAX")
}

/// The replay, given up (None) as soon as reserved memory passes `reserved_limit`. Segments
/// are never returned (sim/allocator.rs), so reserved only grows: the run's final and peak
/// reserved figures are then above the limit too, whatever the rest of the Timeline does.
/// `suggest` asks only whether a batch fits, and most batches that do not pass the limit well
/// before their last event.
pub fn replay_within(
    tl: &Timeline,
    expandable_segments: bool,
    reserved_limit: u64,
) -> Option<MemoryProfile> {
    let mut alloc = CachingAllocator::new(expandable_segments);
    let mut block: Vec<Option<BlockId>> = vec![None; tl.tensors.len()];
    let mut block_bytes = vec![0u64; tl.tensors.len()];
    let mut phases = [PhasePeak::default(); Phase::ALL.len()];
    let mut live: u64 = 0;
    let (mut peak, mut peak_event, mut peak_phase) = (0u64, 0usize, Phase::Init);
    let mut peak_reserved = 0u64;
    let mut allocated_after = Vec::with_capacity(tl.events.len());
    let mut reserved_after = Vec::with_capacity(tl.events.len());
    for (i, ev) in tl.events.iter().enumerate() {
        let t = ev.tensor as usize;
        let bytes = ev.bytes;
        match ev.kind {
            EventKind::Alloc => {
                block[t] = alloc.malloc(bytes);
                if let Some(b) = block[t] {
                    block_bytes[t] = alloc.block_size(b);
                }
                if bytes > 0 {
                    live += round_size(bytes);
                }
            }
            EventKind::Free => {
                if let Some(b) = block[t].take() {
                    alloc.free(b);
                    live -= round_size(bytes);
                }
            }
        }
        let p = &mut phases[ev.phase.index()];
        p.seen = true;
        if alloc.allocated > p.peak_allocated {
            p.peak_allocated = alloc.allocated;
            p.peak_event = i;
        }
        p.peak_reserved = p.peak_reserved.max(alloc.reserved);
        p.peak_live = p.peak_live.max(live);
        p.end_allocated = alloc.allocated;
        if alloc.allocated > peak {
            peak = alloc.allocated;
            peak_event = i;
            peak_phase = ev.phase;
        }
        if ev.phase != Phase::EvalAfterStep {
            peak_reserved = peak_reserved.max(alloc.reserved);
        }
        allocated_after.push(alloc.allocated);
        reserved_after.push(alloc.reserved);
        if alloc.reserved > reserved_limit {
            return None;
        }
    }
    Some(MemoryProfile {
        phases,
        peak_allocated: peak,
        peak_event,
        peak_phase,
        peak_reserved,
        final_reserved: alloc.reserved,
        block_bytes,
        allocated_after,
        reserved_after,
    })
}

/// The tensors alive just after event `at`, with the allocator block each occupies (what
/// max_memory_allocated counts for it). Their blocks add up to the allocated figure there.
pub fn live_blocks_at(tl: &Timeline, profile: &MemoryProfile, at: usize) -> Vec<(u32, u64)> {
    let mut alive = vec![false; tl.tensors.len()];
    for ev in tl.events.iter().take(at.saturating_add(1)) {
        alive[ev.tensor as usize] = ev.kind == EventKind::Alloc;
    }
    alive
        .iter()
        .enumerate()
        .filter(|(t, &a)| a && profile.block_bytes[*t] > 0)
        .map(|(t, _)| (t as u32, profile.block_bytes[t]))
        .collect()
}

/// Peak of live storage bytes (each rounded to 512, no block accounting): a lower bound on
/// allocated and reserved that needs no allocator replay. `suggest` bounds its search with it.
pub fn live_peak(tl: &Timeline) -> u64 {
    let (mut live, mut peak) = (0u64, 0u64);
    for ev in &tl.events {
        let bytes = ev.bytes;
        if bytes == 0 {
            continue;
        }
        match ev.kind {
            EventKind::Alloc => {
                live += round_size(bytes);
                peak = peak.max(live);
            }
            EventKind::Free => live -= round_size(bytes),
        }
    }
    peak
}

/// The largest live bytes of tensors in `categories` at any point of the run (e.g. the model
/// states: parameters, gradients and optimizer state together).
pub fn category_peak(tl: &Timeline, categories: &[super::Category]) -> u64 {
    let (mut live, mut peak) = (0u64, 0u64);
    for ev in &tl.events {
        let t = &tl.tensors[ev.tensor as usize];
        if !categories.contains(&t.category) {
            continue;
        }
        match ev.kind {
            EventKind::Alloc => {
                live += t.bytes;
                peak = peak.max(live);
            }
            EventKind::Free => live -= t.bytes,
        }
    }
    peak
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TrainConfig;
    use crate::sim::engine::Engine;
    use crate::sim::{Category, DType, Name, Runtime, Shape};

    const MIB: u64 = 1 << 20;

    /// 12 MiB allocated and freed: a segment of 12 MiB (requests of 10 MiB or more get one of
    /// their own size, rounded to 2 MiB). Then 16 MiB, which the free 12 MiB block cannot hold:
    /// a second segment, 16 MiB.
    fn two_segments() -> Timeline {
        let mut e = Engine::new(Runtime::pytorch(&TrainConfig::default(), None));
        let f32 = |mib: u64| Shape::new(&[mib * MIB / 4]);
        let name = Name::top("t", "");
        let a = e.alloc(name, f32(12), DType::F32, Category::Other);
        e.release(a);
        let b = e.alloc(name, f32(16), DType::F32, Category::Other);
        e.release(b);
        e.tl
    }

    #[test]
    fn a_replay_stops_only_once_reserved_passes_the_limit() {
        let tl = two_segments();
        let full = replay(&tl, false);
        // 12 MiB: a 12 MiB segment; 16 MiB does not fit in it, a 16 MiB segment more.
        assert_eq!(full.final_reserved, 28 * MIB);
        assert!(replay_within(&tl, false, 28 * MIB - 1).is_none());
        assert!(replay_within(&tl, false, 12 * MIB).is_none());
        let at_limit = replay_within(&tl, false, 28 * MIB).expect("never above 28 MiB");
        assert_eq!(at_limit.final_reserved, full.final_reserved);
        assert_eq!(at_limit.reserved_after, full.reserved_after);
        assert_eq!(at_limit.allocated_after, full.allocated_after);
    }
}
