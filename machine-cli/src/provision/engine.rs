//! The Docker daemon's configuration on a host: dockerd's arguments from
//! the machine's engine options, and the systemd drop-in and environment
//! file (or OpenRC conf) that carry them.
//!
//! Under systemd the options live in an environment file that systemd reads
//! at every start, and the drop-in only points `ExecStart` at it. The
//! drop-in is then the same for every machine on hosts with the same
//! dockerd, so provisioning (and re-provisioning with new options) needs no
//! `systemctl daemon-reload` — about 0.2 s and a re-run of every unit
//! generator — and an image can ship the drop-in ready-made.

use crate::store::EngineOptions;

/// Where the daemon's TLS files go on the host.
pub const REMOTE_DIR: &str = "/etc/docker";
pub const REMOTE_CA: &str = "/etc/docker/ca.pem";
pub const REMOTE_CERT: &str = "/etc/docker/server.pem";
pub const REMOTE_KEY: &str = "/etc/docker/server-key.pem";
/// The systemd drop-in that replaces docker.service's command line.
pub const DROPIN_DIR: &str = "/etc/systemd/system/docker.service.d";
pub const DROPIN: &str = "/etc/systemd/system/docker.service.d/10-machine.conf";
/// dockerd's options and the engine's environment, for the drop-in.
pub const ENV_FILE: &str = "/etc/docker/machine.env";
/// The variable in [`ENV_FILE`] that holds dockerd's arguments.
const ARGS_VAR: &str = "MACHINE_DOCKERD_ARGS";
/// OpenRC's conf for the docker service.
pub const OPENRC_CONF: &str = "/etc/conf.d/docker";

/// dockerd's arguments, without the program.
pub fn dockerd_args(
    engine: &EngineOptions,
    port: u16,
    driver: &str,
    unix_socket: &str,
) -> Vec<String> {
    let mut args = vec![
        format!("-H={unix_socket}"),
        format!("-H=tcp://0.0.0.0:{port}"),
        "--tlsverify".to_owned(),
        format!("--tlscacert={REMOTE_CA}"),
        format!("--tlscert={REMOTE_CERT}"),
        format!("--tlskey={REMOTE_KEY}"),
        format!("--label=provider={driver}"),
    ];
    args.extend(engine.labels.iter().map(|l| format!("--label={l}")));
    if !engine.storage_driver.is_empty() {
        args.push(format!("--storage-driver={}", engine.storage_driver));
    }
    args.extend(
        engine
            .insecure_registries
            .iter()
            .map(|r| format!("--insecure-registry={r}")),
    );
    args.extend(
        engine
            .registry_mirrors
            .iter()
            .map(|r| format!("--registry-mirror={r}")),
    );
    // `--engine-opt log-driver=journald` is dockerd's `--log-driver=journald`.
    args.extend(engine.opts.iter().map(|o| {
        let o = o.trim_start_matches('-');
        format!("--{o}")
    }));
    args
}

