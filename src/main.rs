//! The `runtime-matrix` command; its code is in the library's `cli` module.

fn main() -> std::process::ExitCode {
    runtime_matrix::cli::main()
}
