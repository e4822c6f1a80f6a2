//! The container driver end to end on the local Docker engine: create,
//! provision, the docker CLI through `machine env`, the lifecycle, five
//! creates at once, and removal that leaves no container or volume.

use std::process::{Command, Stdio};

use machine_integration::TestContext;
use machine_integration::hosts::Image;

/// Containers and volumes the driver made for this test's store.
fn leftovers() -> (String, String) {
    let ps = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            "label=io.machine.name",
            "--format",
            "{{.Names}}",
        ])
        .output()
        .unwrap();
    let vols = Command::new("docker")
        .args(["volume", "ls", "--format", "{{.Name}}"])
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&ps.stdout).into_owned(),
        String::from_utf8_lossy(&vols.stdout).into_owned(),
    )
}

/// A machine name unique to this test run, since containers share one engine.
fn unique(t: &TestContext, base: &str) -> String {
    let suffix: String = t.marker.chars().rev().take(6).collect();
    format!(
        "{base}-{}",
        suffix
            .to_lowercase()
            .replace(|c: char| !c.is_ascii_alphanumeric(), "x")
    )
}

#[test]
fn create_env_docker_lifecycle_and_rm() {
    let t = TestContext::new();
    let name = unique(&t, "ctr");
    let img = Image::Docker.name();
    let run = t.run(&[
        "create",
        "-d",
        "container",
        "--container-image",
        &img,
        "--engine-label",
        "kind=container",
        &name,
    ]);
    run.ok();
    assert!(run.stderr.contains("Docker is installed"), "{}", run.stderr);

    let info = t.docker(&name, "info --format '{{.Name}} {{json .Labels}}'");
    let info = info.ok();
    assert!(info.starts_with(&format!("{name} ")), "{info}");
    assert!(info.contains("kind=container"), "{info}");
    assert!(info.contains("provider=container"), "{info}");
    // The image ships provisioning's systemd drop-in, and the options went
    // to the environment file: systemd was never reloaded.
    let reloads = t.run(&[
        "ssh",
        &name,
        "--",
        "sh",
        "-c",
        "'journalctl -b --no-pager -o cat _PID=1 | grep -c ^Reloading || true'",
    ]);
    assert_eq!(reloads.ok(), "0\n");

    assert_eq!(t.run(&["status", &name]).ok(), "Running\n");
    t.run(&["stop", &name]).ok();
    assert_eq!(t.run(&["status", &name]).ok(), "Stopped\n");
    t.run(&["start", &name]).ok();
    assert_eq!(t.run(&["status", &name]).ok(), "Running\n");
    // Docker comes back on its own after a start: the unit is enabled.
    t.docker(&name, "version").ok();
    // Re-provisioning an existing machine works and keeps it usable.
    t.run(&["provision", &name]).ok();
    t.docker(&name, "version").ok();
    t.run(&["restart", &name]).ok();
    t.run(&["kill", &name]).ok();
    assert_eq!(t.run(&["status", &name]).ok(), "Stopped\n");

    let container_before = leftovers().0;
    assert!(
        container_before.contains(&format!("machine-{name}-")),
        "{container_before}"
    );
    t.run(&["rm", "-y", &name]).ok();
    let (containers, volumes) = leftovers();
    assert!(
        !containers.contains(&format!("machine-{name}-")),
        "container left: {containers}"
    );
    assert!(
        !volumes.contains(&format!("machine-{name}-")),
        "volume left: {volumes}"
    );
}

#[test]
fn five_creates_at_once() {
    let t = TestContext::new();
    let img = Image::Docker.name();
    let names: Vec<String> = (1..=5).map(|i| unique(&t, &format!("five{i}"))).collect();
    let children: Vec<_> = names
        .iter()
        .map(|n| {
            t.command(&["create", "-d", "container", "--container-image", &img, n])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (name, child) in names.iter().zip(children) {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for name in &names {
        t.docker(name, "version --format '{{.Server.Version}}'")
            .ok();
    }
    let mut args = vec!["rm", "-y"];
    args.extend(names.iter().map(String::as_str));
    t.run(&args).ok();
    let (containers, _) = leftovers();
    for name in &names {
        assert!(
            !containers.contains(&format!("machine-{name}-")),
            "{containers}"
        );
    }
}

#[test]
fn failures_leave_nothing_behind() {
    let t = TestContext::new();
    let name = unique(&t, "noimg");
    let run = t.run(&[
        "create",
        "-d",
        "container",
        "--container-image",
        "machine-test/no-such-image:1",
        &name,
    ]);
    let err = run.fails_with(1);
    assert!(err.contains("is not on the Docker engine"), "{err}");
    assert!(err.contains("drivers/container/image/build.sh"), "{err}");
    assert!(t.run(&["ls", "-q"]).ok().is_empty());
    assert!(!leftovers().0.contains(&format!("machine-{name}-")));

    // Provisioning fails (no Docker, and told not to install it): the
    // machine is kept in the Error state, and rm removes its container.
    let name = unique(&t, "noprov");
    let img = Image::Ssh.name();
    let run = t.run(&[
        "create",
        "-d",
        "container",
        "--container-image",
        &img,
        "--engine-install-method",
        "none",
        &name,
    ]);
    assert!(
        run.fails_with(1).contains("Docker is not installed"),
        "{}",
        run.stderr
    );
    assert!(leftovers().0.contains(&format!("machine-{name}-")));
    t.run(&["rm", "-y", &name]).ok();
    let (containers, volumes) = leftovers();
    assert!(
        !containers.contains(&format!("machine-{name}-")),
        "{containers}"
    );
    assert!(!volumes.contains(&format!("machine-{name}-")), "{volumes}");
}

#[test]
fn an_interrupted_create_is_shown_and_rm_removes_its_container() {
    let t = TestContext::new();
    let name = unique(&t, "cut");
    let img = Image::Ssh.name();
    // The SSH image has no Docker: provisioning installs the package, which
    // leaves plenty of time to kill the CLI once the container exists.
    let mut child = t
        .command(&[
            "create",
            "-d",
            "container",
            "--container-image",
            &img,
            "--engine-install-method",
            "package",
            &name,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let store = t.store_path().to_string_lossy().into_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let ps = Command::new("docker")
            .args([
                "ps",
                "--filter",
                &format!("label=io.machine.store={store}"),
                "--format",
                "{{.Names}}",
            ])
            .output()
            .unwrap();
        if !ps.stdout.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no container appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.kill().unwrap(); // SIGKILL, mid-create
    child.wait().unwrap();
    t.assert_no_driver_left(std::time::Duration::from_secs(5));

    let ls = t.run(&["ls", "--format", "{{.Name}}|{{.State}}|{{.Error}}"]);
    let line = ls.ok().trim().to_owned();
    assert_eq!(
        line,
        format!("{name}|Error|create was interrupted; `machine rm -f {name}` cleans up")
    );
    t.run(&["rm", "-y", "-f", &name]).ok();
    let (containers, volumes) = leftovers();
    assert!(
        !containers.contains(&format!("machine-{name}-")),
        "{containers}"
    );
    assert!(!volumes.contains(&format!("machine-{name}-")), "{volumes}");
}
