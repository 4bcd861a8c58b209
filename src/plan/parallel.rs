//! The searches of one `suggest` are independent (one per set of knobs), so they run side by
//! side, one thread per core. Results come back in the order of the inputs, and each search
//! gives what it gives alone: the threads share only caches of simulated values (`ctx`).

use crate::error::Result;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// `f` over `items` on up to `workers` threads (this one among them); the results in the
/// order of `items`, or the error of the first item that failed.
pub fn map<I: Sync, O: Send>(
    items: &[I],
    workers: usize,
    f: impl Fn(&I) -> Result<O> + Sync,
) -> Result<Vec<O>> {
    let workers = workers.clamp(1, items.len().max(1));
    if workers == 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<Result<O>>>> = items.iter().map(|_| Mutex::new(None)).collect();
    let work = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(item) = items.get(i) else { break };
        let out = f(item);
        *slots[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(out);
    };
    std::thread::scope(|s| {
        for _ in 1..workers {
            // A thread the system refuses is one worker fewer: this thread takes what is left.
            let _ = std::thread::Builder::new().spawn_scoped(s, work);
        }
        work();
    });
    slots
        .into_iter()
        .map(|m| {
            m.into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .expect("every item was taken by a worker")
        })
        .collect()
}

/// One worker per core the system gives this process.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::map;
    use crate::error::Error;

    #[test]
    fn results_in_input_order_whatever_the_workers() {
        let items: Vec<u64> = (0..37).collect();
        for workers in [1, 2, 3, 8, 100] {
            let out = map(&items, workers, |&x| Ok(x * x)).unwrap();
            assert_eq!(out, items.iter().map(|x| x * x).collect::<Vec<_>>());
        }
    }

    #[test]
    fn the_first_failing_item_is_the_error() {
        let items: Vec<u64> = (0..20).collect();
        let r = map(&items, 4, |&x| {
            if x == 5 || x == 11 {
                Err(Error::new(format!("item {x}")))
            } else {
                Ok(x)
            }
        });
        assert_eq!(r.unwrap_err().to_string(), "item 5");
    }
}
