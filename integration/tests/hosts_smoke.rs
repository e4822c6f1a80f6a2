//! Smoke tests of the test-host harness (`machine_integration::hosts`): each
//! image boots systemd, answers SSH on its published loopback port with the
//! key the test authorized, and the Docker image runs Debian's dockerd.
//! Needs `bash integration/hosts/setup.sh` to have run (as root).

use std::time::{Duration, Instant};

use machine_integration::hosts::{Image, TestHost, test_key_pair};

/// Waits for systemd's boot to finish; "degraded" (a failed unit) counts as
/// booted, anything else fails with the failed units.
fn assert_booted(host: &TestHost) {
    let out = host.exec(&["timeout", "90", "systemctl", "is-system-running", "--wait"]);
    let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let failed = host.exec(&["systemctl", "--failed", "--no-pager", "--plain"]);
    let failed = String::from_utf8_lossy(&failed.stdout).into_owned();
    assert!(
        state == "running" || state == "degraded",
        "{}: systemd is {state:?}\n{failed}",
        host.container
    );
    if state == "degraded" {
        eprintln!("{}: degraded boot:\n{failed}", host.container);
    }
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn ssh_image_boots_and_answers_ssh_with_the_authorized_key() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = test_key_pair(dir.path());
    let host = TestHost::start(Image::Ssh, &public);
    eprintln!(
        "{} ({}): ssh banner {:.1} s after docker run",
        host.container,
        host.image(),
        host.ready_after.as_secs_f64()
    );
    assert_booted(&host);

    // Real logins with the system's OpenSSH client.
    let root = host.openssh(&key, "root", "id -u");
    assert!(root.status.success(), "{root:?}");
    assert_eq!(stdout(&root), "0");
    let tester = host.openssh(&key, "tester", "id -un && sudo -n id -u");
    assert!(tester.status.success(), "{tester:?}");
    assert_eq!(stdout(&tester), "tester\n0");
    let (_other, other_public) = test_key_pair(dir.path());
    assert_ne!(public, other_public);

    // Hostnames can be changed like on a real machine.
    assert_eq!(host.exec_ok(&["hostname"]).trim(), host.hostname);
    host.exec_ok(&["hostnamectl", "set-hostname", "renamed"]);
    assert_eq!(host.exec_ok(&["hostname"]).trim(), "renamed");
    assert_eq!(host.exec_ok(&["cat", "/etc/hostname"]).trim(), "renamed");
    host.exec_ok(&["sed", "-i", "$a 127.0.1.1 renamed", "/etc/hosts"]);

    // No Docker yet, but apt can install it.
    assert!(
        !host
            .exec(&["sh", "-c", "command -v dockerd"])
            .status
            .success()
    );
    host.exec_ok(&["apt-get", "install", "--simulate", "-qq", "docker.io"]);

    // New host keys: sshd answers again, with another key.
    let before = host.known_hosts_line();
    host.rotate_host_keys();
    let after = host.known_hosts_line();
    assert_ne!(before, after);
    assert!(after.starts_with(&format!("[127.0.0.1]:{} ssh-ed25519 ", host.ssh_port)));
    let again = host.openssh(&key, "root", "true");
    assert!(again.status.success(), "{again:?}");
}

#[test]
fn docker_image_runs_debians_dockerd() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = test_key_pair(dir.path());
    let host = TestHost::start(Image::Docker, &public);
    eprintln!(
        "{} ({}): ssh banner {:.1} s after docker run",
        host.container,
        host.image(),
        host.ready_after.as_secs_f64()
    );
    assert_booted(&host);
    assert_ne!(host.docker_port, host.ssh_port);

    assert_eq!(
        host.exec_ok(&["sh", "-c", "command -v dockerd"]).trim(),
        "/usr/sbin/dockerd"
    );
    let version = host.exec_ok(&["dockerd", "--version"]);
    assert!(version.starts_with("Docker version "), "{version}");

    // Installed, but left off until provisioning configures and starts it.
    let enabled = host.exec(&["systemctl", "is-enabled", "docker.service"]);
    assert_eq!(stdout(&enabled), "disabled");
    let active = host.exec(&["systemctl", "is-active", "docker.service"]);
    assert_eq!(stdout(&active), "inactive");
    // The image ships provisioning's drop-in, which takes dockerd's
    // options from /etc/docker/machine.env; until provisioning writes that
    // file the unit refuses to start, rather than start half-configured.
    let early = host.exec(&["systemctl", "start", "docker.service"]);
    assert!(
        !early.status.success(),
        "docker.service started unconfigured"
    );
    host.exec_ok(&[
        "sh",
        "-c",
        "mkdir -p /etc/docker && echo 'MACHINE_DOCKERD_ARGS=\"-H=fd://\"' > /etc/docker/machine.env",
    ]);
    host.exec_ok(&["systemctl", "start", "docker.service"]);

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = host.exec(&["systemctl", "is-active", "docker"]);
        if stdout(&out) == "active" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "docker.service is {:?}:\n{}",
            stdout(&out),
            host.exec_ok(&[
                "sh",
                "-c",
                "systemctl status docker --no-pager -n 30 || true"
            ])
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The daemon answers, over SSH as well.
    let info = host.openssh(&key, "tester", "sudo -n docker info --format '{{.Driver}}'");
    assert!(info.status.success(), "{info:?}");
    assert_eq!(stdout(&info), "overlay2");
}

#[test]
fn a_host_is_removed_when_its_test_panics() {
    let dir = tempfile::tempdir().unwrap();
    let (_key, public) = test_key_pair(dir.path());
    let name = std::panic::catch_unwind(|| {
        let host = TestHost::start(Image::Ssh, &public);
        std::panic::panic_any(host.container.clone());
    })
    .expect_err("the closure panics")
    .downcast::<String>()
    .expect("the container's name");
    let left = std::process::Command::new("docker")
        .args(["ps", "--all", "--quiet", "--filter"])
        .arg(format!("name=^{name}$"))
        .output()
        .unwrap();
    assert!(left.status.success());
    assert_eq!(stdout(&left), "", "{name} outlived its test");
}
