//! Selecting trials: by stage, tags, shard and machine.

use crate::config::nearest;
use crate::config::{Machine, Matrix};
use crate::error::SelectionError;
use crate::gpu::{Detection, HostGpus};

/// Which of the matrix's trials this run takes. Name filters are not here: libtest applies
/// them after planning.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// The stage; the matrix's default when `None`.
    pub stage: Option<String>,
    /// Tags to include and exclude.
    pub tags: TagFilter,
    /// Shard `(K, N)`, 1-based.
    pub shard: Option<(u64, u64)>,
    /// The machines this host serves.
    pub machines: MachineSelection,
}

/// `gpu,!slow`: a trial must carry one of the included tags (when any are given) and none of
/// the excluded ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagFilter {
    /// At least one of these, when not empty.
    pub include: Vec<String>,
    /// None of these.
    pub exclude: Vec<String>,
}

impl TagFilter {
    /// Parses a comma-separated list, `!` marking exclusions.
    pub fn parse(text: &str) -> TagFilter {
        let mut filter = TagFilter::default();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            match term.strip_prefix('!') {
                Some(tag) => filter.exclude.push(tag.trim().to_owned()),
                None => filter.include.push(term.to_owned()),
            }
        }
        filter
    }

    pub(super) fn refuses(&self, tags: &[String]) -> Option<String> {
        if let Some(tag) = self.exclude.iter().find(|t| tags.contains(t)) {
            return Some(format!("has excluded tag `{tag}`"));
        }
        if !self.include.is_empty() && !self.include.iter().any(|t| tags.contains(t)) {
            return Some(format!(
                "has none of the selected tags ({})",
                self.include.join(", ")
            ));
        }
        None
    }
}

/// The machines this host can serve.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum MachineSelection {
    /// No GPU known here: CPU-only machines (0 GPUs).
    #[default]
    CpuOnly,
    /// No NVIDIA driver answered: CPU-only machines; the reason is NVML's.
    NoDriver(String),
    /// The machines whose GPUs this host has.
    Detected(HostGpus),
    /// Named explicitly (`RUNTIME_MATRIX_MACHINES`).
    Named(Vec<String>),
}

impl MachineSelection {
    pub(super) fn refuses(&self, machine: &Machine) -> Option<String> {
        match self {
            MachineSelection::CpuOnly if machine.gpus > 0 => {
                Some(no_gpu_here(machine, "no GPU is known on this host"))
            }
            MachineSelection::NoDriver(reason) if machine.gpus > 0 => Some(no_gpu_here(
                machine,
                &format!("this host has no NVIDIA driver (NVML: {reason})"),
            )),
            MachineSelection::Detected(host) => host.refuses(machine),
            MachineSelection::Named(names) if !names.contains(&machine.name) => Some(format!(
                "machine `{}` is not selected (RUNTIME_MATRIX_MACHINES={})",
                machine.name,
                names.join(",")
            )),
            _ => None,
        }
    }
}

/// Why a GPU `machine` does not run on a host without GPUs, and how to run it anyway.
fn no_gpu_here(machine: &Machine, why: &str) -> String {
    let model = machine
        .gpu_model
        .as_deref()
        .map(|m| format!(" matching `{m}`"))
        .unwrap_or_default();
    format!(
        "machine `{}` needs {} GPU(s){model}; {why} (set RUNTIME_MATRIX_MACHINES={} to run it here anyway)",
        machine.name, machine.gpus, machine.name
    )
}

