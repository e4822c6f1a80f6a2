//! The CLI's driver host against the real fault driver: discovery, the
//! handshake, every start-up and call failure, transports, and that no
//! driver process outlives the CLI, even one killed with SIGKILL.

use std::time::Duration;

use machine_integration::TestContext;

const LEFT: Duration = Duration::from_secs(5);

#[test]
fn driver_ls_lists_the_fault_driver_with_its_protocol() {
    let t = TestContext::new();
    let run = t.run(&["driver", "ls"]);
    let out = run.ok();
    let header = out.lines().next().unwrap();
    assert!(header.starts_with("NAME"), "{out}");
    let fault = out
        .lines()
        .find(|l| l.starts_with("fault "))
        .unwrap_or_else(|| panic!("no fault driver in:\n{out}"));
    let cols: Vec<&str> = fault.split_whitespace().collect();
    assert_eq!(cols[1], "0.1.0", "{fault}");
    assert_eq!(cols[2], "1", "{fault}");
    assert_eq!(cols[3], "start,stop,restart,kill", "{fault}");
    assert!(cols[4].ends_with("/machine-driver-fault"), "{fault}");
    t.assert_no_driver_left(LEFT);

    let quiet = t.run(&["driver", "ls", "-q"]);
    assert!(quiet.ok().lines().any(|l| l == "fault"), "{}", quiet.stdout);
}

