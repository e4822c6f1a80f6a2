//! A create that fails (or is dropped) half-way leaves no VM, no disk and
//! no registered medium behind, whichever VBoxManage step failed.

mod common;

use std::time::Duration;

use common::{ImageServer, StandIn, Store};
use machine_driver_sdk::{Driver, ErrorKind, Progress, State};

/// Fails the `nth` call of `command` in a create and checks what is left.
async fn fail_at(server: &ImageServer, command: &str, nth: usize) {
    let standin = StandIn::with(serde_json::json!({
        "fail": [{"command": command, "nth": nth}],
    }));
    let store = Store::new("dev");
    let driver = common::driver(&standin);
    let err = driver
        .create(
            store.request(&[
                ("virtualbox-image-url", &server.url()),
                (
                    "virtualbox-share-folder",
                    &format!("{}:hosthome", store.root.path().display()),
                ),
            ]),
            Progress::discard(),
        )
        .await
        .expect_err(command);
    let what = format!("{command} #{nth}");
    // The error names the command line and VirtualBox's message.
    assert!(
        err.message.contains(&format!("`VBoxManage {command} ")),
        "{what}: {}",
        err.message
    );
    assert!(
        err.message.contains("exit status 1"),
        "{what}: {}",
        err.message
    );
    assert!(err.hint.is_some(), "{what}");

    let log = standin.log();
    let failed_at = log
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with(&format!("{command} ")))
        .nth(nth - 1)
        .map(|(i, _)| i)
        .unwrap();
    let after = &log[failed_at + 1..];
    let vm_was_made = log[..failed_at].iter().any(|l| l.starts_with("createvm "));
    if vm_was_made {
        assert!(
            after
                .iter()
                .any(|l| l.starts_with("unregistervm ") && l.ends_with(" --delete")),
            "{what}: no unregistervm --delete after the failure: {after:#?}"
        );
    }
    if log[..failed_at]
        .iter()
        .any(|l| l.starts_with("clonemedium "))
        && !vm_was_made
    {
        assert!(
            after
                .iter()
                .any(|l| l.starts_with("closemedium disk ") && l.contains("disk.vdi --delete")),
            "{what}: the cloned disk was not closed and deleted: {after:#?}"
        );
    }
    // Nothing registered, nothing but the CLI's files in the directory.
    assert_eq!(standin.registered(), (vec![], vec![]), "{what}");
    assert!(store.only_cli_files(), "{what}: {:?}", store.files());
    // The cached image is kept for the next machine.
    assert!(
        common::walk(&store.root.path().join("cache/images"))
            .iter()
            .any(|p| p.ends_with("fake.vmdk")),
        "{what}"
    );
    // And the machine is gone as far as the driver can tell; rm still works.
    let machine = store.machine("");
    assert_eq!(
        driver.state(&machine).await.unwrap().state,
        State::NotFound,
        "{what}"
    );
    driver.remove(&machine).await.unwrap();
}

#[tokio::test]
async fn a_failure_at_any_step_removes_everything_made_so_far() {
    let server = ImageServer::start().await;
    for (command, nth) in [
        ("clonemedium", 1),
        ("showmediuminfo", 1),
        ("modifymedium", 1),
        ("convertfromraw", 1),
        ("createvm", 1),
        ("modifyvm", 1),
        ("modifyvm", 3),
        ("storagectl", 1),
        ("storageattach", 1),
        ("storageattach", 2),
        ("sharedfolder", 1),
        ("setextradata", 1),
        ("startvm", 1),
    ] {
        fail_at(&server, command, nth).await;
    }
}

