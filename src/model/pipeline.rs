//! How vLLM splits a model's layers over pipeline-parallel ranks (vLLM 0.10.1,
//! vllm/distributed/utils.py `get_pp_indices`): the layers a [`Stage`](super::Stage) builds.

use std::ops::Range;

/// The layers rank `rank` of `size` holds: `num_layers // size` each, the remainder spread one
/// by one over the ranks before the last, from the second-to-last backwards (the last rank
/// also holds the final norm and the LM head). None when `rank` is not below `size` or
/// `size` is 0.
pub fn pp_layers(num_layers: u64, rank: u64, size: u64) -> Option<Range<u64>> {
    if size == 0 || rank >= size {
        return None;
    }
    let base = num_layers / size;
    let remaining = num_layers % size;
    // `partitions[-i] += 1 for i in range(2, remaining + 2)`: ranks size − 2 down to
    // size − 1 − remaining (remaining < size, so at most down to rank 0).
    let extra = |r: u64| u64::from(r + 1 < size && r + 1 + remaining >= size);
    let start: u64 = (0..rank).map(|r| base + extra(r)).sum();
    Some(start..start + base + extra(rank))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(layers: u64, size: u64) -> Vec<u64> {
        (0..size)
            .map(|r| {
                let p = pp_layers(layers, r, size).unwrap();
                p.end - p.start
            })
            .collect()
    }

    #[test]
    fn remainder_goes_to_the_ranks_before_the_last() {
        // 26 // 4 = 6, remainder 2: partitions[-2] and partitions[-3] get one more.
        assert_eq!(sizes(26, 4), [6, 7, 7, 6]);
        // 5 // 2 = 2, remainder 1: partitions[-2] (the first rank) gets it.
        assert_eq!(sizes(5, 2), [3, 2]);
        // 7 // 4 = 1, remainder 3: ranks 2, 1 and 0.
        assert_eq!(sizes(7, 4), [2, 2, 2, 1]);
        assert_eq!(sizes(32, 4), [8, 8, 8, 8]);
        assert_eq!(pp_layers(26, 1, 4), Some(6..13));
        assert_eq!(pp_layers(26, 3, 4), Some(20..26));
        assert_eq!(pp_layers(26, 4, 4), None);
        assert_eq!(pp_layers(26, 0, 0), None);
    }
}
