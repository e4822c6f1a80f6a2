//! Creating a machine against the VBoxManage stand-in: the exact command
//! sequence (a recorded transcript), the connection it yields, the host-only
//! network rules, and the preconditions.

mod common;

use common::{ImageServer, StandIn, Store};
use machine_driver_sdk::{Driver, ErrorKind, Progress, State};

/// The normalised VBoxManage transcript of a create, for comparison with
/// `tests/fixtures/create-transcript.txt`: per-run values (paths, the VM's
/// name, the SSH port, the MAC, the image server) become `$NAMES`.
fn normalise(log: &[String], store: &Store, config: &serde_json::Value, image: &str) -> String {
    let mac = config["mac"].as_str().unwrap().to_owned();
    let colons = machine_driver_virtualbox::vm::mac_with_colons(&mac);
    let replacements = [
        (image.to_owned(), "$IMAGE".to_owned()),
        (
            store.root.path().to_string_lossy().into_owned(),
            "$STORE".to_owned(),
        ),
        (config["vm"].as_str().unwrap().to_owned(), "$VM".to_owned()),
        (config["ssh_port"].to_string(), "$SSH_PORT".to_owned()),
        (mac, "$MAC".to_owned()),
        (colons, "$MAC".to_owned()),
    ];
    let mut text = String::new();
    for line in log {
        let mut line = line.clone();
        for (from, to) in &replacements {
            line = line.replace(from, to);
        }
        text.push_str(&line);
        text.push('\n');
    }
    text
}

/// Compares with the recorded transcript, or records it when
/// `UPDATE_TRANSCRIPTS=1`.
fn assert_transcript(name: &str, got: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    if std::env::var_os("UPDATE_TRANSCRIPTS").is_some() {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_TRANSCRIPTS=1 records it)", path.display()));
    if want != got {
        panic!(
            "the VBoxManage transcript differs from {}\n--- expected\n{want}--- got\n{got}\
             (if the change is intended, record it again with UPDATE_TRANSCRIPTS=1)",
            path.display()
        );
    }
}

#[tokio::test]
async fn create_runs_the_recorded_vboxmanage_sequence() {
    let standin = StandIn::new();
    let store = Store::new("dev");
    let server = ImageServer::start().await;
    let driver = common::driver(&standin);
    let req = store.request(&[
        ("virtualbox-image-url", &server.url()),
        ("virtualbox-cpu-count", "2"),
        ("virtualbox-memory", "2048"),
        (
            "virtualbox-share-folder",
            &format!("{}:hosthome", store.root.path().display()),
        ),
    ]);
    let warnings = driver.pre_create_check(&req).await.unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("guest additions"), "{warnings:?}");
    let config = driver.create(req, Progress::discard()).await.unwrap();
    let cfg: serde_json::Value = serde_json::from_str(&config.0).unwrap();

    let image = store
        .root
        .path()
        .join("cache/images")
        .read_dir()
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("fake.vmdk");
    assert_eq!(std::fs::read(&image).unwrap(), common::IMAGE);
    let transcript = normalise(&standin.log(), &store, &cfg, &image.to_string_lossy());
    assert_transcript("create-transcript.txt", &transcript);

    // SSH through the NAT forward on 127.0.0.1, Docker on the host-only
    // address the VM leased.
    let machine = store.machine(&config.0);
    let conn = driver.connection(&machine).await.unwrap();
    assert_eq!(conn.ip, "192.168.56.101");
    assert_eq!(conn.ssh_host, "127.0.0.1");
    assert_eq!(conn.ssh_user, "machine");
    assert_eq!(conn.docker_url, "tcp://192.168.56.101:2376");
    let state = standin.state();
    let vm = &state["vms"][cfg["vm"].as_str().unwrap()];
    assert_eq!(
        vm["natpf"][0],
        format!("ssh,tcp,127.0.0.1,{},,22", conn.ssh_port)
    );
    assert_eq!(vm["settings"]["nic2"], "hostonly");
    assert_eq!(vm["settings"]["hostonlyadapter2"], "vboxnet0");
    assert_eq!(state["hostonlyifs"][0]["ip"], "192.168.56.1");
    assert_eq!(state["dhcpservers"][0]["lower"], "192.168.56.101");
    assert_eq!(driver.state(&machine).await.unwrap().state, State::Running);
    // The shared image is no longer registered; the machine's two disks are.
    let (vms, mut media) = standin.registered();
    media.sort();
    assert_eq!(vms.len(), 1);
    assert_eq!(
        media,
        vec![
            store.dir().join("disk.vdi").to_string_lossy().into_owned(),
            store.dir().join("seed.vdi").to_string_lossy().into_owned(),
        ]
    );
    // The seed went into the VDI; the FAT image is not kept.
    assert!(!store.dir().join("seed.img").exists());

    driver.remove(&machine).await.unwrap();
    assert_eq!(standin.registered(), (vec![], vec![]));
    assert!(store.only_cli_files(), "{:?}", store.files());
    assert_eq!(driver.state(&machine).await.unwrap().state, State::NotFound);
    driver.remove(&machine).await.unwrap();
}

