//! The fault driver, without faults, passes the SDK's conformance kit; with
//! a fault, the kit notices.

use machine_driver_sdk::conformance::Kit;

const BIN: &str = env!("CARGO_BIN_EXE_machine-driver-fault");

#[tokio::test]
async fn passes_conformance_without_faults() {
    let report = Kit::new(BIN).flag("fault-ssh-port", "2222").run().await;
    println!("{report}");
    report.assert_passed();
}

#[tokio::test]
async fn conformance_catches_a_failing_remove() {
    let report = Kit::new(BIN)
        .env("MACHINE_FAULT", "fail=Remove")
        .run()
        .await;
    let failed: Vec<_> = report.failures().iter().map(|c| c.name).collect();
    assert!(
        failed.iter().any(|n| n.starts_with("unknown machine")),
        "expected the idempotent-remove check to fail, got:\n{report}"
    );
    assert!(
        failed.iter().any(|n| n.starts_with("lifecycle")),
        "{report}"
    );
}

#[tokio::test]
async fn conformance_catches_a_driver_that_never_handshakes() {
    let report = Kit::new(BIN)
        .env("MACHINE_FAULT", "handshake=exit")
        .run()
        .await;
    let handshake = report
        .checks
        .iter()
        .find(|c| c.name == "handshake")
        .expect("ran");
    let err = handshake.outcome.as_ref().unwrap_err();
    assert!(err.contains("exited with status 3"), "{err}");
    assert!(err.contains("cannot open /dev/fault0"), "{err}");
}
