//! `machine-driver-fault`: see the library docs.
fn main() -> std::process::ExitCode {
    machine_driver_fault::main()
}
