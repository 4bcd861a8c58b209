//! The real NVML through nvml-wrapper: libnvidia-ml.so.1 is loaded at the first reading, so
//! the binary has no link-time dependency on it and a machine without a driver gets one plain
//! line instead of a reading.

use super::live::{GpuProcess, LiveReading, Nvml, ProcessKind, NO_DRIVER_MESSAGE};
use super::profile::cores_per_sm;
use crate::error::{Error, Result};
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::Nvml as NvmlLib;
use std::cell::OnceCell;
use std::path::PathBuf;

/// The real NVML, loaded (dlopen of libnvidia-ml.so.1) and initialised at the first reading.
pub struct SystemNvml {
    library: Option<PathBuf>,
    nvml: OnceCell<std::result::Result<NvmlLib, Error>>,
}

impl SystemNvml {
    pub fn new() -> Self {
        SystemNvml {
            library: None,
            nvml: OnceCell::new(),
        }
    }

    /// Load NVML from this path instead of libnvidia-ml.so.1.
    pub fn with_library(path: impl Into<PathBuf>) -> Self {
        SystemNvml {
            library: Some(path.into()),
            nvml: OnceCell::new(),
        }
    }

    fn lib(&self) -> Result<&NvmlLib> {
        let lib = self.nvml.get_or_init(|| {
            let loaded = match &self.library {
                None => NvmlLib::init(),
                Some(path) => NvmlLib::builder().lib_path(path.as_os_str()).init(),
            };
            loaded.map_err(init_error)
        });
        lib.as_ref().map_err(Clone::clone)
    }
}

impl Default for SystemNvml {
    fn default() -> Self {
        Self::new()
    }
}

/// One plain line for every way NVML can fail to start.
fn init_error(e: NvmlError) -> Error {
    match e {
        NvmlError::LibloadingError(_)
        | NvmlError::LibraryNotFound
        | NvmlError::FailedToLoadSymbol(_) => Error::new(NO_DRIVER_MESSAGE),
        NvmlError::DriverNotLoaded => Error::new(
            "the NVIDIA driver is not loaded (libnvidia-ml.so.1 is there, the kernel module is not): \
             use --gpu NAME to plan for a card from the catalogue",
        ),
        other => Error::new(format!(
            "NVML could not start ({other}): use --gpu NAME to plan for a card from the catalogue"
        )),
    }
}

fn read_error(what: &str, index: u32, e: NvmlError) -> Error {
    Error::new(format!("NVML could not read {what} of GPU {index}: {e}"))
}

impl Nvml for SystemNvml {
    fn devices(&self) -> Result<Vec<LiveReading>> {
        let lib = self.lib()?;
        let driver_version = lib.sys_driver_version().unwrap_or_default();
        let cuda_version = lib
            .sys_cuda_driver_version()
            .map(|v| format!("{}.{}", v / 1000, (v % 1000) / 10))
            .unwrap_or_default();
        let count = lib
            .device_count()
            .map_err(|e| Error::new(format!("NVML could not count the GPUs: {e}")))?;
        let mut readings = Vec::new();
        for index in 0..count {
            let device = lib
                .device_by_index(index)
                .map_err(|e| read_error("the handle", index, e))?;
            let name = device
                .name()
                .map_err(|e| read_error("the name", index, e))?;
            let memory = device
                .memory_info()
                .map_err(|e| read_error("the memory", index, e))?;
            let compute_capability = device.cuda_compute_capability().ok().and_then(|cc| {
                Some((u32::try_from(cc.major).ok()?, u32::try_from(cc.minor).ok()?))
            });
            let sm_count = compute_capability
                .and_then(cores_per_sm)
                .zip(device.num_cores().ok())
                .map(|(per_sm, cores)| cores / per_sm)
                .filter(|&sms| sms > 0);
            let mut processes = Vec::new();
            for (list, kind) in [
                (device.running_compute_processes(), ProcessKind::Compute),
                (device.running_graphics_processes(), ProcessKind::Graphics),
            ] {
                for p in list.unwrap_or_default() {
                    let used_bytes = match p.used_gpu_memory {
                        UsedGpuMemory::Used(b) => Some(b),
                        UsedGpuMemory::Unavailable => None,
                    };
                    let name = lib.sys_process_name(p.pid, 256).ok();
                    add_process(&mut processes, p.pid, name, used_bytes, kind);
                }
            }
            readings.push(LiveReading {
                index,
                name,
                total_bytes: memory.total,
                free_bytes: memory.free,
                used_bytes: memory.used,
                reserved_bytes: memory.reserved,
                driver_version: driver_version.clone(),
                cuda_version: cuda_version.clone(),
                compute_capability,
                sm_count,
                processes,
            });
        }
        Ok(readings)
    }
}

/// Add a process, merging one listed as both compute and graphics; names come from NVML
/// (its base name: "/usr/bin/python3" → "python3"), else /proc/PID/comm.
fn add_process(
    processes: &mut Vec<GpuProcess>,
    pid: u32,
    nvml_name: Option<String>,
    used_bytes: Option<u64>,
    kind: ProcessKind,
) {
    if let Some(existing) = processes.iter_mut().find(|p| p.pid == pid) {
        if existing.kind != kind {
            existing.kind = ProcessKind::Both;
        }
        existing.used_bytes = existing.used_bytes.max(used_bytes);
        return;
    }
    let from_nvml = nvml_name
        .map(|n| n.trim().rsplit('/').next().unwrap_or_default().to_string())
        .filter(|n| !n.is_empty());
    let name = from_nvml.or_else(|| {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    });
    processes.push(GpuProcess {
        pid,
        name,
        used_bytes,
        kind,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_take_nvml_base_names_else_proc_comm_and_merge_compute_with_graphics() {
        let mut processes = Vec::new();
        add_process(
            &mut processes,
            1234,
            Some("/usr/bin/python3".to_string()),
            Some(100),
            ProcessKind::Compute,
        );
        add_process(&mut processes, 1234, None, Some(120), ProcessKind::Graphics);
        let me = std::process::id();
        add_process(
            &mut processes,
            me,
            Some(String::new()),
            None,
            ProcessKind::Compute,
        );
        assert_eq!(processes.len(), 2);
        assert_eq!(processes[0].name.as_deref(), Some("python3"));
        assert_eq!(processes[0].kind, ProcessKind::Both);
        assert_eq!(processes[0].used_bytes, Some(120));
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert_eq!(processes[1].name.as_deref(), Some(comm.trim()));
        assert_eq!(processes[1].used_bytes, None);
    }
}
