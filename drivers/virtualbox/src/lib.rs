//! The `virtualbox` driver: a machine is a VirtualBox VM booted from a cloud
//! image, driven through `VBoxManage`, with Docker Machine's
//! `--virtualbox-*` flags.
//!
//! - **VBoxManage** is `$MACHINE_VBOXMANAGE`, else `VBoxManage` (or
//!   `vboxmanage`) on `PATH`; VirtualBox 6.1 or newer. Every call goes
//!   through [`vbox::VBoxManage`], which turns failures into errors naming
//!   the command line and VirtualBox's message.
//! - **Image:** a cloud image VirtualBox can clone (default
//!   [`DEFAULT_IMAGE`], Ubuntu 24.04's VMDK), fetched once into the store's
//!   cache and verified by `machine-vm-support`. The machine's disk is a VDI
//!   clone of it, grown to `--virtualbox-disk-size`.
//! - **First boot:** a cloud-init NoCloud seed (FAT, written in-process,
//!   then `convertfromraw` to a VDI) with the user `machine`, the machine's
//!   SSH key, its hostname, and DHCP on every NIC.
//! - **Network:** NIC 1 is NAT, with SSH forwarded from 127.0.0.1 only;
//!   NIC 2 is on a host-only adapter (found or made for
//!   `--virtualbox-hostonly-cidr`, with a DHCP server), and the Docker port
//!   is reached there: `tcp://<host-only address>:2376`. The address is the
//!   NIC's DHCP lease (`dhcpserver findlease`), looked up by its fixed MAC.
//!   VirtualBox ≥ 6.1.28's host-only range rule is checked up front
//!   ([`net`]).
//! - **Failures** leave nothing behind: a create that fails (or is dropped)
//!   powers the VM off, unregisters it with its media, closes every medium
//!   it registered and deletes its files ([`vm::teardown`]).
//!
//! The tests run against `vboxmanage-standin`, a stand-in that replays
//! VirtualBox 7.0's recorded output (`tests/`), not a real VirtualBox.

pub mod net;
pub mod parse;
pub mod vbox;
pub mod vm;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use machine_driver_sdk::{
    Capability, Config, Connection, CreateRequest, Driver, DriverInfo, Error, ErrorKind, Flag,
    Machine, Progress, Result, State, Status, async_trait,
};
use machine_vm_support::image::{self, Checksum, Source};
use machine_vm_support::{ports, seed};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::net::Cidr;
use crate::vbox::{VBoxManage, Version};
use crate::vm::{Files, Timing};

/// The image used when no image URL is given: Ubuntu 24.04 LTS's cloud
/// image as a VMDK, checked against the SHA256SUMS published beside it.
pub const DEFAULT_IMAGE: &str = "https://cloud-images.ubuntu.com/releases/noble/release/ubuntu-24.04-server-cloudimg-amd64.vmdk";
/// The host-only network when none is given. Docker Machine's
/// 192.168.99.1/24 is outside what VirtualBox ≥ 6.1.28 allows by default.
pub const DEFAULT_HOSTONLY_CIDR: &str = "192.168.56.1/24";
/// The user cloud-init makes for `machine`.
pub const SSH_USER: &str = "machine";
/// The Docker port, on the host-only address.
pub const ENGINE_PORT: u16 = 2376;

const DEFAULT_CPUS: i64 = 1;
const DEFAULT_MEMORY_MB: i64 = 1024;
const DEFAULT_DISK_MB: i64 = 20000;
const NIC_TYPES: &[&str] = &[
    "Am79C970A",
    "Am79C973",
    "Am79C960",
    "82540EM",
    "82543GC",
    "82545EM",
    "virtio",
];
const PROMISC_MODES: &[&str] = &["deny", "allow-vms", "allow-all"];
const UI_TYPES: &[&str] = &["headless", "gui", "sdl", "separate"];

/// Where the driver finds things and how long it waits; [`Settings::from_env`]
/// for the real thing, changed by tests.
#[derive(Debug, Clone)]
pub struct Settings {
    /// VBoxManage to run; `None` searches [`Settings::path`].
    pub vboxmanage: Option<PathBuf>,
    /// The `PATH` to search for VBoxManage.
    pub path: Option<OsString>,
    /// The file with the allowed host-only ranges.
    pub networks_conf: PathBuf,
    /// Where to look for the CPU's VT-x/AMD-V flags (Linux).
    pub cpuinfo: PathBuf,
    /// How long a booting VM may take to lease its host-only address.
    pub lease_timeout: Duration,
    /// How long `stop` waits for the guest to power off.
    pub stop_timeout: Duration,
    /// How often to look again while waiting.
    pub poll: Duration,
    /// How often `stop` presses the ACPI power button again: a guest that
    /// is still booting ignores it.
    pub acpi_repeat: Duration,
}

impl Settings {
    /// The settings of a real run: `MACHINE_VBOXMANAGE`, `PATH`,
    /// `MACHINE_VIRTUALBOX_NETWORKS_CONF` (else `/etc/vbox/networks.conf`).
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        Settings {
            vboxmanage: var(vbox::ENV_VBOXMANAGE).map(PathBuf::from),
            path: std::env::var_os("PATH"),
            networks_conf: var(net::ENV_NETWORKS_CONF)
                .map_or_else(|| PathBuf::from(net::NETWORKS_CONF), PathBuf::from),
            cpuinfo: PathBuf::from("/proc/cpuinfo"),
            lease_timeout: Duration::from_secs(300),
            stop_timeout: Duration::from_secs(120),
            poll: Duration::from_secs(1),
            acpi_repeat: Duration::from_secs(10),
        }
    }
}

