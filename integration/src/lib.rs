//! Test support for end-to-end tests: runs the real `machine` binary and the
//! real driver binaries from the workspace's target directory, each test in
//! its own store, and finds the driver processes a test started so it can
//! prove none is left behind.
//!
//! Binaries come from the target directory this test binary was built into
//! (`target/debug` next to `target/debug/deps`), or from `MACHINE_BIN_DIR`.
//! `cargo build --workspace --bins` must have run first; `.ci/run` does.

pub mod hosts;
pub mod release_server;
pub mod terminal;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Environment variable that tags every process a test starts, so the test
/// can find its own driver processes among those of parallel tests.
pub const MARKER_VAR: &str = "MACHINE_TEST_MARKER";

/// The directory holding `machine` and the `machine-driver-*` binaries.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MACHINE_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("test binary path");
    // target/debug/deps/<test> -> target/debug
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_owned();
    assert!(
        dir.join("machine").is_file(),
        "{} has no `machine` binary: run `cargo build --workspace --bins` before the tests \
         (or set MACHINE_BIN_DIR)",
        dir.display()
    );
    dir
}

/// One test's world: a fresh store and a marker for its processes.
#[derive(Debug)]
pub struct TestContext {
    pub store: tempfile::TempDir,
    pub bin: PathBuf,
    pub marker: String,
    env: Vec<(String, String)>,
}

impl Default for TestContext {
    fn default() -> Self {
        Self::new()
    }
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Run {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        Self {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Asserts exit 0 and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert!(
            self.status.success(),
            "expected success, got {}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        &self.stdout
    }

    /// Asserts a failure with exit code `code` and returns stderr.
    #[track_caller]
    pub fn fails_with(&self, code: i32) -> &str {
        assert_eq!(
            self.status.code(),
            Some(code),
            "expected exit {code}\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        &self.stderr
    }
}

impl TestContext {
    pub fn new() -> Self {
        let store = tempfile::Builder::new()
            .prefix("machine-test-")
            .tempdir()
            .expect("temp store");
        let marker = format!(
            "{}-{}",
            std::process::id(),
            store
                .path()
                .file_name()
                .and_then(OsStr::to_str)
                .unwrap_or("x")
        );
        Self {
            store,
            bin: bin_dir(),
            marker,
            env: Vec::new(),
        }
    }

    /// Sets an environment variable for every command of this test.
    pub fn env(&mut self, key: &str, value: &str) -> &mut Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn store_path(&self) -> &Path {
        self.store.path()
    }

    /// A `machine` command in this test's store, with a clean environment
    /// for the variables that change its behaviour.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.bin.join("machine"));
        cmd.args(args)
            .env("MACHINE_STORAGE_PATH", self.store.path())
            .env(MARKER_VAR, &self.marker)
            .env("NO_COLOR", "1")
            .env_remove("MACHINE_FAULT")
            .env_remove("MACHINE_DEBUG")
            .env_remove("MACHINE_DRIVER_TRANSPORT")
            .env_remove("DOCKER_HOST")
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `machine ARGS` to completion.
    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().expect("run machine"))
    }

    /// Runs `machine ARGS` with extra environment.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = self.command(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Run::from(cmd.output().expect("run machine"))
    }

    /// Runs the real docker CLI at machine `name`, as a user does: bash
    /// evaluates `machine env --shell bash NAME`, then runs `docker ARGS`.
    pub fn docker(&self, name: &str, docker_args: &str) -> Run {
        let script = format!(
            "set -e; eval \"$({machine} env --shell bash {name})\"; docker {docker_args}",
            machine = self.bin.join("machine").display()
        );
        let out = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .env("MACHINE_STORAGE_PATH", self.store.path())
            .env_remove("DOCKER_HOST")
            .output()
            .expect("run bash");
        Run::from(out)
    }

