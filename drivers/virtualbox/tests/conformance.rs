//! The driver binary passes the SDK's conformance kit, lifecycle included,
//! with `MACHINE_VBOXMANAGE` pointing at the VBoxManage stand-in (VirtualBox
//! cannot run here) and the boot image served from 127.0.0.1; and, without
//! VBoxManage anywhere, it says VirtualBox is not installed.

mod common;

use std::time::Duration;

use common::{ImageServer, StandIn};
use machine_driver_sdk::conformance::Kit;
use machine_driver_sdk::proto::client::{LaunchOptions, Plugin};
use machine_driver_sdk::proto::handshake::HINT_METADATA_KEY;
use machine_driver_sdk::proto::v1;

const DRIVER: &str = env!("CARGO_BIN_EXE_machine-driver-virtualbox");

#[tokio::test]
async fn passes_conformance_against_the_vboxmanage_standin() {
    let standin = StandIn::new();
    let server = ImageServer::start().await;
    let program = standin.program();
    let conf = standin.networks_conf();
    let report = Kit::new(DRIVER)
        .env("MACHINE_VBOXMANAGE", &program.to_string_lossy())
        .env("MACHINE_VIRTUALBOX_NETWORKS_CONF", &conf.to_string_lossy())
        .flag("virtualbox-image-url", &server.url())
        // The CI machines' CPUs do not offer VT-x to VirtualBox; the
        // stand-in does not need it.
        .flag("virtualbox-no-vtx-check", "true")
        .call_timeout(Duration::from_secs(60))
        .run()
        .await;
    println!("{report}");
    report.assert_passed();
    assert!(
        report
            .checks
            .iter()
            .any(|c| c.name.starts_with("lifecycle") && c.outcome.is_ok()),
        "{report}"
    );
    // The kit created, drove and removed a VM: nothing is left registered.
    let log = standin.log().join("\n");
    for step in ["createvm", "startvm", "acpipowerbutton", "unregistervm"] {
        assert!(log.contains(step), "{step} missing from:\n{log}");
    }
    assert_eq!(standin.registered(), (vec![], vec![]));
}

#[tokio::test]
async fn without_virtualbox_create_says_it_is_not_installed() {
    let empty = tempfile::tempdir().unwrap();
    let sockets = tempfile::Builder::new()
        .prefix("vbox-s-")
        .tempdir_in("/tmp")
        .unwrap();
    let mut opts = LaunchOptions::new("virtualbox", DRIVER, sockets.path());
    opts.env = vec![
        ("PATH".into(), empty.path().as_os_str().to_owned()),
        ("MACHINE_VBOXMANAGE".into(), "".into()),
    ];
    let plugin = Plugin::launch(opts).await.unwrap();
    let machines = empty.path().join("machines");
    let request = v1::CreateRequest {
        machine: Some(v1::Machine {
            name: "dev".into(),
            dir: machines.join("dev").to_string_lossy().into_owned(),
            config_json: String::new(),
        }),
        flags: Default::default(),
        ssh_public_key: String::new(),
        ssh_private_key_path: String::new(),
    };
    let status = plugin
        .driver()
        .pre_create_check(request.clone())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(
        status
            .message()
            .contains("VirtualBox is not installed: no `VBoxManage` on PATH"),
        "{}",
        status.message()
    );
    let hint = status
        .metadata()
        .get(HINT_METADATA_KEY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(hint.contains("virtualbox.org"), "{hint}");
    assert!(hint.contains("machine create -d qemu"), "{hint}");

    let mut stream = plugin.driver().create(request).await.unwrap().into_inner();
    let status = loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("create succeeded without VirtualBox"),
            Err(s) => break s,
        }
    };
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(status.message().contains("VirtualBox is not installed"));

    // A machine that was never made is simply not there.
    let state = plugin
        .driver()
        .get_state(v1::MachineRequest {
            machine: Some(v1::Machine {
                name: "dev".into(),
                dir: machines.join("dev").to_string_lossy().into_owned(),
                config_json: String::new(),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state.state(), v1::State::NotFound);
    plugin.shutdown(Duration::from_secs(5)).await;
}
