//! GPU memory per trial. The main type is [`GpuSampler`]: while a trial holds its leased GPUs,
//! a thread asks NVML every [`PERIOD`] which compute processes run on each and how much memory
//! they use, and keeps each GPU's peak. A GPU is leased to one trial at a time, so the
//! processes on it are that trial's, whichever pid namespace (container) they run in.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How often a trial's GPUs are sampled.
pub const PERIOD: Duration = Duration::from_millis(250);

/// A running sampler of some GPUs' process memory.
#[derive(Debug)]
pub(crate) struct GpuSampler {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<BTreeMap<String, u64>>,
}

impl GpuSampler {
    /// Samples the GPUs `uuids` until [`finish`](GpuSampler::finish); `None` when there are
    /// none or NVML cannot be loaded.
    pub(crate) fn start(uuids: &[String]) -> Option<GpuSampler> {
        if uuids.is_empty() {
            return None;
        }
        let nvml = super::detect::nvml()?;
        let uuids = uuids.to_vec();
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let mut peaks = BTreeMap::new();
            loop {
                for uuid in &uuids {
                    if let Some(used) = used_memory(nvml, uuid) {
                        let peak = peaks.entry(uuid.clone()).or_insert(0);
                        *peak = used.max(*peak);
                    }
                }
                if !matches!(
                    stopped.recv_timeout(PERIOD),
                    Err(mpsc::RecvTimeoutError::Timeout)
                ) {
                    return peaks;
                }
            }
        });
        Some(GpuSampler { stop, thread })
    }

    /// Stops sampling; each GPU's peak process memory in bytes, for the GPUs NVML answered for.
    pub(crate) fn finish(self) -> BTreeMap<String, u64> {
        let _ = self.stop.send(());
        self.thread.join().unwrap_or_default()
    }
}

/// The memory the compute processes on GPU `uuid` use together; `None` when NVML cannot say.
fn used_memory(nvml: &nvml_wrapper::Nvml, uuid: &str) -> Option<u64> {
    use nvml_wrapper::enums::device::UsedGpuMemory;
    let processes = nvml
        .device_by_uuid(uuid)
        .ok()?
        .running_compute_processes()
        .ok()?;
    Some(
        processes
            .iter()
            .map(|process| match process.used_gpu_memory {
                UsedGpuMemory::Used(bytes) => bytes,
                UsedGpuMemory::Unavailable => 0,
            })
            .sum(),
    )
}
