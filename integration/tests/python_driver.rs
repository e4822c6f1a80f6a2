//! The protocol is language-neutral: the Python example driver
//! (`examples/python-driver`, grpcio from PyPI) passes the SDK's
//! conformance kit and works through the real `machine` CLI: `driver
//! info`, `create` (found on PATH and by absolute path), `ls`, `stop`,
//! `start`, `restart`, `kill`, `rm`, its errors and hints, its log lines.
//! The Python sketch printed in docs/protocol.md §10 passes the kit too, so
//! the document cannot drift from what works.
//!
//! It needs a Python 3.11+ with `examples/python-driver/requirements.txt`
//! installed, named by `MACHINE_TEST_PYTHON` (`integration/test.sh` sets it
//! from `integration/python-env.sh`). Without it the tests say SKIPPED, and
//! fail under CI (`CI` set), where a skipped test would hide a gap.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use machine_driver_sdk::conformance::Kit;
use machine_integration::{KillMarked, MARKER_VAR, TestContext, assert_nothing_marked_left};

const ENV_PYTHON: &str = "MACHINE_TEST_PYTHON";
const LEFT: Duration = Duration::from_secs(5);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration/ is in the workspace")
        .to_owned()
}

/// The Python to run the driver with, or `None` after saying loudly that
/// the test is skipped.
fn python_or_skip(test: &str) -> Option<PathBuf> {
    match std::env::var_os(ENV_PYTHON).filter(|v| !v.is_empty()) {
        Some(p) => {
            let p = PathBuf::from(p);
            assert!(
                p.is_file(),
                "{ENV_PYTHON}={} is not a file; run `bash integration/python-env.sh` for one",
                p.display()
            );
            Some(p)
        }
        None if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) => panic!(
            "{ENV_PYTHON} is not set, and CI must run the Python driver's tests: \
             export {ENV_PYTHON}=\"$(bash integration/python-env.sh)\""
        ),
        None => {
            use std::io::Write as _;
            // Straight to stderr, past the test harness's output capture.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: {test}: {ENV_PYTHON} is not set (export \
                 {ENV_PYTHON}=\"$(bash integration/python-env.sh)\" to run it)"
            );
            None
        }
    }
}