impl Selection {
    /// Builds a selection from its textual forms, checking names against `matrix`. Without
    /// named machines, `detect` says which GPUs this host has; it is called only when the
    /// matrix has GPU machines.
    pub fn parse(
        matrix: &Matrix,
        stage: Option<&str>,
        tags: Option<&str>,
        shard: Option<&str>,
        machines: Option<&str>,
        detect: impl FnOnce() -> Detection,
    ) -> Result<Selection, SelectionError> {
        let stage = match stage.map(str::trim).filter(|s| !s.is_empty()) {
            Some(stage) if !matrix.stages.iter().any(|s| s == stage) => {
                return Err(SelectionError::Stage {
                    name: stage.to_owned(),
                    hint: hint(stage, matrix.stages.iter().map(String::as_str)),
                    declared: matrix.stages.join(", "),
                });
            }
            other => other.map(str::to_owned),
        };
        let shard = shard
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(parse_shard)
            .transpose()?;
        let machines = match machines.map(str::trim).filter(|s| !s.is_empty()) {
            None if matrix.machines.iter().all(|m| m.gpus == 0) => MachineSelection::CpuOnly,
            None => match detect() {
                Detection::Found(host) => MachineSelection::Detected(host),
                Detection::NoDriver(reason) => MachineSelection::NoDriver(reason),
            },
            Some("all") => {
                MachineSelection::Named(matrix.machines.iter().map(|m| m.name.clone()).collect())
            }
            Some(list) => {
                let mut names = Vec::new();
                for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    if matrix.machine(name).is_none() {
                        return Err(SelectionError::Machine {
                            name: name.to_owned(),
                            hint: hint(name, matrix.machines.iter().map(|m| m.name.as_str())),
                            declared: matrix
                                .machines
                                .iter()
                                .map(|m| m.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", "),
                        });
                    }
                    names.push(name.to_owned());
                }
                MachineSelection::Named(names)
            }
        };
        Ok(Selection {
            stage,
            tags: tags.map(TagFilter::parse).unwrap_or_default(),
            shard,
            machines,
        })
    }
}

fn hint<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    nearest(name, candidates)
        .map(|c| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

fn parse_shard(text: &str) -> Result<(u64, u64), SelectionError> {
    let invalid = || SelectionError::Shard(text.to_owned());
    let (k, n) = text.split_once('/').ok_or_else(invalid)?;
    let k: u64 = k.trim().parse().map_err(|_| invalid())?;
    let n: u64 = n.trim().parse().map_err(|_| invalid())?;
    if k == 0 || n == 0 || k > n {
        return Err(invalid());
    }
    Ok((k, n))
}

/// The 1-based shard of `shards` a trial belongs to. It depends on the trial's name alone
/// (FNV-1a), so adding or removing other trials never moves a trial to another shard. Zero
/// shards count as one (every trial is in shard 1), so that no input panics.
pub fn shard_of(name: &str, shards: u64) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash % shards.max(1) + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("1/4", Some((1, 4)))]
    #[case(" 4/4 ", Some((4, 4)))]
    #[case("0/4", None)]
    #[case("5/4", None)]
    #[case("1/0", None)]
    #[case("two/4", None)]
    #[case("3", None)]
    fn parses_shards(#[case] text: &str, #[case] expected: Option<(u64, u64)>) {
        assert_eq!(parse_shard(text).ok(), expected);
    }

    #[test]
    fn shards_are_stable_and_cover_every_trial_once() {
        let names: Vec<String> = (0..1000)
            .map(|i| format!("rt{}::m{}::nb::n{i}", i % 7, i % 3))
            .collect();
        let mut sizes = [0usize; 4];
        for name in &names {
            let shard = shard_of(name, 4);
            assert!((1..=4).contains(&shard));
            sizes[(shard - 1) as usize] += 1;
        }
        assert_eq!(sizes.iter().sum::<usize>(), 1000);
        // Roughly balanced: no shard holds more than a third of the trials.
        assert!(sizes.iter().all(|&s| s > 150 && s < 333), "{sizes:?}");
        // Fixed values, so that shard assignment cannot drift between releases.
        assert_eq!(shard_of("torch::cpu::nb::smoke", 4), 3);
        assert_eq!(shard_of("a", 1000), 0xaf63dc4c8601ec8c % 1000 + 1);
    }

    #[test]
    fn zero_shards_count_as_one() {
        assert_eq!(shard_of("torch::cpu::nb::smoke", 0), 1);
        assert_eq!(shard_of("", 0), 1);
        assert_eq!(shard_of("torch::cpu::nb::smoke", 1), 1);
    }

    #[rstest]
    #[case("gpu", &["gpu", "host"], None)]
    #[case("gpu", &["cpu", "host"], Some("none of the selected tags"))]
    #[case("!slow", &["cpu", "slow"], Some("excluded tag `slow`"))]
    #[case("gpu, !slow", &["gpu"], None)]
    #[case("", &["cpu"], None)]
    fn filters_tags(#[case] filter: &str, #[case] tags: &[&str], #[case] refused: Option<&str>) {
        let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
        let verdict = TagFilter::parse(filter).refuses(&tags);
        match refused {
            None => assert_eq!(verdict, None),
            Some(text) => assert!(verdict.unwrap().contains(text)),
        }
    }
}