/// The driver.
#[derive(Debug)]
pub struct VirtualBoxDriver {
    settings: Settings,
    /// Serialises host-only network set-up within this process; a lock
    /// file does it between processes.
    network: tokio::sync::Mutex<()>,
}

impl Default for VirtualBoxDriver {
    fn default() -> Self {
        Self::new(Settings::from_env())
    }
}

/// What the store keeps per machine (no absolute paths: the store can move).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct VBoxConfig {
    /// The VirtualBox VM's name.
    vm: String,
    hostonly_cidr: String,
    /// `vboxnetN`.
    hostonly_adapter: String,
    /// `HostInterfaceNetworking-vboxnetN`.
    hostonly_network: String,
    #[serde(default)]
    no_dhcp: bool,
    /// NIC 2's MAC, 12 hex digits.
    mac: String,
    /// NIC 2's leased address: the machine's IP and Docker host.
    ip: String,
    ssh_port: u16,
    ssh_user: String,
    ui_type: String,
    cpus: u32,
    memory_mb: u64,
    disk_size_mb: u64,
    image: String,
    #[serde(default)]
    image_digest: Option<String>,
}

/// The validated flags of a create.
#[derive(Debug, Clone)]
struct Options {
    image: String,
    checksum: Checksum,
    cpus: u32,
    memory_mb: u64,
    disk_size_mb: u64,
    cidr: Cidr,
    hostonly_nictype: String,
    hostonly_promisc: String,
    no_dhcp: bool,
    nat_nictype: String,
    /// The shared folder: host directory and share name.
    share: Option<(PathBuf, String)>,
    dns_proxy: bool,
    host_dns_resolver: bool,
    ui_type: String,
    vtx_check: bool,
}

fn int_in(req: &CreateRequest, name: &str, default: i64, min: i64, max: i64) -> Result<i64> {
    let v = req.flags.int(name)?.unwrap_or(default);
    if !(min..=max).contains(&v) {
        return Err(Error::invalid_argument(format!(
            "--{name} {v} is out of range ({min} to {max})"
        )));
    }
    Ok(v)
}

/// A value from a fixed list, matched without regard to case as VBoxManage
/// does, returned in VBoxManage's spelling.
fn one_of(req: &CreateRequest, name: &str, default: &str, allowed: &[&str]) -> Result<String> {
    let v = req.flags.string_or(name, default)?;
    allowed
        .iter()
        .find(|a| a.eq_ignore_ascii_case(v.trim()))
        .map(|a| (*a).to_owned())
        .ok_or_else(|| {
            Error::invalid_argument(format!("--{name} {v:?}: use one of {}", allowed.join(", ")))
        })
}

/// Docker Machine's default share: the users' home directories.
fn default_share() -> (PathBuf, String) {
    if cfg!(target_os = "macos") {
        ("/Users".into(), "Users".into())
    } else {
        ("/home".into(), "hosthome".into())
    }
}

/// `--virtualbox-share-folder DIR:NAME` (as Docker Machine: split at the
/// last colon; a bare DIR is shared under its own path without the `/`).
fn parse_share(text: &str) -> (PathBuf, String) {
    match text.rsplit_once(':') {
        Some((dir, name)) if !dir.is_empty() && !name.is_empty() && !name.contains('/') => {
            (dir.into(), name.to_owned())
        }
        _ => (text.into(), text.trim_start_matches('/').replace('/', "_")),
    }
}

impl Options {
    fn parse(req: &CreateRequest) -> Result<Options> {
        let f = &req.flags;
        let url = f.string("virtualbox-image-url")?.filter(|v| !v.is_empty());
        let b2d = f
            .string("virtualbox-boot2docker-url")?
            .filter(|v| !v.is_empty());
        let image = match (url, b2d) {
            (Some(a), Some(b)) if a != b => {
                return Err(Error::invalid_argument(format!(
                    "--virtualbox-image-url {a} and --virtualbox-boot2docker-url {b} disagree; \
                     --virtualbox-boot2docker-url is Docker Machine's name for the same flag"
                )));
            }
            (Some(a), _) => a,
            (None, Some(b)) => b,
            (None, None) => DEFAULT_IMAGE.to_owned(),
        };
        if image.ends_with(".iso") {
            return Err(Error::invalid_argument(format!(
                "--virtualbox-image-url {image}: an ISO (such as boot2docker.iso) is not a cloud image"
            ))
            .with_hint(format!(
                "use a cloud image disk VirtualBox can clone (VMDK, VDI, VHD), such as {DEFAULT_IMAGE}"
            )));
        }
        let checksum = Checksum::parse(&f.string_or("virtualbox-image-checksum", "auto")?)
            .map_err(|e| Error::invalid_argument(e.to_string()))?;
        let cpus = match int_in(req, "virtualbox-cpu-count", DEFAULT_CPUS, -1, 32)? {
            // As Docker Machine: -1 is every CPU of the host, up to 32.
            -1 => std::thread::available_parallelism().map_or(1, |n| n.get().min(32)) as u32,
            0 => {
                return Err(Error::invalid_argument(
                    "--virtualbox-cpu-count 0: give at least 1 (or -1 for all of the host's)",
                ));
            }
            n => n as u32,
        };
        let share = if f.bool("virtualbox-no-share")? {
            None
        } else {
            Some(
                f.string("virtualbox-share-folder")?
                    .filter(|s| !s.is_empty())
                    .map_or_else(default_share, |s| parse_share(&s)),
            )
        };
        Ok(Options {
            image,
            checksum,
            cpus,
            memory_mb: int_in(req, "virtualbox-memory", DEFAULT_MEMORY_MB, 256, 1 << 21)? as u64,
            disk_size_mb: int_in(req, "virtualbox-disk-size", DEFAULT_DISK_MB, 1024, 1 << 31)?
                as u64,
            cidr: net::parse_host_cidr(
                &f.string_or("virtualbox-hostonly-cidr", DEFAULT_HOSTONLY_CIDR)?,
            )?,
            hostonly_nictype: one_of(req, "virtualbox-hostonly-nictype", "82540EM", NIC_TYPES)?,
            hostonly_promisc: one_of(req, "virtualbox-hostonly-nicpromisc", "deny", PROMISC_MODES)?,
            no_dhcp: f.bool("virtualbox-hostonly-no-dhcp")?,
            nat_nictype: one_of(req, "virtualbox-nat-nictype", "82540EM", NIC_TYPES)?,
            share,
            dns_proxy: !f.bool("virtualbox-no-dns-proxy")?,
            host_dns_resolver: f.bool("virtualbox-host-dns-resolver")?,
            ui_type: one_of(req, "virtualbox-ui-type", "headless", UI_TYPES)?,
            vtx_check: !f.bool("virtualbox-no-vtx-check")?,
        })
    }
}

