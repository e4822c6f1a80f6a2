//! Provisioning Docker over SSH on real hosts: systemd + sshd containers on
//! the local Docker engine (see `integration/hosts/`), adopted with the
//! generic driver, then used through the real docker CLI.

use std::process::{Command, Stdio};

use std::time::Duration;

use machine_integration::hosts::{Image, SECOND_ADDRESS, TestHost, test_key_pair};
use machine_integration::terminal::Terminal;
use machine_integration::{Run, TestContext, assert_nothing_marked_left};

/// A test host that trusts a fresh key pair; the key's directory lives as
/// long as the returned guard.
fn start_host(image: Image) -> (TestHost, std::path::PathBuf, tempfile::TempDir) {
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = test_key_pair(keys.path());
    (TestHost::start(image, &public), key, keys)
}

/// Adopts `host` as machine `name` with the generic driver.
fn create_generic(
    t: &TestContext,
    host: &TestHost,
    key: &std::path::Path,
    name: &str,
    user: &str,
    extra: &[&str],
) -> Run {
    let ssh_port = host.ssh_port.to_string();
    let docker_port = host.docker_port.to_string();
    let mut args = vec![
        "create",
        "-d",
        "generic",
        "--generic-ip-address",
        "127.0.0.1",
        "--generic-ssh-port",
        &ssh_port,
        "--generic-ssh-user",
        user,
        "--generic-ssh-key",
        key.to_str().unwrap(),
        "--generic-engine-port",
        &docker_port,
    ];
    args.extend_from_slice(extra);
    args.push(name);
    t.run(&args)
}

#[test]
fn generic_installs_docker_from_the_package_and_applies_engine_options() {
    let t = TestContext::new();
    let (host, key, _keys) = start_host(Image::Ssh);
    let run = create_generic(
        &t,
        &host,
        &key,
        "pkg",
        "root",
        &[
            "--engine-install-method",
            "package",
            "--engine-label",
            "env=test",
            "--engine-label",
            "team=infra",
            "--engine-storage-driver",
            "vfs",
            "--engine-opt",
            "log-driver=local",
            "--engine-env",
            "MACHINE_TEST_ENV=hello",
            "--tls-san",
            "pkg.example.test",
        ],
    );
    run.ok();
    for step in [
        "SSH is up",
        "Inspecting the host (operating system, Docker)",
        "Installing Docker",
        "Installing TLS certificates, configuring and restarting Docker",
        "answers over mutual TLS",
    ] {
        assert!(
            run.stderr.contains(step),
            "{step} missing from:\n{}",
            run.stderr
        );
    }
    assert!(
        run.stderr
            .contains("installing the distribution's Docker package"),
        "{}",
        run.stderr
    );

    let version = t.docker("pkg", "version --format '{{.Server.Version}}'");
    assert!(!version.ok().trim().is_empty());
    let info = t.docker(
        "pkg",
        "info --format '{{json .Labels}} {{.Driver}} {{.LoggingDriver}} {{.Name}}'",
    );
    let info = info.ok();
    assert!(info.contains("\"env=test\""), "{info}");
    assert!(info.contains("\"team=infra\""), "{info}");
    assert!(info.contains("\"provider=generic\""), "{info}");
    assert!(
        info.contains(" vfs local pkg"),
        "storage driver, log driver and hostname: {info}"
    );

    // The engine's environment is dockerd's environment.
    let env = t.run(&[
        "ssh",
        "pkg",
        "--",
        "sh",
        "-c",
        "'tr \"\\0\" \"\\n\" < /proc/$(pidof dockerd)/environ'",
    ]);
    assert!(
        env.ok().contains("MACHINE_TEST_ENV=hello"),
        "{}",
        env.stdout
    );

    // --tls-san names are in the server certificate.
    let cert = t.store_path().join("machines/pkg/server.pem");
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(&cert)
        .output()
        .expect("openssl (integration/test.sh installs it)");
    let sans = String::from_utf8_lossy(&text.stdout);
    assert!(sans.contains("DNS:pkg.example.test"), "{sans}");
    assert!(sans.contains("IP Address:127.0.0.1"), "{sans}");

    let rows = t.run(&[
        "ls",
        "--format",
        "{{.Name}} {{.State}} {{.DockerVersion}} {{.Error}}",
    ]);
    let row = rows.ok().trim().to_owned();
    assert!(row.starts_with("pkg Running v"), "{row}");
    assert_eq!(
        t.run(&["version", "pkg"]).ok().trim(),
        version.stdout.trim()
    );
    t.run(&["rm", "-y", "pkg"]).ok();
}

