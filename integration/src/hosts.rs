//! Real hosts for end-to-end tests of SSH provisioning: containers that boot
//! systemd and sshd like a small Debian machine, reachable only through ports
//! published on 127.0.0.1.
//!
//! The images come from `integration/hosts/setup.sh` (run by
//! `integration/test.sh`), which records their names in
//! `/var/cache/machine-test/images.env`; the variables
//! `MACHINE_TEST_IMAGE_SSH` / `MACHINE_TEST_IMAGE_DOCKER` override it.
//! Containers are driven with the `docker` command line and attached to the
//! script's own bridge network, [`NETWORK`]. Every container
//! carries the label `machine-test=1` and is removed (with its volumes) when
//! its [`TestHost`] is dropped, also when the test panicked;
//! [`remove_all_test_hosts`] sweeps up after killed test processes.
//!
//! The hosts run without `--privileged` (it fails on the test machines): see
//! `/work/shared/TESTBED.md` for the flags that work and why
//! `/var/lib/docker` is a volume.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The label every test host carries.
pub const LABEL: &str = "machine-test=1";
/// The Docker network the hosts are attached to (made by the setup script).
pub const NETWORK: &str = "machine-test";
/// How long a host may take from `docker run` to an SSH banner.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

const SETUP_HINT: &str = "run `bash integration/hosts/setup.sh` (integration/test.sh does)";
const DEFAULT_CACHE: &str = "/var/cache/machine-test";

/// Which locally built image a host boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Image {
    /// Debian bookworm with systemd, sshd, `root` (key only) and `tester`
    /// (passwordless sudo); no Docker. Its apt lists are current, so
    /// `apt-get install docker.io` works inside.
    Ssh,
    /// [`Image::Ssh`] plus Debian's `docker.io` (`/usr/sbin/dockerd`),
    /// disabled: provisioning enables and starts it.
    Docker,
}

impl Image {
    fn var(self) -> &'static str {
        match self {
            Image::Ssh => "MACHINE_TEST_IMAGE_SSH",
            Image::Docker => "MACHINE_TEST_IMAGE_DOCKER",
        }
    }

    /// The image's name, e.g. `machine-test/debian-ssh:<key>`. Panics with
    /// a hint to run the setup script when it is not known.
    pub fn name(self) -> String {
        images_env(self.var())
    }
}

/// The locally built VM image for the qemu driver (setup.sh's
/// `MACHINE_TEST_VM_DIR`): a qcow2 disk without a boot loader, and the
/// kernel and initrd to boot it directly.
#[derive(Debug, Clone)]
pub struct VmImage {
    pub disk: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

impl VmImage {
    /// Panics with a hint to run the setup script when there is none.
    pub fn get() -> VmImage {
        let dir = PathBuf::from(images_env("MACHINE_TEST_VM_DIR"));
        VmImage {
            disk: dir.join("disk.qcow2"),
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initrd.img"),
        }
    }

    /// The qemu driver's flags that boot this image.
    pub fn flags(&self) -> Vec<String> {
        vec![
            "--qemu-image".into(),
            self.disk.display().to_string(),
            "--qemu-kernel".into(),
            self.kernel.display().to_string(),
            "--qemu-initrd".into(),
            self.initrd.display().to_string(),
        ]
    }
}

/// A setting of setup.sh's `images.env`, overridden by the variable of
/// the same name.
fn images_env(var: &str) -> String {
    if let Some(v) = std::env::var(var).ok().filter(|v| !v.is_empty()) {
        return v;
    }
    let cache = std::env::var_os("MACHINE_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE));
    let file = cache.join("images.env");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "no test host images ({}: {e}): {SETUP_HINT}",
            file.display()
        )
    });
    text.lines()
        .filter_map(|l| l.trim().split_once('='))
        .find(|(k, _)| k.trim() == var)
        .map(|(_, v)| v.trim().trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| panic!("{} does not name {var}: {SETUP_HINT}", file.display()))
}