/// The VM's name: the machine's, plus a short hash of its directory, so
/// machines of the same name in two stores do not collide in VirtualBox's
/// one registry. The hash is SHA-256, stable across builds.
pub fn vm_name(machine: &str, dir: &Path) -> String {
    let digest = sha2::Sha256::digest(dir.as_os_str().as_encoded_bytes());
    format!("machine-{machine}-{}", &hex::encode(digest)[..8])
}

fn unique_bytes(dir: &Path) -> Vec<u8> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut h = sha2::Sha256::new();
    h.update(dir.as_os_str().as_encoded_bytes());
    h.update(nanos.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.finalize().to_vec()
}

/// A MAC in VirtualBox's own range (08:00:27), random in its last three
/// bytes: the DHCP lease is looked up by it.
fn new_mac(dir: &Path) -> String {
    format!("080027{}", hex::encode_upper(&unique_bytes(dir)[..3]))
}

fn instance_id(name: &str, dir: &Path) -> String {
    format!("machine-{name}-{}", hex::encode(&unique_bytes(dir)[..6]))
}

/// Why VirtualBox cannot run VMs here, when /proc/cpuinfo shows an x86
/// CPU without VT-x or AMD-V (off in the firmware, or a VM without nested
/// virtualisation). VirtualBox 6.1 and later need one of them.
fn vtx_problem(cpuinfo: &Path) -> Option<String> {
    if !cfg!(target_os = "linux") || !cfg!(any(target_arch = "x86_64", target_arch = "x86")) {
        return None;
    }
    let text = std::fs::read_to_string(cpuinfo).ok()?;
    let mut flags = text.lines().filter(|l| l.starts_with("flags")).peekable();
    flags.peek()?;
    let has = flags.any(|l| {
        l.split_whitespace()
            .any(|flag| flag == "vmx" || flag == "svm")
    });
    (!has).then(|| {
        format!(
            "this computer's CPU does not offer VT-x or AMD-V to VirtualBox (no vmx or svm flag in {})",
            cpuinfo.display()
        )
    })
}

fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port)).is_ok()
}

fn natpf(port: u16) -> String {
    format!("ssh,tcp,127.0.0.1,{port},,22")
}

/// Removes what a create made when it does not finish: on an error, and
/// when the create call is dropped (the CLI went away). It runs
/// VBoxManage synchronously, as `Drop` cannot wait.
struct Undo {
    vbox: VBoxManage,
    files: Files,
    /// The cached image, registered by the clone until closed.
    image: Option<PathBuf>,
    every: Duration,
    armed: bool,
}

impl Drop for Undo {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        tracing::info!(
            "create of VM {} did not finish; removing what it made",
            self.files.vm
        );
        let left = vm::teardown(&self.vbox, &self.files, self.image.as_deref(), self.every);
        if !left.0.is_empty() {
            tracing::warn!(
                "VM {}: could not remove {}; remove them with VBoxManage",
                self.files.vm,
                left.0.join(", ")
            );
        }
    }
}

