//! The qemu driver passes the SDK's conformance kit with a real VM: the
//! test image that `integration/hosts/setup.sh` builds (Debian with a
//! kernel and cloud-init, no boot loader), direct-booted under TCG, since
//! KVM does not run guests on the CI machines.

use machine_driver_sdk::conformance::Kit;

/// The VM image's directory, from the environment or setup.sh's images.env.
fn vm_dir() -> String {
    if let Ok(dir) = std::env::var("MACHINE_TEST_VM_DIR") {
        return dir;
    }
    let env = std::fs::read_to_string("/var/cache/machine-test/images.env").unwrap_or_else(|e| {
        panic!("no test VM image: {e}; run `bash integration/hosts/setup.sh` (integration/test.sh does)")
    });
    env.lines()
        .find_map(|l| l.strip_prefix("MACHINE_TEST_VM_DIR="))
        .map(|v| v.trim_matches('"').to_owned())
        .expect("MACHINE_TEST_VM_DIR in images.env: run integration/hosts/setup.sh with qemu-img installed")
}

#[tokio::test]
async fn passes_conformance_with_a_tcg_vm() {
    let dir = vm_dir();
    let report = Kit::new(env!("CARGO_BIN_EXE_machine-driver-qemu"))
        .flag("qemu-image", &format!("{dir}/disk.qcow2"))
        .flag("qemu-kernel", &format!("{dir}/vmlinuz"))
        .flag("qemu-initrd", &format!("{dir}/initrd.img"))
        .flag("qemu-accel", "tcg")
        .flag("qemu-memory", "512")
        // The guest has not booted far enough to hear the ACPI button
        // when the kit stops it right after create; this bounds the wait
        // before the power-off fallback (the button itself is tested end
        // to end in integration/tests/qemu.rs).
        .flag("qemu-stop-timeout", "3")
        .run()
        .await;
    println!("{report}");
    report.assert_passed();
}
