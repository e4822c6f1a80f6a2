//! One machine's VM: its files, its state as VirtualBox reports it, the
//! address its host-only NIC leased, and tearing it all down.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use machine_driver_sdk::{Error, ErrorKind, State, Status};

use crate::parse;
use crate::vbox::{VBoxError, VBoxManage};

/// The files the driver keeps in the machine's directory. Their names are
/// fixed, so a machine whose create was cut short (no stored config) can
/// still be cleaned up.
#[derive(Debug, Clone)]
pub struct Files {
    pub dir: PathBuf,
    pub vm: String,
}

impl Files {
    pub fn new(dir: &Path, vm: &str) -> Self {
        Self {
            dir: dir.to_owned(),
            vm: vm.to_owned(),
        }
    }
    /// The machine's disk, a VDI clone of the boot image.
    pub fn disk(&self) -> PathBuf {
        self.dir.join("disk.vdi")
    }
    /// The cloud-init seed as written (FAT), before conversion.
    pub fn seed_img(&self) -> PathBuf {
        self.dir.join("seed.img")
    }
    /// The seed as VirtualBox attaches it.
    pub fn seed_vdi(&self) -> PathBuf {
        self.dir.join("seed.vdi")
    }
    /// The guest's serial console.
    pub fn serial(&self) -> PathBuf {
        self.dir.join("serial.log")
    }
    /// VirtualBox's folder for the VM (`--basefolder` + name): settings
    /// and `Logs/VBox.log`.
    pub fn vm_dir(&self) -> PathBuf {
        self.dir.join(&self.vm)
    }
    pub fn vbox_log(&self) -> PathBuf {
        self.vm_dir().join("Logs").join("VBox.log")
    }
    /// Whether anything of the VM is on disk.
    pub fn any_exist(&self) -> bool {
        [self.disk(), self.seed_img(), self.seed_vdi(), self.vm_dir()]
            .iter()
            .any(|p| p.exists())
    }
}

/// The VM's `VMState` (`running`, `poweroff`, …); `None` when VirtualBox
/// has no VM of that name.
pub async fn vm_state(vbox: &VBoxManage, vm: &str) -> Result<Option<String>, Error> {
    match vbox.run(&["showvminfo", vm, "--machinereadable"]).await {
        Ok(out) => Ok(Some(read_state(&out))),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.to_error(&format!("reading the state of VM {vm}"))),
    }
}

