//! The Docker daemon's configuration on a host: dockerd's arguments from
//! the machine's engine options, and the systemd drop-in (or OpenRC conf)
//! that carries them.

use crate::store::EngineOptions;

/// Where the daemon's TLS files go on the host.
pub const REMOTE_DIR: &str = "/etc/docker";
pub const REMOTE_CA: &str = "/etc/docker/ca.pem";
pub const REMOTE_CERT: &str = "/etc/docker/server.pem";
pub const REMOTE_KEY: &str = "/etc/docker/server-key.pem";
/// The systemd drop-in that replaces docker.service's command line.
pub const DROPIN_DIR: &str = "/etc/systemd/system/docker.service.d";
pub const DROPIN: &str = "/etc/systemd/system/docker.service.d/10-machine.conf";
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

/// The systemd drop-in: the engine's environment and a new ExecStart.
pub fn systemd_dropin(dockerd: &str, args: &[String], env: &[String]) -> String {
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
    fn the_dropin_quotes_for_systemd() {
        let d = systemd_dropin(
            "/usr/sbin/dockerd",
            &["-H=fd://".into(), "--label=a b".into()],
            &engine().env,
        );
        assert_eq!(
            d,
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
