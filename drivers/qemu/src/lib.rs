//! The `qemu` driver: a machine is a QEMU virtual machine booted from a
//! cloud image.
//!
//! - **Image:** a URL (default [`DEFAULT_IMAGE`], a current Debian cloud
//!   image), verified against the checksum file published beside it and
//!   cached in the store, or a local file. A kernel, initrd and command line
//!   may be given for direct boot of an image without a boot loader.
//! - **Disk:** a qcow2 overlay per machine on the shared image.
//! - **First boot:** a cloud-init NoCloud seed (a FAT image written by the
//!   driver, no host tools) with the machine's user, SSH key and hostname.
//! - **Network:** QEMU's user-mode network; SSH and the Docker port are
//!   forwarded from 127.0.0.1 only.
//! - **Accelerator:** KVM when it works, TCG otherwise ([`accel`]).
//! - **Control:** QMP for state, ACPI power-off and kill ([`qmp`]).

pub mod accel;
pub mod disk;
pub mod qmp;
pub mod vm;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use machine_driver_sdk::{
    Capability, Config, Connection, CreateRequest, Driver, DriverInfo, Error, Flag, Machine,
    Progress, Result, State, Status, async_trait,
};
use machine_vm_support::image::{self, Checksum, Source};
use machine_vm_support::{ports, seed};
use serde::{Deserialize, Serialize};

use crate::accel::{Accel, Choice};
use crate::qmp::Qmp;
use crate::vm::{Files, Spec};

/// The image used when `--qemu-image` is not given: Debian 13's generic
/// cloud image, checked against the SHA512SUMS published beside it.
pub const DEFAULT_IMAGE: &str =
    "https://cloud.debian.org/images/cloud/trixie/latest/debian-13-genericcloud-amd64.qcow2";
/// The kernel command line for direct boot when `--qemu-append` is not
/// given: the disk is the root filesystem, the console the serial port.
pub const DEFAULT_APPEND: &str = "root=/dev/vda rw console=ttyS0";
/// The user cloud-init makes for `machine`.
pub const DEFAULT_USER: &str = "machine";

const DEFAULT_CPUS: i64 = 1;
const DEFAULT_MEMORY_MB: i64 = 1024;
const DEFAULT_DISK_MB: i64 = 20000;
const DEFAULT_STOP_TIMEOUT: i64 = 60;

/// The driver.
#[derive(Debug, Default)]
pub struct QemuDriver;

/// What the store keeps per machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct QemuConfig {
    binary: PathBuf,
    accel: Accel,
    /// Why this accelerator (shown by `machine inspect`).
    accel_reason: String,
    cpus: u32,
    memory_mb: u64,
    disk_size_mb: u64,
    /// The image as given, and the file booted.
    image: String,
    base: PathBuf,
    #[serde(default)]
    base_digest: Option<String>,
    #[serde(default)]
    kernel: Option<PathBuf>,
    #[serde(default)]
    initrd: Option<PathBuf>,
    #[serde(default)]
    append: Option<String>,
    ssh_user: String,
    ssh_port: u16,
    engine_port: u16,
    stop_timeout_secs: u64,
}

impl QemuConfig {
    fn spec(&self, name: &str) -> Spec {
        Spec {
            binary: self.binary.clone(),
            name: name.to_owned(),
            accel: self.accel,
            cpus: self.cpus,
            memory_mb: self.memory_mb,
            kernel: self.kernel.clone(),
            initrd: self.initrd.clone(),
            append: self.append.clone(),
            ssh_port: self.ssh_port,
            engine_port: self.engine_port,
        }
    }
}

/// The validated flags of a create.
#[derive(Debug, Clone)]
struct Options {
    binary: String,
    image: String,
    checksum: Checksum,
    kernel: Option<PathBuf>,
    initrd: Option<PathBuf>,
    append: Option<String>,
    cpus: u32,
    memory_mb: u64,
    disk_size_mb: u64,
    accel: Choice,
    ssh_user: String,
    ssh_port: Option<u16>,
    engine_port: Option<u16>,
    stop_timeout_secs: u64,
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

fn port(req: &CreateRequest, name: &str) -> Result<Option<u16>> {
    match int_in(req, name, 0, 0, 65535)? {
        0 => Ok(None),
        p => Ok(Some(p as u16)),
    }
}

fn absolute_file(flag: &str, value: Option<String>) -> Result<Option<PathBuf>> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let path = std::path::absolute(&value)
        .map_err(|e| Error::invalid_argument(format!("--{flag} {value}: {e}")))?;
    if !path.is_file() {
        return Err(Error::invalid_argument(format!(
            "--{flag} {}: no such file",
            path.display()
        )));
    }
    Ok(Some(path))
}