impl VirtualBoxDriver {
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            network: tokio::sync::Mutex::new(()),
        }
    }

    fn vboxmanage(&self) -> Result<VBoxManage> {
        VBoxManage::find(
            self.settings.vboxmanage.as_deref(),
            self.settings.path.clone(),
        )
    }

    fn timing(&self, limit: Duration) -> Timing {
        Timing {
            limit,
            every: self.settings.poll,
        }
    }

    /// Everything that can be known before anything is made.
    async fn preconditions(&self, opts: &Options) -> Result<(VBoxManage, Version)> {
        let vbox = self.vboxmanage()?;
        let version = vbox.version().await?;
        if opts.vtx_check
            && let Some(problem) = vtx_problem(&self.settings.cpuinfo)
        {
            return Err(Error::failed_precondition(problem).with_hint(
                "enable VT-x/AMD-V in the BIOS/UEFI settings (or nested virtualisation for a VM); \
                 --virtualbox-no-vtx-check skips this check, but VirtualBox cannot start VMs without it",
            ));
        }
        net::check_range(&opts.cidr, version, &self.settings.networks_conf)?;
        Ok((vbox, version))
    }

    /// Sets up the host-only network, one create at a time on this host.
    async fn ensure_network(
        &self,
        vbox: &VBoxManage,
        cidr: &Cidr,
        no_dhcp: bool,
        cache: &Path,
    ) -> Result<net::HostOnly> {
        let _inside = self.network.lock().await;
        std::fs::create_dir_all(cache)
            .map_err(|e| Error::internal(format!("creating {}: {e}", cache.display())))?;
        let lock_path = cache.join("virtualbox-network.lock");
        let lock = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)?;
            f.lock()?;
            Ok(f)
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))?
        .map_err(|e| Error::internal(format!("locking the host-only network set-up: {e}")))?;
        let result = net::ensure(vbox, cidr, no_dhcp).await;
        drop(lock);
        result
    }

    async fn fetch_image(
        &self,
        name: &str,
        opts: &Options,
        cache: &Path,
        progress: &Progress,
    ) -> Result<image::Image> {
        let source = match Source::parse(&opts.image) {
            Source::File(p) => Source::File(std::path::absolute(&p).unwrap_or(p)),
            url => url,
        };
        let fetched =
            image::fetch_reporting(&source, &opts.checksum, &cache.join("images"), progress).await;
        fetched.map_err(|e| {
            Error::failed_precondition(format!("machine `{name}`: {e}"))
                .with_hint(e.hint("virtualbox-image-url", "virtualbox-image-checksum"))
        })
    }

    /// Runs one VBoxManage step of a create.
    async fn step<S: AsRef<str>>(
        &self,
        vbox: &VBoxManage,
        name: &str,
        args: &[S],
    ) -> Result<String> {
        vbox.run(args)
            .await
            .map_err(|e| e.to_error(&format!("creating machine `{name}`")))
    }

    /// Starts the VM and waits for its host-only address.
    async fn boot(
        &self,
        vbox: &VBoxManage,
        name: &str,
        files: &Files,
        cfg: &VBoxConfig,
    ) -> Result<String> {
        vbox.run(&["startvm", &cfg.vm, "--type", &cfg.ui_type])
            .await
            .map_err(|e| {
                e.to_error(&format!("machine `{name}`: starting VM {}", cfg.vm))
                    .with_hint(format!(
                        "VirtualBox's log is {}; a VT-x/AMD-V problem shows there",
                        files.vbox_log().display()
                    ))
            })?;
        let ip = vm::wait_for_ip(
            vbox,
            files,
            name,
            (&cfg.hostonly_adapter, &cfg.hostonly_network),
            &cfg.mac,
            self.timing(self.settings.lease_timeout),
        )
        .await?;
        Ok(ip.to_string())
    }

    fn not_registered(name: &str, vm: &str) -> Error {
        Error::not_found(format!("machine `{name}`: VirtualBox has no VM named {vm}"))
            .with_hint("it was removed outside machine; `machine rm` forgets the machine")
    }

    async fn create_vm(
        &self,
        req: &CreateRequest,
        opts: &Options,
        vbox: &VBoxManage,
        progress: &Progress,
    ) -> Result<Config> {
        let name = req.machine.name.clone();
        let dir = &req.machine.dir;
        let files = Files::new(dir, &vm_name(&name, dir));
        if vm::vm_state(vbox, &files.vm).await?.is_some() {
            return Err(Error::already_exists(format!(
                "machine `{name}`: VirtualBox already has a VM named {}",
                files.vm
            ))
            .with_hint("remove the machine with `machine rm` first"));
        }
        if files.any_exist() {
            return Err(Error::already_exists(format!(
                "machine `{name}` already has VM files in {}",
                dir.display()
            ))
            .with_hint("remove the machine with `machine rm` first"));
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::internal(format!("creating {}: {e}", dir.display())))?;
        let cache = machine_vm_support::store::cache_dir(dir);

        // The image and the network first: nothing of the VM to undo if
        // they cannot be had (the network is shared, and kept).
        let image = self.fetch_image(&name, opts, &cache, progress).await?;
        progress
            .step(format!("setting up the host-only network {}", opts.cidr))
            .await;
        let hostonly = self
            .ensure_network(vbox, &opts.cidr, opts.no_dhcp, &cache)
            .await?;

        let mut undo = Undo {
            vbox: vbox.clone(),
            files: files.clone(),
            image: None,
            every: Duration::from_millis(200).min(self.settings.poll),
            armed: true,
        };
        let image_path = image.path.to_string_lossy().into_owned();
        let disk = files.disk().to_string_lossy().into_owned();
        progress
            .step("cloning the image into the machine's disk")
            .await;
        undo.image = Some(image.path.clone());
        self.step(
            vbox,
            &name,
            &["clonemedium", "disk", &image_path, &disk, "--format", "VDI"],
        )
        .await?;
        // The clone registered the shared image; unregister it so that the
        // cache can be cleaned without VirtualBox missing it.
        match vbox.run(&["closemedium", "disk", &image_path]).await {
            Ok(_) => undo.image = None,
            Err(e) => tracing::debug!("{e}"),
        }
        let info = self
            .step(vbox, &name, &["showmediuminfo", "disk", &disk])
            .await?;
        let capacity = parse::capacity_mb(&info).unwrap_or(0);
        if opts.disk_size_mb > capacity {
            self.step(
                vbox,
                &name,
                &[
                    "modifymedium",
                    "disk",
                    &disk,
                    "--resize",
                    &opts.disk_size_mb.to_string(),
                ],
            )
            .await?;
        } else {
            tracing::warn!(
                "machine `{name}`: the image is {capacity} MB, not less than --virtualbox-disk-size {}; the disk keeps the image's size",
                opts.disk_size_mb
            );
        }

        progress.step("writing the cloud-init seed").await;
        let nocloud = seed::NoCloud {
            instance_id: instance_id(&name, dir),
            hostname: name.clone(),
            user: SSH_USER.to_owned(),
            authorized_keys: Some(req.ssh_public_key.trim().to_owned())
                .filter(|k| !k.is_empty())
                .into_iter()
                .collect(),
            network_config: Some(seed::dhcp_on_every_nic()),
        };
        nocloud
            .write_fat(&files.seed_img())
            .map_err(|e| Error::internal(format!("machine `{name}`: {e}")))?;
        let seed_img = files.seed_img().to_string_lossy().into_owned();
        let seed_vdi = files.seed_vdi().to_string_lossy().into_owned();
        self.step(
            vbox,
            &name,
            &["convertfromraw", &seed_img, &seed_vdi, "--format", "VDI"],
        )
        .await?;
        let _ = std::fs::remove_file(files.seed_img());

        progress.step(format!("creating VM {}", files.vm)).await;
        let base = dir.to_string_lossy().into_owned();
        self.step(
            vbox,
            &name,
            &[
                "createvm",
                "--name",
                &files.vm,
                "--basefolder",
                &base,
                "--ostype",
                "Linux26_64",
                "--register",
            ],
        )
        .await?;
        let ssh_port = ports::free_port()
            .map_err(|e| Error::internal(format!("finding a free port on 127.0.0.1: {e}")))?;
        let mac = new_mac(dir);
        let onoff = |b: bool| if b { "on" } else { "off" };
        let serial = files.serial().to_string_lossy().into_owned();
        let vm = files.vm.as_str();
        let (cpus, memory) = (opts.cpus.to_string(), opts.memory_mb.to_string());
        self.step(
            vbox,
            &name,
            &[
                "modifyvm",
                vm,
                "--cpus",
                &cpus,
                "--memory",
                &memory,
                "--acpi",
                "on",
                "--ioapic",
                "on",
                "--rtcuseutc",
                "on",
                "--boot1",
                "disk",
                "--boot2",
                "none",
                "--boot3",
                "none",
                "--boot4",
                "none",
                // Ubuntu's cloud images write their console to ttyS0; a
                // missing serial port slows their boot down.
                "--uart1",
                "0x3F8",
                "4",
                "--uartmode1",
                "file",
                &serial,
            ],
        )
        .await?;
        let forward = natpf(ssh_port);
        self.step(
            vbox,
            &name,
            &[
                "modifyvm",
                vm,
                "--nic1",
                "nat",
                "--nictype1",
                &opts.nat_nictype,
                "--cableconnected1",
                "on",
                "--natdnsproxy1",
                onoff(opts.dns_proxy),
                "--natdnshostresolver1",
                onoff(opts.host_dns_resolver),
                "--natpf1",
                &forward,
            ],
        )
        .await?;
        self.step(
            vbox,
            &name,
            &[
                "modifyvm",
                vm,
                "--nic2",
                "hostonly",
                "--hostonlyadapter2",
                &hostonly.adapter,
                "--nictype2",
                &opts.hostonly_nictype,
                "--nicpromisc2",
                &opts.hostonly_promisc,
                "--macaddress2",
                &mac,
                "--cableconnected2",
                "on",
            ],
        )
        .await?;
        self.step(
            vbox,
            &name,
            &[
                "storagectl",
                vm,
                "--name",
                "SATA",
                "--add",
                "sata",
                "--controller",
                "IntelAhci",
                "--portcount",
                "2",
                "--hostiocache",
                "on",
                "--bootable",
                "on",
            ],
        )
        .await?;
        for (port, medium) in [("0", &disk), ("1", &seed_vdi)] {
            self.step(
                vbox,
                &name,
                &[
                    "storageattach",
                    vm,
                    "--storagectl",
                    "SATA",
                    "--port",
                    port,
                    "--device",
                    "0",
                    "--type",
                    "hdd",
                    "--medium",
                    medium,
                ],
            )
            .await?;
        }
        if let Some((share_dir, share_name)) = &opts.share {
            if share_dir.is_dir() {
                let host_path = share_dir.to_string_lossy().into_owned();
                let mount = format!("/{share_name}");
                self.step(
                    vbox,
                    &name,
                    &[
                        "sharedfolder",
                        "add",
                        vm,
                        "--name",
                        share_name,
                        "--hostpath",
                        &host_path,
                        "--automount",
                        "--auto-mount-point",
                        &mount,
                    ],
                )
                .await?;
                self.step(
                    vbox,
                    &name,
                    &[
                        "setextradata",
                        vm,
                        &format!("VBoxInternal2/SharedFoldersEnableSymlinksCreate/{share_name}"),
                        "1",
                    ],
                )
                .await?;
            } else {
                tracing::info!(
                    "machine `{name}`: {} does not exist; no shared folder",
                    share_dir.display()
                );
            }
        }

        let mut cfg = VBoxConfig {
            vm: files.vm.clone(),
            hostonly_cidr: opts.cidr.to_string(),
            hostonly_adapter: hostonly.adapter.clone(),
            hostonly_network: hostonly.network_name.clone(),
            no_dhcp: opts.no_dhcp,
            mac,
            ip: String::new(),
            ssh_port,
            ssh_user: SSH_USER.to_owned(),
            ui_type: opts.ui_type.clone(),
            cpus: opts.cpus,
            memory_mb: opts.memory_mb,
            disk_size_mb: opts.disk_size_mb.max(capacity),
            image: opts.image.clone(),
            image_digest: image.digest.map(|d| d.to_string()),
        };
        progress
            .step(format!(
                "starting VM {} and waiting for its address on {}",
                files.vm, hostonly.adapter
            ))
            .await;
        cfg.ip = self.boot(vbox, &name, &files, &cfg).await?;
        let config = Config::of(&cfg)?;
        undo.armed = false;
        Ok(config)
    }

    /// The VM's name for a machine, from its config or, for a create that
    /// never stored one, from its directory.
    fn vm_of(m: &Machine) -> Result<String> {
        if m.config_json.is_empty() {
            Ok(vm_name(&m.name, &m.dir))
        } else {
            Ok(m.config::<VBoxConfig>()?.vm)
        }
    }

    async fn stop_vm(&self, m: &Machine) -> Result<()> {
        let cfg: VBoxConfig = m.config()?;
        let vbox = self.vboxmanage()?;
        let Some(state) = vm::vm_state(&vbox, &cfg.vm).await? else {
            return Err(Self::not_registered(&m.name, &cfg.vm));
        };
        if !vm::is_active(&state) {
            return Ok(());
        }
        if state == "paused" {
            // A paused guest cannot hear the power button.
            vbox.run(&["controlvm", &cfg.vm, "resume"])
                .await
                .map_err(|e| e.to_error(&format!("machine `{}`: resuming", m.name)))?;
        }
        let limit = self.settings.stop_timeout;
        let started = Instant::now();
        while started.elapsed() < limit {
            match vbox.run(&["controlvm", &cfg.vm, "acpipowerbutton"]).await {
                Ok(_) => {}
                Err(e) if e.message().contains("not currently running") => return Ok(()),
                Err(e) => {
                    return Err(
                        e.to_error(&format!("machine `{}`: pressing the power button", m.name))
                    );
                }
            }
            let window = self
                .settings
                .acpi_repeat
                .min(limit.saturating_sub(started.elapsed()));
            if vm::wait_inactive(&vbox, &cfg.vm, self.timing(window)).await? {
                return Ok(());
            }
        }
        Err(Error::new(
            ErrorKind::Timeout,
            format!(
                "machine `{}`: VM {} did not power off within {} s of the ACPI power button",
                m.name,
                cfg.vm,
                limit.as_secs()
            ),
        )
        .with_hint(format!(
            "power it off at once with `machine kill {}`",
            m.name
        )))
    }
}

