//! The `machine` binary; everything lives in the library.
fn main() -> std::process::ExitCode {
    machine_cli::main()
}
