//! The GPU checks' verdicts, from what the probe and the framework script printed, and the
//! preflight of an image's CUDA against the host driver. Each failure is a typed error whose
//! message is the trial's summary; a cause the check detects itself travels as a
//! [`GpuCause`] value.

use super::HostGpus;
use super::failures::{FrameworkFailure, PreflightError, ReportError, VisibleMismatch};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The in-container probe: Python and ctypes only.
pub const PROBE_SCRIPT: &str = include_str!("probe.py");
/// The framework check: imports torch, TensorFlow or JAX and uses the GPUs it was given.
pub const FRAMEWORK_SCRIPT: &str = include_str!("framework.py");

/// What the in-container probe saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// Whether NVML loaded and initialised.
    pub nvml: bool,
    /// Why not, or what failed while reading.
    pub error: Option<String>,
    /// The driver version visible inside.
    pub driver: Option<String>,
    /// The CUDA driver version visible inside (12040 for 12.4).
    pub cuda_driver: Option<i32>,
    /// The GPUs visible inside.
    pub gpus: Vec<super::Gpu>,
}

/// What the framework script found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameworkReport {
    /// `torch`, `tensorflow` or `jax`.
    pub framework: String,
    /// Whether it imported.
    pub imported: bool,
    /// Its version.
    pub version: Option<String>,
    /// The CUDA version it was built with.
    pub cuda_version: Option<String>,
    /// Whether it reports CUDA (a GPU) available.
    pub cuda_available: bool,
    /// How many GPUs it sees.
    pub device_count: usize,
    /// The architectures it was compiled for: `sm_80`, `compute_90`...
    pub arch_list: Vec<String>,
    /// Each visible GPU's compute capability, `9.0`.
    pub capabilities: Vec<String>,
    /// Whether a tiny computation ran on the GPU and gave the right answer.
    pub computed: bool,
    /// The error that stopped it, `Name: message`.
    pub error: Option<String>,
}

/// Finds the `marker {json}` line a script printed.
pub fn parse_marked<T: for<'de> Deserialize<'de>>(
    output: &str,
    marker: &str,
) -> Result<T, ReportError> {
    let line = output
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix(marker))
        .ok_or_else(|| ReportError::Missing {
            marker: marker.trim().to_owned(),
        })?;
    serde_json::from_str(line.trim()).map_err(|error| ReportError::Invalid { error })
}

/// The `gpu::visible` verdict: the container sees exactly `assigned` (when the trial holds
/// specific GPUs) or exactly `count` GPUs, and the host's driver. `Ok` holds a summary.
pub fn visible_verdict(
    probe: &ProbeReport,
    assigned: &[String],
    count: u32,
    host: Option<&HostGpus>,
) -> Result<String, VisibleMismatch> {
    let visible: BTreeSet<&str> = probe.gpus.iter().map(|g| g.uuid.as_str()).collect();
    let owned = |uuids: Vec<&str>| uuids.into_iter().map(str::to_owned).collect::<Vec<_>>();
    if count == 0 {
        if visible.is_empty() {
            return Ok("sees no GPU, as a CPU-only machine should".into());
        }
        return Err(VisibleMismatch::CpuTrialSeesGpus {
            visible: owned(visible.into_iter().collect()),
        });
    }
    if !probe.nvml {
        return Err(VisibleMismatch::NoNvml {
            count,
            reason: probe.error.clone(),
        });
    }
    if !assigned.is_empty() {
        let wanted: BTreeSet<&str> = assigned.iter().map(String::as_str).collect();
        let leaked: Vec<&str> = visible.difference(&wanted).copied().collect();
        let missing: Vec<&str> = wanted.difference(&visible).copied().collect();
        if !leaked.is_empty() {
            return Err(VisibleMismatch::Leaked {
                leaked: owned(leaked),
                given: assigned.to_vec(),
            });
        }
        if !missing.is_empty() {
            return Err(VisibleMismatch::Missing {
                missing: owned(missing),
            });
        }
    } else if visible.len() != count as usize {
        return Err(VisibleMismatch::Count {
            seen: visible.len(),
            count,
        });
    }
    if let (Some(host), Some(inside)) = (host, probe.driver.as_deref())
        && host.driver != inside
    {
        return Err(VisibleMismatch::Driver {
            inside: inside.to_owned(),
            host: host.driver.clone(),
        });
    }
    let names: Vec<String> = probe
        .gpus
        .iter()
        .map(|g| format!("{} ({})", g.uuid, g.name))
        .collect();
    Ok(format!(
        "sees exactly its GPU(s): {}; driver {}",
        names.join(", "),
        probe.driver.as_deref().unwrap_or("?")
    ))
}

