//! The Docker Machine command surface over a real store, with the real
//! `machine` binary and the real none and fault drivers.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use machine_integration::terminal::Terminal;
use machine_integration::{Run, TestContext};

const LEFT: Duration = Duration::from_secs(5);

fn create_none(t: &TestContext, name: &str, port: u16, extra: &[&str]) {
    let url = format!("tcp://127.0.0.1:{port}");
    let mut args = vec!["create", "-d", "none", "--url", &url];
    args.extend_from_slice(extra);
    args.push(name);
    t.run(&args).ok();
}

fn create_fault(t: &TestContext, name: &str, extra: &[&str]) {
    let mut args = vec!["create", "-d", "fault"];
    args.extend_from_slice(extra);
    args.push(name);
    t.run(&args).ok();
}

/// `machine ls` rows as columns, header first.
fn ls_rows(run: &Run) -> Vec<Vec<String>> {
    run.ok()
        .lines()
        .map(|l| {
            l.split("   ")
                .map(|c| c.trim().to_owned())
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect()
}

fn ls_names(t: &TestContext, args: &[&str]) -> Vec<String> {
    let mut all = vec!["ls", "-q"];
    all.extend_from_slice(args);
    t.run(&all).ok().lines().map(str::to_owned).collect()
}

#[test]
fn create_then_ls_shows_the_machine() {
    let t = TestContext::new();
    let run = t.run(&[
        "create",
        "-d",
        "none",
        "--url",
        "tcp://127.0.0.1:12376",
        "dev",
    ]);
    run.ok();
    assert!(run.stdout.is_empty(), "create prints nothing on stdout");
    assert!(
        run.stderr.contains("Machine `dev` created"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("eval $(machine env dev)"),
        "{}",
        run.stderr
    );

    let rows = ls_rows(&t.run(&["ls"]));
    assert_eq!(
        rows[0],
        [
            "NAME", "ACTIVE", "DRIVER", "STATE", "URL", "SWARM", "DOCKER", "ERRORS"
        ]
    );
    assert_eq!(
        rows[1],
        [
            "dev",
            "-",
            "none",
            "Running",
            "tcp://127.0.0.1:12376",
            "Unknown"
        ]
    );
    t.assert_no_driver_left(LEFT);
}

#[test]
fn the_store_keeps_private_modes_and_relative_config() {
    use std::os::unix::fs::PermissionsExt;
    let t = TestContext::new();
    create_none(&t, "dev", 12376, &[]);
    let dir = t.store_path().join("machines/dev");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("config.json")), 0o600);
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["driver"], "none");
    assert_eq!(v["driver_config"]["url"], "tcp://127.0.0.1:12376");
    assert!(
        !config.contains(t.store_path().to_str().unwrap()),
        "no absolute store path in config.json:\n{config}"
    );
}

#[test]
fn a_store_copied_elsewhere_keeps_working() {
    let t = TestContext::new();
    create_fault(&t, "dev", &[]);
    t.run(&["stop", "dev"]).ok();
    let copy = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", t.store_path().display()))
        .arg(copy.path())
        .status()
        .unwrap();
    assert!(status.success());
    let run = t.run(&["-s", copy.path().to_str().unwrap(), "status", "dev"]);
    assert_eq!(run.ok(), "Stopped\n");
    t.run(&["-s", copy.path().to_str().unwrap(), "start", "dev"])
        .ok();
    assert_eq!(
        t.run(&["status", "dev"]).ok(),
        "Stopped\n",
        "the original is untouched"
    );
}

#[test]
fn create_validates_names_and_arguments() {
    let t = TestContext::new();
    let run = t.run(&[
        "create",
        "-d",
        "none",
        "--url",
        "tcp://127.0.0.1:1",
        "bad_name",
    ]);
    assert!(
        run.fails_with(1)
            .contains("`bad_name` is not a valid machine name"),
        "{}",
        run.stderr
    );
    let run = t.run(&["create", "-d", "none", "--url", "tcp://127.0.0.1:1"]);
    assert!(run.fails_with(2).contains("<NAME>"), "{}", run.stderr);
    let run = t.run(&[
        "create",
        "-d",
        "none",
        "--url",
        "tcp://127.0.0.1:1",
        "a",
        "b",
    ]);
    assert!(
        run.fails_with(2).contains("unexpected argument 'b'"),
        "{}",
        run.stderr
    );
    let run = t.run(&["create", "-d", "none", "x"]);
    assert!(run.fails_with(2).contains("--url"), "{}", run.stderr);
    assert!(ls_names(&t, &[]).is_empty(), "nothing was created");
    assert!(!t.store_path().join("machines/x").exists());
}

