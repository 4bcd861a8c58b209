//! The tables of Timelines a search is done with, kept for the next simulation. `suggest`
//! simulates a run some fifty to seventy times, on several threads; each Timeline's tables are
//! megabytes (tens at 1,000 layers), and a fresh allocation of them is new pages from the
//! system every time (the C allocator hands blocks that large back when they are freed): on
//! the seed diagnosis, page faults were a sixth of the whole command. Reused tables are pages
//! already mapped. One pool for the process: `suggest`'s worker threads are new at each
//! search, and a pool per thread would map fresh tables for every one of them.

use super::timeline::Timeline;
use std::sync::{Mutex, PoisonError};

/// Room for a GPT-2 XL-sized run (21,000 tensors, 40,000 events) up front: capacity never
/// touched is address space only, and growing the tables by reallocation copied them several
/// times in every simulation (a third of a `suggest` search's simulation time on GPT-2 XL).
const TENSORS: usize = 1 << 16;
const EVENTS: usize = 1 << 17;

/// Tables kept at most: about as many as simulations run at once (a search keeps one Timeline
/// while it simulates the next, on each of a few threads).
const KEPT: usize = 16;

/// Emptied Timelines, ready for the next simulation.
pub struct Pool(Mutex<Vec<Timeline>>);

static SPARE: Pool = Pool::new();

impl Pool {
    pub const fn new() -> Pool {
        Pool(Mutex::new(Vec::new()))
    }

    /// An empty Timeline: a handed-back one's tables if there is one, else new ones.
    pub fn take(&self) -> Timeline {
        let spare = self.0.lock().unwrap_or_else(PoisonError::into_inner).pop();
        spare.unwrap_or_else(|| Timeline {
            tensors: Vec::with_capacity(TENSORS),
            events: Vec::with_capacity(EVENTS),
            host_bytes: 0,
        })
    }

    /// Keep `tl`'s tables, emptied, for the next [`Pool::take`]. Every field is named, so a
    /// field added to Timeline must be reset here.
    pub fn give_back(&self, tl: Timeline) {
        let Timeline {
            mut tensors,
            mut events,
            host_bytes: _,
        } = tl;
        tensors.clear();
        events.clear();
        let empty = Timeline {
            tensors,
            events,
            host_bytes: 0,
        };
        let mut pool = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < KEPT {
            pool.push(empty);
        }
    }
}

impl Default for Pool {
    fn default() -> Pool {
        Pool::new()
    }
}

/// An empty Timeline from the process's pool.
pub fn take() -> Timeline {
    SPARE.take()
}

/// Hand a Timeline no longer needed back to the process's pool.
pub fn give_back(tl: Timeline) {
    SPARE.give_back(tl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TrainConfig;
    use crate::sim::Runtime;

    #[test]
    fn a_timeline_handed_back_comes_back_empty_with_its_room() {
        let cfg = TrainConfig {
            n_layer: 2,
            ..TrainConfig::default()
        };
        let rt = Runtime::pytorch(&cfg, None);
        let pool = Pool::new();
        let first = crate::run::simulate(&cfg, rt).unwrap();
        let (tensors, events) = (first.tensors.len(), first.events.len());
        let mut grown = first;
        grown.tensors.reserve(3 * TENSORS);
        let room = grown.tensors.capacity();
        pool.give_back(grown);
        let reused = pool.take();
        assert!(reused.tensors.is_empty() && reused.events.is_empty());
        assert_eq!(reused.tensors.capacity(), room);
        // An empty pool makes new tables.
        assert_eq!(pool.take().tensors.capacity(), TENSORS);
        // A second simulation, on whatever tables the process pool gives, is the same.
        let again = crate::run::simulate(&cfg, rt).unwrap();
        assert_eq!((again.tensors.len(), again.events.len()), (tensors, events));
    }

    #[test]
    fn the_pool_keeps_a_bounded_number_of_tables() {
        let pool = Pool::new();
        for _ in 0..KEPT + 5 {
            pool.give_back(Timeline::default());
        }
        assert_eq!(pool.0.lock().unwrap().len(), KEPT);
    }
}