#[async_trait]
impl Driver for VirtualBoxDriver {
    fn info(&self) -> DriverInfo {
        DriverInfo {
            name: "virtualbox".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "VirtualBox virtual machines booted from cloud images".into(),
            capabilities: Capability::ALL.to_vec(),
        }
    }

    async fn create_flags(&self) -> Result<Vec<Flag>> {
        let (share_dir, share_name) = default_share();
        Ok(vec![
            Flag::int("virtualbox-cpu-count", "virtual CPUs (-1: all of the host's, up to 32)")
                .default_value(DEFAULT_CPUS)
                .env("VIRTUALBOX_CPU_COUNT"),
            Flag::int("virtualbox-memory", "memory in MB")
                .default_value(DEFAULT_MEMORY_MB)
                .env("VIRTUALBOX_MEMORY_SIZE"),
            Flag::int("virtualbox-disk-size", "disk size in MB")
                .default_value(DEFAULT_DISK_MB)
                .env("VIRTUALBOX_DISK_SIZE"),
            Flag::string(
                "virtualbox-image-url",
                "cloud image to boot, in a format VirtualBox clones (VMDK, VDI, VHD): an http(s) URL (downloaded once, cached) or a local file",
            )
            .default_value(DEFAULT_IMAGE)
            .env("VIRTUALBOX_IMAGE_URL"),
            Flag::string(
                "virtualbox-boot2docker-url",
                "Docker Machine's name for --virtualbox-image-url (a cloud image, not a boot2docker ISO)",
            )
            .env("VIRTUALBOX_BOOT2DOCKER_URL"),
            Flag::string(
                "virtualbox-image-checksum",
                "the image's checksum: auto (the SHA512SUMS/SHA256SUMS beside a URL), sha256:HEX, sha512:HEX, a SUMS file URL, or none",
            )
            .default_value("auto")
            .env("VIRTUALBOX_IMAGE_CHECKSUM"),
            Flag::string(
                "virtualbox-hostonly-cidr",
                "the host's address and prefix on the host-only network (VirtualBox >= 6.1.28 allows 192.168.56.0/21 unless /etc/vbox/networks.conf says otherwise)",
            )
            .default_value(DEFAULT_HOSTONLY_CIDR)
            .env("VIRTUALBOX_HOSTONLY_CIDR"),
            Flag::string(
                "virtualbox-hostonly-nictype",
                &format!("host-only adapter type: {}", NIC_TYPES.join(", ")),
            )
            .default_value("82540EM")
            .env("VIRTUALBOX_HOSTONLY_NIC_TYPE"),
            Flag::string(
                "virtualbox-hostonly-nicpromisc",
                "host-only adapter promiscuous mode: deny, allow-vms, allow-all",
            )
            .default_value("deny")
            .env("VIRTUALBOX_HOSTONLY_NIC_PROMISC"),
            Flag::bool(
                "virtualbox-hostonly-no-dhcp",
                "do not add or change the host-only network's DHCP server (an enabled one must exist: the VM's address is read from its leases)",
            )
            .env("VIRTUALBOX_HOSTONLY_NO_DHCP"),
            Flag::string(
                "virtualbox-nat-nictype",
                &format!("NAT adapter type: {}", NIC_TYPES.join(", ")),
            )
            .default_value("82540EM")
            .env("VIRTUALBOX_NAT_NICTYPE"),
            Flag::bool("virtualbox-no-share", "do not share the home directories with the VM")
                .env("VIRTUALBOX_NO_SHARE"),
            Flag::string(
                "virtualbox-share-folder",
                "host directory to share instead of the home directories, as DIR:NAME",
            )
            .default_value(format!("{}:{share_name}", share_dir.display()))
            .env("VIRTUALBOX_SHARE_FOLDER"),
            Flag::bool(
                "virtualbox-no-dns-proxy",
                "do not proxy the VM's DNS requests through VirtualBox's NAT",
            )
            .env("VIRTUALBOX_NO_DNS_PROXY"),
            Flag::bool(
                "virtualbox-host-dns-resolver",
                "resolve the VM's DNS requests with the host's resolver",
            )
            .env("VIRTUALBOX_HOST_DNS_RESOLVER"),
            Flag::string("virtualbox-ui-type", "how the VM runs: headless, gui, sdl, separate")
                .default_value("headless")
                .env("VIRTUALBOX_UI_TYPE"),
            Flag::bool(
                "virtualbox-no-vtx-check",
                "skip checking that the CPU offers VT-x/AMD-V before creating the VM",
            )
            .env("VIRTUALBOX_NO_VTX_CHECK"),
        ])
    }

