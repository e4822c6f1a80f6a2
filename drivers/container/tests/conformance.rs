//! The container driver passes the SDK's conformance kit against the local
//! Docker engine, with the test image that `integration/hosts/setup.sh`
//! builds (a systemd + sshd Debian root filesystem).

use machine_driver_sdk::conformance::Kit;

/// The SSH test image, from the environment or setup.sh's images.env.
fn test_image() -> String {
    if let Ok(image) = std::env::var("MACHINE_TEST_IMAGE_SSH") {
        return image;
    }
    let env = std::fs::read_to_string("/var/cache/machine-test/images.env").unwrap_or_else(|e| {
        panic!(
            "no test image: {e}; run `bash integration/hosts/setup.sh` (integration/test.sh does)"
        )
    });
    env.lines()
        .find_map(|l| l.strip_prefix("MACHINE_TEST_IMAGE_SSH="))
        .map(|v| v.trim_matches('"').to_owned())
        .expect("MACHINE_TEST_IMAGE_SSH in images.env")
}

#[tokio::test]
async fn passes_conformance_on_the_local_engine() {
    let report = Kit::new(env!("CARGO_BIN_EXE_machine-driver-container"))
        .flag("container-image", &test_image())
        .run()
        .await;
    println!("{report}");
    report.assert_passed();
}