fn vm_state_blocking(vbox: &VBoxManage, vm: &str) -> Result<Option<String>, VBoxError> {
    match vbox.run_blocking(&["showvminfo", vm, "--machinereadable"]) {
        Ok(out) => Ok(Some(read_state(&out))),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

fn read_state(out: &str) -> String {
    parse::machine_readable(out)
        .remove("VMState")
        .unwrap_or_else(|| "unknown".into())
}

/// Whether a VM in this state holds a session, so it must be powered off
/// before it can be unregistered.
pub fn is_active(state: &str) -> bool {
    !matches!(
        state,
        "poweroff" | "aborted" | "saved" | "aborted-saved" | "teleported"
    )
}

/// The SDK state of a `VMState`.
pub fn status_of(state: &str, files: &Files) -> Status {
    let s = match state {
        "running" | "livesnapshotting" | "teleporting" | "onlinesnapshotting" => State::Running,
        "poweroff" | "aborted" | "teleported" => State::Stopped,
        "saved" | "aborted-saved" => State::Saved,
        "paused" | "teleportingpausedvm" => State::Paused,
        "starting" | "restoring" | "teleportingin" | "settingup" => State::Starting,
        "stopping" | "saving" => State::Stopping,
        "gurumeditation" => {
            return Status {
                state: State::Error,
                detail: format!(
                    "VM {} hit a guru meditation (VirtualBox's fatal error); see {}",
                    files.vm,
                    files.vbox_log().display()
                ),
            };
        }
        other => {
            return Status {
                state: State::Error,
                detail: format!("VirtualBox reports VMState={other} for VM {}", files.vm),
            };
        }
    };
    s.into()
}

/// The MAC in the two spellings VBoxManage takes: `080027A1B2C3` for
/// `modifyvm --macaddress2`, `08:00:27:a1:b2:c3` for `findlease`.
pub fn mac_with_colons(mac: &str) -> String {
    mac.as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(":")
}

/// The address the VM's host-only NIC holds, if its lease is current.
pub async fn leased_ip(
    vbox: &VBoxManage,
    network_name: &str,
    mac: &str,
) -> Result<Option<Ipv4Addr>, Error> {
    let args = [
        "dhcpserver".to_owned(),
        "findlease".to_owned(),
        format!("--network={network_name}"),
        format!("--mac-address={}", mac_with_colons(mac)),
    ];
    match vbox.run(&args).await {
        Ok(out) => Ok(parse::lease(&out)
            .filter(|l| l.state == "acked")
            .map(|l| l.ip)),
        // No lease yet: the guest has not asked.
        Err(e) if e.message().contains("Could not find a lease") || e.is_not_found() => Ok(None),
        Err(e) => Err(e.to_error("looking up the VM's DHCP lease")),
    }
}

/// How long to wait, and how often to look.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub limit: Duration,
    pub every: Duration,
}

/// Waits for the guest to lease an address on the host-only network,
/// failing early when the VM stops.
pub async fn wait_for_ip(
    vbox: &VBoxManage,
    files: &Files,
    name: &str,
    network: (&str, &str),
    mac: &str,
    timing: Timing,
) -> Result<Ipv4Addr, Error> {
    let (adapter, network_name) = network;
    let started = Instant::now();
    loop {
        if let Some(ip) = leased_ip(vbox, network_name, mac).await? {
            return Ok(ip);
        }
        match vm_state(vbox, &files.vm).await?.as_deref() {
            Some("running" | "starting") => {}
            Some(state) => {
                return Err(Error::internal(format!(
                    "machine `{name}`: VM {} stopped while booting (VMState={state})",
                    files.vm
                ))
                .with_hint(format!(
                    "the guest's console is in {}, VirtualBox's log in {}",
                    files.serial().display(),
                    files.vbox_log().display()
                )));
            }
            None => {
                return Err(Error::not_found(format!(
                    "machine `{name}`: VM {} disappeared while booting",
                    files.vm
                )));
            }
        }
        if started.elapsed() >= timing.limit {
            return Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "machine `{name}`: VM {} got no address on host-only network {adapter} within {} s",
                    files.vm,
                    timing.limit.as_secs()
                ),
            )
            .with_hint(format!(
                "the guest's console is in {}; the image must run cloud-init, and the DHCP server of {adapter} must be enabled (VBoxManage list dhcpservers)",
                files.serial().display()
            )));
        }
        tokio::time::sleep(timing.every).await;
    }
}

/// Waits until the VM no longer holds a session (after a power-off).
pub async fn wait_inactive(vbox: &VBoxManage, vm: &str, timing: Timing) -> Result<bool, Error> {
    let started = Instant::now();
    loop {
        match vm_state(vbox, vm).await? {
            None => return Ok(true),
            Some(s) if !is_active(&s) => return Ok(true),
            Some(_) => {}
        }
        if started.elapsed() >= timing.limit {
            return Ok(false);
        }
        tokio::time::sleep(timing.every).await;
    }
}

/// What [`teardown`] could not remove.
#[derive(Debug, Default)]
pub struct Leftovers(pub Vec<String>);