#[test]
fn generic_on_a_host_with_docker_as_a_sudo_user() {
    let t = TestContext::new();
    let (host, key, _keys) = start_host(Image::Docker);
    let run = create_generic(
        &t,
        &host,
        &key,
        "ready",
        "tester",
        // A label with a space cannot travel through the environment
        // file: the drop-in carries dockerd's arguments instead.
        &[
            "--engine-install-method",
            "none",
            "--engine-label",
            "note=two words",
        ],
    );
    run.ok();
    let labels = t.docker("ready", "info --format '{{json .Labels}}'");
    assert!(
        labels.ok().contains("\"note=two words\""),
        "{}",
        labels.stdout
    );
    assert!(
        run.stderr
            .contains("Docker is installed (/usr/sbin/dockerd)"),
        "{}",
        run.stderr
    );
    let ps = t.docker("ready", "ps --format '{{.ID}}'");
    ps.ok();
    let inspect = t.run(&[
        "inspect",
        "-f",
        "{{.Driver.SSHUser}} {{.Driver.IPAddress}}",
        "ready",
    ]);
    assert_eq!(inspect.ok(), "tester 127.0.0.1\n");

    // ssh: output, exit status, stdin.
    let run = t.run(&["ssh", "ready", "echo", "hello", "from", "$(hostname)"]);
    assert_eq!(run.ok(), "hello from ready\n");
    let run = t.run(&[
        "ssh",
        "ready",
        "--",
        "sh",
        "-c",
        "'echo out; echo err >&2; exit 3'",
    ]);
    assert_eq!(run.status.code(), Some(3), "{run:?}");
    assert_eq!(run.stdout, "out\n");
    assert!(run.stderr.contains("err"), "{}", run.stderr);
    let mut child = t
        .command(&["ssh", "ready", "tr", "a-z", "A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"piped input\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "PIPED INPUT\n");

    interactive_ssh_in_a_terminal(&t, "ready");

    // regenerate-certs: new certificate, Docker still answers.
    let before = std::fs::read(t.store_path().join("machines/ready/server.pem")).unwrap();
    t.run(&["regenerate-certs", "-f", "ready"]).ok();
    let after = std::fs::read(t.store_path().join("machines/ready/server.pem")).unwrap();
    assert_ne!(before, after, "a new server certificate");
    t.docker("ready", "version").ok();

    // Provisioning again and again within a minute restarts Docker more
    // often than docker.service's start limit (3 a minute) allows.
    for _ in 0..3 {
        t.run(&["provision", "ready"]).ok();
    }
    t.docker("ready", "version").ok();

    // A changed host key is refused, with what to do.
    host.rotate_host_keys();
    let run = t.run(&["ssh", "ready", "true"]);
    let err = run.fails_with(1);
    assert!(err.to_lowercase().contains("host key"), "{err}");
    assert!(err.contains("known_hosts"), "{err}");

    t.run(&["rm", "-y", "ready"]).ok();
    assert!(t.run(&["ls", "-q"]).ok().is_empty());
}

/// `machine ssh NAME` typed into a terminal window: a login shell on a
/// remote PTY of the window's size and type, which follows resizes; the
/// local terminal in raw mode meanwhile and restored after; the shell's
/// exit status as `machine`'s.
fn interactive_ssh_in_a_terminal(t: &TestContext, name: &str) {
    let limit = Duration::from_secs(30);
    let mut cmd = t.command(&["ssh", name]);
    cmd.env("TERM", "xterm-256color");
    let mut term = Terminal::interactive(cmd, 100, 30);
    let cooked = libc::ICANON | libc::ECHO | libc::ISIG;
    // bash's prompt for a user: the login shell is up.
    term.wait_for("the shell's prompt", limit, |s| s.contains("$ "));
    // The driver is not kept running for the length of a session.
    t.assert_no_driver_left(Duration::from_secs(5));
    assert_eq!(
        term.local_modes() & cooked,
        0,
        "the local terminal is raw during the session"
    );
    term.type_in("echo \"[$(tty) $TERM $(stty size)]\"\n");
    let shown = term.wait_for("the remote terminal", limit, |s| s.contains("[/dev/pts/"));
    assert!(
        shown.contains(" xterm-256color 30 100]"),
        "the remote PTY has the window's type and size: {shown:?}"
    );

    // A resize reaches the remote PTY. The signal and the typed command
    // travel separately, so ask until the answer changes.
    term.resize(120, 40);
    // What `echo "<sizeN:$(stty size)>"` printed (not its echo as typed).
    let answer = |shown: &str, marker: &str| {
        shown.split(marker).skip(1).find_map(|rest| {
            let (size, _) = rest.split_once('>')?;
            size.chars()
                .all(|c| c.is_ascii_digit() || c == ' ')
                .then(|| size.to_owned())
        })
    };
    for asked in 1.. {
        let marker = format!("<size{asked}:");
        term.type_in(&format!("echo \"{marker}$(stty size)>\"\n"));
        let shown = term.wait_for("the remote size", limit, |s| answer(s, &marker).is_some());
        match answer(&shown, &marker).as_deref() {
            Some("40 120") => break,
            Some("30 100") if asked < 50 => {}
            other => panic!(
                "the remote size never became 40 120 ({other:?}); the terminal's last lines: {:?}",
                &shown[shown.char_indices().rev().nth(600).map_or(0, |(i, _)| i)..]
            ),
        }
    }

    term.type_in("exit 7\n");
    let (status, shown) = term.finish(limit);
    assert_eq!(status.code(), Some(7), "{shown:?}");
    assert_eq!(
        term.local_modes() & cooked,
        cooked,
        "the local terminal is restored after the session"
    );
}

#[test]
fn scp_both_ways_between_machines_and_recursively() {
    let t = TestContext::new();
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = test_key_pair(keys.path());
    let one = TestHost::start(Image::Docker, &public);
    let two = TestHost::start(Image::Docker, &public);
    create_generic(
        &t,
        &one,
        &key,
        "one",
        "root",
        &["--engine-install-method", "none"],
    )
    .ok();
    create_generic(
        &t,
        &two,
        &key,
        "two",
        "tester",
        &["--engine-install-method", "none"],
    )
    .ok();

    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("data.bin");
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&file, &bytes).unwrap();

    // local -> machine -> local
    t.run(&["scp", file.to_str().unwrap(), "one:/tmp/data.bin"])
        .ok();
    let back = local.path().join("back.bin");
    t.run(&["scp", "one:/tmp/data.bin", back.to_str().unwrap()])
        .ok();
    assert_eq!(std::fs::read(&back).unwrap(), bytes);

    // machine -> machine
    t.run(&["scp", "one:/tmp/data.bin", "two:/tmp/copied.bin"])
        .ok();
    let sum = t.run(&["ssh", "two", "cksum", "/tmp/copied.bin"]);
    let sum_one = t.run(&["ssh", "one", "cksum", "/tmp/data.bin"]);
    assert_eq!(
        sum.ok().split_whitespace().next(),
        sum_one.ok().split_whitespace().next()
    );

    // recursive, both ways
    let tree = local.path().join("tree");
    std::fs::create_dir_all(tree.join("sub/deeper")).unwrap();
    std::fs::write(tree.join("top.txt"), "top").unwrap();
    std::fs::write(tree.join("sub/deeper/leaf.txt"), "leaf").unwrap();
    let run = t.run(&["scp", tree.to_str().unwrap(), "one:/tmp/"]);
    assert!(run.fails_with(1).contains("use -r"), "{}", run.stderr);
    t.run(&["scp", "-r", tree.to_str().unwrap(), "one:/tmp/"])
        .ok();
    assert_eq!(
        t.run(&["ssh", "one", "cat", "/tmp/tree/sub/deeper/leaf.txt"])
            .ok(),
        "leaf"
    );
    let fetched = local.path().join("fetched");
    t.run(&["scp", "-r", "one:/tmp/tree", fetched.to_str().unwrap()])
        .ok();
    assert_eq!(
        std::fs::read_to_string(fetched.join("top.txt")).unwrap(),
        "top"
    );
    assert_eq!(
        std::fs::read_to_string(fetched.join("sub/deeper/leaf.txt")).unwrap(),
        "leaf"
    );
    t.run(&["scp", "-r", "one:/tmp/tree", "two:/tmp/tree-copy"])
        .ok();
    assert_eq!(
        t.run(&["ssh", "two", "cat", "/tmp/tree-copy/top.txt"]).ok(),
        "top"
    );

    let run = t.run(&["scp", "one:/tmp/nope", local.path().to_str().unwrap()]);
    assert!(run.fails_with(1).contains("no such file"), "{}", run.stderr);
    t.run(&["rm", "-y", "one", "two"]).ok();
}

