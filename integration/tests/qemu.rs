//! The qemu driver end to end: a real VM booted from the locally built
//! test image (direct boot, TCG where KVM does not work, as on CI),
//! provisioned over SSH, the docker CLI through `machine env`, an ACPI stop
//! and removal; and the failure paths of create, each of which must leave
//! no VM process and no disk behind.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use machine_integration::hosts::VmImage;
use machine_integration::{TestContext, store_vm_pids};
use serde_json::Value;

fn inspect(t: &TestContext, name: &str) -> Value {
    serde_json::from_str(t.run(&["inspect", name]).ok()).unwrap()
}

/// The files the driver made in a machine's directory.
fn driver_files(t: &TestContext, name: &str) -> Vec<String> {
    let dir = t.store_path().join("machines").join(name);
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            [
                "disk.qcow2",
                "seed.img",
                "qmp.sock",
                "qemu.pid",
                "serial.log",
            ]
            .contains(&n.as_str())
        })
        .collect();
    found.sort();
    found
}

#[test]
fn create_env_docker_stop_and_rm() {
    let t = TestContext::new();
    let vm = VmImage::get();
    let mut args: Vec<String> = ["create", "-d", "qemu"].map(String::from).to_vec();
    args.extend(vm.flags());
    args.extend(
        [
            "--qemu-cpus",
            "2",
            "--qemu-memory",
            "1024",
            "--qemu-disk-size",
            "6144",
            "vm1",
        ]
        .map(String::from),
    );
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = t.run(&argv);
    run.ok();

    // The accelerator was chosen and the choice explained.
    let info = inspect(&t, "vm1");
    let accel = info["Driver"]["accel"].as_str().unwrap().to_owned();
    let reason = info["Driver"]["accel_reason"].as_str().unwrap();
    assert!(accel == "kvm" || accel == "tcg", "{info}");
    assert!(!reason.is_empty(), "no reason given for {accel}");
    if accel == "tcg" {
        assert!(
            run.stderr.contains("using TCG software emulation"),
            "TCG chosen without telling the user: {}",
            run.stderr
        );
    }

    // The docker CLI talks to the VM's dockerd through `machine env`.
    let name = t.docker("vm1", "info --format '{{.Name}}'");
    assert_eq!(name.ok().trim(), "vm1");

    // The seed's hostname and user, and the flags' CPUs and disk size.
    let ssh = t.run(&[
        "ssh",
        "vm1",
        "--",
        "hostname; whoami; nproc; cat /sys/block/vda/size",
    ]);
    let lines: Vec<&str> = ssh.ok().lines().collect();
    assert_eq!(lines[..3], ["vm1", "machine", "2"], "{lines:?}");
    let sectors: u64 = lines[3].trim().parse().unwrap();
    assert_eq!(sectors * 512, 6144 * 1024 * 1024);

    // A graceful stop: the guest powers itself off on the ACPI button.
    t.run(&["stop", "vm1"]).ok();
    assert_eq!(t.run(&["status", "vm1"]).ok(), "Stopped\n");
    assert!(store_vm_pids(t.store_path()).is_empty());
    let serial = std::fs::read(t.store_path().join("machines/vm1/serial.log")).unwrap();
    assert!(
        String::from_utf8_lossy(&serial).contains("reboot: Power down"),
        "the guest did not shut down by itself (powered off by force?)"
    );

    t.run(&["rm", "-y", "vm1"]).ok();
    assert!(store_vm_pids(t.store_path()).is_empty());
    assert!(driver_files(&t, "vm1").is_empty());
    t.assert_no_driver_left(Duration::from_secs(5));
}

/// Serves files over HTTP on 127.0.0.1 from a thread, one request per
/// connection, until the test ends.
fn serve(files: Vec<(&'static str, Vec<u8>)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&req);
            let path = text.split_whitespace().nth(1).unwrap_or("/");
            let reply = files.iter().find(|(p, _)| *p == path);
            let (status, body): (&str, &[u8]) = match reply {
                Some((_, body)) => ("200 OK", body),
                None => ("404 Not Found", b""),
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(body);
        }
    });
    base
}

