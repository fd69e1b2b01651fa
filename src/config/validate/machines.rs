//! `[machines.NAME]`: the kinds of machine trials run on.

use super::compiler::{Compiler, key_part};
use crate::config::matrix::Machine;
use crate::config::raw::RawMachine;
use std::collections::BTreeMap;

impl Compiler {
    /// The machines, in name order.
    pub(super) fn machines(&mut self, raw: &BTreeMap<String, RawMachine>) -> Vec<Machine> {
        let mut machines = Vec::new();
        for (name, m) in raw {
            let key = format!("machines.{}", key_part(name));
            self.name(&key, "machine", name);
            if m.gpus == 0 && m.gpu.is_some() {
                self.problem(
                    &key,
                    "`gpu` names a GPU model but `gpus` is 0 (set gpus to the number of GPUs)",
                );
            }
            machines.push(Machine {
                name: name.clone(),
                gpus: m.gpus,
                gpu_model: m.gpu.clone(),
                docker: m.docker.clone(),
                description: m.description.clone(),
                tags: m.tags.clone(),
                parameters: self.parameters(&key, &m.parameters),
            });
        }
        if machines.is_empty() {
            self.problem(
                "machines",
                "no machines declared (add e.g. `[machines.cpu]` with `gpus = 0`)",
            );
        }
        machines
    }
}