#[tokio::test]
async fn an_existing_adapter_and_dhcp_server_are_reused_as_they_are() {
    let standin = StandIn::with(serde_json::json!({
        "hostonlyifs": [
            {"name": "vboxnet0", "ip": "192.168.56.1", "mask": "255.255.255.0"},
            {"name": "vboxnet1", "ip": "192.168.57.1", "mask": "255.255.255.0"}
        ],
        "dhcpservers": [{
            "network": "HostInterfaceNetworking-vboxnet1", "ip": "192.168.57.2",
            "mask": "255.255.255.0", "lower": "192.168.57.10", "upper": "192.168.57.20",
            "enabled": true
        }]
    }));
    let store = Store::new("dev");
    let server = ImageServer::start().await;
    let driver = common::driver(&standin);
    let req = store.request(&[
        ("virtualbox-image-url", &server.url()),
        ("virtualbox-hostonly-cidr", "192.168.57.1/24"),
        ("virtualbox-no-share", "true"),
    ]);
    let config = driver.create(req, Progress::discard()).await.unwrap();
    let log = standin.log().join("\n");
    assert!(!log.contains("hostonlyif create"), "{log}");
    assert!(!log.contains("dhcpserver add"), "{log}");
    assert!(!log.contains("dhcpserver modify"), "{log}");
    assert!(!log.contains("sharedfolder"), "{log}");
    assert!(log.contains("--hostonlyadapter2 vboxnet1"), "{log}");
    let conn = driver.connection(&store.machine(&config.0)).await.unwrap();
    assert_eq!(conn.docker_url, "tcp://192.168.57.10:2376");
    driver.remove(&store.machine(&config.0)).await.unwrap();
}

