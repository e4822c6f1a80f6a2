//! A machine's QEMU process: the files it lives in, its command line,
//! launching it detached from the driver, finding it again and ending it.
//!
//! QEMU runs with `-daemonize`: the launch returns once QEMU has set the VM
//! up (so a taken port or a bad disk is reported by the create or start
//! that caused it), and the VM then lives in its own session, outside the
//! driver's process group, which the CLI kills when it is done with the
//! driver. The pid file finds the process again; its command line must
//! name this machine's QMP socket before the driver signals it, so a pid
//! reused by another program is never touched.
//!
//! Ending a VM does not trust the pid file alone: a create killed while
//! QEMU was still daemonizing leaves a QEMU whose pid file is written after
//! the driver is gone (or never read). `kill` therefore looks for every
//! process whose command line carries this machine's exact `-qmp` argument.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::accel::Accel;

/// The machine's files, all in its directory in the store.
#[derive(Debug, Clone)]
pub struct Files {
    dir: PathBuf,
}

impl Files {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
        }
    }
    pub fn disk(&self) -> PathBuf {
        self.dir.join("disk.qcow2")
    }
    pub fn seed(&self) -> PathBuf {
        self.dir.join("seed.img")
    }
    pub fn qmp(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }
    pub fn pid(&self) -> PathBuf {
        self.dir.join("qemu.pid")
    }
    pub fn serial(&self) -> PathBuf {
        self.dir.join("serial.log")
    }

    /// Everything the driver makes, for removal.
    pub fn all(&self) -> [PathBuf; 5] {
        [
            self.disk(),
            self.seed(),
            self.qmp(),
            self.pid(),
            self.serial(),
        ]
    }
}

/// What to boot and how.
#[derive(Debug, Clone)]
pub struct Spec {
    pub binary: PathBuf,
    pub name: String,
    pub accel: Accel,
    pub cpus: u32,
    pub memory_mb: u64,
    /// Direct boot: kernel, initrd and command line.
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub append: Option<String>,
    pub ssh_port: u16,
    pub engine_port: u16,
}

/// Unix socket paths are limited to 108 bytes, NUL included.
const SUN_PATH_MAX: usize = 107;

/// QEMU's command line for a machine.
pub fn args(spec: &Spec, files: &Files) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |s: &str| a.push(s.into());
    push("-name");
    push(&format!(
        "machine-{},process=machine-qemu-{}",
        spec.name, spec.name
    ));
    push("-nodefaults");
    push("-display");
    push("none");
    push("-machine");
    push("q35");
    match spec.accel {
        Accel::Kvm => {
            push("-accel");
            push("kvm");
            push("-cpu");
            push("host");
        }
        Accel::Tcg => {
            push("-accel");
            push("tcg");
        }
    }
    push("-smp");
    push(&spec.cpus.to_string());
    push("-m");
    push(&format!("{}M", spec.memory_mb));
    push("-drive");
    push(&format!(
        "if=virtio,file={},format=qcow2,discard=unmap",
        escape(&files.disk())
    ));
    push("-drive");
    push(&format!(
        "if=virtio,file={},format=raw,readonly=on",
        escape(&files.seed())
    ));
    push("-netdev");
    push(&format!(
        "user,id=net0,hostfwd=tcp:127.0.0.1:{}-:22,hostfwd=tcp:127.0.0.1:{}-:{}",
        spec.ssh_port, spec.engine_port, spec.engine_port
    ));
    push("-device");
    push("virtio-net-pci,netdev=net0");
    // Entropy: sshd and cloud-init would otherwise wait for the pool.
    push("-device");
    push("virtio-rng-pci");
    push("-serial");
    push(&format!("file:{}", files.serial().display()));
    push("-qmp");
    push(&qmp_arg(files));
    push("-pidfile");
    push(&files.pid().display().to_string());
    push("-daemonize");
    if let Some(kernel) = &spec.kernel {
        push("-kernel");
        push(&kernel.display().to_string());
    }
    if let Some(initrd) = &spec.initrd {
        push("-initrd");
        push(&initrd.display().to_string());
    }
    if let Some(append) = &spec.append {
        push("-append");
        push(append);
    }
    a
}

