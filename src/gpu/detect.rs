//! Host detection with nvml-wrapper.

use crate::config::{Machine, wildcard_match};
use nvml_wrapper::Nvml;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::OnceLock;

/// One GPU of this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Gpu {
    /// NVML's index (not the one a container sees).
    pub index: u32,
    /// `GPU-...`: the same inside and outside containers.
    pub uuid: String,
    /// Model name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// Total memory in MiB.
    pub memory_mib: u64,
    /// Compute capability, e.g. `9.0`.
    pub compute_capability: String,
}

/// The NVIDIA driver and GPUs of this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HostGpus {
    /// Driver version, e.g. `550.54.15`.
    pub driver: String,
    /// The newest CUDA version the driver supports, as NVML encodes it (12040 for 12.4).
    pub cuda_driver: Option<i32>,
    /// The GPUs, by index.
    pub gpus: Vec<Gpu>,
}

/// What detection found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detection {
    /// A driver answered (possibly with no GPU).
    Found(HostGpus),
    /// No driver: CPU machines only. The reason says what NVML answered.
    NoDriver(String),
}

static DETECTED: OnceLock<Detection> = OnceLock::new();
static LIBRARY: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Names the NVML library [`detect`] loads (`RUNTIME_MATRIX_NVML`, from the settings), when it
/// is not `libnvidia-ml.so.1` on the loader's path. The first call wins: detection runs once.
pub fn use_library(library: Option<PathBuf>) {
    let _ = LIBRARY.set(library);
}

/// This host's GPUs, detected at most once per process, through the library [`use_library`]
/// named.
pub fn detect() -> &'static Detection {
    DETECTED.get_or_init(|| {
        detect_with(
            LIBRARY
                .get()
                .and_then(Option::as_deref)
                .map(|path| path.as_os_str()),
        )
    })
}

/// NVML through the library [`use_library`] named, opened once per process for sampling
/// while trials run; `None` when it cannot be loaded.
pub(crate) fn nvml() -> Option<&'static Nvml> {
    static NVML: OnceLock<Option<Nvml>> = OnceLock::new();
    NVML.get_or_init(|| {
        match LIBRARY.get().and_then(Option::as_deref) {
            Some(path) => Nvml::builder().lib_path(path.as_os_str()).init(),
            None => Nvml::init(),
        }
        .ok()
    })
    .as_ref()
}

/// Detection through the NVML library at `library` (the loader's `libnvidia-ml.so.1` when
/// `None`). Never panics: a missing or broken library is [`Detection::NoDriver`].
pub fn detect_with(library: Option<&std::ffi::OsStr>) -> Detection {
    let nvml = match library {
        Some(path) => Nvml::builder().lib_path(path).init(),
        None => Nvml::init(),
    };
    let nvml = match nvml {
        Ok(nvml) => nvml,
        Err(error) => return Detection::NoDriver(error.to_string()),
    };
    let read = || -> Result<HostGpus, nvml_wrapper::error::NvmlError> {
        let mut gpus = Vec::new();
        for index in 0..nvml.device_count()? {
            let device = nvml.device_by_index(index)?;
            let capability = device.cuda_compute_capability()?;
            gpus.push(Gpu {
                index,
                uuid: device.uuid()?,
                name: device.name()?,
                memory_mib: device.memory_info()?.total / (1024 * 1024),
                compute_capability: format!("{}.{}", capability.major, capability.minor),
            });
        }
        Ok(HostGpus {
            driver: nvml.sys_driver_version()?,
            cuda_driver: nvml.sys_cuda_driver_version().ok(),
            gpus,
        })
    };
    match read() {
        Ok(host) => Detection::Found(host),
        Err(error) => Detection::NoDriver(format!(
            "NVML answered, but reading the GPUs failed: {error}"
        )),
    }
}

impl HostGpus {
    /// The GPUs that fit `machine`'s model pattern (case-insensitive).
    pub fn matching<'a>(&'a self, machine: &Machine) -> Vec<&'a Gpu> {
        let pattern = machine.gpu_model.as_deref().unwrap_or("*").to_lowercase();
        self.gpus
            .iter()
            .filter(|gpu| wildcard_match(&pattern, &gpu.name.to_lowercase()))
            .collect()
    }

    /// Why this host cannot serve `machine`, or `None` when it can.
    pub fn refuses(&self, machine: &Machine) -> Option<String> {
        if machine.gpus == 0 {
            return None;
        }
        let matching = self.matching(machine).len();
        if matching >= machine.gpus as usize {
            return None;
        }
        let model = machine
            .gpu_model
            .as_deref()
            .map(|m| format!(" matching `{m}`"))
            .unwrap_or_default();
        let here = if self.gpus.is_empty() {
            "none".to_owned()
        } else {
            let names: Vec<&str> = self.gpus.iter().map(|g| g.name.as_str()).collect();
            format!("{} ({})", self.gpus.len(), names.join(", "))
        };
        Some(format!(
            "machine `{}` needs {} GPU(s){model}; this host has {matching} matching, of {here} (set RUNTIME_MATRIX_MACHINES to override)",
            machine.name, machine.gpus
        ))
    }

    /// The CUDA version the driver supports, as `12.4`.
    pub fn cuda_version(&self) -> Option<String> {
        self.cuda_driver
            .map(|v| format!("{}.{}", v / 1000, (v % 1000) / 10))
    }
}
