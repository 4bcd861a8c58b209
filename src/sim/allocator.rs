//! A model of PyTorch's CUDA caching allocator (c10/cuda/CUDACachingAllocator.cpp), enough to
//! say what `max_memory_allocated()` and `max_memory_reserved()` report for an allocation
//! order:
//! - every request is rounded up to 512 bytes;
//! - requests up to 1 MiB come from the small pool (2 MiB segments), larger ones from the
//!   large pool (20 MiB segments for requests under 10 MiB, else the request rounded to 2 MiB);
//! - a request takes the best-fitting free block of its pool; the block is split only when
//!   the rest is at least 512 bytes (small pool) or more than 1 MiB (large pool) — an unsplit
//!   block counts whole in allocated memory;
//! - freed blocks merge with free neighbours of the same segment; segments are never returned
//!   (no empty_cache), so reserved only grows.
//!
//! With `expandable_segments:True` the large pool maps 2 MiB pages on demand and reuses them
//! without fragmentation: reserved ≈ the high-water mark of large blocks in whole pages.

pub use super::free_list::BlockId;
use super::free_list::FreeList;

const MIN_BLOCK: u64 = 512;
const SMALL_SIZE: u64 = 1 << 20;
const SMALL_BUFFER: u64 = 2 << 20;
const LARGE_BUFFER: u64 = 20 << 20;
const MIN_LARGE_ALLOC: u64 = 10 << 20;
const ROUND_LARGE: u64 = 2 << 20;

/// PyTorch's round_size: at least 512 bytes, a multiple of 512.
pub fn round_size(bytes: u64) -> u64 {
    if bytes < MIN_BLOCK {
        MIN_BLOCK
    } else {
        bytes.div_ceil(MIN_BLOCK).saturating_mul(MIN_BLOCK)
    }
}

/// The segment size cudaMalloc'd for a request that found no free block.
pub fn segment_size(rounded: u64) -> u64 {
    if rounded <= SMALL_SIZE {
        SMALL_BUFFER
    } else if rounded < MIN_LARGE_ALLOC {
        LARGE_BUFFER
    } else {
        rounded.div_ceil(ROUND_LARGE).saturating_mul(ROUND_LARGE)
    }
}

#[derive(Debug, Clone, Copy)]
struct Block {
    size: u64,
    /// Position inside its segment (for best-fit tie breaks and merging).
    segment: u32,
    addr: u64,
    small: bool,
    free: bool,
    prev: Option<u32>,
    next: Option<u32>,
}

#[derive(Debug, Default)]
pub struct CachingAllocator {
    blocks: Vec<Block>,
    /// Ids of blocks that no longer exist (merged into a neighbour, or an expandable block
    /// freed), reused by the next new block: `blocks` stays as large as the blocks that exist
    /// at once instead of growing with every split of the run, which kept it out of the caches
    /// on deep models. An id never decides a best fit (no two free blocks share an address).
    spare: Vec<BlockId>,
    /// Free blocks by pool, best fit first.
    free_small: FreeList,
    free_large: FreeList,
    segments: u32,
    /// Virtual address of the next segment.
    next_base: u64,
    expandable: bool,
    /// Block-accounted bytes in use: what max_memory_allocated() counts.
    pub allocated: u64,
    /// Bytes in segments: what max_memory_reserved() counts.
    pub reserved: u64,
    large_live_pages: u64,
    small_reserved: u64,
}

impl CachingAllocator {
    pub fn new(expandable_segments: bool) -> Self {
        CachingAllocator {
            expandable: expandable_segments,
            ..Default::default()
        }
    }

    /// Allocate `bytes`; returns the block (None for 0 bytes: PyTorch returns no block).
    pub fn malloc(&mut self, bytes: u64) -> Option<BlockId> {
        if bytes == 0 {
            return None;
        }
        let size = round_size(bytes);
        let small = size <= SMALL_SIZE;
        if self.expandable && !small {
            // One growing segment: no best-fit leftovers, whole 2 MiB pages.
            let pages = size.div_ceil(ROUND_LARGE) * ROUND_LARGE;
            let id = self.push_block(size, 0, 0, false);
            self.blocks[id as usize].free = false;
            self.allocated += size;
            self.large_live_pages += pages;
            self.reserved = self
                .reserved
                .max(self.small_reserved + self.large_live_pages);
            return Some(id);
        }
        let id = match self.pool(small).take_best_fit(size) {
            Some(id) => id,
            None => {
                let seg = segment_size(size);
                self.reserved += seg;
                if small {
                    self.small_reserved += seg;
                }
                self.segments += 1;
                let base = self.next_base;
                self.next_base += seg;
                self.push_block(seg, self.segments, base, small)
            }
        };
        let block = self.blocks[id as usize];
        let remaining = block.size - size;
        let split = if small {
            remaining >= MIN_BLOCK
        } else {
            remaining > SMALL_SIZE
        };
        if split {
            let rest = self.push_block(remaining, block.segment, block.addr + size, small);
            let old_next = block.next;
            {
                let r = &mut self.blocks[rest as usize];
                r.prev = Some(id);
                r.next = old_next;
            }
            if let Some(n) = old_next {
                self.blocks[n as usize].prev = Some(rest);
            }
            let b = &mut self.blocks[id as usize];
            b.size = size;
            b.next = Some(rest);
            self.insert_free(rest);
        }
        let b = &mut self.blocks[id as usize];
        b.free = false;
        self.allocated += b.size;
        Some(id)
    }