/// Generates the stubs and the `machine-driver-pyhello` launcher into a
/// fresh directory, with examples/python-driver/build.sh.
fn build(python: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("pyhello-")
        .tempdir()
        .unwrap();
    let run = Command::new("bash")
        .arg(workspace().join("examples/python-driver/build.sh"))
        .arg(dir.path())
        .arg(python)
        .output()
        .expect("run build.sh");
    assert!(
        run.status.success(),
        "build.sh failed:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let launcher = PathBuf::from(String::from_utf8(run.stdout).unwrap().trim());
    assert_eq!(launcher, dir.path().join("machine-driver-pyhello"));
    for stub in [
        "gen/machine/driver/v1/driver_pb2.py",
        "gen/machine/driver/v1/driver_pb2_grpc.py",
        "gen/plugin/controller_pb2_grpc.py",
    ] {
        assert!(dir.path().join(stub).is_file(), "build.sh made no {stub}");
    }
    (dir, launcher)
}

#[tokio::test]
async fn the_python_driver_passes_conformance() {
    let Some(python) = python_or_skip("the_python_driver_passes_conformance") else {
        return;
    };
    let (_dir, launcher) = build(&python);
    let marker = format!("pyhello-kit-{}", std::process::id());
    let _guard = KillMarked(marker.clone());
    let report = Kit::new(&launcher)
        .flag("pyhello-command", "exec sleep 3600")
        .env(MARKER_VAR, &marker)
        .run()
        .await;
    println!("{report}");
    report.assert_passed();
    // The kit shut every driver down and removed the host it made.
    assert_nothing_marked_left(&marker, LEFT);
}

#[test]
fn the_python_driver_works_through_the_cli() {
    let Some(python) = python_or_skip("the_python_driver_works_through_the_cli") else {
        return;
    };
    let (dir, launcher) = build(&python);
    let mut t = TestContext::new();
    let _guard = KillMarked(t.marker.clone());
    // On PATH, as a user would put it there.
    let mut path = OsString::from(dir.path());
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap_or_default());
    t.env("PATH", path.to_str().unwrap());

    // Its flags, found on PATH and by path.
    let info = t.run(&["driver", "info", "pyhello", "--format", "json"]);
    let info: serde_json::Value = serde_json::from_str(info.ok()).expect("driver info JSON");
    assert_eq!(info["name"], "pyhello");
    assert_eq!(info["version"], "0.1.0");
    assert_eq!(Path::new(info["path"].as_str().unwrap()), launcher);
    assert!(
        info["sdk"].as_str().unwrap().starts_with("grpcio"),
        "{info}"
    );
    assert_eq!(
        info["capabilities"],
        serde_json::json!(["start", "stop", "restart", "kill"])
    );
    let flags: Vec<&str> = info["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        flags,
        [
            "pyhello-command",
            "pyhello-address",
            "pyhello-ssh-port",
            "pyhello-ssh-user",
            "pyhello-engine-port",
            "pyhello-stop-timeout"
        ]
    );
    assert_eq!(info["flags"][0]["required"], true);
    let by_path = t.run(&["driver", "info", launcher.to_str().unwrap()]);
    assert!(
        by_path.ok().contains("--pyhello-command"),
        "{}",
        by_path.stdout
    );

    // Bad input. The driver declared --pyhello-command required, and the
    // CLI enforces it before any call.
    let missing = t.run(&["create", "-d", "pyhello", "bad"]);
    assert!(
        missing.fails_with(2).contains("--pyhello-command"),
        "{}",
        missing.stderr
    );
    // A value only the driver can judge: its message and hint reach the
    // user, and nothing is kept.
    let refused = t.run(&[
        "create",
        "-d",
        "pyhello",
        "--pyhello-command",
        "exec sleep 3600",
        "--pyhello-ssh-port",
        "70000",
        "bad",
    ]);
    let err = refused.fails_with(1);
    assert!(
        err.contains("driver `pyhello` refused to create machine `bad`: --pyhello-ssh-port 70000 is not a port (0-65535)"),
        "{err}"
    );
    assert!(
        err.contains("hint: give a TCP port number, or 0 for a host without SSH"),
        "{err}"
    );
    assert_eq!(t.run(&["ls", "-q"]).ok(), "");
    // A failure during Create, after progress: the machine is kept in the
    // Error state with the driver's message, and `rm -f` removes it.
    let failed = t.run(&[
        "create",
        "-d",
        "pyhello",
        "--pyhello-command",
        "echo no disk image here; exit 3",
        "broken",
    ]);
    let err = failed.fails_with(1);
    assert!(err.contains("==> starting the host"), "{err}");
    assert!(
        err.contains("the host's command ended at once (exit status 3): no disk image here"),
        "{err}"
    );
    assert!(err.contains("must keep running in the foreground"), "{err}");
    t.run(&["rm", "-f", "-y", "broken"]).ok();

    // A host that ignores SIGTERM, created with the driver given by its
    // absolute path; later commands find it on PATH by its name.
    let create = t.run(&[
        "create",
        "-d",
        launcher.to_str().unwrap(),
        "--pyhello-command",
        "trap '' TERM; exec sleep 3600",
        "--pyhello-engine-port",
        "12377",
        "--pyhello-stop-timeout",
        "1",
        "dev",
    ]);
    create.ok();
    assert!(
        create
            .stderr
            .contains("warning: no --pyhello-ssh-port: machine will not set Docker up"),
        "{}",
        create.stderr
    );
    assert!(
        create.stderr.contains("==> starting the host: trap"),
        "{}",
        create.stderr
    );
    let ls = |t: &TestContext| {
        t.run(&[
            "ls",
            "--format",
            "{{.Name}} {{.DriverName}} {{.State}} {{.URL}}",
        ])
        .ok()
        .to_owned()
    };
    assert_eq!(ls(&t), "dev pyhello Running tcp://127.0.0.1:12377\n");
    assert_eq!(t.run(&["url", "dev"]).ok(), "tcp://127.0.0.1:12377\n");

    // SIGTERM is ignored, so the driver kills the host after 1 s and says
    // so in a warn log line, which the CLI shows with the machine's name.
    let stop = t.run(&["stop", "dev"]);
    stop.ok();
    assert!(
        stop.stderr
            .contains("[pyhello/dev] warn the host did not stop within 1s of SIGTERM; killing it"),
        "{}",
        stop.stderr
    );
    assert_eq!(ls(&t), "dev pyhello Stopped \n");
    t.run(&["start", "dev"]).ok();
    assert_eq!(t.run(&["status", "dev"]).ok(), "Running\n");
    t.run(&["restart", "dev"]).ok();
    assert_eq!(t.run(&["status", "dev"]).ok(), "Running\n");
    t.run(&["kill", "dev"]).ok();
    assert_eq!(t.run(&["status", "dev"]).ok(), "Stopped\n");
    let stopped = t.run(&["stop", "dev"]);
    assert!(
        stopped
            .fails_with(1)
            .contains("machine `dev` is already stopped"),
        "{}",
        stopped.stderr
    );
    t.run(&["start", "dev"]).ok();
    t.run(&["rm", "-y", "dev"]).ok();
    assert_eq!(t.run(&["ls", "-q"]).ok(), "");

    // No driver process and no host is left.
    assert_nothing_marked_left(&t.marker, LEFT);
}