#[tokio::test]
async fn a_vm_that_never_leases_an_address_is_powered_off_and_removed() {
    let standin = StandIn::with(serde_json::json!({"lease_after": 1000000}));
    let store = Store::new("dev");
    let server = ImageServer::start().await;
    let mut settings = common::settings(&standin);
    settings.lease_timeout = Duration::from_millis(300);
    let driver = machine_driver_virtualbox::VirtualBoxDriver::new(settings);
    let err = driver
        .create(
            store.request(&[("virtualbox-image-url", &server.url())]),
            Progress::discard(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout);
    assert!(
        err.message
            .contains("got no address on host-only network vboxnet0"),
        "{}",
        err.message
    );
    assert!(err.hint.unwrap().contains("serial.log"));
    let log = standin.log();
    let poweroff = log
        .iter()
        .position(|l| l.starts_with("controlvm ") && l.ends_with(" poweroff"));
    let unregister = log.iter().position(|l| l.starts_with("unregistervm "));
    assert!(
        matches!((poweroff, unregister), (Some(p), Some(u)) if p < u),
        "{log:#?}"
    );
    assert_eq!(standin.registered(), (vec![], vec![]));
    assert!(store.only_cli_files(), "{:?}", store.files());
}

#[tokio::test]
async fn a_dropped_create_cleans_up_and_rm_without_a_config_finds_nothing() {
    // The CLI going away drops the create call mid-way: here while it
    // waits for the lease.
    let standin = StandIn::with(serde_json::json!({"lease_after": 1000000}));
    let store = Store::new("dev");
    let server = ImageServer::start().await;
    let driver = common::driver(&standin);
    let create = driver.create(
        store.request(&[("virtualbox-image-url", &server.url())]),
        Progress::discard(),
    );
    let waiting = async {
        // The condition: the VM runs and the driver polls for its lease.
        while !standin
            .log()
            .iter()
            .any(|l| l.starts_with("dhcpserver findlease"))
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::select! {
        r = create => panic!("the create finished: {r:?}"),
        () = waiting => {}
    }
    // The create future is dropped here.
    let (vms, media) = standin.registered();
    assert!(vms.is_empty() && media.is_empty(), "{vms:?} {media:?}");
    assert!(store.only_cli_files(), "{:?}", store.files());
    let log = standin.log();
    assert!(
        log.iter().any(|l| l.starts_with("unregistervm ")),
        "{log:#?}"
    );

    // What `machine rm` does for a machine whose create never returned.
    let machine = store.machine("");
    driver.remove(&machine).await.unwrap();
    assert_eq!(driver.state(&machine).await.unwrap().state, State::NotFound);
}

#[tokio::test]
async fn an_existing_vm_of_the_same_name_is_not_touched() {
    let standin = StandIn::new();
    let store = Store::new("dev");
    let server = ImageServer::start().await;
    let driver = common::driver(&standin);
    let req = store.request(&[("virtualbox-image-url", &server.url())]);
    let config = driver
        .create(req.clone(), Progress::discard())
        .await
        .unwrap();
    let err = driver.create(req, Progress::discard()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::AlreadyExists);
    assert!(err.hint.unwrap().contains("machine rm"));
    // The first VM still runs, with its disks.
    let machine = store.machine(&config.0);
    assert_eq!(driver.state(&machine).await.unwrap().state, State::Running);
    assert_eq!(standin.registered().1.len(), 2);
    driver.remove(&machine).await.unwrap();
    assert_eq!(standin.registered(), (vec![], vec![]));
}

#[tokio::test]
async fn rm_keeps_the_disks_of_a_vm_virtualbox_will_not_unregister() {
    let standin = StandIn::with(serde_json::json!({
        "fail": [{"command": "unregistervm", "nth": 1}],
    }));
    let store = Store::new("dev");
    let server = ImageServer::start().await;
    let driver = common::driver(&standin);
    let config = driver
        .create(
            store.request(&[("virtualbox-image-url", &server.url())]),
            Progress::discard(),
        )
        .await
        .unwrap();
    let machine = store.machine(&config.0);
    let err = driver.remove(&machine).await.unwrap_err();
    assert!(
        err.message.contains("could not remove VM machine-dev-"),
        "{}",
        err.message
    );
    assert!(err.message.contains("unregistervm"), "{}", err.message);
    // Still registered, still whole: nothing deleted under it.
    let (vms, media) = standin.registered();
    assert_eq!((vms.len(), media.len()), (1, 2));
    assert!(store.dir().join("disk.vdi").is_file());
    assert!(store.dir().join("seed.vdi").is_file());
    // The next rm (VirtualBox agrees this time) removes it all.
    driver.remove(&machine).await.unwrap();
    assert_eq!(standin.registered(), (vec![], vec![]));
    assert!(store.only_cli_files(), "{:?}", store.files());
}
