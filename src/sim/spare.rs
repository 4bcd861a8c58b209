//! The tables of a Timeline a search is done with, kept for the next simulation on the same
//! thread. `suggest` simulates a run some fifty to seventy times; each Timeline's tables are
//! megabytes, and a fresh allocation of them is new pages from the system every time (the
//! C allocator hands blocks that large back when they are freed): on the seed diagnosis, page
//! faults were a sixth of the whole command. Reused tables are pages already mapped.

use super::timeline::Timeline;
use std::cell::RefCell;

thread_local! {
    static SPARE: RefCell<Option<Timeline>> = const { RefCell::new(None) };
}

/// Room for a GPT-2 XL-sized run (21,000 tensors, 40,000 events) up front: capacity never
/// touched is address space only, and growing the tables by reallocation copied them several
/// times in every simulation (a third of a `suggest` search's simulation time on GPT-2 XL).
const TENSORS: usize = 1 << 16;
const EVENTS: usize = 1 << 17;

/// An empty Timeline: the spare one's tables if one was handed back, else new ones.
pub fn take() -> Timeline {
    SPARE
        .with(|s| s.borrow_mut().take())
        .unwrap_or_else(|| Timeline {
            tensors: Vec::with_capacity(TENSORS),
            events: Vec::with_capacity(EVENTS),
            host_bytes: 0,
        })
}

/// Hand back a Timeline no longer needed; its tables serve the next [`take`]. Every field is
/// named, so a field added to Timeline must be reset here.
pub fn give_back(tl: Timeline) {
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
    SPARE.with(|s| *s.borrow_mut() = Some(empty));
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
        let first = crate::run::simulate(&cfg, rt).unwrap();
        let (tensors, events) = (first.tensors.len(), first.events.len());
        let room = first.tensors.capacity();
        give_back(first);
        let reused = take();
        assert!(reused.tensors.is_empty() && reused.events.is_empty());
        assert_eq!(reused.tensors.capacity(), room);
        give_back(reused);
        // A simulation on reused tables is the same simulation.
        let again = crate::run::simulate(&cfg, rt).unwrap();
        assert_eq!((again.tensors.len(), again.events.len()), (tensors, events));
    }
}