#[tokio::test]
async fn a_disabled_dhcp_server_is_enabled_unless_told_not_to_touch_it() {
    let setup = serde_json::json!({
        "hostonlyifs": [{"name": "vboxnet0", "ip": "192.168.56.1", "mask": "255.255.255.0"}],
        "dhcpservers": [{
            "network": "HostInterfaceNetworking-vboxnet0", "ip": "192.168.56.100",
            "mask": "255.255.255.0", "lower": "192.168.56.101", "upper": "192.168.56.254",
            "enabled": false
        }]
    });
    let server = ImageServer::start().await;

    let standin = StandIn::with(setup.clone());
    let store = Store::new("dev");
    let driver = common::driver(&standin);
    let err = driver
        .create(
            store.request(&[
                ("virtualbox-image-url", &server.url()),
                ("virtualbox-hostonly-no-dhcp", "true"),
            ]),
            Progress::discard(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition);
    assert!(
        err.message.contains("no enabled VirtualBox DHCP server"),
        "{}",
        err.message
    );
    assert!(err.hint.unwrap().contains("dhcpserver add"));
    assert!(store.only_cli_files(), "{:?}", store.files());

    let standin = StandIn::with(setup);
    let store = Store::new("dev");
    let driver = common::driver(&standin);
    let config = driver
        .create(
            store.request(&[("virtualbox-image-url", &server.url())]),
            Progress::discard(),
        )
        .await
        .unwrap();
    let log = standin.log().join("\n");
    assert!(
        log.contains("dhcpserver modify --network=HostInterfaceNetworking-vboxnet0 --server-ip=192.168.56.100"),
        "{log}"
    );
    driver.remove(&store.machine(&config.0)).await.unwrap();
}

#[tokio::test]
async fn a_cidr_outside_the_6_1_28_range_names_networks_conf_and_the_line_to_add() {
    let standin = StandIn::new();
    let store = Store::new("dev");
    let server = ImageServer::start().await;
    let driver = common::driver(&standin);
    // Docker Machine's old default.
    let flags = [
        ("virtualbox-image-url", server.url()),
        ("virtualbox-hostonly-cidr", "192.168.99.1/24".to_owned()),
    ];
    let flags: Vec<(&str, &str)> = flags.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let err = driver
        .pre_create_check(&store.request(&flags))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition);
    assert!(err.message.contains("192.168.56.0/21"), "{}", err.message);
    let conf = standin.networks_conf().display().to_string();
    assert!(err.message.contains(&conf), "{}", err.message);
    let hint = err.hint.unwrap();
    assert!(
        hint.contains(&format!("`* 192.168.99.0/24` to {conf}")),
        "{hint}"
    );
    let err = driver
        .create(store.request(&flags), Progress::discard())
        .await
        .unwrap_err();
    assert!(err.message.contains("192.168.99.1/24"), "{}", err.message);
    assert_eq!(standin.log().last().unwrap(), "--version", "nothing made");
    assert!(store.only_cli_files(), "{:?}", store.files());

    // Allowed once networks.conf says so (VirtualBox reads the same file).
    std::fs::write(standin.networks_conf(), "* 192.168.99.0/24\n").unwrap();
    driver
        .pre_create_check(&store.request(&flags))
        .await
        .unwrap();
    let config = driver
        .create(store.request(&flags), Progress::discard())
        .await
        .unwrap();
    let conn = driver.connection(&store.machine(&config.0)).await.unwrap();
    assert_eq!(conn.docker_url, "tcp://192.168.99.101:2376");
    assert!(standin.log().contains(
        &"hostonlyif ipconfig vboxnet0 --ip 192.168.99.1 --netmask 255.255.255.0".to_owned()
    ));
    driver.remove(&store.machine(&config.0)).await.unwrap();
}

#[tokio::test]
async fn virtualbox_refusing_the_address_removes_the_new_adapter_and_says_why() {
    // The driver's view of networks.conf allows the range; VirtualBox's
    // (the stand-in's) does not: VirtualBox answers E_ACCESSDENIED.
    let dir = tempfile::tempdir().unwrap();
    let standin = StandIn::with(serde_json::json!({
        "networks_conf": dir.path().join("absent.conf"),
    }));
    std::fs::write(standin.networks_conf(), "* 10.0.0.0/8\n").unwrap();
    let store = Store::new("dev");
    let server = ImageServer::start().await;
    let driver = common::driver(&standin);
    let err = driver
        .create(
            store.request(&[
                ("virtualbox-image-url", &server.url()),
                ("virtualbox-hostonly-cidr", "10.9.8.1/24"),
            ]),
            Progress::discard(),
        )
        .await
        .unwrap_err();
    assert!(err.message.contains("E_ACCESSDENIED"), "{}", err.message);
    assert!(
        err.message.contains("hostonlyif ipconfig vboxnet0"),
        "{}",
        err.message
    );
    assert!(err.hint.unwrap().contains("* 10.9.8.0/24"));
    assert!(
        standin
            .log()
            .contains(&"hostonlyif remove vboxnet0".to_owned())
    );
    assert_eq!(standin.state()["hostonlyifs"], serde_json::json!([]));
    assert!(store.only_cli_files(), "{:?}", store.files());
}

#[tokio::test]
async fn an_overlapping_host_only_network_is_refused_before_anything_is_made() {
    let standin = StandIn::with(serde_json::json!({
        "hostonlyifs": [{"name": "vboxnet0", "ip": "192.168.56.1", "mask": "255.255.255.0"}],
    }));
    let store = Store::new("dev");
    let driver = common::driver(&standin);
    let err = driver
        .pre_create_check(&store.request(&[("virtualbox-hostonly-cidr", "192.168.56.7/24")]))
        .await
        .unwrap_err();
    assert!(
        err.message.contains("overlaps host-only adapter vboxnet0"),
        "{}",
        err.message
    );
    assert!(err.hint.unwrap().contains("192.168.56.1/24"));
}

