//! What the driver's tests share: a VBoxManage stand-in per test, a store
//! with a machine directory, a boot image served over HTTP on 127.0.0.1,
//! and the driver set up to use them.
//!
//! VirtualBox cannot run on the test machines. The stand-in
//! (`tests/standin/vboxmanage.rs`) replays VirtualBox 7.0's recorded output
//! and models its state; see its docs for what it does and does not model.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use machine_driver_sdk::{CreateRequest, FlagValues, Machine};
use machine_driver_virtualbox::{Settings, VirtualBoxDriver};
use machine_vm_support::checksum::Algo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The stand-in, symlinked as `VBoxManage` into a directory of its own
/// that also holds its scenario, state and log.
pub struct StandIn {
    pub home: tempfile::TempDir,
}

impl StandIn {
    /// A fresh VirtualBox 7.0.14: no host-only adapters, no DHCP servers.
    pub fn new() -> Self {
        Self::with(serde_json::json!({}))
    }

    /// A stand-in with a scenario (see `Setup` in the stand-in).
    pub fn with(mut setup: serde_json::Value) -> Self {
        let home = tempfile::Builder::new()
            .prefix("vbox-standin-")
            .tempdir()
            .unwrap();
        std::os::unix::fs::symlink(
            env!("CARGO_BIN_EXE_vboxmanage-standin"),
            home.path().join("VBoxManage"),
        )
        .unwrap();
        // VirtualBox's own networks.conf check reads the same file as the
        // driver's (absent unless a test writes it).
        if setup.get("networks_conf").is_none() {
            setup["networks_conf"] = home.path().join("networks.conf").to_string_lossy().into();
        }
        std::fs::write(
            home.path().join("standin.json"),
            serde_json::to_string_pretty(&setup).unwrap(),
        )
        .unwrap();
        StandIn { home }
    }

    pub fn program(&self) -> PathBuf {
        self.home.path().join("VBoxManage")
    }

    pub fn networks_conf(&self) -> PathBuf {
        self.home.path().join("networks.conf")
    }

    /// Every VBoxManage command line so far.
    pub fn log(&self) -> Vec<String> {
        std::fs::read_to_string(self.home.path().join("vboxmanage.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The stand-in's model of VirtualBox (`vms`, `media`, `hostonlyifs`,
    /// `dhcpservers`, `leases`).
    pub fn state(&self) -> serde_json::Value {
        std::fs::read_to_string(self.home.path().join("state.json"))
            .map(|t| serde_json::from_str(&t).unwrap())
            .unwrap_or(serde_json::json!({"vms": {}, "media": {}}))
    }

    /// Registered VMs and media: both empty after a clean-up.
    pub fn registered(&self) -> (Vec<String>, Vec<String>) {
        let s = self.state();
        let keys = |v: &serde_json::Value| {
            v.as_object()
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default()
        };
        (keys(&s["vms"]), keys(&s["media"]))
    }
}

/// A store with one machine directory, made by "the CLI" with the files
/// the CLI keeps there.
pub struct Store {
    pub root: tempfile::TempDir,
    pub name: String,
}

/// The files the CLI owns in a machine directory; the driver must leave
/// them alone.
pub const CLI_FILES: &[&str] = &["config.json", ".lock", "id_ed25519", "id_ed25519.pub"];

impl Store {
    pub fn new(name: &str) -> Self {
        let root = tempfile::Builder::new()
            .prefix("vbox-store-")
            .tempdir()
            .unwrap();
        let dir = root.path().join("machines").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for f in CLI_FILES {
            std::fs::write(dir.join(f), "owned by the CLI").unwrap();
        }
        Store {
            root,
            name: name.to_owned(),
        }
    }

    pub fn dir(&self) -> PathBuf {
        self.root.path().join("machines").join(&self.name)
    }

    pub fn machine(&self, config: &str) -> Machine {
        Machine {
            name: self.name.clone(),
            dir: self.dir(),
            config_json: config.to_owned(),
        }
    }

    /// The machine directory's entries, sorted.
    pub fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Whether only the CLI's files are left in the machine directory.
    pub fn only_cli_files(&self) -> bool {
        let mut want: Vec<String> = CLI_FILES.iter().map(|s| s.to_string()).collect();
        want.sort();
        self.files() == want
    }

    pub fn request(&self, flags: &[(&str, &str)]) -> CreateRequest {
        let mut values = FlagValues::default();
        for (k, v) in flags {
            values.insert_string(k, v);
        }
        CreateRequest {
            machine: self.machine(""),
            flags: values,
            ssh_public_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDQ7 machine".into(),
            ssh_private_key_path: self.dir().join("id_ed25519"),
        }
    }
}

/// The fake image every test boots: what a VMDK's first bytes look like,
/// which is all the stand-in reads.
pub const IMAGE: &[u8] =
    b"KDMV\x01\x00\x00\x00 fake streamOptimized VMDK for the VBoxManage stand-in\n";

/// A small HTTP/1.1 server on 127.0.0.1: `/img/fake.vmdk` and its
/// `SHA256SUMS`, as cloud-images.ubuntu.com publishes them (no
/// SHA512SUMS: that is a 404).
pub struct ImageServer {
    pub base: String,
}

impl ImageServer {
    pub async fn start() -> Self {
        let sums = format!("{} *fake.vmdk\n", sha256_hex(IMAGE));
        Self::serving(sums).await
    }

    /// Serves a SHA256SUMS that lists `sums`.
    pub async fn serving(sums: String) -> Self {
        let routes: Arc<HashMap<&'static str, Vec<u8>>> = Arc::new(HashMap::from([
            ("/img/fake.vmdk", IMAGE.to_vec()),
            ("/img/SHA256SUMS", sums.into_bytes()),
        ]));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let routes = routes.clone();
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&req);
                    let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    let (status, body) = match routes.get(path.as_str()) {
                        Some(b) => ("200 OK", b.clone()),
                        None => ("404 Not Found", Vec::new()),
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = sock.write_all(head.as_bytes()).await;
                    let _ = sock.write_all(&body).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        ImageServer { base }
    }

    pub fn url(&self) -> String {
        format!("{}/img/fake.vmdk", self.base)
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    let mut h = Algo::Sha256.hasher();
    h.update(data);
    h.finish().hex
}

/// A /proc/cpuinfo whose CPU offers VT-x.
pub fn cpuinfo_with_vtx(dir: &Path) -> PathBuf {
    let path = dir.join("cpuinfo");
    std::fs::write(
        &path,
        "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vme de pse tsc msr pae mce cx8 apic vmx sse sse2\n\n",
    )
    .unwrap();
    path
}

/// Settings for the driver under test: the stand-in, short waits.
pub fn settings(standin: &StandIn) -> Settings {
    Settings {
        vboxmanage: Some(standin.program()),
        path: None,
        networks_conf: standin.networks_conf(),
        cpuinfo: cpuinfo_with_vtx(standin.home.path()),
        lease_timeout: Duration::from_secs(20),
        stop_timeout: Duration::from_secs(5),
        poll: Duration::from_millis(10),
        acpi_repeat: Duration::from_millis(500),
    }
}

pub fn driver(standin: &StandIn) -> VirtualBoxDriver {
    VirtualBoxDriver::new(settings(standin))
}

/// Every file below `dir`.
pub fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            files.extend(walk(&e.path()));
        } else {
            files.push(e.path());
        }
    }
    files
}