/// The `-qmp` argument, which names the machine uniquely (its socket lives
/// in the machine's directory) and so identifies its QEMU processes.
fn qmp_arg(files: &Files) -> String {
    format!("unix:{},server=on,wait=off", files.qmp().display())
}

/// QEMU's `-drive` option syntax doubles commas inside values.
fn escape(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

/// A failure to start QEMU.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("cannot run {binary}: {source}")]
    Spawn {
        binary: String,
        #[source]
        source: std::io::Error,
    },
    #[error("QEMU ({binary}) failed to start the VM: {stderr}")]
    Failed { binary: String, stderr: String },
    #[error(
        "QEMU ({binary}) did not finish starting the VM within {0:?}",
        LAUNCH_LIMIT
    )]
    Timeout { binary: String },
    #[error(
        "the machine's directory path is too long for QEMU's QMP socket ({len} bytes, at most {SUN_PATH_MAX}): {path}"
    )]
    PathTooLong { path: String, len: usize },
}

/// How long QEMU may take to set a VM up before `-daemonize` returns.
const LAUNCH_LIMIT: Duration = Duration::from_secs(60);

/// Starts the VM; returns once QEMU has daemonized.
pub async fn launch(spec: &Spec, files: &Files) -> Result<(), LaunchError> {
    let qmp = files.qmp();
    let len = qmp.as_os_str().len();
    if len > SUN_PATH_MAX {
        return Err(LaunchError::PathTooLong {
            path: qmp.display().to_string(),
            len,
        });
    }
    // A socket left by a VM that died without cleaning up would make QEMU
    // fail to bind; the pid file of a dead VM is stale too.
    let _ = std::fs::remove_file(&qmp);
    let _ = std::fs::remove_file(files.pid());
    let binary = spec.binary.display().to_string();
    let mut cmd = tokio::process::Command::new(&spec.binary);
    cmd.args(args(spec, files))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        // Out of the driver's process group: the CLI ends that group when
        // it is done with the driver, and the VM must outlive it.
        .process_group(0);
    let child = cmd.spawn().map_err(|source| LaunchError::Spawn {
        binary: binary.clone(),
        source,
    })?;
    let output = tokio::time::timeout(LAUNCH_LIMIT, child.wait_with_output())
        .await
        .map_err(|_| LaunchError::Timeout {
            binary: binary.clone(),
        })?
        .map_err(|source| LaunchError::Spawn {
            binary: binary.clone(),
            source,
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        return Err(LaunchError::Failed {
            binary,
            stderr: if stderr.is_empty() {
                format!("exited with {}", output.status)
            } else {
                stderr
            },
        });
    }
    Ok(())
}

/// Whether `pid`'s command line carries this machine's `-qmp` argument.
/// A zombie has an empty command line and is as good as gone.
fn is_ours(pid: i32, qmp_arg: &[u8]) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|cmdline| cmdline.split(|b| *b == 0).any(|arg| arg == qmp_arg))
        .unwrap_or(false)
}

/// The pid of this machine's QEMU, if it runs.
pub fn running_pid(files: &Files) -> Option<i32> {
    let text = std::fs::read_to_string(files.pid()).ok()?;
    let pid: i32 = text.trim().parse().ok()?;
    is_ours(pid, qmp_arg(files).as_bytes()).then_some(pid)
}

/// Every live process of this machine's QEMU: the daemon, and a launch
/// still daemonizing (its pid file not written yet).
fn processes(files: &Files) -> Vec<i32> {
    let arg = qmp_arg(files);
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| is_ours(*pid, arg.as_bytes()))
        .collect()
}