#[test]
fn create_help_shows_the_drivers_flags_with_env_vars() {
    let t = TestContext::new();
    let help = t.run(&["create", "-d", "none", "--help"]);
    let help = help.ok();
    assert!(help.contains("Driver `none` options"), "{help}");
    assert!(help.contains("--url <VALUE>"), "{help}");
    assert!(help.contains("[env: NONE_URL=]"), "{help}");
    assert!(help.contains("--engine-label <KEY=VALUE>"), "{help}");

    let help = t.run(&["create", "--driver=fault", "--help"]);
    let help = help.ok();
    assert!(help.contains("--fault-ssh-port <N>"), "{help}");
    assert!(help.contains("[default: 0]"), "{help}");
    assert!(help.contains("[env: FAULT_INJECT=]"), "{help}");

    // Without a usable driver, help still shows create's own flags.
    let help = t.run(&["create", "-d", "nosuch", "--help"]);
    assert!(
        help.ok().contains("--engine-install-url"),
        "{}",
        help.stdout
    );
    assert!(
        help.stderr.contains("driver `nosuch` not found"),
        "{}",
        help.stderr
    );
}

#[test]
fn driver_flags_are_read_from_their_environment_variables() {
    let t = TestContext::new();
    t.run_env(
        &["create", "-d", "none", "env-url"],
        &[("NONE_URL", "tcp://127.0.0.1:2999")],
    )
    .ok();
    assert_eq!(t.run(&["url", "env-url"]).ok(), "tcp://127.0.0.1:2999\n");
}

#[test]
fn a_refused_create_leaves_nothing_behind() {
    let t = TestContext::new();
    let run = t.run(&["create", "-d", "none", "--url", "10.0.0.1:2376", "dev"]);
    let err = run.fails_with(1);
    assert!(
        err.contains("driver `none` refused to create machine `dev`"),
        "{err}"
    );
    assert!(err.contains("is not a Docker endpoint"), "{err}");
    assert!(err.contains("hint: use tcp://HOST:PORT"), "{err}");
    assert!(!t.store_path().join("machines/dev").exists());

    let run = t.run_env(
        &["create", "-d", "fault", "dev"],
        &[("MACHINE_FAULT", "crash=PreCreateCheck")],
    );
    assert!(
        run.fails_with(1).contains("killed by signal 6"),
        "{}",
        run.stderr
    );
    assert!(!t.store_path().join("machines/dev").exists());
    t.assert_no_driver_left(LEFT);
}

#[test]
fn a_failed_create_is_kept_in_error_state_and_rm_cleans_it() {
    let t = TestContext::new();
    let run = t.run_env(
        &["create", "-d", "fault", "dev"],
        &[("MACHINE_FAULT", "fail=Create")],
    );
    let err = run.fails_with(1);
    assert!(err.contains("injected failure in Create"), "{err}");
    assert!(err.contains("machine rm -f dev"), "{err}");
    let rows = ls_rows(&t.run(&["ls"]));
    assert_eq!(rows[1][0], "dev");
    assert!(
        rows[1].last().unwrap().contains("create failed"),
        "{:?}",
        rows[1]
    );
    t.run(&["rm", "-y", "dev"]).ok();
    assert!(ls_names(&t, &[]).is_empty());
}