fn default_binary() -> String {
    format!("qemu-system-{}", std::env::consts::ARCH)
}

impl Options {
    fn parse(req: &CreateRequest) -> Result<Options> {
        let f = &req.flags;
        let checksum = Checksum::parse(&f.string_or("qemu-image-checksum", "auto")?)
            .map_err(|e| Error::invalid_argument(e.to_string()))?;
        let accel_text = f.string_or("qemu-accel", "auto")?;
        let accel = Choice::parse(&accel_text).ok_or_else(|| {
            Error::invalid_argument(format!("--qemu-accel {accel_text}: use auto, kvm or tcg"))
        })?;
        let kernel = absolute_file("qemu-kernel", f.string("qemu-kernel")?)?;
        let initrd = absolute_file("qemu-initrd", f.string("qemu-initrd")?)?;
        if kernel.is_none() && initrd.is_some() {
            return Err(Error::invalid_argument(
                "--qemu-initrd needs --qemu-kernel (direct boot)",
            ));
        }
        let append = f.string("qemu-append")?.filter(|a| !a.is_empty());
        if kernel.is_none() && append.is_some() {
            return Err(Error::invalid_argument(
                "--qemu-append needs --qemu-kernel (direct boot); a cloud image's boot loader has its own command line",
            ));
        }
        let append = kernel
            .as_ref()
            .map(|_| append.unwrap_or_else(|| DEFAULT_APPEND.to_owned()));
        let ssh_user = f.string_or("qemu-ssh-user", DEFAULT_USER)?;
        if ssh_user.is_empty()
            || !ssh_user
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        {
            return Err(Error::invalid_argument(format!(
                "--qemu-ssh-user {ssh_user:?}: use lower-case letters, digits, - and _"
            )));
        }
        Ok(Options {
            binary: f.string_or("qemu-binary", &default_binary())?,
            image: f.string_or("qemu-image", DEFAULT_IMAGE)?,
            checksum,
            kernel,
            initrd,
            append,
            cpus: int_in(req, "qemu-cpus", DEFAULT_CPUS, 1, 256)? as u32,
            memory_mb: int_in(req, "qemu-memory", DEFAULT_MEMORY_MB, 128, 1 << 22)? as u64,
            disk_size_mb: int_in(req, "qemu-disk-size", DEFAULT_DISK_MB, 1024, 1 << 26)? as u64,
            accel,
            ssh_user,
            ssh_port: port(req, "qemu-ssh-port")?,
            engine_port: port(req, "qemu-engine-port")?,
            stop_timeout_secs: int_in(req, "qemu-stop-timeout", DEFAULT_STOP_TIMEOUT, 1, 3600)?
                as u64,
        })
    }
}

/// Finds a program by name on PATH (or takes a path as it is).
fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return p.is_file().then(|| std::path::absolute(&p).unwrap_or(p));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// The VM's command line (q35, SeaBIOS, virtio) is an x86-64 one; other
/// hosts need another machine type and UEFI firmware, not written yet.
fn check_host_arch() -> Result<()> {
    if std::env::consts::ARCH == "x86_64" {
        return Ok(());
    }
    Err(Error::failed_precondition(format!(
        "the qemu driver runs x86_64 VMs on x86_64 hosts only; this host is {}",
        std::env::consts::ARCH
    ))
    .with_hint("use the container driver on this host, or a driver for your platform"))
}

fn find_qemu(binary: &str) -> Result<(PathBuf, PathBuf)> {
    check_host_arch()?;
    let qemu = which(binary).ok_or_else(|| {
        Error::failed_precondition(format!("QEMU is not installed: no `{binary}` on PATH"))
            .with_hint(
                "install it (Debian/Ubuntu: apt-get install qemu-system-x86 qemu-utils), or point --qemu-binary at it",
            )
    })?;
    // qemu-img beside the binary first: the two come from one package.
    let beside = qemu.parent().map(|d| d.join("qemu-img"));
    let img = beside
        .filter(|p| p.is_file())
        .or_else(|| which("qemu-img"))
        .ok_or_else(|| {
            Error::failed_precondition("no `qemu-img` on PATH (it makes the machine's disk)")
                .with_hint("install it (Debian/Ubuntu: apt-get install qemu-utils)")
        })?;
    Ok((qemu, img))
}

