//! The provider: a host is a process group running the machine's command,
//! with its files in the machine's directory.
//!
//! - The command runs under `/bin/sh -c` in a process group of its own, so
//!   it outlives this driver process (which `machine` ends after every
//!   command, killing the driver's whole process group if it must).
//! - Whether the host runs is told by a lock, not by a pid: the command
//!   inherits an open file description of `hello.lock` with an exclusive
//!   `flock` on it, and the kernel releases that lock when the last process
//!   of the host closes it or exits. A pid can be reused by an unrelated
//!   process after the host exits; a lock cannot be held by one.
//! - `hello.pid` holds the process group id, for signals. It is removed when
//!   machine stops the host, so a host that exited on its own can be told
//!   from one that was stopped.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::os::fd::AsRawFd as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The driver's record of the host; its absence means "no such host".
pub(crate) const RECORD: &str = "hello.json";
const LOCK: &str = "hello.lock";
const PID: &str = "hello.pid";
/// The command's stdout and stderr.
pub(crate) const LOG: &str = "hello.log";
/// The machine's SSH public key, for commands that set up a guest with it.
pub(crate) const AUTHORIZED_KEYS: &str = "hello_authorized_keys";

/// How long a command that fails at once (a typo, a missing program) has to
/// show it, so that `create` and `start` report the failure themselves
/// instead of a later `ls` showing a stopped host.
const EARLY_EXIT: Duration = Duration::from_secs(1);
/// How often to look whether a signalled host is gone.
const POLL: Duration = Duration::from_millis(50);

/// Variables of the plugin handshake. The command does not get them: the
/// token is a secret of this launch, and with the cookie a driver started
/// by the command would take itself for one started by machine.
const PLUGIN_VARS: &[&str] = &[
    "MACHINE_DRIVER_PLUGIN",
    "PLUGIN_PROTOCOL_VERSIONS",
    "PLUGIN_UNIX_SOCKET_DIR",
    "MACHINE_DRIVER_TRANSPORT",
    "MACHINE_DRIVER_TOKEN",
    "MACHINE_DRIVER_LOG",
];

/// What [`start`] did.
#[derive(Debug)]
pub(crate) enum Started {
    /// The command is running, in the process group `pgid`.
    Running { pgid: u32 },
    /// The host was running already.
    AlreadyRunning,
    /// The command ended within [`EARLY_EXIT`].
    ExitedAtOnce { status: ExitStatus },
}

pub(crate) fn path(dir: &Path, file: &str) -> PathBuf {
    dir.join(file)
}

/// Whether some process of the host still holds its lock.
pub(crate) fn running(dir: &Path) -> io::Result<bool> {
    let lock = match File::open(path(dir, LOCK)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    match lock.try_lock() {
        // Ours now, so nobody else's; closing the file releases it.
        Ok(()) => Ok(false),
        Err(TryLockError::WouldBlock) => Ok(true),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// Starts `command` for the machine in `dir`, with `env` added to the
/// environment.
pub(crate) fn start(dir: &Path, command: &str, env: &[(&str, String)]) -> io::Result<Started> {
    std::fs::create_dir_all(dir)?;
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path(dir, LOCK))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Ok(Started::AlreadyRunning),
        Err(TryLockError::Error(e)) => return Err(e),
    }
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path(dir, LOG))?;
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    for var in PLUGIN_VARS {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let lock_fd = lock.as_raw_fd();
    // SAFETY: runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed; fcntl is one.
    unsafe {
        cmd.pre_exec(move || {
            // Rust opens files close-on-exec; the command must keep this one
            // (and with it the lock) for as long as it runs.
            if libc::fcntl(lock_fd, libc::F_SETFD, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let pgid = child.id();
    std::fs::write(path(dir, PID), format!("{pgid}\n"))?;
    // The child holds the lock now; this process lets go of its copy.
    drop(lock);

    // Someone must reap the command's shell while this process lives (after
    // that, init does), or it stays a zombie. The same wait tells whether it
    // ended at once.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        if let Ok(status) = child.wait() {
            let _ = tx.send(status);
        }
    });
    Ok(match rx.recv_timeout(EARLY_EXIT) {
        Ok(status) => Started::ExitedAtOnce { status },
        Err(_) => Started::Running { pgid },
    })
}

/// Sends `signal` to the host's process group, if the host runs.
pub(crate) fn signal(dir: &Path, signal: libc::c_int) -> io::Result<()> {
    // Only while the lock is held: then the group still exists, and its id
    // cannot have been given to another process.
    if !running(dir)? {
        return Ok(());
    }
    let pgid: libc::pid_t = match std::fs::read_to_string(path(dir, PID)) {
        Ok(text) => text.trim().parse().map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidData, format!("{PID} holds {text:?}"))
        })?,
        Err(e) => return Err(e),
    };
    if pgid <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{PID} holds {pgid}"),
        ));
    }
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(-pgid, signal) } == -1 {
        let e = io::Error::last_os_error();
        // Gone between the check and the signal: what the caller wanted.
        if e.raw_os_error() != Some(libc::ESRCH) {
            return Err(e);
        }
    }
    Ok(())
}

/// Waits until the host no longer runs; false if it still does after `limit`.
pub(crate) async fn wait_stopped(dir: &Path, limit: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + limit;
    loop {
        if !running(dir)? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Forgets the pid: the host was stopped on purpose.
pub(crate) fn forget_pid(dir: &Path) -> io::Result<()> {
    remove_if_present(&path(dir, PID))
}

/// Whether the host was started and not stopped by machine.
pub(crate) fn was_started(dir: &Path) -> bool {
    path(dir, PID).exists()
}

/// The last line the command wrote, for error messages.
pub(crate) fn last_output(dir: &Path) -> String {
    let Ok(mut log) = File::open(path(dir, LOG)) else {
        return String::new();
    };
    // The end is enough; a console log can be large.
    let len = log.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = log.seek(SeekFrom::Start(len.saturating_sub(4096)));
    let mut tail = Vec::new();
    let _ = log.read_to_end(&mut tail);
    String::from_utf8_lossy(&tail)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Removes every file the driver made in `dir`.
pub(crate) fn remove_files(dir: &Path) -> io::Result<()> {
    for file in [RECORD, PID, LOCK, LOG, AUTHORIZED_KEYS] {
        remove_if_present(&path(dir, file))?;
    }
    Ok(())
}

fn remove_if_present(p: &Path) -> io::Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