#[test]
fn a_failed_provisioning_is_kept_with_its_reason() {
    let t = TestContext::new();
    let (host, key, _keys) = start_host(Image::Ssh);
    let run = create_generic(
        &t,
        &host,
        &key,
        "nodocker",
        "root",
        &["--engine-install-method", "none"],
    );
    let err = run.fails_with(1);
    assert!(
        err.contains("Docker is not installed on machine `nodocker`"),
        "{err}"
    );
    assert!(err.contains("machine provision nodocker"), "{err}");
    let ls = t.run(&["ls", "--format", "{{.Name}}|{{.Error}}"]);
    assert!(
        ls.ok().starts_with("nodocker|provisioning failed"),
        "{}",
        ls.stdout
    );
    t.run(&["rm", "-y", "nodocker"]).ok();
}

#[test]
fn a_dockerd_that_will_not_start_is_reported_as_such() {
    let t = TestContext::new();
    let (host, key, _keys) = start_host(Image::Docker);
    let run = create_generic(
        &t,
        &host,
        &key,
        "badopt",
        "root",
        &[
            "--engine-install-method",
            "none",
            "--engine-opt",
            "no-such-dockerd-flag",
        ],
    );
    let err = run.fails_with(1);
    assert!(
        err.contains("restarting Docker with the new configuration failed on machine `badopt`"),
        "{err}"
    );
    assert!(
        err.contains("machine ssh badopt -- journalctl -u docker"),
        "{err}"
    );
    // The hint's command shows dockerd's own complaint.
    let journal = t.run(&[
        "ssh",
        "badopt",
        "--",
        "journalctl",
        "-u",
        "docker",
        "--no-pager",
        "-n",
        "50",
    ]);
    assert!(
        journal.ok().contains("no-such-dockerd-flag"),
        "{}",
        journal.stdout
    );
    let ls = t.run(&["ls", "--format", "{{.Name}}|{{.Error}}"]);
    assert!(
        ls.ok().starts_with("badopt|provisioning failed"),
        "{}",
        ls.stdout
    );
    t.run(&["rm", "-y", "badopt"]).ok();
}

