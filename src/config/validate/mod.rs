//! The second pass: compiling the raw matrix into a [`Matrix`](super::Matrix). The main type is
//! [`Compiler`](compiler::Compiler), which collects every problem with its key path rather than stopping at the
//! first.
//!
//! One file per section of `matrix.toml`: [`stages`], [`machines`], [`runtimes`] (host and
//! docker settings), [`checks`] (notebooks, commands, overrides, GPU checks), [`services`],
//! [`consistency`] (notebooks compared across runtimes), [`rules`] (exclusions and expected
//! failures) and [`parameters`] (notebook parameters, wherever set); [`compiler`] holds the
//! shared helpers and the order in
//! which sections are compiled.

mod checks;
mod compiler;
mod consistency;
mod machines;
mod parameters;
mod rules;
mod runtimes;
mod services;
mod stages;

pub(super) use compiler::compile;