    pub fn free(&mut self, id: BlockId) {
        let b = self.blocks[id as usize];
        self.allocated -= b.size;
        if self.expandable && !b.small {
            self.large_live_pages -= b.size.div_ceil(ROUND_LARGE) * ROUND_LARGE;
            self.spare.push(id);
            return;
        }
        self.blocks[id as usize].free = true;
        let mut id = id;
        // Merge with the previous free block, then the next.
        if let Some(p) = self.blocks[id as usize].prev {
            if self.blocks[p as usize].free {
                self.remove_free(p);
                self.absorb_next(p);
                id = p;
            }
        }
        if let Some(n) = self.blocks[id as usize].next {
            if self.blocks[n as usize].free {
                self.remove_free(n);
                self.absorb_next(id);
            }
        }
        self.insert_free(id);
    }

    /// Size the block occupies (what allocated counts for it).
    pub fn block_size(&self, id: BlockId) -> u64 {
        self.blocks[id as usize].size
    }

    fn absorb_next(&mut self, id: BlockId) {
        let n = self.blocks[id as usize]
            .next
            .expect("absorb needs a next block");
        let nb = self.blocks[n as usize];
        let b = &mut self.blocks[id as usize];
        b.size += nb.size;
        b.next = nb.next;
        if let Some(nn) = nb.next {
            self.blocks[nn as usize].prev = Some(id);
        }
        self.spare.push(n);
    }

    fn push_block(&mut self, size: u64, segment: u32, addr: u64, small: bool) -> BlockId {
        let block = Block {
            size,
            segment,
            addr,
            small,
            free: true,
            prev: None,
            next: None,
        };
        if let Some(id) = self.spare.pop() {
            self.blocks[id as usize] = block;
            return id;
        }
        self.blocks.push(block);
        (self.blocks.len() - 1) as BlockId
    }

    fn pool(&mut self, small: bool) -> &mut FreeList {
        if small {
            &mut self.free_small
        } else {
            &mut self.free_large
        }
    }

    fn insert_free(&mut self, id: BlockId) {
        let b = self.blocks[id as usize];
        self.pool(b.small).insert(b.size, b.addr, id);
    }

    fn remove_free(&mut self, id: BlockId) {
        let b = self.blocks[id as usize];
        self.pool(b.small).remove(b.size, b.addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn rounding_and_segments() {
        assert_eq!(round_size(1), 512);
        assert_eq!(round_size(513), 1024);
        assert_eq!(segment_size(MIB), 2 * MIB);
        assert_eq!(segment_size(MIB + 512), 20 * MIB);
        assert_eq!(segment_size(10 * MIB), 10 * MIB);
        assert_eq!(segment_size(10 * MIB + 1), 12 * MIB);
    }

    #[test]
    fn unsplit_block_counts_whole() {
        // 25 MiB + 512 B needs a 26 MiB segment; the 1 MiB - 512 B rest is not split off.
        let mut a = CachingAllocator::new(false);
        let b = a.malloc(25 * MIB + 512).unwrap();
        assert_eq!(a.reserved, 26 * MIB);
        assert_eq!(a.allocated, 26 * MIB);
        a.free(b);
        assert_eq!(a.allocated, 0);
        // The freed segment serves a smaller large request, split because > 1 MiB remains.
        a.malloc(12 * MIB).unwrap();
        assert_eq!(a.allocated, 12 * MIB);
        assert_eq!(a.reserved, 26 * MIB);
    }

    #[test]
    fn small_requests_share_a_2mib_segment_and_merge() {
        let mut a = CachingAllocator::new(false);
        let x = a.malloc(4).unwrap();
        let y = a.malloc(600 * 1024).unwrap();
        assert_eq!(a.reserved, 2 * MIB);
        assert_eq!(a.allocated, 512 + 600 * 1024);
        a.free(x);
        a.free(y);
        // Everything merged back: a full 2 MiB small block fits without a new segment.
        a.malloc(MIB).unwrap();
        a.malloc(MIB).unwrap();
        assert_eq!(a.reserved, 2 * MIB);
    }

    #[test]
    fn medium_requests_use_20mib_segments() {
        let mut a = CachingAllocator::new(false);
        a.malloc(8 * MIB + 128 * 1024).unwrap();
        assert_eq!(a.reserved, 20 * MIB);
        a.malloc(8 * MIB + 128 * 1024).unwrap();
        assert_eq!(a.reserved, 20 * MIB);
        // 20 - 2 x 8.125 = 3.75 MiB left: a third does not fit.
        a.malloc(8 * MIB + 128 * 1024).unwrap();
        assert_eq!(a.reserved, 40 * MIB);
    }
}