fn instance_id(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("machine-{name}-{:x}{:x}", nanos, std::process::id())
}

fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// Removes what a create made when it does not finish (an error, or the
/// call being dropped): the VM process and the machine's files.
struct Undo {
    files: Option<Files>,
}

impl Undo {
    fn disarm(mut self) {
        self.files = None;
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        let Some(files) = self.files.take() else {
            return;
        };
        if let Err(e) = vm::kill_blocking(&files) {
            tracing::warn!("undoing a create: {e}");
        }
        for f in files.all() {
            let _ = std::fs::remove_file(f);
        }
    }
}

fn launch_error(machine: &str, e: vm::LaunchError) -> Error {
    let hint = match &e {
        vm::LaunchError::Failed { stderr, .. } if stderr.contains("hostfwd") => {
            "a forwarded port is taken; leave --qemu-ssh-port/--qemu-engine-port unset to pick free ones"
        }
        vm::LaunchError::Failed { stderr, .. } if stderr.contains("kvm") => {
            "KVM is not usable here; use --qemu-accel tcg (or auto)"
        }
        vm::LaunchError::PathTooLong { .. } => {
            "use a shorter store path (MACHINE_STORAGE_PATH or --storage-path)"
        }
        _ => "see QEMU's message above; `machine --debug` shows the driver's log",
    };
    Error::internal(format!("machine `{machine}`: {e}")).with_hint(hint)
}

async fn launch(cfg: &QemuConfig, name: &str, files: &Files) -> Result<()> {
    vm::launch(&cfg.spec(name), files)
        .await
        .map_err(|e| launch_error(name, e))
}

async fn say_tcg(cfg: &QemuConfig, progress: &Progress) {
    progress
        .step(format!(
            "{}: using TCG software emulation, which is much slower",
            cfg.accel_reason
        ))
        .await;
}

/// Boots the VM with the chosen accelerator, probing KVM in auto mode when
/// no verdict is recorded, and sets `cfg.accel` and `cfg.accel_reason` to
/// what runs the VM and why.
async fn boot(
    cfg: &mut QemuConfig,
    name: &str,
    files: &Files,
    choice: Choice,
    cache: &Path,
    progress: &Progress,
) -> Result<()> {
    let (accel, reason, probe) = match choice {
        Choice::Only(a) => (a, format!("--qemu-accel {}", a.name()), false),
        Choice::Auto => match accel::kvm_device_problem() {
            Some(problem) => (
                Accel::Tcg,
                format!("KVM is not available ({problem})"),
                false,
            ),
            None => match accel::recorded(cache, &cfg.binary) {
                Some(v) if !v.kvm_works => (
                    Accel::Tcg,
                    format!("KVM did not work here before: {}", v.reason),
                    false,
                ),
                Some(_) => (Accel::Kvm, "KVM worked here before".to_owned(), false),
                None => (Accel::Kvm, String::new(), true),
            },
        },
    };
    cfg.accel = accel;
    cfg.accel_reason = reason;
    if !probe {
        if accel == Accel::Tcg && choice == Choice::Auto {
            say_tcg(cfg, progress).await;
        }
        return launch(cfg, name, files).await;
    }

    progress
        .step("checking that KVM runs the guest".to_owned())
        .await;
    let kvm_failed = match vm::launch(&cfg.spec(name), files).await {
        Err(e) => Err(format!("QEMU did not start with KVM: {e}")),
        Ok(()) => probe_kvm(files).await,
    };
    match kvm_failed {
        Ok(()) => {
            accel::record(cache, &cfg.binary, true, "the guest kernel ran");
            cfg.accel_reason = "KVM runs guests here".into();
            Ok(())
        }
        Err(reason) => {
            tracing::warn!("machine `{name}`: KVM is not usable: {reason}");
            let _ = vm::kill(files).await;
            accel::record(cache, &cfg.binary, false, &reason);
            cfg.accel = Accel::Tcg;
            cfg.accel_reason = format!("KVM is not usable here ({reason})");
            say_tcg(cfg, progress).await;
            let _ = std::fs::remove_file(files.serial());
            launch(cfg, name, files).await
        }
    }
}