    async fn pre_create_check(&self, req: &CreateRequest) -> Result<Vec<String>> {
        let opts = Options::parse(req)?;
        let (vbox, _) = self.preconditions(&opts).await?;
        net::check_conflicts(&vbox, &opts.cidr).await?;
        let mut warnings = Vec::new();
        if let Some((dir, name)) = &opts.share
            && dir.is_dir()
        {
            warnings.push(format!(
                "{} is shared with the VM as `{name}`, but cloud images have no VirtualBox guest additions to mount it; --virtualbox-no-share leaves it out",
                dir.display()
            ));
        }
        Ok(warnings)
    }

    async fn create(&self, req: CreateRequest, progress: Progress) -> Result<Config> {
        let opts = Options::parse(&req)?;
        let (vbox, version) = self.preconditions(&opts).await?;
        progress
            .step(format!(
                "using VirtualBox {version} ({})",
                vbox.program().display()
            ))
            .await;
        self.create_vm(&req, &opts, &vbox, &progress).await
    }

    async fn remove(&self, m: &Machine) -> Result<()> {
        let files = Files::new(&m.dir, &Self::vm_of(m)?);
        let vbox = match self.vboxmanage() {
            Ok(v) => v,
            // Without VirtualBox there is no VM; only files could be left.
            Err(_) if !files.any_exist() => return Ok(()),
            Err(e) => return Err(e),
        };
        let every = Duration::from_millis(200).min(self.settings.poll);
        let task_files = files.clone();
        let left =
            tokio::task::spawn_blocking(move || vm::teardown(&vbox, &task_files, None, every))
                .await
                .map_err(|e| Error::internal(e.to_string()))?;
        if left.0.is_empty() {
            Ok(())
        } else {
            Err(Error::internal(format!(
                "machine `{}`: could not remove {}",
                m.name,
                left.0.join(", ")
            ))
            .with_hint("`machine --debug rm` shows VirtualBox's messages; VBoxManage list vms / list hdds shows what is left"))
        }
    }

