//! The none driver passes the SDK's conformance kit.

use machine_driver_sdk::conformance::Kit;

#[tokio::test]
async fn passes_conformance() {
    let report = Kit::new(env!("CARGO_BIN_EXE_machine-driver-none"))
        .flag("url", "tcp://127.0.0.1:2376")
        .unprefixed_flags(&["url"])
        .adopts_existing_hosts(true)
        .run()
        .await;
    println!("{report}");
    report.assert_passed();
}
