//! The CUDA side of the probe (`cuda` feature): open candle's device, read free memory first,
//! and meter candle's allocations through the device's memory pool.
//!
//! candle 0.11 allocates every tensor with `cuMemAllocAsync` on its stream, i.e. from the
//! device's current memory pool (it never sets one, so this is the default pool), and frees with
//! `cuMemFreeAsync`. The pool's `USED_MEM_HIGH` is then an exact high-water mark of candle's
//! tensor bytes, and `RESERVED_MEM_HIGH` of what the pool took from the device. Neither counts
//! the CUDA context, loaded kernel modules, cuBLAS's workspace or curand's state: those are the
//! difference in device free memory around device creation and the first step, minus what the
//! pool reserves ([`CudaMeter::overhead_bytes`]).

use super::meter::PeakMeter;
use super::LiveMemory;
use crate::error::{Error, Result};
use candle_core::cuda::cudarc::driver::{result, sys};
use candle_core::Device;
use std::ffi::c_void;

fn cuda_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(format!("probe: cuda: {what}: {e}"))
}

/// Free and total memory of CUDA device `ordinal` through NVML, before any context exists
/// (None where NVML cannot be loaded or the card cannot be matched).
fn nvml_free_total(ordinal: usize) -> Option<(u64, u64)> {
    result::init().ok()?;
    let dev = result::device::get(ordinal as i32).ok()?;
    let uuid = result::device::get_uuid(dev).ok()?;
    let b: Vec<u8> = uuid.bytes.iter().map(|&c| c as u8).collect();
    let hex =
        |r: std::ops::Range<usize>| b[r].iter().map(|x| format!("{x:02x}")).collect::<String>();
    let id = format!(
        "GPU-{}-{}-{}-{}-{}",
        hex(0..4),
        hex(4..6),
        hex(6..8),
        hex(8..10),
        hex(10..16)
    );
    let nvml = nvml_wrapper::Nvml::init().ok()?;
    let mem = nvml.device_by_uuid(id.as_str()).ok()?.memory_info().ok()?;
    Some((mem.free, mem.total))
}

/// candle's CUDA device and a meter on its memory pool.
pub struct CudaMeter {
    device: Device,
    pool: sys::CUmemoryPool,
    /// Device free memory before this process created its context (NVML), if known.
    free_before: Option<u64>,
}

/// Open `cuda:ordinal`: free memory first (NVML, without creating a context), then the device.
pub fn open(ordinal: usize, margin: u64) -> Result<(Device, CudaMeter, LiveMemory)> {
    let before = nvml_free_total(ordinal);
    let device = Device::new_cuda(ordinal).map_err(|e| cuda_err("opening the device", e))?;
    let cuda = device.as_cuda_device().map_err(|e| cuda_err("device", e))?;
    let ctx = cuda.cuda_stream().context().clone();
    // SAFETY: cu_device is the context's own device handle; the pool outlives this process's
    // use of it (it is the device's pool, never destroyed).
    let pool = unsafe { result::device::get_mem_pool(ctx.cu_device()) }
        .map_err(|e| cuda_err("no memory pool (device without cuMemAllocAsync?)", e))?;
    let (free_now, total) = ctx
        .mem_get_info()
        .map_err(|e| cuda_err("cuMemGetInfo", e))?;
    let live = LiveMemory {
        source: match before {
            Some(_) => "nvml before the context, cuMemGetInfo after".to_string(),
            None => "cuMemGetInfo after creating the context".to_string(),
        },
        total_bytes: Some(total as u64),
        free_bytes: free_now as u64,
        margin_bytes: margin,
    };
    let meter = CudaMeter {
        device: device.clone(),
        pool,
        free_before: before.map(|(f, _)| f),
    };
    Ok((device, meter, live))
}

impl CudaMeter {
    fn sync(&self) -> Result<()> {
        self.device
            .synchronize()
            .map_err(|e| cuda_err("synchronize", e))
    }

    fn attr(&self, a: sys::CUmemPool_attribute) -> Result<u64> {
        let mut v: u64 = 0;
        // SAFETY: the four memory attributes read here are cuuint64_t.
        unsafe { result::mem_pool::get_attribute(self.pool, a, &mut v as *mut u64 as *mut c_void) }
            .map_err(|e| cuda_err("cuMemPoolGetAttribute", e))?;
        Ok(v)
    }

    fn reset(&self, a: sys::CUmemPool_attribute) -> Result<()> {
        let mut zero: u64 = 0;
        // SAFETY: the HIGH attributes take a cuuint64_t and only accept 0 (reset to current).
        unsafe {
            result::mem_pool::set_attribute(self.pool, a, &mut zero as *mut u64 as *mut c_void)
        }
        .map_err(|e| cuda_err("cuMemPoolSetAttribute", e))
    }

    /// Device memory this process holds outside candle's pool: the CUDA context, kernel
    /// modules, cuBLAS and curand. Call after the first step (kernels load lazily). None when
    /// free memory before the context is unknown (no NVML); other processes allocating
    /// meanwhile make it noisy.
    fn overhead(&self) -> Result<Option<u64>> {
        self.sync()?;
        let Some(before) = self.free_before else {
            return Ok(None);
        };
        let cuda = self
            .device
            .as_cuda_device()
            .map_err(|e| cuda_err("device", e))?;
        let (free_now, _) = cuda
            .cuda_stream()
            .context()
            .mem_get_info()
            .map_err(|e| cuda_err("cuMemGetInfo", e))?;
        let reserved = self.attr(sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT)?;
        Ok(before
            .checked_sub(free_now as u64)
            .and_then(|d| d.checked_sub(reserved)))
    }
}

impl PeakMeter for CudaMeter {
    fn describe(&self) -> String {
        "cuda device memory pool (cuMemAllocAsync)".to_string()
    }
    fn current(&self) -> Result<u64> {
        self.sync()?;
        self.attr(sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_CURRENT)
    }
    fn reset_peak(&self) -> Result<()> {
        self.sync()?;
        self.reset(sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH)?;
        self.reset(sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH)
    }
    fn peak(&self) -> Result<u64> {
        self.sync()?;
        // A reset HIGH mark may read 0 until the next allocation: never report below current.
        let high = self.attr(sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH)?;
        let current = self.attr(sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_CURRENT)?;
        Ok(high.max(current))
    }
    fn overhead_bytes(&self) -> Result<Option<u64>> {
        self.overhead()
    }
    fn reserved_peak(&self) -> Result<Option<u64>> {
        self.sync()?;
        let high = self.attr(sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH)?;
        let current = self.attr(sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT)?;
        Ok(Some(high.max(current)))
    }
}