    async fn state(&self, m: &Machine) -> Result<Status> {
        let files = Files::new(&m.dir, &Self::vm_of(m)?);
        let vbox = match self.vboxmanage() {
            Ok(v) => v,
            Err(_) if m.config_json.is_empty() && !files.any_exist() => {
                return Ok(State::NotFound.into());
            }
            Err(e) => return Err(e),
        };
        Ok(match vm::vm_state(&vbox, &files.vm).await? {
            None => State::NotFound.into(),
            Some(state) => vm::status_of(&state, &files),
        })
    }

    async fn connection(&self, m: &Machine) -> Result<Connection> {
        let cfg: VBoxConfig = m.config()?;
        Ok(Connection {
            ip: cfg.ip.clone(),
            ssh_host: "127.0.0.1".into(),
            ssh_port: cfg.ssh_port,
            ssh_user: cfg.ssh_user.clone(),
            ssh_key_path: None,
            docker_url: format!("tcp://{}:{ENGINE_PORT}", cfg.ip),
        })
    }

    async fn start(&self, m: &Machine) -> Result<Option<Config>> {
        let mut cfg: VBoxConfig = m.config()?;
        let vbox = self.vboxmanage()?;
        let files = Files::new(&m.dir, &cfg.vm);
        let Some(state) = vm::vm_state(&vbox, &cfg.vm).await? else {
            return Err(Self::not_registered(&m.name, &cfg.vm));
        };
        match state.as_str() {
            "running" | "starting" => return Ok(None),
            "paused" => {
                vbox.run(&["controlvm", &cfg.vm, "resume"])
                    .await
                    .map_err(|e| e.to_error(&format!("machine `{}`: resuming", m.name)))?;
                return Ok(None);
            }
            s if vm::is_active(s) => {
                return Err(Error::failed_precondition(format!(
                    "machine `{}`: VM {} is {s}; it cannot be started now",
                    m.name, cfg.vm
                ))
                .with_hint("wait a moment and try again"));
            }
            _ => {}
        }
        let before = cfg.clone();
        // The adapter or its DHCP server may have gone while the VM was
        // off (VirtualBox reinstalled, removed by hand): set them up again.
        let cidr = net::parse_host_cidr(&cfg.hostonly_cidr)?;
        let hostonly = self
            .ensure_network(
                &vbox,
                &cidr,
                cfg.no_dhcp,
                &machine_vm_support::store::cache_dir(&m.dir),
            )
            .await?;
        if hostonly.adapter != cfg.hostonly_adapter {
            vbox.run(&["modifyvm", &cfg.vm, "--hostonlyadapter2", &hostonly.adapter])
                .await
                .map_err(|e| e.to_error(&format!("machine `{}`: moving NIC 2", m.name)))?;
            cfg.hostonly_adapter = hostonly.adapter;
            cfg.hostonly_network = hostonly.network_name;
        }
        // An SSH port taken while the machine was off moves, rather than
        // keeping the machine from starting; the CLI stores the new config.
        if !port_is_free(cfg.ssh_port) {
            let port = ports::free_port()
                .map_err(|e| Error::internal(format!("finding a free port on 127.0.0.1: {e}")))?;
            for args in [
                vec!["modifyvm", &cfg.vm, "--natpf1", "delete", "ssh"],
                vec!["modifyvm", &cfg.vm, "--natpf1", &natpf(port)],
            ] {
                vbox.run(&args).await.map_err(|e| {
                    e.to_error(&format!("machine `{}`: moving the SSH port", m.name))
                })?;
            }
            cfg.ssh_port = port;
        }
        cfg.ip = self.boot(&vbox, &m.name, &files, &cfg).await?;
        Ok(if cfg == before {
            None
        } else {
            Some(Config::of(&cfg)?)
        })
    }