/// The `gpu::framework` verdict for a trial given `count` GPUs. `Ok` holds a summary.
pub fn framework_verdict(report: &FrameworkReport, count: u32) -> Result<String, FrameworkFailure> {
    let name = &report.framework;
    let framework = name.clone();
    if !report.imported {
        return Err(FrameworkFailure::NotImported {
            framework,
            error: report.error.clone(),
        });
    }
    if let Some(error) = &report.error {
        return Err(FrameworkFailure::Failed {
            framework,
            error: error.clone(),
        });
    }
    if count > 0 && !report.cuda_available {
        return Err(FrameworkFailure::NoGpu {
            framework,
            version: report.version.clone(),
            cuda_version: report.cuda_version.clone(),
        });
    }
    if report.device_count != count as usize {
        return Err(FrameworkFailure::DeviceCount {
            framework,
            seen: report.device_count,
            count,
        });
    }
    if count == 0 {
        return Ok(format!(
            "{name} {} imports and sees no GPU",
            report.version.as_deref().unwrap_or("?")
        ));
    }
    for capability in &report.capabilities {
        if !report.arch_list.is_empty() && !covers(&report.arch_list, capability) {
            return Err(FrameworkFailure::NotCovered {
                framework,
                arch_list: report.arch_list.clone(),
                capability: capability.clone(),
            });
        }
    }
    if !report.computed {
        return Err(FrameworkFailure::WrongResult { framework });
    }
    Ok(format!(
        "{name} {} uses {count} GPU(s) (compute capability {}; built for {})",
        report.version.as_deref().unwrap_or("?"),
        report.capabilities.join(", "),
        if report.arch_list.is_empty() {
            "architectures it does not report".to_owned()
        } else {
            report.arch_list.join(", ")
        }
    ))
}

/// Whether compiled architectures `archs` run on a GPU of compute `capability`: SASS `sm_XY`
/// runs on the same major version with an equal or newer minor (`sm_90a` only on 9.0), and
/// PTX `compute_XY` is compiled by the driver for any equal or newer GPU.
pub fn covers(archs: &[String], capability: &str) -> bool {
    let Some((major, minor)) = capability.split_once('.') else {
        return false;
    };
    let (Ok(major), Ok(minor)) = (major.parse::<u32>(), minor.parse::<u32>()) else {
        return false;
    };
    let device = major * 10 + minor;
    archs.iter().any(|arch| {
        let (kind, digits) = match (arch.strip_prefix("sm_"), arch.strip_prefix("compute_")) {
            (Some(d), _) => ("sm", d),
            (_, Some(d)) => ("compute", d),
            _ => return false,
        };
        let specific = digits.ends_with('a');
        let Ok(value) = digits.trim_end_matches(['a', 'f']).parse::<u32>() else {
            return false;
        };
        match kind {
            "sm" if specific => value == device,
            "sm" => value / 10 == major && value % 10 <= minor,
            _ => value <= device,
        }
    })
}

