//! The example matrix (`matrix.toml`) as `cargo test` trials: one per runtime, machine and
//! check. This is the whole file a project needs; copy it with `harness = false`.

fn main() -> std::process::ExitCode {
    runtime_matrix::Harness::from_env().run()
}