/// The Python sketch in docs/protocol.md §10, as printed there.
fn protocol_md_sketch() -> String {
    let doc = std::fs::read_to_string(workspace().join("docs/protocol.md")).unwrap();
    let section = doc
        .split_once("## 10. Writing a driver in Python")
        .expect("protocol.md has section 10")
        .1;
    let code = section
        .split_once("```python\n")
        .expect("section 10 has a python block")
        .1;
    code.split_once("\n```")
        .expect("the python block ends")
        .0
        .to_owned()
}

#[tokio::test]
async fn the_python_sketch_in_protocol_md_passes_conformance() {
    let Some(python) = python_or_skip("the_python_sketch_in_protocol_md_passes_conformance") else {
        return;
    };
    // Laid out as the document says: the program, with gen/ beside it.
    let dir = tempfile::Builder::new()
        .prefix("static-")
        .tempdir()
        .unwrap();
    std::fs::write(dir.path().join("static.py"), protocol_md_sketch()).unwrap();
    let gen_dir = dir.path().join("gen");
    std::fs::create_dir(&gen_dir).unwrap();
    let protoc = Command::new(&python)
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(workspace().join("proto/proto"))
        .arg(format!("--python_out={}", gen_dir.display()))
        .arg(format!("--grpc_python_out={}", gen_dir.display()))
        .args(["machine/driver/v1/driver.proto", "plugin/controller.proto"])
        .status()
        .expect("run grpc_tools.protoc");
    assert!(protoc.success(), "grpc_tools.protoc failed");
    let launcher = dir.path().join("machine-driver-static");
    std::fs::write(
        &launcher,
        format!(
            "#!/bin/sh\nexec '{}' -B '{}' \"$@\"\n",
            python.display(),
            dir.path().join("static.py").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&launcher, std::fs::Permissions::from_mode(0o755)).unwrap();

    let marker = format!("static-kit-{}", std::process::id());
    let _guard = KillMarked(marker.clone());
    let report = Kit::new(&launcher)
        .flag("static-ip", "192.0.2.10")
        .env(MARKER_VAR, &marker)
        .run()
        .await;
    println!("{report}");
    report.assert_passed();
    assert_nothing_marked_left(&marker, LEFT);
}