    async fn stop(&self, m: &Machine) -> Result<Option<Config>> {
        self.stop_vm(m).await?;
        Ok(None)
    }

    async fn restart(&self, m: &Machine) -> Result<Option<Config>> {
        self.stop_vm(m).await?;
        self.start(m).await
    }

    async fn kill(&self, m: &Machine) -> Result<Option<Config>> {
        let cfg: VBoxConfig = m.config()?;
        let vbox = self.vboxmanage()?;
        let Some(state) = vm::vm_state(&vbox, &cfg.vm).await? else {
            return Err(Self::not_registered(&m.name, &cfg.vm));
        };
        if !vm::is_active(&state) {
            return Ok(None);
        }
        match vbox.run(&["controlvm", &cfg.vm, "poweroff"]).await {
            Ok(_) => {}
            Err(e) if e.message().contains("not currently running") => {}
            Err(e) => return Err(e.to_error(&format!("machine `{}`: powering off", m.name))),
        }
        vm::wait_inactive(&vbox, &cfg.vm, self.timing(Duration::from_secs(30))).await?;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_names_are_stable_and_per_store() {
        let a = vm_name(
            "dev",
            Path::new("/home/a/.local/share/machine/machines/dev"),
        );
        let b = vm_name("dev", Path::new("/tmp/other/machines/dev"));
        assert_ne!(a, b);
        assert!(a.starts_with("machine-dev-") && a.len() == "machine-dev-".len() + 8);
        assert_eq!(
            a,
            vm_name(
                "dev",
                Path::new("/home/a/.local/share/machine/machines/dev")
            )
        );
    }

    #[test]
    fn macs_are_virtualbox_macs() {
        let mac = new_mac(Path::new("/x"));
        assert_eq!(mac.len(), 12);
        assert!(mac.starts_with("080027"));
        assert!(mac.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn share_folder_flag() {
        assert_eq!(
            parse_share("/srv/data:data"),
            (PathBuf::from("/srv/data"), "data".to_owned())
        );
        assert_eq!(
            parse_share("/srv/data"),
            (PathBuf::from("/srv/data"), "srv_data".to_owned())
        );
    }

    #[test]
    fn vtx_flags() {
        let dir = tempfile::tempdir().unwrap();
        let with = dir.path().join("with");
        std::fs::write(&with, "processor\t: 0\nflags\t\t: fpu vme de pse vmx sse\n").unwrap();
        let without = dir.path().join("without");
        std::fs::write(&without, "processor\t: 0\nflags\t\t: fpu vme de pse sse\n").unwrap();
        assert_eq!(vtx_problem(&with), None);
        assert_eq!(vtx_problem(&dir.path().join("missing")), None);
        if cfg!(all(target_os = "linux", target_arch = "x86_64")) {
            let p = vtx_problem(&without).unwrap();
            assert!(p.contains("no vmx or svm"), "{p}");
        }
    }
}
