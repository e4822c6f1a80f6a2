//! The generic driver passes the SDK's conformance kit. Its state is a TCP
//! dial of the SSH port, so the test listens on a real port for it.

use machine_driver_sdk::conformance::Kit;

#[tokio::test]
async fn passes_conformance() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_test");
    std::fs::write(&key, "not a real key; the driver only copies it").unwrap();
    let report = Kit::new(env!("CARGO_BIN_EXE_machine-driver-generic"))
        .flag("generic-ip-address", "127.0.0.1")
        .flag("generic-ssh-port", &port)
        .flag("generic-ssh-key", key.to_str().unwrap())
        .adopts_existing_hosts(true)
        .run()
        .await;
    println!("{report}");
    report.assert_passed();
}
