//! `machine-driver-virtualbox`: see the library docs.
fn main() -> std::process::ExitCode {
    machine_driver_sdk::serve(machine_driver_virtualbox::VirtualBoxDriver::default())
}