#[tokio::test]
async fn flags_are_checked() {
    let standin = StandIn::new();
    let store = Store::new("dev");
    let driver = common::driver(&standin);
    for (flags, wanted) in [
        (vec![("virtualbox-hostonly-nictype", "e1000")], "82540EM"),
        (
            vec![("virtualbox-hostonly-nicpromisc", "maybe")],
            "allow-vms",
        ),
        (vec![("virtualbox-ui-type", "window")], "headless"),
        (
            vec![("virtualbox-hostonly-cidr", "192.168.56.0/24")],
            "names the network",
        ),
        (vec![("virtualbox-cpu-count", "0")], "at least 1"),
        (vec![("virtualbox-memory", "64")], "out of range"),
        (
            vec![("virtualbox-image-checksum", "md5:abc")],
            "not a checksum",
        ),
        (
            vec![
                ("virtualbox-image-url", "https://a.example/x.vmdk"),
                ("virtualbox-boot2docker-url", "https://b.example/y.vmdk"),
            ],
            "disagree",
        ),
        (
            vec![(
                "virtualbox-boot2docker-url",
                "https://example.com/boot2docker.iso",
            )],
            "not a cloud image",
        ),
    ] {
        let err = driver
            .pre_create_check(&store.request(&flags))
            .await
            .unwrap_err();
        assert_eq!(
            err.kind,
            ErrorKind::InvalidArgument,
            "{flags:?}: {}",
            err.message
        );
        assert!(err.message.contains(wanted), "{flags:?}: {}", err.message);
    }
    // Case as VBoxManage takes it; Docker Machine's flag name for the image.
    driver
        .pre_create_check(&store.request(&[
            ("virtualbox-nat-nictype", "VIRTIO"),
            ("virtualbox-boot2docker-url", "https://example.com/x.vmdk"),
        ]))
        .await
        .unwrap();
}

#[tokio::test]
async fn flags_keep_docker_machine_names_and_environment_variables() {
    let standin = StandIn::new();
    let flags = common::driver(&standin).create_flags().await.unwrap();
    let find = |n: &str| {
        flags
            .iter()
            .find(|f| f.name == n)
            .unwrap_or_else(|| panic!("{n}"))
    };
    for (name, env, default) in [
        ("virtualbox-cpu-count", "VIRTUALBOX_CPU_COUNT", Some("1")),
        ("virtualbox-memory", "VIRTUALBOX_MEMORY_SIZE", Some("1024")),
        (
            "virtualbox-disk-size",
            "VIRTUALBOX_DISK_SIZE",
            Some("20000"),
        ),
        (
            "virtualbox-hostonly-cidr",
            "VIRTUALBOX_HOSTONLY_CIDR",
            Some("192.168.56.1/24"),
        ),
        (
            "virtualbox-hostonly-nictype",
            "VIRTUALBOX_HOSTONLY_NIC_TYPE",
            Some("82540EM"),
        ),
        (
            "virtualbox-hostonly-nicpromisc",
            "VIRTUALBOX_HOSTONLY_NIC_PROMISC",
            Some("deny"),
        ),
        (
            "virtualbox-hostonly-no-dhcp",
            "VIRTUALBOX_HOSTONLY_NO_DHCP",
            None,
        ),
        (
            "virtualbox-nat-nictype",
            "VIRTUALBOX_NAT_NICTYPE",
            Some("82540EM"),
        ),
        ("virtualbox-no-share", "VIRTUALBOX_NO_SHARE", None),
        (
            "virtualbox-share-folder",
            "VIRTUALBOX_SHARE_FOLDER",
            Some("/home:hosthome"),
        ),
        ("virtualbox-no-dns-proxy", "VIRTUALBOX_NO_DNS_PROXY", None),
        (
            "virtualbox-host-dns-resolver",
            "VIRTUALBOX_HOST_DNS_RESOLVER",
            None,
        ),
        ("virtualbox-ui-type", "VIRTUALBOX_UI_TYPE", Some("headless")),
        ("virtualbox-no-vtx-check", "VIRTUALBOX_NO_VTX_CHECK", None),
        (
            "virtualbox-boot2docker-url",
            "VIRTUALBOX_BOOT2DOCKER_URL",
            None,
        ),
        (
            "virtualbox-image-url",
            "VIRTUALBOX_IMAGE_URL",
            Some(machine_driver_virtualbox::DEFAULT_IMAGE),
        ),
        (
            "virtualbox-image-checksum",
            "VIRTUALBOX_IMAGE_CHECKSUM",
            Some("auto"),
        ),
    ] {
        let f = find(name);
        assert_eq!(f.env_var.as_deref(), Some(env), "{name}");
        if cfg!(target_os = "linux") || default.is_none() {
            assert_eq!(f.default.as_deref(), default, "{name}");
        }
    }
    // Docker Machine's boot2docker VM import has no equivalent: not offered
    // (the CLI refuses it) rather than accepted and ignored.
    assert!(
        flags
            .iter()
            .all(|f| f.name != "virtualbox-import-boot2docker-vm")
    );
    assert_eq!(flags.len(), 17);
}