#[test]
fn driver_info_reports_version_protocol_capabilities_path_and_flags() {
    let t = TestContext::new();
    let run = t.run(&["driver", "info", "fault", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(run.ok()).expect("json on stdout");
    assert_eq!(v["name"], "fault");
    assert_eq!(v["version"], "0.1.0");
    assert_eq!(v["protocol"], 1);
    assert_eq!(
        v["capabilities"],
        serde_json::json!(["start", "stop", "restart", "kill"])
    );
    assert!(
        v["path"]
            .as_str()
            .unwrap()
            .ends_with("/machine-driver-fault")
    );
    assert!(v["sdk"].as_str().unwrap().starts_with("machine-driver-sdk"));
    let flags = v["flags"].as_array().unwrap();
    let port = flags
        .iter()
        .find(|f| f["name"] == "fault-ssh-port")
        .unwrap();
    assert_eq!(port["type"], "int");
    assert_eq!(port["default"], "0");

    let text = t.run(&["driver", "info", "fault"]);
    let text = text.ok();
    assert!(text.contains("Protocol:     1\n"), "{text}");
    assert!(
        text.contains("--fault-inject <string>  faults for this machine"),
        "{text}"
    );
    t.assert_no_driver_left(LEFT);
}

#[test]
fn driver_info_accepts_an_absolute_path() {
    let t = TestContext::new();
    let path = t.bin.join("machine-driver-fault");
    let run = t.run(&["driver", "info", path.to_str().unwrap(), "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(run.ok()).unwrap();
    assert_eq!(v["name"], "fault");
}

#[test]
fn a_missing_driver_names_where_it_looked_and_what_to_do() {
    let t = TestContext::new();
    let run = t.run(&["driver", "info", "nosuch"]);
    let err = run.fails_with(1);
    assert!(
        err.contains("driver `nosuch` not found: no executable `machine-driver-nosuch` in"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{}/drivers", t.store_path().display())),
        "{err}"
    );
    assert!(err.contains("machine driver install"), "{err}");
    assert!(run.stdout.is_empty());

    let bad = t.run(&["driver", "info", "../x y"]);
    assert!(
        bad.fails_with(1)
            .contains("../x y is not an executable file"),
        "{}",
        bad.stderr
    );
    let bad = t.run(&["driver", "info", "x y"]);
    assert!(
        bad.fails_with(1).contains("is not a driver name"),
        "{}",
        bad.stderr
    );
}

/// Runs `driver info fault` with a fault and returns stderr after checking
/// the failure is clean: exit 1, nothing on stdout, no process left.
fn fails_cleanly(fault: &str, extra: &[(&str, &str)]) -> String {
    let t = TestContext::new();
    let mut env = vec![("MACHINE_FAULT", fault)];
    env.extend_from_slice(extra);
    let run = t.run_env(&["driver", "info", "fault"], &env);
    let err = run.fails_with(1).to_owned();
    assert!(
        run.stdout.is_empty(),
        "stdout must stay clean: {}",
        run.stdout
    );
    t.assert_no_driver_left(LEFT);
    err
}

#[test]
fn garbage_instead_of_a_handshake_is_refused() {
    let err = fails_cleanly("handshake=garbage", &[]);
    assert!(
        err.contains("printed \"Welcome to the fault driver! Nothing to see here.\" instead of a plugin handshake"),
        "{err}"
    );
    assert!(err.contains("expected 5 or 6 fields"), "{err}");
}

#[test]
fn a_silent_driver_times_out_and_is_killed() {
    // This fault ignores SIGTERM and stdin's end: only the kill ends it.
    let err = fails_cleanly("handshake=none", &[("MACHINE_DRIVER_START_TIMEOUT", "0.5")]);
    assert!(
        err.contains("did not print its handshake line within 500ms"),
        "{err}"
    );
}

#[test]
fn a_driver_that_exits_early_shows_its_stderr_and_status() {
    let err = fails_cleanly("handshake=exit", &[]);
    assert!(
        err.contains("exited with status 3 before it finished the plugin handshake"),
        "{err}"
    );
    assert!(
        err.contains("fault: cannot open /dev/fault0: permission denied"),
        "{err}"
    );
}

#[test]
fn an_unknown_protocol_version_names_both_sides_and_the_fix() {
    let err = fails_cleanly("protocol=99", &[]);
    assert!(
        err.contains(
            "driver `fault` speaks protocol version 99, but this machine speaks version 1"
        ),
        "{err}"
    );
    assert!(
        err.contains("install a release of the driver built for protocol 1"),
        "{err}"
    );
}

#[test]
fn a_crash_inside_a_call_is_reported_with_the_signal_and_output() {
    let err = fails_cleanly("crash=GetCreateFlags", &[]);
    assert!(
        err.contains("driver `fault` could not list its create flags"),
        "{err}"
    );
    assert!(err.contains("killed by signal 6 (SIGABRT"), "{err}");
    assert!(
        err.contains("fault: crashing inside GetCreateFlags as asked"),
        "{err}"
    );
}

#[test]
fn a_hang_inside_a_call_times_out() {
    let err = fails_cleanly(
        "hang=GetCreateFlags",
        &[("MACHINE_DRIVER_CALL_TIMEOUT", "0.5")],
    );
    assert!(
        err.contains("did not answer GetCreateFlags within 500ms"),
        "{err}"
    );
    assert!(err.contains("MACHINE_DRIVER_CALL_TIMEOUT"), "{err}");
}

#[test]
fn an_error_from_a_call_carries_the_drivers_hint() {
    let err = fails_cleanly("fail=GetCreateFlags", &[]);
    assert!(err.contains("injected failure in GetCreateFlags"), "{err}");
    assert!(err.contains("hint: unset MACHINE_FAULT"), "{err}");
}

#[test]
fn stdout_written_by_a_driver_never_reaches_ours() {
    let t = TestContext::new();
    let run = t.run_env(
        &["driver", "info", "fault", "--format", "json", "--debug"],
        &[("MACHINE_FAULT", "stdout=GetCreateFlags")],
    );
    let v: serde_json::Value =
        serde_json::from_str(run.ok()).expect("stdout is only the JSON document");
    assert_eq!(v["name"], "fault");
    assert!(
        run.stderr
            .contains("fault: stray stdout output inside GetCreateFlags"),
        "the stray line is shown on stderr with --debug: {}",
        run.stderr
    );
    t.assert_no_driver_left(LEFT);
}

#[test]
fn the_tcp_transport_works_end_to_end() {
    let t = TestContext::new();
    let run = t.run_env(
        &["driver", "info", "fault", "--format", "json"],
        &[("MACHINE_DRIVER_TRANSPORT", "tcp")],
    );
    let v: serde_json::Value = serde_json::from_str(run.ok()).unwrap();
    assert_eq!(v["protocol"], 1);
    t.assert_no_driver_left(LEFT);
}

#[test]
fn a_driver_run_by_hand_explains_itself() {
    let t = TestContext::new();
    let out = std::process::Command::new(t.bin.join("machine-driver-fault"))
        .env_remove("MACHINE_DRIVER_PLUGIN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("This is a machine driver plugin"), "{err}");
    assert!(err.contains("machine create -d fault"), "{err}");
}

fn kill_cli_and_check(fault: &str) {
    let t = TestContext::new();
    let mut child = t
        .command(&["driver", "info", "fault"])
        .env("MACHINE_FAULT", fault)
        .env("MACHINE_DRIVER_CALL_TIMEOUT", "600")
        .env("MACHINE_DRIVER_START_TIMEOUT", "600")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pids = t.wait_for_driver(Duration::from_secs(10));
    assert_eq!(pids.len(), 1, "one driver process: {pids:?}");
    // The driver's socket directory is private to this user.
    let environ = std::fs::read(format!("/proc/{}/environ", pids[0])).unwrap();
    let dir = environ
        .split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(b"PLUGIN_UNIX_SOCKET_DIR="))
        .map(|v| std::path::PathBuf::from(String::from_utf8_lossy(v).into_owned()))
        .expect("the driver was given a socket directory");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{}", dir.display());
    child.kill().unwrap(); // SIGKILL: the CLI gets no chance to clean up.
    child.wait().unwrap();
    t.assert_no_driver_left(LEFT);
    // The killed CLI could not remove its socket directory; the next run
    // that starts a driver does.
    assert!(dir.exists(), "{}", dir.display());
    t.run(&["driver", "info", "fault"]).ok();
    assert!(!dir.exists(), "{} outlived the next run", dir.display());
}

#[test]
fn a_driver_dies_with_a_cli_killed_by_sigkill() {
    // The driver is inside a call that never ends.
    kill_cli_and_check("hang=GetCreateFlags");
}

#[test]
fn a_driver_that_ignores_signals_dies_with_a_killed_cli() {
    // Before its handshake, ignoring SIGTERM and stdin's end.
    kill_cli_and_check("handshake=none");
}