/// Waits until the process is gone, up to `limit`; true if it is.
pub async fn wait_gone(files: &Files, pid: i32, limit: Duration) -> bool {
    let started = Instant::now();
    loop {
        if running_pid(files) != Some(pid) {
            return true;
        }
        if started.elapsed() >= limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How long `kill` waits for QEMU to be gone after SIGKILL.
const KILL_LIMIT: Duration = Duration::from_secs(10);

/// SIGKILLs every process of this machine's QEMU and waits until none is
/// left. Blocking, for `Drop`; `kill` is the async face.
pub fn kill_blocking(files: &Files) -> std::io::Result<()> {
    let started = Instant::now();
    loop {
        // A launch that was still daemonizing may fork its daemon after a
        // scan, but not after it is dead: scanning again until a scan finds
        // nothing catches that child too.
        let pids = processes(files);
        if pids.is_empty() {
            return Ok(());
        }
        if started.elapsed() >= KILL_LIMIT {
            return Err(std::io::Error::other(format!(
                "QEMU (pid {pids:?}) is still there {KILL_LIMIT:?} after SIGKILL"
            )));
        }
        for pid in pids {
            // SAFETY: a plain syscall on a pid whose command line was just
            // checked to name this machine's QMP socket.
            let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
            if rc != 0 {
                let err = std::io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::ESRCH) {
                    return Err(err);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILLs the machine's QEMU, including a launch still under way, and
/// waits for it to be gone.
pub async fn kill(files: &Files) -> std::io::Result<()> {
    let files = files.clone();
    tokio::task::spawn_blocking(move || kill_blocking(&files))
        .await
        .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec {
            binary: "qemu-system-x86_64".into(),
            name: "dev".into(),
            accel: Accel::Tcg,
            cpus: 2,
            memory_mb: 1024,
            kernel: Some("/k/vmlinuz".into()),
            initrd: None,
            append: Some("root=/dev/vda console=ttyS0".into()),
            ssh_port: 40022,
            engine_port: 42376,
        }
    }

    #[test]
    fn command_line_forwards_ports_on_loopback_only() {
        let files = Files::new(Path::new("/store/machines/dev,1"));
        let args: Vec<String> = args(&spec(), &files)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let joined = args.join(" ");
        assert!(
            joined.contains(
                "user,id=net0,hostfwd=tcp:127.0.0.1:40022-:22,hostfwd=tcp:127.0.0.1:42376-:42376"
            ),
            "{joined}"
        );
        assert!(
            joined.contains("file=/store/machines/dev,,1/disk.qcow2"),
            "{joined}"
        );
        assert!(joined.contains("-daemonize"));
        let append = args.iter().position(|a| a == "-append").unwrap();
        assert_eq!(args[append + 1], "root=/dev/vda console=ttyS0");
        assert!(!args.iter().any(|a| a == "-initrd"));
    }

    #[test]
    fn no_pid_file_means_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::new(dir.path());
        assert_eq!(running_pid(&files), None);
        // A pid file naming a process that is not this machine's QEMU
        // (here: the test itself) is not trusted.
        std::fs::write(files.pid(), std::process::id().to_string()).unwrap();
        assert_eq!(running_pid(&files), None);
    }

    #[test]
    fn processes_are_found_by_their_exact_qmp_argument() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::new(&dir.path().join("m"));
        let other = Files::new(&dir.path().join("xm"));
        // Stand-in processes carrying a QMP argument: sh waits on a
        // builtin `read` (no child to orphan), the argument is its $0.
        let stand_in = |f: &Files| {
            std::process::Command::new("sh")
                .args(["-c", "read _ || :", &qmp_arg(f)])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let mut ours = stand_in(&files);
        let mut theirs = stand_in(&other);
        assert_eq!(processes(&files), vec![ours.id() as i32]);
        kill_blocking(&files).unwrap();
        assert!(ours.wait().is_ok());
        assert!(processes(&files).is_empty());
        assert_eq!(processes(&other), vec![theirs.id() as i32]);
        drop(theirs.stdin.take());
        assert!(theirs.wait().unwrap().success());
    }
}
