//! Choosing the accelerator: KVM when it works, TCG (software emulation)
//! otherwise, and saying which and why.
//!
//! `/dev/kvm` being there is not enough: on some hosts (nested
//! virtualisation with odd CPUID, as on this project's CI machines) it
//! opens, QEMU starts, and the guest never gets past its first
//! instructions. So in `auto` mode the first VM booted with KVM is
//! watched until its kernel prints on the serial console; if it does not
//! within [`PROBE_LIMIT`], or QEMU reports an internal error, KVM is
//! recorded as unusable for this QEMU binary and host kernel in the store's
//! cache and the VM is booted again with TCG. Later creates read the
//! verdict instead of paying for the probe again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long a KVM boot may take to show signs of life.
pub const PROBE_LIMIT: Duration = Duration::from_secs(30);

/// What runs the guest's instructions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// The `--qemu-accel` choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    Auto,
    Only(Accel),
}

impl Choice {
    pub fn parse(text: &str) -> Option<Choice> {
        match text {
            "" | "auto" => Some(Choice::Auto),
            "kvm" => Some(Choice::Only(Accel::Kvm)),
            "tcg" => Some(Choice::Only(Accel::Tcg)),
            _ => None,
        }
    }
}

/// Why KVM cannot be used, if it cannot: `/dev/kvm` must open read-write.
pub fn kvm_device_problem() -> Option<String> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => None,
        Err(e) => Some(format!("/dev/kvm: {e}")),
    }
}

/// A recorded verdict about KVM on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub kvm_works: bool,
    pub reason: String,
    /// What the verdict holds for: the QEMU binary and the host kernel.
    pub qemu: String,
    pub host_kernel: String,
}

fn host_kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The verdict cache's file in the store.
pub fn cache_file(store_cache: &Path) -> PathBuf {
    store_cache.join("qemu-accel.json")
}

/// The recorded verdict for this QEMU binary and host kernel, if any.
pub fn recorded(store_cache: &Path, qemu: &Path) -> Option<Verdict> {
    let text = std::fs::read_to_string(cache_file(store_cache)).ok()?;
    let v: Verdict = serde_json::from_str(&text).ok()?;
    (v.qemu == qemu.display().to_string() && v.host_kernel == host_kernel()).then_some(v)
}

/// Records a verdict (atomically; losing it only costs a probe).
pub fn record(store_cache: &Path, qemu: &Path, kvm_works: bool, reason: &str) {
    let v = Verdict {
        kvm_works,
        reason: reason.to_owned(),
        qemu: qemu.display().to_string(),
        host_kernel: host_kernel(),
    };
    let Ok(text) = serde_json::to_string_pretty(&v) else {
        return;
    };
    let file = cache_file(store_cache);
    let tmp = file.with_extension(format!("json.{}.tmp", std::process::id()));
    let ok = std::fs::create_dir_all(store_cache).is_ok()
        && std::fs::write(&tmp, text).is_ok()
        && std::fs::rename(&tmp, &file).is_ok();
    if !ok {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// Whether a serial console log shows a guest kernel that runs.
pub fn kernel_alive(serial_log: &str) -> bool {
    serial_log.contains("Linux version") || serial_log.contains("login:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices() {
        assert_eq!(Choice::parse("auto"), Some(Choice::Auto));
        assert_eq!(Choice::parse("tcg"), Some(Choice::Only(Accel::Tcg)));
        assert_eq!(Choice::parse("hvf"), None);
    }

    #[test]
    fn verdicts_are_per_binary() {
        let dir = tempfile::tempdir().unwrap();
        let qemu = Path::new("/usr/bin/qemu-system-x86_64");
        assert_eq!(recorded(dir.path(), qemu), None);
        record(dir.path(), qemu, false, "no sign of the kernel in 30 s");
        let v = recorded(dir.path(), qemu).unwrap();
        assert!(!v.kvm_works);
        assert_eq!(recorded(dir.path(), Path::new("/opt/qemu/bin/qemu")), None);
    }

    #[test]
    fn serial_signs_of_life() {
        assert!(kernel_alive(
            "SeaBIOS\r\n[    0.000000] Linux version 6.1.0"
        ));
        assert!(!kernel_alive(
            "SeaBIOS (version 1.16)\r\nBooting from ROM..."
        ));
    }
}
