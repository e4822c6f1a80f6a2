//! The driver passes machine's conformance kit, with the lifecycle on: the
//! kit creates a host (here a `sleep` process), stops, starts, restarts and
//! kills it, and removes it, the way the `machine` CLI would.

use machine_driver_sdk::conformance::Kit;

#[tokio::test]
async fn passes_conformance() {
    // Cargo builds the binary for integration tests and names it here.
    let report = Kit::new(env!("CARGO_BIN_EXE_machine-driver-hello"))
        .flag("hello-command", "exec sleep 3600")
        .run()
        .await;
    println!("{report}");
    report.assert_passed();
}
