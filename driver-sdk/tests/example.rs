//! The crate's example driver builds, runs and passes the conformance kit,
//! so the example in the docs is one that works.

use std::path::PathBuf;

use machine_driver_sdk::conformance::Kit;

fn example_binary() -> PathBuf {
    // target/<profile>/deps/<this test> -> target/<profile>/examples/
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(|d| d.parent()).unwrap();
    let bin = profile.join("examples/machine-driver-example");
    assert!(
        bin.is_file(),
        "{} is missing: `cargo test` builds examples before tests",
        bin.display()
    );
    bin
}

#[tokio::test]
async fn the_example_driver_passes_conformance() {
    let report = Kit::new(example_binary())
        .flag("example-address", "127.0.0.2")
        .run()
        .await;
    println!("{report}");
    report.assert_passed();
}