/// A running container host. Dropping it removes the container and its
/// volumes.
#[derive(Debug)]
pub struct TestHost {
    /// The container's name (also usable as its id with `docker`).
    pub container: String,
    /// The hostname the container started with.
    pub hostname: String,
    /// sshd, published as 127.0.0.1:`ssh_port`.
    pub ssh_port: u16,
    /// A port published under the same number inside and out, for a Docker
    /// daemon configured with `-H tcp://0.0.0.0:<docker_port>`.
    pub docker_port: u16,
    /// Time from `docker run` until sshd first sent its banner.
    pub ready_after: Duration,
    image: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestHost {
    /// Starts a host from `image` with `authorized_key` (one OpenSSH public
    /// key line) authorized for `root` and `tester`, and waits until sshd
    /// answers on 127.0.0.1:[`ssh_port`](Self::ssh_port).
    pub fn start(image: Image, authorized_key: &str) -> TestHost {
        Self::start_with_hostname(image, authorized_key, None)
    }

    /// [`start`](Self::start) with a chosen hostname (default: the
    /// container's name).
    pub fn start_with_hostname(
        image: Image,
        authorized_key: &str,
        hostname: Option<&str>,
    ) -> TestHost {
        let image = image.name();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let container = format!("mt-{}-{n}-{:05x}", std::process::id(), nanos & 0xfffff);
        let hostname = hostname.unwrap_or(&container).to_owned();
        let test = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_owned();

        let started = Instant::now();
        let mut attempt = 0;
        let (ssh_port, docker_port) = loop {
            attempt += 1;
            let (ssh_port, docker_port) = free_port_pair();
            let out = docker()
                .args([
                    "run",
                    "--detach",
                    "--pull=never",
                    "--name",
                    &container,
                    "--hostname",
                    &hostname,
                ])
                .args(["--network", NETWORK, "--label", LABEL])
                .arg("--label")
                .arg(format!("machine-test.test={test}"))
                .arg("--label")
                .arg(format!("machine-test.pid={}", std::process::id()))
                .args(["--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN"])
                .args(["--security-opt", "seccomp=unconfined"])
                .args(["--security-opt", "apparmor=unconfined"])
                .args(["--cgroupns=host", "--tmpfs", "/run", "--tmpfs", "/run/lock"])
                .args([
                    "-v",
                    "/sys/fs/cgroup:/sys/fs/cgroup:rw",
                    "-v",
                    "/var/lib/docker",
                ])
                .arg("-p")
                .arg(format!("127.0.0.1:{ssh_port}:22"))
                .arg("-p")
                .arg(format!("127.0.0.1:{docker_port}:{docker_port}"))
                // A second loopback address, for tests of a host whose
                // address changed (as with DHCP).
                .arg("-p")
                .arg(format!("{SECOND_ADDRESS}:{ssh_port}:22"))
                .arg("-p")
                .arg(format!("{SECOND_ADDRESS}:{docker_port}:{docker_port}"))
                .arg(&image)
                .stdin(Stdio::null())
                .output()
                .unwrap_or_else(|e| panic!("cannot run `docker` ({e}): {SETUP_HINT}"));
            if out.status.success() {
                break (ssh_port, docker_port);
            }
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            // The container may exist even though it could not start.
            remove_container(&container);
            let clash = err.contains("already allocated") || err.contains("address already in use");
            if clash && attempt < 5 {
                continue;
            }
            if err.contains("No such image")
                || err.contains("Unable to find image")
                || err.contains("could not find bridge")
                || err.contains(&format!("network {NETWORK} not found"))
            {
                panic!(
                    "image {image} or network {NETWORK} is missing or broken: {SETUP_HINT}\n{err}"
                );
            }
            panic!("docker run {image} failed: {err}");
        };

        let mut host = TestHost {
            container,
            hostname,
            ssh_port,
            docker_port,
            ready_after: Duration::ZERO,
            image,
        };
        host.authorize_key(authorized_key);
        let left = READY_TIMEOUT.saturating_sub(started.elapsed());
        if let Err(e) = host.wait_for_ssh(left) {
            host.fail(&format!(
                "sshd did not answer within {READY_TIMEOUT:?}: {e}"
            ));
        }
        host.ready_after = started.elapsed();
        host
    }

    /// The image this host runs.
    pub fn image(&self) -> &str {
        &self.image
    }

    /// Appends `public_key` (one OpenSSH public key line) to the
    /// `authorized_keys` of `root` and `tester`.
    pub fn authorize_key(&self, public_key: &str) {
        let key = public_key.trim();
        assert!(
            !key.is_empty() && !key.contains('\n'),
            "authorized key must be one line: {public_key:?}"
        );
        let script = r#"set -e
for d in /root/.ssh /home/tester/.ssh; do
  install -d -m 700 "$d"
  printf '%s\n' "$1" >>"$d/authorized_keys"
  chmod 600 "$d/authorized_keys"
done
chown -R tester:tester /home/tester/.ssh"#;
        self.exec_ok(&["sh", "-c", script, "sh", key]);
    }

    /// Runs `cmd` in the host with `docker exec` (as root), for assertions.
    pub fn exec(&self, cmd: &[&str]) -> Output {
        docker()
            .arg("exec")
            .arg(&self.container)
            .args(cmd)
            .stdin(Stdio::null())
            .output()
            .expect("run `docker exec`")
    }

    /// [`exec`](Self::exec) that must succeed; returns its standard output.
    pub fn exec_ok(&self, cmd: &[&str]) -> String {
        let out = self.exec(cmd);
        assert!(
            out.status.success(),
            "{cmd:?} in {} failed ({}):\n{}{}",
            self.container,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The host's current ed25519 host key (`ssh-ed25519 AAAA…`, no comment).
    pub fn host_key(&self) -> String {
        let line = self.exec_ok(&["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]);
        line.split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A `known_hosts` line for this host as reached through its published
    /// port: `[127.0.0.1]:PORT ssh-ed25519 AAAA…`.
    pub fn known_hosts_line(&self) -> String {
        format!("[127.0.0.1]:{} {}", self.ssh_port, self.host_key())
    }

    /// Replaces the host's SSH host keys with new ones (to test that a
    /// changed key is refused), restarts sshd and waits until it answers.
    pub fn rotate_host_keys(&self) {
        let before = self.host_key();
        self.exec_ok(&[
            "sh",
            "-c",
            "set -e; rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub; \
             ssh-keygen -A >/dev/null; systemctl restart ssh.service",
        ]);
        assert_ne!(before, self.host_key(), "host key did not change");
        if let Err(e) = self.wait_for_ssh(Duration::from_secs(30)) {
            self.fail(&format!("sshd did not come back after new host keys: {e}"));
        }
    }

    /// Runs `remote_cmd` over SSH with the system's OpenSSH client (not our
    /// own SSH code) as `user`, trusting any host key.
    pub fn openssh(&self, private_key: &Path, user: &str, remote_cmd: &str) -> Output {
        Command::new("ssh")
            .arg("-i")
            .arg(private_key)
            .args(["-p", &self.ssh_port.to_string()])
            .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args(["-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR"])
            .arg(format!("{user}@127.0.0.1"))
            .arg(remote_cmd)
            .stdin(Stdio::null())
            .output()
            .expect("run `ssh` (openssh-client)")
    }

    /// Polls 127.0.0.1:ssh_port until sshd sends an `SSH-2.0-` banner.
    /// (docker-proxy accepts connections before anything listens inside,
    /// so only the banner proves sshd is there.)
    pub fn wait_for_ssh(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match ssh_banner(self.ssh_port) {
                Ok(b) if b.starts_with("SSH-2.0-") => return Ok(()),
                Ok(b) => format!("unexpected banner {b:?}"),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(last);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Panics with `msg` and what the host says about itself.
    fn fail(&self, msg: &str) -> ! {
        let logs = docker()
            .args(["logs", "--tail", "40", &self.container])
            .output()
            .map(|o| {
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            })
            .unwrap_or_default();
        let status = self.exec(&[
            "sh",
            "-c",
            "systemctl is-system-running; systemctl --failed --no-pager; \
             systemctl status ssh.service --no-pager -n 20",
        ]);
        panic!(
            "{}: {msg}\n--- docker logs ---\n{logs}\n--- systemd ---\n{}{}",
            self.container,
            String::from_utf8_lossy(&status.stdout),
            String::from_utf8_lossy(&status.stderr)
        );
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        remove_container(&self.container);
    }
}

/// Removes every container labelled `machine-test=1`, with its volumes (for
/// `integration/test.sh`'s cleanup; `integration/hosts/cleanup.sh` does the
/// same from a shell).
pub fn remove_all_test_hosts() {
    let Ok(out) = docker()
        .args(["ps", "--all", "--quiet", "--filter"])
        .arg(format!("label={LABEL}"))
        .output()
    else {
        return;
    };
    let ids = String::from_utf8_lossy(&out.stdout);
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if !ids.is_empty() {
        let _ = docker()
            .args(["rm", "--force", "--volumes"])
            .args(&ids)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Makes an ed25519 key pair without a passphrase in `dir` with
/// `ssh-keygen`: returns the private key's path and the public key line.
/// Several pairs may share a directory.
pub fn test_key_pair(dir: &Path) -> (PathBuf, String) {
    let mut private = dir.join("id_ed25519");
    let mut i = 1;
    while private.exists() {
        private = dir.join(format!("id_ed25519_{i}"));
        i += 1;
    }
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "machine-test", "-f"])
        .arg(&private)
        .stdin(Stdio::null())
        .output()
        .expect("run `ssh-keygen` (openssh-client; integration/hosts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "ssh-keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut public = private.clone().into_os_string();
    public.push(".pub");
    let line = std::fs::read_to_string(&public).expect("read the public key");
    (private, line.trim().to_owned())
}

fn docker() -> Command {
    Command::new("docker")
}

fn remove_container(name: &str) {
    let _ = docker()
        .args(["rm", "--force", "--volumes", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The other loopback address every host's ports are published on too.
pub const SECOND_ADDRESS: &str = "127.0.0.2";

/// Two distinct ports that were free on 127.0.0.1 a moment ago.
fn free_port_pair() -> (u16, u16) {
    let bind = || TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    let (a, b) = (bind(), bind());
    let port = |l: &TcpListener| l.local_addr().expect("local address").port();
    (port(&a), port(&b))
}

/// Connects to 127.0.0.1:`port` and reads the first line the server sends.
fn ssh_banner(port: u16) -> Result<String, String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while buf.len() < 255 {
        match s.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => buf.push(byte[0]),
            Err(e) => return Err(format!("read from {addr}: {e}")),
        }
    }
    if buf.is_empty() {
        return Err(format!("{addr} closed without a banner"));
    }
    Ok(String::from_utf8_lossy(&buf).trim_end().to_owned())
}