#[test]
fn failed_creates_leave_no_vm_and_no_disk() {
    let t = TestContext::new();
    let vm = VmImage::get();

    // An image that is not there: nothing is made.
    let run = t.run(&[
        "create",
        "-d",
        "qemu",
        "--qemu-image",
        "/nonexistent/disk.qcow2",
        "m1",
    ]);
    let err = run.fails_with(1);
    assert!(err.contains("/nonexistent/disk.qcow2"), "{err}");
    assert!(driver_files(&t, "m1").is_empty());

    // No QEMU: the error says what to install.
    let run = t.run(&[
        "create",
        "-d",
        "qemu",
        "--qemu-binary",
        "/nonexistent/qemu-system-x86_64",
        "m2",
    ]);
    let err = run.fails_with(1);
    assert!(err.contains("QEMU is not installed"), "{err}");
    assert!(err.contains("apt-get install qemu-system-x86"), "{err}");

    // A port that is taken is refused before anything is made.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let run = t.run(&["create", "-d", "qemu", "--qemu-ssh-port", &port, "m3"]);
    let err = run.fails_with(1);
    assert!(
        err.contains(&format!("port {port} on 127.0.0.1 is in use")),
        "{err}"
    );

    // A downloaded image whose checksum does not match is refused, and
    // neither the download nor a disk is kept.
    let image = b"not really a qcow2 image".to_vec();
    let wrong = format!("{}  disk.qcow2\n", "ab".repeat(64));
    let base = serve(vec![
        ("/img/disk.qcow2", image.clone()),
        ("/img/SHA512SUMS", wrong.into_bytes()),
    ]);
    let url = format!("{base}/img/disk.qcow2");
    let run = t.run(&["create", "-d", "qemu", "--qemu-image", &url, "m4"]);
    let err = run.fails_with(1);
    assert!(err.contains("does not match its checksum"), "{err}");
    assert!(err.contains(&url), "{err}");
    assert!(err.contains("tampered with on the way"), "{err}");
    assert!(driver_files(&t, "m4").is_empty());
    let cached = walk(&t.store_path().join("cache/images"));
    assert!(cached.is_empty(), "a bad download was kept: {cached:?}");

    // An image server that cannot be reached: the hint says what to do
    // offline.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/disk.qcow2", closed.local_addr().unwrap());
    drop(closed);
    let run = t.run(&["create", "-d", "qemu", "--qemu-image", &url, "m6"]);
    let err = run.fails_with(1);
    assert!(err.contains("cannot download http://127.0.0.1:"), "{err}");
    assert!(
        err.contains("give its path with --qemu-image"),
        "no offline hint: {err}"
    );
    assert!(driver_files(&t, "m6").is_empty());

    // The real QEMU failing to start after the disk and seed were made (a
    // "kernel" that is not one): its message reaches the user and the disk
    // and seed are removed.
    let tmp = tempfile::tempdir().unwrap();
    let not_a_kernel = tmp.path().join("vmlinuz");
    std::fs::write(&not_a_kernel, "not a kernel\n").unwrap();
    let run = t.run(&[
        "create",
        "-d",
        "qemu",
        "--qemu-accel",
        "tcg",
        "--qemu-image",
        &vm.disk.display().to_string(),
        "--qemu-kernel",
        &not_a_kernel.display().to_string(),
        "m5",
    ]);
    let err = run.fails_with(1);
    assert!(err.contains("failed to start the VM"), "{err}");
    assert!(
        err.contains("kernel"),
        "QEMU's own message is missing: {err}"
    );
    assert!(
        driver_files(&t, "m5").is_empty(),
        "{:?}",
        driver_files(&t, "m5")
    );

    assert!(store_vm_pids(t.store_path()).is_empty());
    t.assert_no_driver_left(Duration::from_secs(5));
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path().display().to_string());
        }
    }
    out
}

#[test]
fn an_interrupted_create_is_shown_and_rm_removes_its_vm() {
    let t = TestContext::new();
    let vm = VmImage::get();
    let mut args: Vec<String> = ["create", "-d", "qemu", "--qemu-accel", "tcg"]
        .map(String::from)
        .to_vec();
    args.extend(vm.flags());
    args.push("cut".into());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = t
        .command(&argv)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Freeze QEMU as soon as it has forked its daemon, before the daemon
    // writes its pid file: the create dying then (the driver kills only the
    // launching parent) is what a slow, loaded host produces, and rm must
    // still find the daemon.
    let pid_file = t.store_path().join("machines/cut/qemu.pid");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let frozen = loop {
        let pids = store_vm_pids(t.store_path());
        if pids.len() >= 2 || pid_file.exists() {
            for pid in &pids {
                // SAFETY: signalling a QEMU of this test's store.
                unsafe { libc::kill(*pid as libc::pid_t, libc::SIGSTOP) };
            }
            break pids;
        }
        assert!(std::time::Instant::now() < deadline, "no QEMU appeared");
        std::thread::yield_now();
    };
    eprintln!(
        "froze QEMU {frozen:?}; pid file written: {}",
        pid_file.exists()
    );
    child.kill().unwrap(); // SIGKILL, mid-create
    child.wait().unwrap();
    t.assert_no_driver_left(Duration::from_secs(5));

    let ls = t.run(&["ls", "--format", "{{.Name}}|{{.State}}|{{.Error}}"]);
    assert_eq!(
        ls.ok().trim(),
        "cut|Error|create was interrupted; `machine rm -f cut` cleans up"
    );
    t.run(&["rm", "-y", "-f", "cut"]).ok();
    assert!(
        store_vm_pids(t.store_path()).is_empty(),
        "the VM outlived rm"
    );
    assert!(driver_files(&t, "cut").is_empty());
}