/// Watches a KVM boot for signs of a running guest kernel.
async fn probe_kvm(files: &Files) -> std::result::Result<(), String> {
    let started = Instant::now();
    while started.elapsed() < accel::PROBE_LIMIT {
        let serial = std::fs::read(files.serial()).unwrap_or_default();
        if accel::kernel_alive(&String::from_utf8_lossy(&serial)) {
            return Ok(());
        }
        if vm::running_pid(files).is_none() {
            return Err("QEMU exited during boot".into());
        }
        if let Ok(mut q) = Qmp::connect(&files.qmp()).await
            && let Ok(status) = q.status().await
            && matches!(status.as_str(), "internal-error" | "guest-panicked")
        {
            return Err(format!("QEMU reports `{status}`"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(format!(
        "no sign of the guest kernel on the serial console within {} s",
        accel::PROBE_LIMIT.as_secs()
    ))
}

/// Sends the ACPI power button until the guest is off, or gives up after
/// `limit` and powers it off. The guest ignores the button until its init
/// system listens, so it is pressed again every few seconds.
async fn acpi_stop(name: &str, files: &Files, limit: Duration) -> Result<()> {
    let Some(pid) = vm::running_pid(files) else {
        return Ok(());
    };
    let started = Instant::now();
    while started.elapsed() < limit {
        match Qmp::connect(&files.qmp()).await {
            Ok(mut q) => {
                if let Err(e) = q.execute("system_powerdown", None).await {
                    tracing::debug!("machine `{name}`: system_powerdown: {e}");
                }
            }
            Err(e) => tracing::debug!("machine `{name}`: {e}"),
        }
        let window = Duration::from_secs(5).min(limit.saturating_sub(started.elapsed()));
        if vm::wait_gone(files, pid, window).await {
            return Ok(());
        }
    }
    tracing::warn!(
        "machine `{name}`: the guest did not power off within {} s of the ACPI power button; powering it off",
        limit.as_secs()
    );
    vm::kill(files)
        .await
        .map_err(|e| Error::internal(format!("machine `{name}`: stopping QEMU: {e}")))
}

#[async_trait]
impl Driver for QemuDriver {
    fn info(&self) -> DriverInfo {
        DriverInfo {
            name: "qemu".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "QEMU virtual machines booted from cloud images".into(),
            capabilities: Capability::ALL.to_vec(),
        }
    }

    async fn create_flags(&self) -> Result<Vec<Flag>> {
        Ok(vec![
            Flag::string(
                "qemu-image",
                "cloud image to boot: an http(s) URL (downloaded once, cached) or a local file",
            )
            .default_value(DEFAULT_IMAGE)
            .env("QEMU_IMAGE"),
            Flag::string(
                "qemu-image-checksum",
                "the image's checksum: auto (the SHA512SUMS/SHA256SUMS beside a URL), sha256:HEX, sha512:HEX, a SUMS file URL, or none",
            )
            .default_value("auto")
            .env("QEMU_IMAGE_CHECKSUM"),
            Flag::string(
                "qemu-kernel",
                "kernel for direct boot of an image without a boot loader",
            )
            .env("QEMU_KERNEL"),
            Flag::string("qemu-initrd", "initrd for direct boot").env("QEMU_INITRD"),
            Flag::string(
                "qemu-append",
                &format!("kernel command line for direct boot (default \"{DEFAULT_APPEND}\")"),
            )
            .env("QEMU_APPEND"),
            Flag::int("qemu-cpus", "virtual CPUs")
                .default_value(DEFAULT_CPUS)
                .env("QEMU_CPUS"),
            Flag::int("qemu-memory", "memory in MB")
                .default_value(DEFAULT_MEMORY_MB)
                .env("QEMU_MEMORY"),
            Flag::int("qemu-disk-size", "disk size in MB")
                .default_value(DEFAULT_DISK_MB)
                .env("QEMU_DISK_SIZE"),
            Flag::string(
                "qemu-accel",
                "accelerator: auto (KVM when it works, else TCG), kvm or tcg",
            )
            .default_value("auto")
            .env("QEMU_ACCEL"),
            Flag::string("qemu-binary", "the QEMU system emulator to run")
                .default_value(default_binary())
                .env("QEMU_BINARY"),
            Flag::string("qemu-ssh-user", "the user cloud-init makes for SSH")
                .default_value(DEFAULT_USER),
            Flag::int("qemu-ssh-port", "SSH port on 127.0.0.1 (0: any free port)"),
            Flag::int(
                "qemu-engine-port",
                "Docker port on 127.0.0.1, the same inside the VM (0: any free port)",
            ),
            Flag::int(
                "qemu-stop-timeout",
                "seconds `stop` waits for the guest to power off after the ACPI button",
            )
            .default_value(DEFAULT_STOP_TIMEOUT),
        ])
    }

    async fn pre_create_check(&self, req: &CreateRequest) -> Result<Vec<String>> {
        let opts = Options::parse(req)?;
        find_qemu(&opts.binary)?;
        let mut warnings = Vec::new();
        if let Choice::Only(Accel::Kvm) = opts.accel
            && let Some(problem) = accel::kvm_device_problem()
        {
            return Err(Error::failed_precondition(format!(
                "--qemu-accel kvm, but KVM is not available ({problem})"
            ))
            .with_hint("use --qemu-accel auto or tcg"));
        }
        if opts.accel == Choice::Auto
            && let Some(problem) = accel::kvm_device_problem()
        {
            warnings.push(format!(
                "KVM is not available ({problem}); the VM will run under TCG software emulation, much slower"
            ));
        }
        for (flag, p) in [
            ("qemu-ssh-port", opts.ssh_port),
            ("qemu-engine-port", opts.engine_port),
        ] {
            if let Some(p) = p
                && !port_is_free(p)
            {
                return Err(Error::failed_precondition(format!(
                    "--{flag} {p}: port {p} on 127.0.0.1 is in use"
                ))
                .with_hint("pick another port, or leave the flag unset to use any free port"));
            }
        }
        Ok(warnings)
    }

    async fn create(&self, req: CreateRequest, progress: Progress) -> Result<Config> {
        let opts = Options::parse(&req)?;
        let name = req.machine.name.clone();
        let (binary, qemu_img) = find_qemu(&opts.binary)?;
        let files = Files::new(&req.machine.dir);
        if files.disk().exists() {
            return Err(Error::already_exists(format!(
                "machine `{name}` already has a disk at {}",
                files.disk().display()
            ))
            .with_hint("remove it with `machine rm` first"));
        }
        std::fs::create_dir_all(&req.machine.dir)
            .map_err(|e| Error::internal(format!("creating {}: {e}", req.machine.dir.display())))?;
        let cache = machine_vm_support::store::cache_dir(&req.machine.dir);

        // The image first: nothing to undo if it cannot be had.
        let source = Source::parse(&opts.image);
        let fetched =
            image::fetch_reporting(&source, &opts.checksum, &cache.join("images"), &progress).await;
        let image = fetched.map_err(|e| {
            Error::failed_precondition(format!("machine `{name}`: {e}"))
                .with_hint(e.hint("qemu-image", "qemu-image-checksum"))
        })?;

        let undo = Undo {
            files: Some(files.clone()),
        };
        progress.step("making the disk".to_owned()).await;
        let info = disk::info(&qemu_img, &image.path)
            .await
            .map_err(|e| Error::internal(format!("machine `{name}`: {e}")))?;
        let wanted = opts.disk_size_mb * 1024 * 1024;
        if info.virtual_size > wanted {
            tracing::warn!(
                "machine `{name}`: the image is {} MB, more than --qemu-disk-size {}; the disk keeps the image's size",
                info.virtual_size / (1024 * 1024),
                opts.disk_size_mb
            );
        }
        disk::overlay(
            &qemu_img,
            &image.path,
            &info.format,
            &files.disk(),
            wanted.max(info.virtual_size),
        )
        .await
        .map_err(|e| Error::internal(format!("machine `{name}`: {e}")))?;

        let seed = seed::NoCloud {
            instance_id: instance_id(&name),
            hostname: name.clone(),
            user: opts.ssh_user.clone(),
            authorized_keys: Some(req.ssh_public_key.trim().to_owned())
                .filter(|k| !k.is_empty())
                .into_iter()
                .collect(),
            network_config: None,
        };
        seed.write_fat(&files.seed())
            .map_err(|e| Error::internal(format!("machine `{name}`: {e}")))?;

        let free = ports::free_ports(2)
            .map_err(|e| Error::internal(format!("finding free ports on 127.0.0.1: {e}")))?;
        let mut cfg = QemuConfig {
            binary,
            accel: Accel::Tcg,
            accel_reason: String::new(),
            cpus: opts.cpus,
            memory_mb: opts.memory_mb,
            disk_size_mb: opts.disk_size_mb,
            image: opts.image.clone(),
            base: image.path.clone(),
            base_digest: image.digest.map(|d| d.to_string()),
            kernel: opts.kernel.clone(),
            initrd: opts.initrd.clone(),
            append: opts.append.clone(),
            ssh_user: opts.ssh_user.clone(),
            ssh_port: opts.ssh_port.unwrap_or(free[0]),
            engine_port: opts.engine_port.unwrap_or(free[1]),
            stop_timeout_secs: opts.stop_timeout_secs,
        };
        progress.step("starting QEMU".to_owned()).await;
        boot(&mut cfg, &name, &files, opts.accel, &cache, &progress).await?;
        tracing::info!(
            "machine `{name}`: QEMU runs with {} ({})",
            cfg.accel.name(),
            cfg.accel_reason
        );
        let config = Config::of(&cfg)?;
        undo.disarm();
        Ok(config)
    }

    async fn remove(&self, m: &Machine) -> Result<()> {
        let files = Files::new(&m.dir);
        vm::kill(&files)
            .await
            .map_err(|e| Error::internal(format!("machine `{}`: stopping QEMU: {e}", m.name)))?;
        for f in files.all() {
            match std::fs::remove_file(&f) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(Error::internal(format!(
                        "machine `{}`: removing {}: {e}",
                        m.name,
                        f.display()
                    )));
                }
            }
        }
        Ok(())
    }

    async fn state(&self, m: &Machine) -> Result<Status> {
        let files = Files::new(&m.dir);
        if vm::running_pid(&files).is_none() {
            return Ok(if files.disk().exists() {
                State::Stopped.into()
            } else {
                State::NotFound.into()
            });
        }
        let status = match Qmp::connect(&files.qmp()).await {
            Ok(mut q) => q.status().await,
            Err(e) => Err(e),
        };
        Ok(match status {
            Err(e) => Status {
                state: State::Starting,
                detail: format!("QEMU runs but does not answer QMP yet: {e}"),
            },
            Ok(s) => match s.as_str() {
                "running" => State::Running.into(),
                "paused" | "suspended" => State::Paused.into(),
                "prelaunch" | "inmigrate" | "restore-vm" => State::Starting.into(),
                "shutdown" => State::Stopping.into(),
                "save-vm" | "postmigrate" | "finish-migrate" => State::Saved.into(),
                other => Status {
                    state: State::Error,
                    detail: format!(
                        "QEMU reports `{other}`; see {} for the console",
                        files.serial().display()
                    ),
                },
            },
        })
    }

    async fn connection(&self, m: &Machine) -> Result<Connection> {
        let cfg: QemuConfig = m.config()?;
        Ok(Connection {
            ip: "127.0.0.1".into(),
            ssh_host: "127.0.0.1".into(),
            ssh_port: cfg.ssh_port,
            ssh_user: cfg.ssh_user.clone(),
            ssh_key_path: None,
            docker_url: format!("tcp://127.0.0.1:{}", cfg.engine_port),
        })
    }

    async fn start(&self, m: &Machine) -> Result<Option<Config>> {
        let mut cfg: QemuConfig = m.config()?;
        let files = Files::new(&m.dir);
        if vm::running_pid(&files).is_some() {
            return Ok(None);
        }
        if !files.disk().exists() {
            return Err(Error::not_found(format!(
                "machine `{}` has no disk at {}",
                m.name,
                files.disk().display()
            ))
            .with_hint("remove the machine with `machine rm` and create it again"));
        }
        // A forwarded port taken while the machine was off moves, rather
        // than keeping the machine from starting; the CLI stores the new
        // config (and `machine env` follows).
        let mut changed = false;
        for p in [&mut cfg.ssh_port, &mut cfg.engine_port] {
            if !port_is_free(*p) {
                *p = ports::free_port().map_err(|e| {
                    Error::internal(format!("finding a free port on 127.0.0.1: {e}"))
                })?;
                changed = true;
            }
        }
        launch(&cfg, &m.name, &files).await?;
        Ok(if changed {
            Some(Config::of(&cfg)?)
        } else {
            None
        })
    }

    async fn stop(&self, m: &Machine) -> Result<Option<Config>> {
        let cfg: QemuConfig = m.config()?;
        acpi_stop(
            &m.name,
            &Files::new(&m.dir),
            Duration::from_secs(cfg.stop_timeout_secs),
        )
        .await?;
        Ok(None)
    }

    async fn restart(&self, m: &Machine) -> Result<Option<Config>> {
        self.stop(m).await?;
        self.start(m).await
    }

    async fn kill(&self, m: &Machine) -> Result<Option<Config>> {
        vm::kill(&Files::new(&m.dir))
            .await
            .map_err(|e| Error::internal(format!("machine `{}`: killing QEMU: {e}", m.name)))?;
        Ok(None)
    }
}
