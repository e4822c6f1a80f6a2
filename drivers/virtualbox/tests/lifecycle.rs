//! Stop, start, restart and kill against the VBoxManage stand-in.

mod common;

use std::time::Duration;

use common::{ImageServer, StandIn, Store};
use machine_driver_sdk::{Driver, ErrorKind, Machine, Progress, State};
use machine_driver_virtualbox::VirtualBoxDriver;

async fn created(
    standin: &StandIn,
    store: &Store,
    server: &ImageServer,
    driver: &VirtualBoxDriver,
) -> Machine {
    let _ = standin;
    let config = driver
        .create(
            store.request(&[
                ("virtualbox-image-url", &server.url()),
                ("virtualbox-no-share", "true"),
            ]),
            Progress::discard(),
        )
        .await
        .unwrap();
    store.machine(&config.0)
}

fn count(log: &[String], prefix: &str) -> usize {
    log.iter().filter(|l| l.starts_with(prefix)).count()
}

#[tokio::test]
async fn stop_start_restart_kill() {
    let standin = StandIn::new();
    let store = Store::new("dev");
    let server = ImageServer::start().await;
    let driver = common::driver(&standin);
    let m = created(&standin, &store, &server, &driver).await;
    let state = |m: &Machine| {
        let m = m.clone();
        let d = &driver;
        async move { d.state(&m).await.unwrap().state }
    };
    assert_eq!(state(&m).await, State::Running);

    // The ACPI button, then the guest powers off on its own.
    assert_eq!(driver.stop(&m).await.unwrap(), None);
    assert_eq!(state(&m).await, State::Stopped);
    assert_eq!(count(&standin.log(), "controlvm "), 1);
    assert!(
        standin
            .log()
            .iter()
            .any(|l| l.ends_with(" acpipowerbutton"))
    );
    // Stopping a stopped machine does nothing.
    driver.stop(&m).await.unwrap();

    // Start boots it again and waits for the (same) lease.
    assert_eq!(driver.start(&m).await.unwrap(), None);
    assert_eq!(state(&m).await, State::Running);
    assert_eq!(driver.start(&m).await.unwrap(), None, "already running");

    assert_eq!(driver.restart(&m).await.unwrap(), None);
    assert_eq!(state(&m).await, State::Running);

    driver.kill(&m).await.unwrap();
    assert_eq!(state(&m).await, State::Stopped);
    assert!(standin.log().iter().any(|l| l.ends_with(" poweroff")));
    driver.kill(&m).await.unwrap();

    driver.remove(&m).await.unwrap();
    assert_eq!(state(&m).await, State::NotFound);
    for op in ["start", "stop", "kill"] {
        let err = match op {
            "start" => driver.start(&m).await.unwrap_err(),
            "stop" => driver.stop(&m).await.unwrap_err(),
            _ => driver.kill(&m).await.unwrap_err(),
        };
        assert_eq!(err.kind, ErrorKind::NotFound, "{op}");
        assert!(err.hint.unwrap().contains("machine rm"), "{op}");
    }
}

#[tokio::test]
async fn a_guest_that_ignores_the_power_button_times_out_and_kill_works() {
    let standin = StandIn::with(serde_json::json!({"ignore_acpi": true}));
    let store = Store::new("dev");
    let server = ImageServer::start().await;
    let mut settings = common::settings(&standin);
    settings.stop_timeout = Duration::from_millis(400);
    settings.acpi_repeat = Duration::from_millis(150);
    let driver = VirtualBoxDriver::new(settings);
    let m = created(&standin, &store, &server, &driver).await;
    let err = driver.stop(&m).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout);
    assert!(err.message.contains("did not power off"), "{}", err.message);
    assert_eq!(
        err.hint.as_deref(),
        Some("power it off at once with `machine kill dev`")
    );
    // The button was pressed again while waiting.
    assert!(
        count(&standin.log(), "controlvm ") >= 2,
        "{:#?}",
        standin.log()
    );
    assert_eq!(driver.state(&m).await.unwrap().state, State::Running);
    driver.kill(&m).await.unwrap();
    assert_eq!(driver.state(&m).await.unwrap().state, State::Stopped);
    driver.remove(&m).await.unwrap();
}

#[tokio::test]
async fn start_moves_a_taken_ssh_port_and_stores_it() {
    let standin = StandIn::new();
    let store = Store::new("dev");
    let server = ImageServer::start().await;
    let driver = common::driver(&standin);
    let m = created(&standin, &store, &server, &driver).await;
    driver.kill(&m).await.unwrap();
    let old = driver.connection(&m).await.unwrap().ssh_port;
    // Someone else listens on the machine's SSH port while it is off.
    let _taken = std::net::TcpListener::bind(("127.0.0.1", old)).unwrap();
    let new_config = driver.start(&m).await.unwrap().expect("a new config");
    let m = store.machine(&new_config.0);
    let new = driver.connection(&m).await.unwrap().ssh_port;
    assert_ne!(new, old);
    let log = standin.log();
    assert!(
        log.iter().any(|l| l.ends_with("--natpf1 delete ssh")),
        "{log:#?}"
    );
    let rule = format!("--natpf1 ssh,tcp,127.0.0.1,{new},,22");
    assert!(log.iter().any(|l| l.ends_with(&rule)), "{log:#?}");
    driver.remove(&m).await.unwrap();
}

#[tokio::test]
async fn start_sets_up_a_host_only_adapter_that_went_away() {
    let standin = StandIn::new();
    let store = Store::new("dev");
    let server = ImageServer::start().await;
    let driver = common::driver(&standin);
    let m = created(&standin, &store, &server, &driver).await;
    driver.stop(&m).await.unwrap();
    // Removed by hand while the machine was off.
    let vbox = machine_driver_virtualbox::vbox::VBoxManage::at(standin.program());
    vbox.run(&["hostonlyif", "remove", "vboxnet0"])
        .await
        .unwrap();
    driver.start(&m).await.unwrap();
    assert_eq!(driver.state(&m).await.unwrap().state, State::Running);
    let state = standin.state();
    assert_eq!(state["hostonlyifs"][0]["ip"], "192.168.56.1");
    driver.remove(&m).await.unwrap();
}

#[tokio::test]
async fn a_paused_vm_is_resumed_and_errors_name_the_command() {
    let standin = StandIn::new();
    let store = Store::new("dev");
    let server = ImageServer::start().await;
    let driver = common::driver(&standin);
    let m = created(&standin, &store, &server, &driver).await;
    let cfg: serde_json::Value = serde_json::from_str(&m.config_json).unwrap();
    let vm = cfg["vm"].as_str().unwrap();
    let vbox = machine_driver_virtualbox::vbox::VBoxManage::at(standin.program());
    vbox.run(&["controlvm", vm, "pause"]).await.unwrap();
    assert_eq!(driver.state(&m).await.unwrap().state, State::Paused);
    // Start resumes a paused VM.
    driver.start(&m).await.unwrap();
    assert_eq!(driver.state(&m).await.unwrap().state, State::Running);

    // A VBoxManage error: the command line and VirtualBox's message.
    let err = vbox
        .run(&["startvm", vm, "--type", "headless"])
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("`VBoxManage startvm {vm} --type headless` failed (exit status 1): The machine '{vm}' is already locked by a session")),
        "{text}"
    );
    assert!(text.ends_with("(VBOX_E_INVALID_OBJECT_STATE)"), "{text}");
    driver.remove(&m).await.unwrap();
}