/// The CUDA version an image declares (`CUDA_VERSION` in its environment, as NVIDIA's CUDA
/// images set it, or the `com.nvidia.cuda.version` label), as `(major, minor)`.
pub fn declared_cuda(
    env: &[String],
    labels: &std::collections::BTreeMap<String, String>,
) -> Option<(u32, u32)> {
    let text = env
        .iter()
        .find_map(|entry| entry.strip_prefix("CUDA_VERSION="))
        .or_else(|| labels.get("com.nvidia.cuda.version").map(String::as_str))?;
    let mut parts = text.trim().split('.');
    Some((
        parts.next()?.parse().ok()?,
        parts.next().unwrap_or("0").parse().ok()?,
    ))
}

/// The preflight: an image declaring a CUDA newer than the host driver supports fails before
/// anything runs.
pub fn preflight(
    image: &str,
    declared: Option<(u32, u32)>,
    host: &HostGpus,
) -> Result<(), PreflightError> {
    let (Some(declared), Some(driver)) = (declared, host.cuda_driver) else {
        return Ok(());
    };
    let supported = (driver as u32 / 1000, (driver as u32 % 1000) / 10);
    if declared > supported {
        return Err(PreflightError::CudaTooNew {
            image: image.to_owned(),
            declared,
            driver: host.driver.clone(),
            supported,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::Gpu;
    use crate::gpu::failures::GpuCheckError;
    use crate::verdict::GpuCause;
    use rstest::rstest;

    fn gpu(uuid: &str) -> Gpu {
        Gpu {
            index: 0,
            uuid: uuid.into(),
            name: "NVIDIA H100 80GB HBM3".into(),
            memory_mib: 81559,
            compute_capability: "9.0".into(),
        }
    }

    fn probe(uuids: &[&str]) -> ProbeReport {
        ProbeReport {
            nvml: true,
            error: None,
            driver: Some("550.54.15".into()),
            cuda_driver: Some(12040),
            gpus: uuids.iter().map(|u| gpu(u)).collect(),
        }
    }

    fn host(uuids: &[&str]) -> HostGpus {
        HostGpus {
            driver: "550.54.15".into(),
            cuda_driver: Some(12040),
            gpus: uuids.iter().map(|u| gpu(u)).collect(),
        }
    }

    #[test]
    fn a_container_that_sees_exactly_its_gpus_passes() {
        let verdict = visible_verdict(
            &probe(&["GPU-a"]),
            &["GPU-a".into()],
            1,
            Some(&host(&["GPU-a", "GPU-b"])),
        );
        assert_eq!(
            verdict.unwrap(),
            "sees exactly its GPU(s): GPU-a (NVIDIA H100 80GB HBM3); driver 550.54.15"
        );
    }

    #[test]
    fn leaked_gpus_are_named() {
        let error = visible_verdict(&probe(&["GPU-a", "GPU-b"]), &["GPU-a".into()], 1, None)
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("the container sees GPU(s) it was not given: GPU-b (given: GPU-a;"),
            "{error}"
        );
    }

    #[rstest]
    #[case(&[], Ok(()))]
    #[case(&["GPU-x"], Err("a CPU-only trial sees 1 GPU(s) it was not given: GPU-x"))]
    fn a_cpu_trial_must_see_no_gpu(#[case] visible: &[&str], #[case] expected: Result<(), &str>) {
        let verdict = visible_verdict(&probe(visible), &[], 0, None);
        match expected {
            Ok(()) => assert!(verdict.is_ok()),
            Err(text) => assert!(verdict.unwrap_err().to_string().starts_with(text)),
        }
    }

    #[test]
    fn a_different_driver_inside_fails() {
        let mut inside = probe(&["GPU-a"]);
        inside.driver = Some("535.104.05".into());
        let error = visible_verdict(&inside, &["GPU-a".into()], 1, Some(&host(&["GPU-a"])))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("(535.104.05) is not the host's (550.54.15)"),
            "{error}"
        );
    }

    #[test]
    fn probe_output_is_found_among_other_lines() {
        let output = "some warning\nRUNTIME_MATRIX_PROBE {\"nvml\": false, \"error\": \"libnvidia-ml.so.1 cannot be loaded\", \"driver\": null, \"cuda_driver\": null, \"gpus\": []}\n";
        let report: ProbeReport = parse_marked(output, "RUNTIME_MATRIX_PROBE ").unwrap();
        assert!(!report.nvml && report.gpus.is_empty());
        assert!(parse_marked::<ProbeReport>("Traceback ...", "RUNTIME_MATRIX_PROBE ").is_err());
    }

    #[rstest]
    #[case(&["sm_80", "sm_86"], "8.6", true)]
    #[case(&["sm_80"], "8.9", true)]
    #[case(&["sm_80", "sm_86"], "9.0", false)]
    #[case(&["sm_80", "compute_80"], "9.0", true)]
    #[case(&["sm_90a"], "9.0", true)]
    #[case(&["sm_90a"], "10.0", false)]
    #[case(&["sm_70", "sm_75"], "8.0", false)]
    fn compiled_architectures_cover_compute_capabilities(
        #[case] archs: &[&str],
        #[case] capability: &str,
        #[case] expected: bool,
    ) {
        let archs: Vec<String> = archs.iter().map(|a| a.to_string()).collect();
        assert_eq!(covers(&archs, capability), expected);
    }

    fn framework(count: usize) -> FrameworkReport {
        FrameworkReport {
            framework: "torch".into(),
            imported: true,
            version: Some("2.4.0".into()),
            cuda_version: Some("12.4".into()),
            cuda_available: true,
            device_count: count,
            arch_list: vec!["sm_80".into(), "sm_86".into()],
            capabilities: vec!["9.0".into(); count],
            computed: true,
            error: None,
        }
    }

    #[test]
    fn a_framework_without_kernels_for_the_gpu_fails_with_the_named_cause() {
        let error = GpuCheckError::from(framework_verdict(&framework(1), 1).unwrap_err());
        assert_eq!(
            error.to_string(),
            "torch was built for sm_80, sm_86 but the GPU has compute capability 9.0: no kernel image and no PTX \
             it can compile (use a build that includes sm_90)"
        );
        assert_eq!(error.cause(), Some(GpuCause::NoKernelImage));
    }

    #[test]
    fn framework_failures_are_specific() {
        let mut report = framework(1);
        report.arch_list = vec!["sm_90".into()];
        assert!(framework_verdict(&report, 1).is_ok());
        assert!(
            framework_verdict(&report, 2)
                .unwrap_err()
                .to_string()
                .contains("torch sees 1 GPU(s), but the trial was given 2")
        );
        report.cuda_available = false;
        assert!(
            framework_verdict(&report, 1)
                .unwrap_err()
                .to_string()
                .contains("reports no usable GPU")
        );
        let missing = FrameworkReport {
            framework: "jax".into(),
            error: Some("ModuleNotFoundError: No module named 'jax'".into()),
            ..Default::default()
        };
        assert_eq!(
            framework_verdict(&missing, 1).unwrap_err().to_string(),
            "jax cannot be imported in the runtime: ModuleNotFoundError: No module named 'jax'"
        );
    }

    #[test]
    fn preflight_refuses_a_cuda_newer_than_the_driver() {
        let env = vec!["PATH=/usr/bin".to_owned(), "CUDA_VERSION=12.6.2".to_owned()];
        let declared = declared_cuda(&env, &Default::default());
        assert_eq!(declared, Some((12, 6)));
        let error = preflight("torch:cu126", declared, &host(&["GPU-a"])).unwrap_err();
        assert!(
            error.to_string().contains(
                "declares CUDA 12.6, but the host driver 550.54.15 supports CUDA up to 12.4"
            ),
            "{error}"
        );
        assert_eq!(error.cause(), GpuCause::DriverTooOld);
        assert!(preflight("torch:cu121", Some((12, 1)), &host(&["GPU-a"])).is_ok());
        assert!(preflight("cpu-image", None, &host(&["GPU-a"])).is_ok());
    }
}