/// Removes everything of the machine's VM, blocking the thread (it also
/// runs from `Drop` when a create fails or is dropped): powers the VM off,
/// unregisters it and deletes its media (`unregistervm --delete`), closes
/// and deletes any medium still registered from the machine's directory,
/// and deletes the driver's files. `image`, the shared cached boot image,
/// is only closed (unregistered), never deleted.
///
/// A VM that cannot be unregistered keeps its disks and folder; otherwise
/// each step runs even when an earlier one failed, so that as much as
/// possible goes. What stayed is returned.
pub fn teardown(
    vbox: &VBoxManage,
    files: &Files,
    image: Option<&Path>,
    every: Duration,
) -> Leftovers {
    let mut left = Leftovers::default();
    let vm = &files.vm;
    match vm_state_blocking(vbox, vm) {
        Ok(None) => {}
        Ok(Some(state)) => {
            if is_active(&state)
                && let Err(e) = vbox.run_blocking(&["controlvm", vm, "poweroff"])
            {
                tracing::debug!("VM {vm}: {e}");
            }
            // The session ends a moment after the power-off; until then
            // VirtualBox refuses to unregister.
            let mut unregistered = Err(String::new());
            for _ in 0..50 {
                match vbox.run_blocking(&["unregistervm", vm, "--delete"]) {
                    Ok(_) => {
                        unregistered = Ok(());
                        break;
                    }
                    Err(e) if e.is_not_found() => {
                        unregistered = Ok(());
                        break;
                    }
                    Err(e) if e.message().contains("locked") => {
                        unregistered = Err(e.to_string());
                        std::thread::sleep(every);
                    }
                    Err(e) => {
                        unregistered = Err(e.to_string());
                        break;
                    }
                }
            }
            if let Err(e) = unregistered {
                // Its disks are still the VM's: deleting them would leave
                // VirtualBox a VM with missing media.
                left.0.push(format!("VM {vm} ({e}) and its disks"));
                return left;
            }
        }
        Err(e) => {
            left.0.push(format!(
                "VM {vm} and its disks (cannot read its state: {e})"
            ));
            return left;
        }
    }
    // Media the VM did not take with it: a disk cloned before the VM was
    // made, a seed converted but not attached. Closing registers-then-
    // deletes, so an unregistered file goes too.
    for medium in [files.disk(), files.seed_vdi()] {
        if !medium.exists() {
            continue;
        }
        let path = medium.to_string_lossy().into_owned();
        if let Err(e) = vbox.run_blocking(&["closemedium", "disk", &path, "--delete"]) {
            tracing::debug!("{e}");
        }
        if medium.exists()
            && let Err(e) = std::fs::remove_file(&medium)
        {
            left.0.push(format!("{path} ({e})"));
        }
    }
    if let Some(image) = image {
        let path = image.to_string_lossy().into_owned();
        // Registered by the clone; failing here (another create is
        // cloning it right now) only leaves a registry entry.
        if let Err(e) = vbox.run_blocking(&["closemedium", "disk", &path]) {
            tracing::debug!("{e}");
        }
    }
    for file in [files.seed_img(), files.serial()] {
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => left.0.push(format!("{} ({e})", file.display())),
        }
    }
    match std::fs::remove_dir_all(files.vm_dir()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => left.0.push(format!("{} ({e})", files.vm_dir().display())),
    }
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_and_states() {
        assert_eq!(mac_with_colons("080027A1B2C3"), "08:00:27:a1:b2:c3");
        let files = Files::new(Path::new("/s/machines/dev"), "machine-dev-1a2b3c4d");
        assert_eq!(status_of("running", &files).state, State::Running);
        assert_eq!(status_of("aborted", &files).state, State::Stopped);
        assert_eq!(status_of("saved", &files).state, State::Saved);
        let guru = status_of("gurumeditation", &files);
        assert_eq!(guru.state, State::Error);
        assert!(guru.detail.contains("VBox.log"), "{}", guru.detail);
        assert!(is_active("paused") && !is_active("aborted"));
        assert_eq!(
            files.vbox_log(),
            Path::new("/s/machines/dev/machine-dev-1a2b3c4d/Logs/VBox.log")
        );
    }
}
