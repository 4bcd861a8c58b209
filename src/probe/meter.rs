//! Peak meters: where the probe reads "how many bytes are in use, and what was the most since I
//! last asked".
//!
//! * CPU: [`CountingAlloc`], a global allocator wrapping `System` that keeps the bytes in use and
//!   their high-water mark in atomics. The type lives here, but the `#[global_allocator]` static
//!   must be declared by the binary that wants it (vramplan's `main.rs`, the probe's test
//!   binaries), so ordinary tests and library users keep the plain system allocator.
//! * CUDA (`cuda` feature): the device's current memory pool, which candle allocates from with
//!   `cuMemAllocAsync`; its `USED_MEM_HIGH` / `RESERVED_MEM_HIGH` attributes are exact
//!   high-water marks (see `super::cuda`).

use crate::error::{Error, Result};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};

static CURRENT: AtomicU64 = AtomicU64::new(0);
static PEAK: AtomicU64 = AtomicU64::new(0);

/// Capacity of the optional allocation trace (events, 8 bytes each, in .bss).
pub const TRACE_CAPACITY: usize = 1 << 16;
static TRACE: [AtomicI64; TRACE_CAPACITY] = [const { AtomicI64::new(0) }; TRACE_CAPACITY];
static TRACE_LEN: AtomicUsize = AtomicUsize::new(0);
/// 0 = tracing off; otherwise the smallest allocation (bytes) that is recorded.
static TRACE_MIN: AtomicU64 = AtomicU64::new(0);

/// A counting global allocator: install it with
/// `#[global_allocator] static ALLOC: vramplan::probe::meter::CountingAlloc = CountingAlloc;`.
pub struct CountingAlloc;

#[inline]
fn grow(n: u64) {
    let now = CURRENT.fetch_add(n, Relaxed) + n;
    PEAK.fetch_max(now, Relaxed);
    trace(n as i64);
}

#[inline]
fn shrink(n: u64) {
    CURRENT.fetch_sub(n, Relaxed);
    trace(-(n as i64));
}

#[inline]
fn trace(delta: i64) {
    let min = TRACE_MIN.load(Relaxed);
    if min != 0 && delta.unsigned_abs() >= min {
        let i = TRACE_LEN.fetch_add(1, Relaxed);
        if i < TRACE_CAPACITY {
            TRACE[i].store(delta, Relaxed);
        }
    }
}

// SAFETY: every call is forwarded unchanged to `System`; the counters only observe sizes.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grow(layout.size() as u64);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grow(layout.size() as u64);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        shrink(layout.size() as u64);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            // Live bytes change by the difference: the old block is gone once realloc returns.
            let (old, new) = (layout.size() as u64, new_size as u64);
            if new >= old {
                grow(new - old);
            } else {
                shrink(old - new);
            }
        }
        p
    }
}

impl CountingAlloc {
    /// Bytes allocated now through the counting allocator (0 if it is not installed).
    pub fn current() -> u64 {
        CURRENT.load(Relaxed)
    }

    /// High-water mark since the last [`CountingAlloc::reset_peak`].
    pub fn peak() -> u64 {
        PEAK.load(Relaxed)
    }

    /// Forget the high-water mark: peak := bytes in use now.
    pub fn reset_peak() {
        PEAK.store(CURRENT.load(Relaxed), Relaxed);
    }

    /// Whether this process's `#[global_allocator]` is a `CountingAlloc`.
    pub fn is_installed() -> bool {
        let before = CURRENT.load(Relaxed);
        let probe = std::hint::black_box(vec![0u8; 1 << 16]);
        let during = CURRENT.load(Relaxed);
        drop(probe);
        // Other threads may allocate or free meanwhile; 64 KiB is far above that noise.
        during.wrapping_sub(before) >= (1 << 15) && during.wrapping_sub(before) < (1 << 40)
    }

    /// Start recording every allocation (+bytes) and free (-bytes) of at least `min_bytes`
    /// (clamped to ≥ 1), forgetting earlier records. For deriving retention rules op by op.
    pub fn start_trace(min_bytes: u64) {
        TRACE_LEN.store(0, Relaxed);
        TRACE_MIN.store(min_bytes.max(1), Relaxed);
    }

    /// Stop recording and return the events (at most [`TRACE_CAPACITY`]).
    pub fn stop_trace() -> Vec<i64> {
        TRACE_MIN.store(0, Relaxed);
        let n = TRACE_LEN.load(Relaxed).min(TRACE_CAPACITY);
        (0..n).map(|i| TRACE[i].load(Relaxed)).collect()
    }
}

/// Something that reads bytes in use and their high-water mark on one device.
pub trait PeakMeter {
    /// "cpu heap (counting allocator)", "cuda:0 default mem pool", …
    fn describe(&self) -> String;
    /// Bytes in use now (waits for queued device work first).
    fn current(&self) -> Result<u64>;
    /// Forget the high-water mark (waits for queued device work first).
    fn reset_peak(&self) -> Result<()>;
    /// Most bytes in use since the last reset (waits for queued device work first).
    fn peak(&self) -> Result<u64>;
    /// Reserved memory's high-water mark where the device has a pool that reserves more than
    /// it hands out (CUDA); `None` on CPU.
    fn reserved_peak(&self) -> Result<Option<u64>> {
        Ok(None)
    }
    /// Device memory the process holds outside the metered allocations (CUDA context, kernel
    /// modules, cuBLAS, curand); `None` where unknown or meaningless (CPU).
    fn overhead_bytes(&self) -> Result<Option<u64>> {
        Ok(None)
    }
}

/// The CPU meter: reads [`CountingAlloc`]'s counters.
#[derive(Debug)]
pub struct CpuMeter(());

impl CpuMeter {
    /// Fails with a plain message when the binary did not install [`CountingAlloc`].
    pub fn new() -> Result<Self> {
        if !CountingAlloc::is_installed() {
            return Err(Error::new(
                "probe: this binary has no counting allocator installed, so CPU memory cannot be \
                 measured (declare `#[global_allocator] static A: CountingAlloc = CountingAlloc;`)",
            ));
        }
        Ok(CpuMeter(()))
    }
}

impl PeakMeter for CpuMeter {
    fn describe(&self) -> String {
        "cpu heap (counting allocator)".to_string()
    }
    fn current(&self) -> Result<u64> {
        Ok(CountingAlloc::current())
    }
    fn reset_peak(&self) -> Result<()> {
        CountingAlloc::reset_peak();
        Ok(())
    }
    fn peak(&self) -> Result<u64> {
        Ok(CountingAlloc::peak())
    }
}

/// Memory the machine can still give this process: `MemAvailable` of /proc/meminfo
/// (None where that file does not exist or cannot be parsed).
pub fn cpu_available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}