    /// Pids of live driver processes started by this test.
    pub fn driver_pids(&self) -> Vec<u32> {
        marked_pids(&self.marker)
            .into_iter()
            .filter(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
                Path::new(OsStr::new(std::str::from_utf8(argv0).unwrap_or("")))
                    .file_name()
                    .and_then(OsStr::to_str)
                    .is_some_and(|f| f.starts_with("machine-driver-"))
            })
            .collect()
    }

    /// Waits until one of this test's driver processes exists.
    #[track_caller]
    pub fn wait_for_driver(&self, limit: Duration) -> Vec<u32> {
        let start = Instant::now();
        loop {
            let pids = self.driver_pids();
            if !pids.is_empty() {
                return pids;
            }
            assert!(
                start.elapsed() < limit,
                "no driver process appeared within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Asserts that no driver process of this test is alive, allowing
    /// `limit` for processes that are on their way out.
    #[track_caller]
    pub fn assert_no_driver_left(&self, limit: Duration) {
        assert_none_left("driver processes", limit, || self.driver_pids());
    }
}

/// Pids of every live process (but this one) that carries `marker` in
/// its environment: the drivers a test started, whatever their argv[0]
/// (an interpreter, for a driver in Python), and the processes they
/// started in turn.
pub fn marked_pids(marker: &str) -> Vec<u32> {
    let needle = format!("{MARKER_VAR}={marker}");
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            *pid != me
                && alive(*pid)
                && std::fs::read(format!("/proc/{pid}/environ"))
                    .unwrap_or_default()
                    .split(|b| *b == 0)
                    .any(|kv| kv == needle.as_bytes())
        })
        .collect()
}

/// Asserts that no process carrying `marker` is alive, allowing `limit`
/// for those on their way out.
#[track_caller]
pub fn assert_nothing_marked_left(marker: &str, limit: Duration) {
    assert_none_left("processes", limit, || marked_pids(marker));
}

#[track_caller]
fn assert_none_left(what: &str, limit: Duration, pids: impl Fn() -> Vec<u32>) {
    let start = Instant::now();
    loop {
        let left = pids();
        if left.is_empty() {
            return;
        }
        if start.elapsed() >= limit {
            let _ = Command::new("ps")
                .args(["-o", "pid,ppid,stat,args", "-p"])
                .arg(
                    left.iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                )
                .status();
            panic!("{what} left behind after {limit:?}: {left:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Kills, when dropped, every process that carries its marker: what a
/// failed test left, including processes that are not drivers (hosts a
/// driver started), which TestContext's own clean-up does not look for.
#[derive(Debug)]
pub struct KillMarked(pub String);

impl Drop for KillMarked {
    fn drop(&mut self) {
        for pid in marked_pids(&self.0) {
            // SAFETY: signalling a process that carries this test's marker.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
    }
}

/// Alive and not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Removes the containers (and their volumes) that the container driver made
/// for machines of the store at `store`, when a test failed before `rm`.
fn remove_store_containers(store: &Path) {
    let label = format!("label=io.machine.store={}", store.display());
    let Ok(out) = Command::new("docker")
        .args(["ps", "-a", "-q", "--filter", &label])
        .stderr(Stdio::null())
        .output()
    else {
        return;
    };
    for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        let volumes = Command::new("docker")
            .args([
                "inspect",
                "--format",
                "{{range .Mounts}}{{if .Name}}{{.Name}} {{end}}{{end}}",
                id,
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        for v in volumes.split_whitespace() {
            let _ = Command::new("docker")
                .args(["volume", "rm", "-f", v])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The pids of the QEMU processes of machines in the store at `store`:
/// every QEMU the qemu driver starts names its QMP socket, inside the
/// machine's directory, on its command line.
pub fn store_vm_pids(store: &Path) -> Vec<u32> {
    let needle = format!("{}/machines/", store.display());
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&needle) && cmdline.contains("qmp.sock") && alive(pid) {
            pids.push(pid);
        }
    }
    pids
}

impl Drop for TestContext {
    fn drop(&mut self) {
        remove_store_containers(self.store.path());
        // Nor its VMs.
        for pid in store_vm_pids(self.store.path()) {
            // SAFETY: signalling a QEMU of this test's store.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
        // A failed test must not leave its drivers running for the next.
        for pid in self.driver_pids() {
            // SAFETY: signalling a pid this test started.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
    }
}