#[tokio::test]
async fn no_vtx_is_refused_unless_the_check_is_off() {
    let standin = StandIn::new();
    let store = Store::new("dev");
    let cpuinfo = standin.home.path().join("cpuinfo-novtx");
    std::fs::write(
        &cpuinfo,
        "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr pae sse sse2\n",
    )
    .unwrap();
    let mut settings = common::settings(&standin);
    settings.cpuinfo = cpuinfo;
    let driver = machine_driver_virtualbox::VirtualBoxDriver::new(settings);
    let result = driver.pre_create_check(&store.request(&[])).await;
    if cfg!(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "x86")
    )) {
        let err = result.unwrap_err();
        assert_eq!(err.kind, ErrorKind::FailedPrecondition);
        assert!(err.message.contains("VT-x or AMD-V"), "{}", err.message);
        assert!(err.hint.unwrap().contains("--virtualbox-no-vtx-check"));
    }
    driver
        .pre_create_check(&store.request(&[("virtualbox-no-vtx-check", "true")]))
        .await
        .unwrap();
}

#[tokio::test]
async fn an_old_virtualbox_is_refused() {
    let standin = StandIn::with(serde_json::json!({"version": "6.0.24r139119"}));
    let store = Store::new("dev");
    let err = common::driver(&standin)
        .pre_create_check(&store.request(&[]))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition);
    assert!(
        err.message.contains("VirtualBox 6.0.24 is too old"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn an_image_that_does_not_match_its_checksum_is_refused() {
    let standin = StandIn::new();
    let store = Store::new("dev");
    let driver = common::driver(&standin);
    let wrong = ImageServer::serving(format!("{} *fake.vmdk\n", "0".repeat(64))).await;
    let err = driver
        .create(
            store.request(&[("virtualbox-image-url", &wrong.url())]),
            Progress::discard(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition);
    assert!(
        err.message.contains("does not match its checksum"),
        "{}",
        err.message
    );
    assert!(err.message.contains(&wrong.url()), "{}", err.message);
    assert!(err.hint.unwrap().contains("--virtualbox-image-checksum"));

    // A digest given by flag is checked too.
    let good = ImageServer::start().await;
    let err = driver
        .create(
            store.request(&[
                ("virtualbox-image-url", &good.url()),
                (
                    "virtualbox-image-checksum",
                    &format!("sha256:{}", "1".repeat(64)),
                ),
            ]),
            Progress::discard(),
        )
        .await
        .unwrap_err();
    assert!(
        err.message.contains("does not match its checksum"),
        "{}",
        err.message
    );

    // Nothing was made or registered, and no bad download is cached.
    let log = standin.log().join("\n");
    assert!(
        !log.contains("clonemedium") && !log.contains("createvm"),
        "{log}"
    );
    assert_eq!(standin.registered(), (vec![], vec![]));
    assert!(store.only_cli_files(), "{:?}", store.files());
    let cached: Vec<_> = common::walk(&store.root.path().join("cache/images"));
    assert!(cached.is_empty(), "{cached:?}");
}
