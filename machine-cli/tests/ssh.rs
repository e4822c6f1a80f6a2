//! The SSH layer against a real OpenSSH server: each test starts its own
//! `sshd` in the foreground on a free port of 127.0.0.1, with its own host
//! key and authorized_keys in a temporary directory, and kills it at the
//! end. Needs /usr/sbin/sshd (Debian: openssh-server) and ssh-keygen
//! (openssh-client), and root (sshd's privilege separation; the tests log
//! in as the user running them).

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use machine_cli::ssh::{self, Session, SshError, Target};

const SSHD: &str = "/usr/sbin/sshd";

/// Every test's time limit, so a hang fails instead of blocking CI.
const TEST_LIMIT: Duration = Duration::from_secs(120);

fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("run id -un");
    String::from_utf8(out.stdout)
        .expect("utf-8 user")
        .trim()
        .to_owned()
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// A running sshd; killed on drop.
struct Sshd {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Sshd {
    /// Starts sshd with `host_key` on `port`, accepting the keys in
    /// `dir/authorized_keys`, and waits until it accepts connections.
    fn start(dir: &Path, host_key: &Path, port: u16) -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: install openssh-server (integration/test.sh does)"
        );
        // sshd refuses to start without its privilege separation directory.
        std::fs::create_dir_all("/run/sshd")
            .expect("create /run/sshd (are the tests run as root?)");
        let config = dir.join(format!("sshd_config.{port}"));
        std::fs::write(
            &config,
            format!(
                "Port {port}\n\
                 ListenAddress 127.0.0.1\n\
                 HostKey {host_key}\n\
                 AuthorizedKeysFile {authorized}\n\
                 PermitRootLogin prohibit-password\n\
                 PubkeyAuthentication yes\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 StrictModes no\n\
                 UsePAM no\n\
                 PidFile {pid}\n\
                 LogLevel VERBOSE\n",
                host_key = host_key.display(),
                authorized = dir.join("authorized_keys").display(),
                pid = dir.join(format!("sshd.{port}.pid")).display(),
            ),
        )
        .expect("write sshd_config");
        let log = dir.join(format!("sshd.{port}.log"));
        let log_file = std::fs::File::create(&log).expect("create sshd log");
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {SSHD}: {e}"));
        let mut sshd = Sshd { child, port, log };
        sshd.wait_listening();
        sshd
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait sshd") {
                panic!("sshd exited with {status}:\n{}", self.log_text());
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not listen on port {} within 15s:\n{}",
                self.port,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A temporary directory with a host key, a client key authorized for the
/// current user, and an sshd using them.
struct Fixture {
    dir: tempfile::TempDir,
    sshd: Option<Sshd>,
    port: u16,
}

impl Fixture {
    fn start() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        ssh::generate_key(&dir.path().join("host_key"), "test-host").expect("host key");
        let client =
            ssh::generate_key(&dir.path().join("id_ed25519"), "test-client").expect("client key");
        std::fs::write(dir.path().join("authorized_keys"), format!("{client}\n"))
            .expect("authorized_keys");
        let port = free_port();
        let sshd = Sshd::start(dir.path(), &dir.path().join("host_key"), port);
        Fixture {
            dir,
            sshd: Some(sshd),
            port,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn target(&self) -> Target {
        Target {
            machine: "testbox".to_owned(),
            host: "127.0.0.1".to_owned(),
            port: self.port,
            user: current_user(),
            key_path: self.path("id_ed25519"),
            known_hosts: self.path("machine/known_hosts"),
        }
    }

    async fn connect(&self) -> Session {
        match Session::connect(&self.target(), Duration::from_secs(20)).await {
            Ok(s) => s,
            Err(e) => panic!("connect failed: {e}\nsshd log:\n{}", self.log()),
        }
    }

    fn log(&self) -> String {
        self.sshd.as_ref().map(Sshd::log_text).unwrap_or_default()
    }

    /// Replaces the server by one with another host key on the same port.
    fn restart_with_new_host_key(&mut self) {
        if let Some(sshd) = self.sshd.take() {
            sshd.stop();
        }
        let key = self.path("host_key_2");
        ssh::generate_key(&key, "test-host-2").expect("second host key");
        self.sshd = Some(Sshd::start(self.dir.path(), &key, self.port));
    }
}

async fn limited<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(TEST_LIMIT, f)
        .await
        .expect("the test took longer than its limit")
}

/// The fingerprint ssh-keygen prints for a public key file.
fn keygen_fingerprint(pub_path: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f"])
        .arg(pub_path)
        .output()
        .expect("run ssh-keygen (install openssh-client)");
    assert!(out.status.success(), "ssh-keygen -l failed: {out:?}");
    // "256 SHA256:... comment (ED25519)"
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .split_whitespace()
        .nth(1)
        .expect("fingerprint field")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_reports_status_stdout_and_stderr() {
    let fx = Fixture::start();
    limited(async {
        let s = fx.connect().await;
        let out = s
            .exec("printf 'to out'; printf 'to err' >&2; exit 3")
            .await
            .expect("exec");
        assert_eq!(out.status, 3);
        assert_eq!(out.stdout, b"to out");
        assert_eq!(out.stderr, b"to err");
        assert!(!out.success());

        let out = s.exec("true").await.expect("exec true");
        assert!(out.success());
        assert!(out.stdout.is_empty() && out.stderr.is_empty());

        // Command availability, as provisioning checks it.
        let out = s
            .exec("command -v no-such-command-here")
            .await
            .expect("exec command -v");
        assert_ne!(out.status, 0);

        // A command that reads stdin gets EOF, not a hang.
        let out = s.exec("cat; echo done").await.expect("exec cat");
        assert_eq!(out.stdout_text(), "done\n");

        // Killed by a signal: 128 + 9, as a shell reports it.
        let out = s.exec("kill -9 $$").await.expect("exec kill");
        assert_eq!(out.status, 137);

        // Stdin goes through.
        let out = s
            .exec_with_input("tr a-z A-Z", b"shout\n")
            .await
            .expect("exec tr");
        assert_eq!(out.stdout_text(), "SHOUT\n");

        // Several channels at once on the one connection.
        let (a, b, c) = tokio::join!(
            s.run("sleep 0.3; echo a"),
            s.run("sleep 0.2; echo b"),
            s.run("echo c")
        );
        assert_eq!(
            (a.expect("a"), b.expect("b"), c.expect("c")),
            ("a\n".to_owned(), "b\n".to_owned(), "c\n".to_owned())
        );
        assert_eq!(s.is_root(), current_user() == "root");
        s.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_failure_names_machine_command_status_and_stderr() {
    let fx = Fixture::start();
    limited(async {
        let s = fx.connect().await;
        assert_eq!(s.run("echo hello").await.expect("run"), "hello\n");
        let noise: String = (1..=40).map(|i| format!("echo noise {i} >&2; ")).collect();
        let command = format!("{noise}echo 'boom: disk on fire' >&2; exit 42");
        let e = s.run(&command).await.expect_err("non-zero exit");
        match &e {
            SshError::Command {
                machine,
                host,
                command: c,
                status,
                stderr,
            } => {
                assert_eq!(machine, "testbox");
                assert_eq!(host, "127.0.0.1");
                assert_eq!(c, &command);
                assert_eq!(*status, 42);
                assert!(stderr.ends_with("boom: disk on fire"), "{stderr}");
                assert!(!stderr.contains("noise 1\n"), "only the tail: {stderr}");
            }
            other => panic!("expected SshError::Command, got {other:?}"),
        }
        let text = e.to_string();
        for part in [
            "testbox",
            "exit status 42",
            "boom: disk on fire",
            "echo noise 1",
        ] {
            assert!(text.contains(part), "{part:?} missing from: {text}");
        }
        // The long command is shortened in the message.
        assert!(!text.contains("echo noise 40"), "{text}");
        assert!(text.len() < 1500, "{text}");
        s.close().await;
    })
    .await;
}

/// Deterministic bytes covering every value (xorshift).
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_and_download_round_trip_binary_data_with_mode() {
    use std::os::unix::fs::PermissionsExt;
    let fx = Fixture::start();
    limited(async {
        let s = fx.connect().await;
        // sshd runs on this machine, so the remote path is a local one.
        let remote = fx.path("remote dir/sub/blob's.bin");
        let remote_str = remote.to_str().expect("utf-8 path");
        let data = pseudo_random(3 * 1024 * 1024 + 17, 0x9E37_79B9_7F4A_7C15);
        assert!((0..=255u8).all(|b| data.contains(&b)));

        s.upload(remote_str, &data, 0o640).await.expect("upload");
        assert_eq!(std::fs::read(&remote).expect("read uploaded"), data);
        let mode = std::fs::metadata(&remote)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o640);
        assert_eq!(s.download(remote_str).await.expect("download"), data);

        // Replacing: new content and mode, no temporary file left behind.
        let small = b"\x00\xff\r\n'\"$(x)".to_vec();
        s.upload(remote_str, &small, 0o600)
            .await
            .expect("upload again");
        assert_eq!(std::fs::read(&remote).expect("read replaced"), small);
        let mode = std::fs::metadata(&remote)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o600);
        let entries = std::fs::read_dir(remote.parent().expect("parent"))
            .expect("ls")
            .count();
        assert_eq!(entries, 1);

        // Empty files work too.
        s.upload(remote_str, b"", 0o644)
            .await
            .expect("upload empty");
        assert_eq!(s.download(remote_str).await.expect("download empty"), b"");

        let missing = fx.path("no such file");
        let e = s
            .download(missing.to_str().expect("utf-8"))
            .await
            .expect_err("missing file");
        let text = e.to_string();
        assert!(text.contains("no such file"), "{text}");
        assert!(text.contains("No such file or directory"), "{text}");
        s.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_contact_pins_the_host_key() {
    use std::os::unix::fs::PermissionsExt;
    let fx = Fixture::start();
    limited(async {
        let known = fx.target().known_hosts;
        assert!(!known.exists());
        fx.connect().await.close().await;
        let text = std::fs::read_to_string(&known).expect("known_hosts written");
        let host_pub = std::fs::read_to_string(fx.path("host_key.pub")).expect("host pub");
        let host_key: Vec<&str> = host_pub.split_whitespace().take(2).collect();
        assert_eq!(
            text,
            format!("[127.0.0.1]:{} {} {}\n", fx.port, host_key[0], host_key[1])
        );
        let mode = std::fs::metadata(&known)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Known now: connecting again works and leaves the file as it was.
        fx.connect().await.close().await;
        assert_eq!(std::fs::read_to_string(&known).expect("read"), text);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_host_key_is_refused() {
    let mut fx = Fixture::start();
    limited(async {
        fx.connect().await.close().await;
        let pinned = std::fs::read_to_string(&fx.target().known_hosts).expect("pinned");
        fx.restart_with_new_host_key();

        let started = Instant::now();
        // Waiting cannot fix this: connect_with_retry answers at once.
        let e = Session::connect_with_retry(&fx.target(), Duration::from_secs(60), |_, _| {})
            .await
            .expect_err("changed key must be refused");
        assert!(started.elapsed() < Duration::from_secs(10));
        match &e {
            SshError::HostKeyChanged {
                machine,
                host,
                port,
                expected_fingerprint,
                got_fingerprint,
                known_hosts,
            } => {
                assert_eq!(machine, "testbox");
                assert_eq!(host, "127.0.0.1");
                assert_eq!(*port, fx.port);
                assert_eq!(
                    expected_fingerprint,
                    &keygen_fingerprint(&fx.path("host_key.pub"))
                );
                assert_eq!(
                    got_fingerprint,
                    &keygen_fingerprint(&fx.path("host_key_2.pub"))
                );
                assert_eq!(known_hosts, &fx.target().known_hosts);
            }
            other => panic!("expected HostKeyChanged, got {other:?}"),
        }
        let text = e.to_string();
        let known = fx.target().known_hosts.display().to_string();
        for part in [
            "man-in-the-middle",
            "recreated",
            &format!("delete {known}"),
            &format!("127.0.0.1:{}", fx.port),
            "SHA256:",
        ] {
            assert!(text.contains(part), "{part:?} missing from: {text}");
        }
        // The pinned key stays.
        assert_eq!(
            std::fs::read_to_string(&fx.target().known_hosts).expect("read"),
            pinned
        );

        // Deleting the file, as the message says, trusts the new key.
        std::fs::remove_file(&fx.target().known_hosts).expect("delete known_hosts");
        fx.connect().await.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_unusable_key_is_explained() {
    let fx = Fixture::start();
    limited(async {
        let other = fx.path("other_key");
        ssh::generate_key(&other, "not-authorized").expect("other key");
        let target = Target {
            key_path: other.clone(),
            ..fx.target()
        };
        let e = Session::connect(&target, Duration::from_secs(20))
            .await
            .expect_err("unauthorized key");
        assert!(matches!(e, SshError::Auth { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains(&format!("user `{}`", current_user())),
            "{text}"
        );
        assert!(text.contains(&other.display().to_string()), "{text}");
        assert!(text.contains("authorized_keys"), "{text}");

        // A key with a passphrase: said so, before any network traffic.
        let locked = fx.path("locked_key");
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "secret", "-f"])
            .arg(&locked)
            .status()
            .expect("run ssh-keygen");
        assert!(status.success());
        let target = Target {
            key_path: locked.clone(),
            ..fx.target()
        };
        let e = Session::connect(&target, Duration::from_secs(20))
            .await
            .expect_err("encrypted key");
        let text = e.to_string();
        assert!(text.contains("passphrase"), "{text}");
        assert!(text.contains(&locked.display().to_string()), "{text}");

        // A key made by ssh-keygen works, and public_key_of reads it.
        let made = fx.path("keygen_key");
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "from-keygen", "-f"])
            .arg(&made)
            .status()
            .expect("run ssh-keygen");
        assert!(status.success());
        let line = ssh::public_key_of(&made).expect("public_key_of");
        let pub_file = std::fs::read_to_string(fx.path("keygen_key.pub")).expect("pub");
        assert_eq!(line, pub_file.trim());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_keys_are_openssh_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("id_ed25519");
    let line = ssh::generate_key(&key, "machine-dev").expect("generate");
    let out = Command::new("ssh-keygen")
        .arg("-y")
        .arg("-f")
        .arg(&key)
        .output()
        .expect("run ssh-keygen (install openssh-client)");
    assert!(out.status.success(), "{out:?}");
    let derived = String::from_utf8(out.stdout).expect("utf-8");
    // ssh-keygen -y prints the key and its comment.
    assert_eq!(derived.trim(), line);
    assert!(line.starts_with("ssh-ed25519 AAAA") && line.ends_with(" machine-dev"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_with_retry_gives_up_within_its_bound() {
    limited(async {
        let dir = tempfile::tempdir().expect("tempdir");
        ssh::generate_key(&dir.path().join("id"), "c").expect("key");
        let port = free_port(); // nothing listens there
        let target = Target {
            machine: "ghost".to_owned(),
            host: "127.0.0.1".to_owned(),
            port,
            user: "root".to_owned(),
            key_path: dir.path().join("id"),
            known_hosts: dir.path().join("known_hosts"),
        };
        let mut waits = Vec::new();
        let started = Instant::now();
        let e = Session::connect_with_retry(&target, Duration::from_secs(4), |attempt, elapsed| {
            waits.push((attempt, elapsed));
        })
        .await
        .expect_err("nothing listens");
        let took = started.elapsed();
        assert!(took >= Duration::from_secs(4), "gave up early: {took:?}");
        assert!(took < Duration::from_secs(7), "not bounded: {took:?}");
        assert!(waits.len() >= 2, "{waits:?}");
        assert_eq!(waits[0].0, 1);
        match &e {
            SshError::GaveUp { attempts, last, .. } => {
                assert!(*attempts as usize > waits.len() - 1);
                assert!(matches!(**last, SshError::Connect { .. }), "{last:?}");
            }
            other => panic!("expected GaveUp, got {other:?}"),
        }
        let text = e.to_string();
        for part in [
            "ghost",
            &format!("127.0.0.1:{port}"),
            "may still be booting",
            "refused",
        ] {
            assert!(text.contains(part), "{part:?} missing from: {text}");
        }
        assert!(!target.known_hosts.exists());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_with_retry_waits_for_a_booting_host() {
    let dir = tempfile::tempdir().expect("tempdir");
    ssh::generate_key(&dir.path().join("host_key"), "host").expect("host key");
    let client = ssh::generate_key(&dir.path().join("id_ed25519"), "client").expect("client key");
    std::fs::write(dir.path().join("authorized_keys"), format!("{client}\n")).expect("authorized");
    let port = free_port();
    let target = Target {
        machine: "late".to_owned(),
        host: "127.0.0.1".to_owned(),
        port,
        user: current_user(),
        key_path: dir.path().join("id_ed25519"),
        known_hosts: dir.path().join("known_hosts"),
    };
    // The "host" boots 1.5 s after we start waiting for it.
    let boot_dir = dir.path().to_owned();
    let booting = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        Sshd::start(&boot_dir, &boot_dir.join("host_key"), port)
    });
    let mut waits = 0;
    let session = limited(Session::connect_with_retry(
        &target,
        Duration::from_secs(30),
        |_, _| {
            waits += 1;
        },
    ))
    .await
    .expect("connects once sshd is up");
    let _sshd = booting.join().expect("sshd thread");
    assert!(waits >= 1);
    assert_eq!(limited(session.run("echo up")).await.expect("run"), "up\n");
    session.close().await;
}

/// Environment for the child process of the interactive tests.
const CHILD_ENV: &str = "MACHINE_SSH_TEST_CHILD";

/// Runs `interactive` in a child copy of this test binary, so that its
/// stdin, stdout and stderr are real pipes we control, and returns the
/// child with its stdin open.
fn spawn_interactive_child(fx: &Fixture, command: Option<&str>) -> Child {
    let t = fx.target();
    let spec = format!(
        "{}\n{}\n{}\n{}\n{}",
        t.port,
        t.user,
        t.key_path.display(),
        t.known_hosts.display(),
        command.unwrap_or("")
    );
    Command::new(std::env::current_exe().expect("current exe"))
        .args([
            "--exact",
            "interactive_child",
            "--nocapture",
            "--test-threads=1",
            "--quiet",
        ])
        .env(CHILD_ENV, spec)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the test binary")
}

/// Waits for the child, with a limit, and returns (status, stdout, stderr).
fn wait_child(mut child: Child, limit: Duration) -> (i32, String, String) {
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "interactive child still running after {limit:?}; stdout: {}; stderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The child side: does nothing in a normal test run.
#[test]
fn interactive_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut lines = spec.splitn(5, '\n');
    let mut next = || lines.next().expect("child spec line").to_owned();
    let port: u16 = next().parse().expect("port");
    let user = next();
    let key_path = PathBuf::from(next());
    let known_hosts = PathBuf::from(next());
    let command = next();
    let target = Target {
        machine: "testbox".to_owned(),
        host: "127.0.0.1".to_owned(),
        port,
        user,
        key_path,
        known_hosts,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let status = rt.block_on(async {
        let session = Session::connect(&target, Duration::from_secs(20))
            .await
            .expect("child connect");
        let command = (!command.is_empty()).then_some(command.as_str());
        let status = session.interactive(command).await.expect("interactive");
        session.close().await;
        status
    });
    let _ = std::io::stdout().flush();
    std::process::exit(i32::try_from(status).expect("status fits"));
}

#[test]
fn interactive_with_piped_stdin_returns_the_exit_status() {
    let fx = Fixture::start();
    let mut child = spawn_interactive_child(&fx, Some("tr a-z A-Z; echo to-stderr >&2; exit 7"));
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"hello from stdin\n").expect("write stdin");
    drop(stdin); // EOF
    let (status, stdout, stderr) = wait_child(child, Duration::from_secs(60));
    assert_eq!(
        status,
        7,
        "stdout: {stdout}\nstderr: {stderr}\nsshd: {}",
        fx.log()
    );
    // No PTY: output is byte for byte, no \r\n.
    assert!(stdout.contains("HELLO FROM STDIN\n"), "{stdout}");
    assert!(!stdout.contains('\r'), "{stdout:?}");
    assert!(stderr.contains("to-stderr"), "{stderr}");
    assert!(!stdout.contains("to-stderr"), "{stdout}");
}

#[test]
fn interactive_does_not_wait_for_stdin_after_the_command_ends() {
    let fx = Fixture::start();
    let child = spawn_interactive_child(&fx, Some("echo finished; exit 5"));
    // Our end of its stdin stays open, as a terminal or an idle pipe would.
    let (status, stdout, stderr) = wait_child(child, Duration::from_secs(30));
    assert_eq!(status, 5, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("finished\n"), "{stdout}");
}

#[test]
fn interactive_login_shell_reads_commands_from_a_pipe() {
    let fx = Fixture::start();
    let mut child = spawn_interactive_child(&fx, None);
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(b"echo via-login-shell\nexit 4\n")
        .expect("write stdin");
    drop(stdin);
    let (status, stdout, stderr) = wait_child(child, Duration::from_secs(60));
    assert_eq!(status, 4, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("via-login-shell\n"), "{stdout}");
}