#[test]
fn two_concurrent_creates_of_one_name_give_one_machine() {
    let t = TestContext::new();
    let spawn = || {
        t.command(&["create", "-d", "fault", "same"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
    let ok = outs.iter().filter(|o| o.status.success()).count();
    assert_eq!(ok, 1, "exactly one create succeeds: {outs:?}");
    let failed = outs.iter().find(|o| !o.status.success()).unwrap();
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(err.contains("machine `same` already exists"), "{err}");
    assert_eq!(ls_names(&t, &[]), ["same"]);
    assert_eq!(t.run(&["status", "same"]).ok(), "Running\n");
}

#[test]
fn ls_sorts_naturally_and_quiet_needs_no_driver() {
    let t = TestContext::new();
    for n in ["m10", "m2", "m1", "a"] {
        create_fault(&t, n, &[]);
    }
    assert_eq!(ls_names(&t, &[]), ["a", "m1", "m2", "m10"]);
    // A driver that cannot even start does not matter to `ls -q`.
    let run = t.run_env(&["ls", "-q"], &[("MACHINE_FAULT", "handshake=exit")]);
    assert_eq!(run.ok(), "a\nm1\nm2\nm10\n");
    assert!(t.driver_pids().is_empty());
}

#[test]
fn ls_filters_or_within_a_key_and_across_keys() {
    let t = TestContext::new();
    create_fault(&t, "f-run", &["--engine-label", "env=prod"]);
    create_fault(&t, "f-stop", &["--engine-label", "env=dev"]);
    t.run(&["stop", "f-stop"]).ok();
    create_none(
        &t,
        "n-one",
        2376,
        &["--engine-label", "env=prod", "--engine-label", "tier=web"],
    );

    assert_eq!(ls_names(&t, &["--filter", "driver=none"]), ["n-one"]);
    assert_eq!(ls_names(&t, &["--filter", "state=stopped"]), ["f-stop"]);
    assert_eq!(
        ls_names(&t, &["--filter", "state=Running"]),
        ["f-run", "n-one"]
    );
    assert_eq!(ls_names(&t, &["--filter", "name=^f-"]), ["f-run", "f-stop"]);
    assert_eq!(
        ls_names(&t, &["--filter", "label=env=prod"]),
        ["f-run", "n-one"]
    );
    assert_eq!(ls_names(&t, &["--filter", "label=tier"]), ["n-one"]);
    // OR within a key.
    assert_eq!(
        ls_names(&t, &["--filter", "driver=none", "--filter", "name=stop$"]),
        Vec::<String>::new(),
        "different keys AND"
    );
    assert_eq!(
        ls_names(&t, &["--filter", "name=stop$", "--filter", "name=one$"]),
        ["f-stop", "n-one"]
    );
    // AND across keys.
    assert_eq!(
        ls_names(
            &t,
            &["--filter", "driver=fault", "--filter", "label=env=prod"]
        ),
        ["f-run"]
    );
    assert_eq!(
        ls_names(
            &t,
            &[
                "--filter",
                "driver=fault",
                "--filter",
                "state=running",
                "--filter",
                "state=stopped"
            ]
        ),
        ["f-run", "f-stop"]
    );
    // The full table honours filters too.
    let rows = ls_rows(&t.run(&["ls", "--filter", "state=Stopped"]));
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1][..4], ["f-stop", "-", "fault", "Stopped"]);

    let bad = t.run(&["ls", "--filter", "color=red"]);
    let err = bad.fails_with(1);
    assert!(err.contains("color"), "{err}");
    assert!(err.contains("driver"), "lists valid keys: {err}");
    let bad = t.run(&["ls", "--filter", "nonsense"]);
    assert!(bad.fails_with(1).contains("key=value"), "{}", bad.stderr);
    let bad = t.run(&["ls", "--filter", "name=("]);
    assert!(bad.fails_with(1).contains("("), "{}", bad.stderr);
}

#[test]
fn ls_formats_templates_tables_and_json() {
    let t = TestContext::new();
    create_none(&t, "b", 2377, &[]);
    create_fault(&t, "a", &[]);
    let run = t.run(&["ls", "--format", "{{.Name}} {{.DriverName}} {{.State}}"]);
    assert_eq!(run.ok(), "a fault Running\nb none Running\n");
    let run = t.run(&[
        "ls",
        "--format",
        "table {{.Name}}\t{{.DriverName}}\t{{.URL}}",
    ]);
    assert_eq!(
        run.ok(),
        "NAME   DRIVER   URL\na      fault    tcp://127.0.0.1:2376\nb      none     tcp://127.0.0.1:2377\n"
    );
    let run = t.run(&["ls", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(run.ok()).unwrap();
    assert_eq!(v[1]["Name"], "b");
    assert_eq!(v[1]["DriverName"], "none");
    assert_eq!(v[1]["URL"], "tcp://127.0.0.1:2377");
    assert_eq!(v[1]["State"], "Running");
    let bad = t.run(&["ls", "--format", "{{.Name"]);
    assert!(bad.fails_with(1).contains("{{"), "{}", bad.stderr);
}

#[test]
fn ls_shows_broken_configs_as_errors_and_rm_force_removes_them() {
    let t = TestContext::new();
    create_fault(&t, "good", &[]);
    create_fault(&t, "corrupt", &[]);
    create_fault(&t, "newer", &[]);
    let dir = t.store_path().join("machines");
    std::fs::write(dir.join("corrupt/config.json"), "{ not json").unwrap();
    std::fs::write(
        dir.join("newer/config.json"),
        r#"{"schema_version": 7, "name": "newer", "driver": "fault"}"#,
    )
    .unwrap();
    let rows = ls_rows(&t.run(&["ls"]));
    let row = |n: &str| rows.iter().find(|r| r[0] == n).unwrap().clone();
    assert_eq!(row("good")[3], "Running");
    assert_eq!(row("corrupt")[1..3], ["-", "Error"]);
    assert!(
        row("corrupt")[3].contains("is not a valid machine config"),
        "{:?}",
        row("corrupt")
    );
    assert!(
        row("newer")[3].contains("written by a newer machine (config schema 7"),
        "{:?}",
        row("newer")
    );

    let rm = t.run(&["rm", "-y", "corrupt"]);
    assert!(
        rm.fails_with(1).contains("machine rm -f corrupt"),
        "{}",
        rm.stderr
    );
    t.run(&["rm", "-y", "-f", "corrupt", "newer"]).ok();
    assert_eq!(ls_names(&t, &[]), ["good"]);
}

#[test]
fn ls_times_out_a_stuck_driver_per_machine() {
    let t = TestContext::new();
    create_fault(&t, "stuck", &["--fault-inject", "hang=GetState"]);
    create_fault(&t, "fine", &[]);
    let rows = ls_rows(&t.run(&["ls", "--timeout", "1"]));
    let stuck = rows.iter().find(|r| r[0] == "stuck").unwrap();
    assert_eq!(stuck[3], "Timeout", "{stuck:?}");
    let fine = rows.iter().find(|r| r[0] == "fine").unwrap();
    assert_eq!(fine[3], "Running", "{fine:?}");
    t.assert_no_driver_left(LEFT);
}

#[test]
fn ls_uses_one_driver_process_for_many_machines() {
    let t = TestContext::new();
    for i in 0..20 {
        create_none(&t, &format!("n{i}"), 3000 + i, &[]);
    }
    let run = t.run(&["ls", "--debug"]);
    assert_eq!(ls_rows(&run).len(), 21);
    let starts = run.stderr.matches("starting driver").count();
    assert_eq!(
        starts, 1,
        "one none process for 20 machines:\n{}",
        run.stderr
    );
}

#[test]
fn inspect_prints_docker_machine_shaped_json_and_templates() {
    let t = TestContext::new();
    create_none(
        &t,
        "dev",
        2376,
        &["--engine-label", "a=b", "--tls-san", "dev.example"],
    );
    let run = t.run(&["inspect", "dev"]);
    let v: serde_json::Value = serde_json::from_str(run.ok()).unwrap();
    assert_eq!(v["Name"], "dev");
    assert_eq!(v["DriverName"], "none");
    assert_eq!(v["Driver"]["url"], "tcp://127.0.0.1:2376");
    assert_eq!(v["Driver"]["IPAddress"], "127.0.0.1");
    assert_eq!(
        v["HostOptions"]["EngineOptions"]["Labels"],
        serde_json::json!(["a=b"])
    );
    assert_eq!(
        v["HostOptions"]["AuthOptions"]["ServerCertSANs"],
        serde_json::json!(["dev.example"])
    );
    let run = t.run(&[
        "inspect",
        "-f",
        "{{.Driver.IPAddress}} {{json .HostOptions.EngineOptions.Labels}}",
        "dev",
    ]);
    assert_eq!(run.ok(), "127.0.0.1 [\"a=b\"]\n");
    let missing = t.run(&["inspect", "nope"]);
    assert!(
        missing
            .fails_with(1)
            .contains("machine `nope` does not exist"),
        "{}",
        missing.stderr
    );
}

#[test]
fn status_url_ip_config_and_the_default_machine() {
    let t = TestContext::new();
    create_none(&t, "default", 2376, &[]);
    assert_eq!(t.run(&["status"]).ok(), "Running\n");
    assert_eq!(t.run(&["url"]).ok(), "tcp://127.0.0.1:2376\n");
    assert_eq!(t.run(&["ip"]).ok(), "127.0.0.1\n");
    let dir = t.store_path().join("machines/default");
    let d = dir.display();
    assert_eq!(
        t.run(&["config"]).ok(),
        format!(
            "--tlsverify\n--tlscacert=\"{d}/ca.pem\"\n--tlscert=\"{d}/cert.pem\"\n--tlskey=\"{d}/key.pem\"\n-H=tcp://127.0.0.1:2376\n"
        )
    );
    create_fault(&t, "f", &[]);
    t.run(&["stop", "f"]).ok();
    let url = t.run(&["url", "f"]);
    let err = url.fails_with(1);
    assert!(
        err.contains("machine `f` is not running (state: Stopped)"),
        "{err}"
    );
    assert!(err.contains("machine start f"), "{err}");
}

#[test]
fn active_follows_docker_host() {
    let t = TestContext::new();
    create_none(&t, "one", 2376, &[]);
    create_none(&t, "two", 2377, &[]);
    let run = t.run_env(&["active"], &[("DOCKER_HOST", "tcp://127.0.0.1:2377")]);
    assert_eq!(run.ok(), "two\n");
    let run = t.run(&["active"]);
    assert!(
        run.fails_with(1).contains("DOCKER_HOST is not set"),
        "{}",
        run.stderr
    );
    let rows = ls_rows(&t.run_env(&["ls"], &[("DOCKER_HOST", "tcp://127.0.0.1:2376")]));
    assert_eq!(rows[1][..2], ["one", "*"]);
    assert_eq!(rows[2][..2], ["two", "-"]);
}

#[test]
fn version_without_a_name_prints_machines_own() {
    let t = TestContext::new();
    let run = t.run(&["version"]);
    assert_eq!(
        run.ok(),
        format!(
            "machine {} (driver protocol 1)\n",
            env!("CARGO_PKG_VERSION")
        )
    );
}

fn env_out(t: &TestContext, args: &[&str], env: &[(&str, &str)]) -> String {
    t.run_env(args, env).ok().to_owned()
}

#[test]
fn env_prints_every_shell_and_evals_in_bash() {
    let t = TestContext::new();
    create_none(&t, "dev", 2376, &[]);
    let d = t.store_path().join("machines/dev");
    let d = d.display();
    let posix = env_out(&t, &["env", "--shell", "bash", "dev"], &[]);
    assert_eq!(
        posix,
        format!(
            "export DOCKER_TLS_VERIFY=\"1\"\nexport DOCKER_HOST=\"tcp://127.0.0.1:2376\"\nexport DOCKER_CERT_PATH=\"{d}\"\nexport DOCKER_MACHINE_NAME=\"dev\"\n# Run this command to configure your shell: \n# eval $(machine env --shell bash dev)\n"
        )
    );
    let fish = env_out(&t, &["env", "--shell", "fish", "dev"], &[]);
    assert!(
        fish.contains("set -gx DOCKER_HOST \"tcp://127.0.0.1:2376\";"),
        "{fish}"
    );
    assert!(
        fish.contains("# eval (machine env --shell fish dev)"),
        "{fish}"
    );
    let ps = env_out(&t, &["env", "--shell", "powershell", "dev"], &[]);
    assert!(
        ps.contains("$Env:DOCKER_HOST = \"tcp://127.0.0.1:2376\""),
        "{ps}"
    );
    assert!(
        ps.contains("# & machine env --shell powershell dev | Invoke-Expression"),
        "{ps}"
    );
    let cmd = env_out(&t, &["env", "--shell", "cmd", "dev"], &[]);
    assert!(
        cmd.contains("SET DOCKER_HOST=tcp://127.0.0.1:2376"),
        "{cmd}"
    );
    assert!(
        cmd.contains("REM \t@FOR /f \"tokens=*\" %i IN ('machine env --shell cmd dev') DO @%i"),
        "{cmd}"
    );
    let tcsh = env_out(&t, &["env", "--shell", "tcsh", "dev"], &[]);
    assert!(
        tcsh.contains("setenv DOCKER_HOST \"tcp://127.0.0.1:2376\";"),
        "{tcsh}"
    );
    let emacs = env_out(&t, &["env", "--shell", "emacs", "dev"], &[]);
    assert!(
        emacs.contains("(setenv \"DOCKER_HOST\" \"tcp://127.0.0.1:2376\")"),
        "{emacs}"
    );
    let zsh = env_out(&t, &["env", "--shell", "zsh", "dev"], &[]);
    assert!(zsh.starts_with("export DOCKER_TLS_VERIFY=\"1\"\n"), "{zsh}");

    // Detected from $SHELL.
    let auto = env_out(&t, &["env", "dev"], &[("SHELL", "/usr/bin/fish")]);
    assert!(auto.contains("set -gx DOCKER_HOST"), "{auto}");

    // Really eval'd by bash.
    let script = format!(
        "eval \"$({} env --shell bash dev)\"; echo \"$DOCKER_HOST|$DOCKER_TLS_VERIFY|$DOCKER_MACHINE_NAME|$DOCKER_CERT_PATH\"",
        t.bin.join("machine").display()
    );
    let bash = std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("MACHINE_STORAGE_PATH", t.store_path())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&bash.stdout),
        format!("tcp://127.0.0.1:2376|1|dev|{d}\n")
    );
}

#[test]
fn env_unsets_and_extends_no_proxy_without_duplicates() {
    let t = TestContext::new();
    create_none(&t, "dev", 2376, &[]);
    let unset = env_out(&t, &["env", "--shell", "bash", "-u"], &[]);
    assert_eq!(
        unset,
        "unset DOCKER_TLS_VERIFY\nunset DOCKER_HOST\nunset DOCKER_CERT_PATH\nunset DOCKER_MACHINE_NAME\n# Run this command to configure your shell: \n# eval $(machine env --shell bash -u)\n"
    );
    let fish_unset = env_out(&t, &["env", "--shell", "fish", "-u"], &[]);
    assert!(fish_unset.contains("set -e DOCKER_HOST;"), "{fish_unset}");

    let np = env_out(
        &t,
        &["env", "--shell", "bash", "--no-proxy", "dev"],
        &[("NO_PROXY", "example.com")],
    );
    assert!(
        np.contains("export NO_PROXY=\"example.com,127.0.0.1\""),
        "{np}"
    );
    let np = env_out(
        &t,
        &["env", "--shell", "bash", "--no-proxy", "dev"],
        &[("NO_PROXY", "127.0.0.1,example.com")],
    );
    assert!(
        np.contains("export NO_PROXY=\"127.0.0.1,example.com\""),
        "{np}"
    );
    let np = env_out(
        &t,
        &["env", "--shell", "bash", "--no-proxy", "dev"],
        &[("no_proxy", "a.b")],
    );
    assert!(np.contains("export no_proxy=\"a.b,127.0.0.1\""), "{np}");
    let np = env_out(&t, &["env", "--shell", "bash", "--no-proxy", "dev"], &[]);
    assert!(np.contains("export NO_PROXY=\"127.0.0.1\""), "{np}");

    let bad = t.run(&["env", "--shell", "klingon", "dev"]);
    assert!(bad.fails_with(1).contains("klingon"), "{}", bad.stderr);
}

#[test]
fn rm_asks_unless_told_and_force_survives_a_missing_driver() {
    let t = TestContext::new();
    create_fault(&t, "keep", &[]);
    create_fault(&t, "go", &[]);
    let answer = |a: &str| {
        let mut child = t
            .command(&["rm", "go"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(a.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let no = answer("n\n");
    assert!(!no.status.success());
    assert!(String::from_utf8_lossy(&no.stderr).contains("Are you sure? (y/n)"));
    assert_eq!(ls_names(&t, &[]), ["go", "keep"]);
    let yes = answer("y\n");
    assert!(yes.status.success(), "{yes:?}");
    assert_eq!(ls_names(&t, &[]), ["keep"]);

    // The driver cannot start: rm refuses, rm -f removes the entry anyway.
    let env = [("MACHINE_FAULT", "handshake=exit")];
    let run = t.run_env(&["rm", "-y", "keep"], &env);
    let err = run.fails_with(1);
    assert!(err.contains("machine `keep` was not removed"), "{err}");
    assert!(err.contains("machine rm -f keep"), "{err}");
    t.run_env(&["rm", "-y", "-f", "keep"], &env).ok();
    assert!(ls_names(&t, &[]).is_empty());
    assert!(
        t.run(&["rm", "-y", "nope"])
            .fails_with(1)
            .contains("does not exist")
    );
    t.assert_no_driver_left(LEFT);
}

#[test]
fn start_stop_restart_kill_with_already_errors() {
    let t = TestContext::new();
    create_fault(&t, "f", &[]);
    let run = t.run(&["start", "f"]);
    assert!(
        run.fails_with(1).contains("machine `f` is already running"),
        "{}",
        run.stderr
    );
    let run = t.run(&["stop", "f"]);
    assert!(run.ok().is_empty());
    assert!(
        run.stderr.contains("Machine `f` was stopped."),
        "{}",
        run.stderr
    );
    assert_eq!(t.run(&["status", "f"]).ok(), "Stopped\n");
    assert!(
        t.run(&["stop", "f"])
            .fails_with(1)
            .contains("already stopped")
    );
    assert!(
        t.run(&["kill", "f"])
            .fails_with(1)
            .contains("already stopped")
    );
    t.run(&["start", "f"]).ok();
    t.run(&["restart", "f"]).ok();
    assert_eq!(t.run(&["status", "f"]).ok(), "Running\n");
    t.run(&["kill", "f"]).ok();
    assert_eq!(t.run(&["status", "f"]).ok(), "Stopped\n");

    create_none(&t, "n", 2376, &[]);
    let run = t.run(&["stop", "n"]);
    assert!(
        run.fails_with(1)
            .contains("driver `none` does not support stopping machines"),
        "{}",
        run.stderr
    );
    // Several machines at once, every failure reported.
    let run = t.run(&["stop", "f", "n"]);
    let err = run.fails_with(1);
    assert!(err.contains("already stopped"), "{err}");
    assert!(err.contains("does not support stopping"), "{err}");
    assert!(err.contains("2 of 2 machines failed"), "{err}");
}

#[test]
fn completion_scripts_for_every_shell() {
    let t = TestContext::new();
    for (shell, needle) in [
        ("bash", "_machine()"),
        ("zsh", "#compdef machine"),
        ("fish", "complete -c machine"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let run = t.run(&["completion", shell]);
        assert!(run.ok().contains(needle), "{shell}: {}", run.stdout);
    }
}

/// Colour on stderr only on a terminal without NO_COLOR; stdout (data)
/// never has any.
#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    let t = TestContext::new();
    let limit = Duration::from_secs(30);
    let args = ["create", "-d", "none", "--url", "tcp://127.0.0.1:1", "m"];
    let on_terminal = |args: &[&str], no_color: Option<&str>| {
        let mut cmd = t.command(args);
        cmd.env_remove("NO_COLOR");
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        let mut term = Terminal::spawn(cmd);
        term.finish(limit)
    };

    let (status, shown) = on_terminal(&args, None);
    assert!(status.success(), "{shown}");
    assert!(shown.contains("\x1b[1;36m==>\x1b[0m"), "{shown:?}");
    let (status, shown) = on_terminal(&["inspect", "nosuch"], None);
    assert!(!status.success());
    assert!(shown.contains("\x1b[1;31merror:\x1b[0m"), "{shown:?}");
    // An empty NO_COLOR is unset, as no-color.org says.
    let (_, shown) = on_terminal(&["inspect", "nosuch"], Some(""));
    assert!(shown.contains("\x1b[1;31merror:"), "{shown:?}");

    let (status, shown) = on_terminal(&["inspect", "nosuch"], Some("1"));
    assert!(!status.success());
    assert!(
        shown.contains("error:") && !shown.contains('\x1b'),
        "{shown:?}"
    );

    // Not a terminal: plain, NO_COLOR or not.
    let mut cmd = t.command(&["inspect", "nosuch"]);
    cmd.env_remove("NO_COLOR");
    let run = Run::from(cmd.output().unwrap());
    let err = run.fails_with(1);
    assert!(err.contains("error:") && !err.contains('\x1b'), "{err:?}");
    let mut cmd = t.command(&["ls"]);
    cmd.env_remove("NO_COLOR");
    let ls = Run::from(cmd.output().unwrap());
    assert!(!ls.ok().contains('\x1b'), "{:?}", ls.stdout);
    t.run(&["rm", "-y", "m"]).ok();
}