/// Quotes one word for a systemd command line or Environment= value.
fn systemd_quote(word: &str, always: bool) -> String {
    let plain = !always
        && !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=./:,@+".contains(c));
    if plain {
        return word.to_owned();
    }
    let mut out = String::from("\"");
    for c in word.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            // systemd expands $VAR and % specifiers in command lines.
            '$' => out.push_str("$$"),
            '%' => out.push_str("%%"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What carries dockerd's configuration under systemd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemdConfig {
    /// The drop-in, [`DROPIN`].
    pub dropin: String,
    /// The environment file, [`ENV_FILE`]; `None` when the drop-in carries
    /// everything itself.
    pub env_file: Option<String>,
}

/// The drop-in and environment file for dockerd with `args` and the
/// engine's environment `env`.
///
/// systemd splits `$VAR` in a command line at whitespace and honours no
/// quotes inside it, so an argument with whitespace in it (a label value
/// with a space) cannot travel through the environment file; then the
/// drop-in carries the arguments itself, as Docker Machine's did, and a
/// change to them needs a reload.
pub fn systemd_config(dockerd: &str, args: &[String], env: &[String]) -> SystemdConfig {
    let splittable = args
        .iter()
        .all(|a| !a.is_empty() && !a.chars().any(char::is_whitespace));
    if !splittable {
        return SystemdConfig {
            dropin: inline_dropin(dockerd, args, env),
            env_file: None,
        };
    }
    let mut env_file = String::from("# Written by machine; `machine provision` rewrites it.\n");
    for e in env {
        if let Some((k, v)) = e.split_once('=') {
            env_file.push_str(&format!("{k}={}\n", env_file_quote(v)));
        }
    }
    env_file.push_str(&format!("{ARGS_VAR}={}\n", env_file_quote(&args.join(" "))));
    SystemdConfig {
        dropin: static_dropin(dockerd),
        env_file: Some(env_file),
    }
}

/// The drop-in that reads dockerd's options from [`ENV_FILE`]: it depends
/// on nothing but where dockerd is.
pub fn static_dropin(dockerd: &str) -> String {
    format!(
        "# Written by machine. dockerd's options are in {ENV_FILE}, read at every start.\n\
         [Service]\n\
         EnvironmentFile={ENV_FILE}\n\
         ExecStart=\n\
         ExecStart={} ${ARGS_VAR}\n",
        systemd_quote(dockerd, false)
    )
}

/// A value for a systemd environment file: double quotes, inside which
/// systemd takes a backslash before `"`, `\\`, `` ` `` and `$` as escaping it.
fn env_file_quote(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        if matches!(c, '"' | '\\' | '`' | '$') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The drop-in with the engine's environment and dockerd's arguments in
/// it, for arguments the environment file cannot carry.
fn inline_dropin(dockerd: &str, args: &[String], env: &[String]) -> String {
    let mut out =
        String::from("# Written by machine; `machine provision` rewrites it.\n[Service]\n");
    for e in env {
        out.push_str(&format!("Environment={}\n", systemd_quote(e, true)));
    }
    out.push_str("ExecStart=\nExecStart=");
    out.push_str(&systemd_quote(dockerd, false));
    for a in args {
        out.push(' ');
        out.push_str(&systemd_quote(a, false));
    }
    out.push('\n');
    out
}

/// Single-quotes a word for sh.
pub fn sh_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// OpenRC's /etc/conf.d/docker: the daemon's options and environment.
pub fn openrc_conf(args: &[String], env: &[String]) -> String {
    let mut out = String::from("# Written by machine; `machine provision` rewrites it.\n");
    let opts: Vec<String> = args.iter().map(|a| a.replace('"', "\\\"")).collect();
    out.push_str(&format!("DOCKER_OPTS=\"{}\"\n", opts.join(" ")));
    for e in env {
        if let Some((k, v)) = e.split_once('=') {
            out.push_str(&format!("export {k}={}\n", sh_quote(v)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> EngineOptions {
        EngineOptions {
            opts: vec!["log-driver=journald".into(), "--debug".into()],
            labels: vec!["env=prod".into()],
            env: vec!["HTTP_PROXY=http://proxy:3128".into(), "NOTE=a b$c".into()],
            insecure_registries: vec!["reg.local:5000".into()],
            registry_mirrors: vec!["https://mirror.local".into()],
            storage_driver: "vfs".into(),
            ..EngineOptions::default()
        }
    }

    #[test]
    fn every_engine_option_becomes_a_dockerd_flag() {
        let args = dockerd_args(&engine(), 2376, "generic", "fd://");
        assert_eq!(
            args,
            [
                "-H=fd://",
                "-H=tcp://0.0.0.0:2376",
                "--tlsverify",
                "--tlscacert=/etc/docker/ca.pem",
                "--tlscert=/etc/docker/server.pem",
                "--tlskey=/etc/docker/server-key.pem",
                "--label=provider=generic",
                "--label=env=prod",
                "--storage-driver=vfs",
                "--insecure-registry=reg.local:5000",
                "--registry-mirror=https://mirror.local",
                "--log-driver=journald",
                "--debug",
            ]
        );
    }

    #[test]
    fn options_go_to_the_environment_file_and_the_dropin_stays_the_same() {
        let args = dockerd_args(&engine(), 2376, "generic", "fd://");
        let a = systemd_config("/usr/sbin/dockerd", &args, &engine().env);
        let other = dockerd_args(&EngineOptions::default(), 40001, "container", "fd://");
        let b = systemd_config("/usr/sbin/dockerd", &other, &[]);
        assert_eq!(a.dropin, b.dropin);
        assert_eq!(a.dropin, static_dropin("/usr/sbin/dockerd"));
        assert_eq!(
            a.dropin,
            "# Written by machine. dockerd's options are in /etc/docker/machine.env, read at every start.\n\
             [Service]\n\
             EnvironmentFile=/etc/docker/machine.env\n\
             ExecStart=\n\
             ExecStart=/usr/sbin/dockerd $MACHINE_DOCKERD_ARGS\n"
        );
        let env_file = a.env_file.unwrap();
        assert!(
            env_file.contains("HTTP_PROXY=\"http://proxy:3128\"\n"),
            "{env_file}"
        );
        assert!(env_file.contains("NOTE=\"a b\\$c\"\n"), "{env_file}");
        assert!(
            env_file.ends_with(&format!("MACHINE_DOCKERD_ARGS=\"{}\"\n", args.join(" "))),
            "{env_file}"
        );
    }

    /// The environment file as systemd reads it: a shell's reading of
    /// double quotes agrees with systemd's for `"`, `\\`, `` ` `` and `$`.
    #[test]
    fn the_environment_file_reads_back_exactly() {
        let tricky = r#"a "b" \c `d` $e 'f'"#;
        let c = systemd_config("/usr/bin/dockerd", &["-D".into()], &[format!("X={tricky}")]);
        let file = c.env_file.unwrap();
        let line = file.lines().find(|l| l.starts_with("X=")).unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{line}; printf %s \"$X\""))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), tricky);
    }

    #[test]
    fn an_argument_with_a_space_keeps_the_arguments_in_the_dropin() {
        let c = systemd_config(
            "/usr/sbin/dockerd",
            &["-H=fd://".into(), "--label=a b".into()],
            &engine().env,
        );
        assert_eq!(c.env_file, None);
        assert_eq!(
            c.dropin,
            "# Written by machine; `machine provision` rewrites it.\n[Service]\n\
             Environment=\"HTTP_PROXY=http://proxy:3128\"\n\
             Environment=\"NOTE=a b$$c\"\n\
             ExecStart=\nExecStart=/usr/sbin/dockerd -H=fd:// \"--label=a b\"\n"
        );
    }

    #[test]
    fn openrc_conf_carries_options_and_environment() {
        let c = openrc_conf(&["--tlsverify".into()], &["A=it's".into()]);
        assert!(c.contains("DOCKER_OPTS=\"--tlsverify\"\n"), "{c}");
        assert!(c.contains("export A='it'\\''s'\n"), "{c}");
    }
}