#[test]
fn a_changed_address_is_named_and_regenerate_certs_repairs_it() {
    let t = TestContext::new();
    let (host, key, _keys) = start_host(Image::Docker);
    create_generic(
        &t,
        &host,
        &key,
        "moved",
        "root",
        &["--engine-install-method", "none"],
    )
    .ok();
    t.docker("moved", "version").ok();

    // The host comes back at another address, as after a DHCP renewal.
    let config = t.store_path().join("machines/moved/config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["driver_config"]["ip_address"] = serde_json::Value::from(SECOND_ADDRESS);
    std::fs::write(&config, serde_json::to_string_pretty(&v).unwrap()).unwrap();

    for cmd in [
        &["env", "moved"][..],
        &["url", "moved"],
        &["config", "moved"],
    ] {
        let run = t.run(cmd);
        let err = run.fails_with(1);
        assert!(
            err.contains(&format!("machine `moved` is now at {SECOND_ADDRESS}, but its certificate is not valid for that address")),
            "{cmd:?}: {err}"
        );
        assert!(
            err.contains("machine regenerate-certs moved"),
            "{cmd:?}: {err}"
        );
    }
    let ls = t.run(&["ls", "--format", "{{.Name}}|{{.Error}}"]);
    assert!(
        ls.ok()
            .contains("moved|machine `moved` is now at 127.0.0.2"),
        "{}",
        ls.stdout
    );

    t.run(&["regenerate-certs", "-f", "moved"]).ok();
    let url = t.run(&["url", "moved"]);
    assert_eq!(
        url.ok().trim(),
        format!("tcp://{SECOND_ADDRESS}:{}", host.docker_port)
    );
    t.docker("moved", "version").ok();
    t.run(&["rm", "-y", "moved"]).ok();
}

#[test]
fn upgrade_uses_the_package_that_installed_docker() {
    let t = TestContext::new();
    let (host, key, _keys) = start_host(Image::Docker);
    create_generic(
        &t,
        &host,
        &key,
        "up",
        "tester",
        &["--engine-install-method", "none"],
    )
    .ok();
    let run = t.run(&["upgrade", "up"]);
    run.ok();
    assert!(
        run.stderr.contains("Upgrading the docker.io package"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("Before: Docker version"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("After:  Docker version"),
        "{}",
        run.stderr
    );
    // The daemon keeps its machine configuration across the upgrade.
    let info = t.docker("up", "info --format '{{json .Labels}}'");
    assert!(info.ok().contains("provider=generic"), "{}", info.stdout);

    // A machine without SSH cannot be upgraded, and says why.
    let none = t.run(&[
        "create",
        "-d",
        "none",
        "--url",
        "tcp://127.0.0.1:1",
        "plain",
    ]);
    none.ok();
    let run = t.run(&["upgrade", "plain"]);
    assert!(
        run.fails_with(1).contains("has no SSH endpoint"),
        "{}",
        run.stderr
    );
}

/// Unmounts a test's sshfs mount when dropped, so a failed test leaves no
/// mount (and no sshfs or relay process) behind.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3")
            .args(["-u", "-z"])
            .arg(&self.0)
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn mount_shows_a_machines_directory_here_until_unmounted() {
    let t = TestContext::new();
    let (host, key, _keys) = start_host(Image::Docker);
    create_generic(
        &t,
        &host,
        &key,
        "fs",
        "tester",
        &["--engine-install-method", "none"],
    )
    .ok();
    t.run(&[
        "ssh",
        "fs",
        "mkdir -p src && echo from-the-machine > src/remote.txt",
    ])
    .ok();
    let local = tempfile::tempdir().unwrap();
    let dir = local.path().join("src");
    let dir_arg = dir.to_str().unwrap();
    let _mounted = Mounted(dir.clone());

    // A relative path starts at the SSH user's home; the mount point is
    // made.
    let run = t.run(&["mount", "fs:src", dir_arg]);
    run.ok();
    assert!(
        run.stderr.contains(&format!(
            "Mounted fs:src on {dir_arg} (unmount: machine mount -u fs:src {dir_arg})"
        )),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert_eq!(
        std::fs::read_to_string(dir.join("remote.txt")).unwrap(),
        "from-the-machine\n"
    );
    std::fs::write(dir.join("local.txt"), "from-here\n").unwrap();
    assert_eq!(
        t.run(&["ssh", "fs", "cat", "src/local.txt"]).ok(),
        "from-here\n"
    );
    // The machine's user's files are shown as ours.
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir.join("remote.txt")).unwrap();
    assert_eq!(meta.uid(), unsafe { libc::getuid() });
    // The driver is not kept running for as long as the mount lasts.
    t.assert_no_driver_left(Duration::from_secs(5));

    // Mounting on it again is refused, with what to do.
    let err = t.run(&["mount", "fs:src", dir_arg]);
    let err = err.fails_with(1);
    assert!(
        err.contains(&format!(
            "{dir_arg} already has fs:src (fuse.sshfs) mounted on it"
        )),
        "{err}"
    );
    assert!(err.contains("machine mount -u fs:src"), "{err}");

    // As another user: root's home.
    let root_dir = local.path().join("root-home");
    let _root_mounted = Mounted(root_dir.clone());
    t.run(&["mount", "root@fs:", root_dir.to_str().unwrap()])
        .ok();
    std::fs::write(root_dir.join("note"), "as root\n").unwrap();
    assert_eq!(
        t.run(&["ssh", "fs", "sudo", "cat", "/root/note"]).ok(),
        "as root\n"
    );
    t.run(&["mount", "-u", "root@fs:", root_dir.to_str().unwrap()])
        .ok();

    // Unmounted: the directory is empty again, and sshfs and the relay
    // are gone.
    let run = t.run(&["mount", "-u", "fs:src", dir_arg]);
    run.ok();
    assert!(run.stderr.contains(&format!("Unmounted {dir_arg}")));
    assert!(!dir.join("remote.txt").exists());
    assert_nothing_marked_left(&t.marker, Duration::from_secs(10));
    let err = t.run(&["mount", "-u", "fs:src", dir_arg]);
    let err = err.fails_with(1);
    assert!(
        err.contains(&format!("unmounting {dir_arg} failed")),
        "{err}"
    );
    assert!(err.contains("nothing is mounted there"), "{err}");

    // What a user can get wrong.
    let err = t.run(&["mount", "/srv/x", dir_arg]);
    assert!(
        err.fails_with(1).contains("does not say which machine"),
        "{}",
        err.stderr
    );
    let err = t.run(&["mount", "nosuch:/srv", dir_arg]);
    assert!(
        err.fails_with(1)
            .contains("machine `nosuch` does not exist"),
        "{}",
        err.stderr
    );
    let err = t.run(&["mount", "fs:"]);
    assert!(
        err.fails_with(1).contains("give a local directory"),
        "{}",
        err.stderr
    );
    let err = t.run_env(&["mount", "fs:src", dir_arg], &[("PATH", "/nonexistent")]);
    let err = err.fails_with(1);
    assert!(err.contains("needs sshfs, which is not installed"), "{err}");
    assert!(err.contains("apt-get install sshfs"), "{err}");
    // A directory the machine does not have: sshfs says so, and so do we.
    let err = t.run(&["mount", "fs:/no/such/dir", dir_arg]);
    let err = err.fails_with(1);
    assert!(
        err.contains(&format!(
            "sshfs could not mount fs:/no/such/dir on {dir_arg}"
        )),
        "{err}"
    );
    assert!(err.contains("machine ssh fs ls -ld /no/such/dir"), "{err}");
    assert_nothing_marked_left(&t.marker, Duration::from_secs(10));

    t.run(&["rm", "-y", "fs"]).ok();
}
