//! `machine-driver-hello`: an example third-party driver for `machine`.
//!
//! Each host is a local process: a command of yours that runs the host in
//! the foreground, such as a script that boots a VM with your own QEMU or
//! Firecracker settings and forwards its SSH and Docker ports to
//! 127.0.0.1. The driver starts the command, stops it with SIGTERM (then
//! SIGKILL), tells whether it runs, and says where to reach the host.
//! `machine` does the rest: SSH keys, provisioning Docker, certificates.
//!
//! ```sh
//! machine create -d hello --hello-command 'exec ./boot-vm.sh' \
//!     --hello-ssh-port 2222 --hello-engine-port 2376 dev
//! ```
//!
//! The command runs under `/bin/sh -c` in the machine's directory, with
//! `MACHINE_NAME`, `MACHINE_DIR`, `HELLO_ADDRESS`, `HELLO_SSH_PORT`,
//! `HELLO_ENGINE_PORT` and (when machine made a key) `HELLO_AUTHORIZED_KEYS`
//! set. Its output goes to `hello.log` there. See docs/driver-authoring.md
//! in machine's repository for how this driver is built, tested and
//! released.

mod host;

use std::time::Duration;

use machine_driver_sdk::{
    Capability, Config, Connection, CreateRequest, Driver, DriverInfo, Error, ErrorKind, Flag,
    FlagValues, Machine, Progress, Result, State, Status, async_trait,
};
use serde::{Deserialize, Serialize};

/// How long a host gets to exit after SIGKILL before the driver gives up.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// What the driver keeps for each machine. machine stores it (config.json)
/// and sends it back with every call; `machine inspect` shows it, so it
/// holds nothing secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct HelloConfig {
    command: String,
    address: String,
    ssh_user: String,
    /// 0: the host has no SSH, and machine does not provision it.
    ssh_port: u16,
    engine_port: u16,
    /// Seconds between SIGTERM and SIGKILL.
    stop_timeout: u64,
}

#[derive(Debug)]
struct Hello;

/// Reads a port flag; `allow_zero` for "none".
fn port(flags: &FlagValues, name: &str, default: u16, allow_zero: bool) -> Result<u16> {
    let Some(value) = flags.int(name)? else {
        return Ok(default);
    };
    let low = if allow_zero { 0 } else { 1 };
    u16::try_from(value)
        .ok()
        .filter(|p| *p >= low)
        .ok_or_else(|| {
            Error::invalid_argument(format!("--{name} {value} is not a port ({low}-65535)"))
                .with_hint(if allow_zero {
                    "give a TCP port number, or 0 for a host without SSH"
                } else {
                    "give a TCP port number"
                })
        })
}

/// Turns the create flags into the machine's config; every check that needs
/// no provider is here, so PreCreateCheck and Create agree.
fn parse(flags: &FlagValues) -> Result<HelloConfig> {
    let command = flags
        .string("hello-command")?
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| {
            Error::invalid_argument("the hello driver needs --hello-command").with_hint(
                "give the command that runs the host in the foreground, \
                 e.g. --hello-command 'exec ./boot-vm.sh'",
            )
        })?;
    let stop_timeout = match flags.int("hello-stop-timeout")? {
        None => 30,
        Some(s) if s >= 1 => s as u64,
        Some(s) => {
            return Err(Error::invalid_argument(format!(
                "--hello-stop-timeout {s} must be at least 1 second"
            )));
        }
    };
    Ok(HelloConfig {
        command,
        address: flags.string_or("hello-address", "127.0.0.1")?,
        ssh_user: flags.string_or("hello-ssh-user", "root")?,
        ssh_port: port(flags, "hello-ssh-port", 0, true)?,
        engine_port: port(flags, "hello-engine-port", 2376, false)?,
        stop_timeout,
    })
}

/// The machine's config: what machine sent, or, when it sent none (a
/// `machine rm -f` after a failed create), the driver's own record.
fn config_of(m: &Machine) -> Result<HelloConfig> {
    if !m.config_json.is_empty() {
        return m.config();
    }
    match std::fs::read_to_string(host::path(&m.dir, host::RECORD)) {
        Ok(text) => Ok(serde_json::from_str(&text)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(no_host(m)),
        Err(e) => Err(e.into()),
    }
}

fn no_host(m: &Machine) -> Error {
    Error::not_found(format!("there is no hello host for machine `{}`", m.name))
}

fn host_port(address: &str, port: u16) -> String {
    if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

/// Starts the command and maps what happened to the driver's errors.
fn start_host(m: &Machine, cfg: &HelloConfig) -> Result<()> {
    let mut env = vec![
        ("MACHINE_NAME", m.name.clone()),
        ("MACHINE_DIR", m.dir.display().to_string()),
        ("HELLO_ADDRESS", cfg.address.clone()),
        ("HELLO_SSH_PORT", cfg.ssh_port.to_string()),
        ("HELLO_ENGINE_PORT", cfg.engine_port.to_string()),
    ];
    let keys = host::path(&m.dir, host::AUTHORIZED_KEYS);
    if keys.exists() {
        env.push(("HELLO_AUTHORIZED_KEYS", keys.display().to_string()));
    }
    let started = host::start(&m.dir, &cfg.command, &env)
        .map_err(|e| Error::context(ErrorKind::Internal, "cannot run the command", e))?;
    match started {
        host::Started::Running { pgid } => {
            tracing::info!(machine = %m.name, pgid, "host started");
            Ok(())
        }
        host::Started::AlreadyRunning => Ok(()),
        host::Started::ExitedAtOnce { status } => {
            let last = host::last_output(&m.dir);
            let mut message = format!("the host's command ended at once ({status})");
            if !last.is_empty() {
                message.push_str(&format!(": {last}"));
            }
            Err(Error::failed_precondition(message).with_hint(format!(
                "its output is in {}; the command must keep running in the foreground \
                 (no `&`, no daemon mode)",
                host::path(&m.dir, host::LOG).display()
            )))
        }
    }
}

/// Stops the host: SIGTERM, then SIGKILL after `grace`.
async fn stop_host(m: &Machine, grace: Duration) -> Result<()> {
    host::signal(&m.dir, libc::SIGTERM)?;
    if !host::wait_stopped(&m.dir, grace).await? {
        tracing::warn!(
            machine = %m.name,
            "the host did not stop within {}s of SIGTERM; killing it",
            grace.as_secs()
        );
        kill_host(m).await?;
    }
    host::forget_pid(&m.dir)?;
    Ok(())
}

async fn kill_host(m: &Machine) -> Result<()> {
    host::signal(&m.dir, libc::SIGKILL)?;
    if !host::wait_stopped(&m.dir, KILL_WAIT).await? {
        return Err(Error::internal(format!(
            "the host of machine `{}` still runs {}s after SIGKILL",
            m.name,
            KILL_WAIT.as_secs()
        ))
        .with_hint("a process of it may have left its process group; look for it with `ps`"));
    }
    host::forget_pid(&m.dir)?;
    Ok(())
}

#[async_trait]
impl Driver for Hello {
    fn info(&self) -> DriverInfo {
        DriverInfo {
            // The binary is machine-driver-hello, so the name is `hello`.
            name: "hello".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "hosts that are local processes run by a command of yours".into(),
            // Announce only what is implemented: machine asks the driver
            // for nothing else, and the SDK answers UNIMPLEMENTED for it.
            capabilities: Capability::ALL.to_vec(),
        }
    }

    async fn create_flags(&self) -> Result<Vec<Flag>> {
        // Every name starts with `hello-`, so none collides with create's
        // own flags or another driver's.
        Ok(vec![
            Flag::string(
                "hello-command",
                "command that runs the host in the foreground (run with /bin/sh -c in the machine's directory)",
            )
            .env("HELLO_COMMAND")
            .required(),
            Flag::string("hello-address", "address the host is reached at")
                .default_value("127.0.0.1")
                .env("HELLO_ADDRESS"),
            Flag::int(
                "hello-ssh-port",
                "SSH port of the host; 0: no SSH, machine does not provision Docker",
            )
            .default_value(0)
            .env("HELLO_SSH_PORT"),
            Flag::string("hello-ssh-user", "SSH user")
                .default_value("root")
                .env("HELLO_SSH_USER"),
            Flag::int("hello-engine-port", "port Docker listens on")
                .default_value(2376)
                .env("HELLO_ENGINE_PORT"),
            Flag::int(
                "hello-stop-timeout",
                "seconds `stop` waits after SIGTERM before it kills the host",
            )
            .default_value(30),
        ])
    }

    async fn pre_create_check(&self, req: &CreateRequest) -> Result<Vec<String>> {
        let cfg = parse(&req.flags)?;
        let mut warnings = Vec::new();
        if cfg.ssh_port == 0 {
            warnings.push(format!(
                "no --hello-ssh-port: machine will not set Docker up on this host; \
                 Docker must already listen at tcp://{}",
                host_port(&cfg.address, cfg.engine_port)
            ));
        }
        Ok(warnings)
    }

    async fn create(&self, req: CreateRequest, progress: Progress) -> Result<Config> {
        let cfg = parse(&req.flags)?;
        let m = &req.machine;
        if host::running(&m.dir)? {
            return Err(Error::already_exists(format!(
                "a hello host for machine `{}` is already running",
                m.name
            ))
            .with_hint(format!("remove it first: machine rm -f {}", m.name)));
        }
        progress.step("writing the host's record").await;
        std::fs::create_dir_all(&m.dir)?;
        if !req.ssh_public_key.is_empty() {
            std::fs::write(
                host::path(&m.dir, host::AUTHORIZED_KEYS),
                format!("{}\n", req.ssh_public_key.trim_end()),
            )?;
        }
        let config = Config::of(&cfg)?;
        std::fs::write(host::path(&m.dir, host::RECORD), &config.0)?;
        progress
            .step(format!("starting the host: {}", cfg.command))
            .await;
        start_host(m, &cfg)?;
        Ok(config)
    }

    async fn remove(&self, m: &Machine) -> Result<()> {
        // Idempotent: no host, nothing to do, and that is success.
        if host::running(&m.dir)? {
            kill_host(m).await?;
        }
        host::remove_files(&m.dir)?;
        Ok(())
    }

    async fn state(&self, m: &Machine) -> Result<Status> {
        if !host::path(&m.dir, host::RECORD).exists() {
            // Answered, not failed: the host does not exist.
            return Ok(State::NotFound.into());
        }
        if host::running(&m.dir)? {
            return Ok(State::Running.into());
        }
        // Stopped on its own (not through machine): say why, if it said.
        let detail = if host::was_started(&m.dir) {
            let last = host::last_output(&m.dir);
            format!(
                "the host's command ended{}{last}",
                if last.is_empty() { "" } else { ": " }
            )
        } else {
            String::new()
        };
        Ok(Status {
            state: State::Stopped,
            detail,
        })
    }

    async fn connection(&self, m: &Machine) -> Result<Connection> {
        let cfg = config_of(m)?;
        let has_ssh = cfg.ssh_port != 0;
        Ok(Connection {
            ip: cfg.address.clone(),
            ssh_host: if has_ssh {
                cfg.address.clone()
            } else {
                String::new()
            },
            ssh_port: cfg.ssh_port,
            ssh_user: cfg.ssh_user.clone(),
            // None: machine's own key for the machine, which the command
            // can install from HELLO_AUTHORIZED_KEYS.
            ssh_key_path: None,
            docker_url: format!("tcp://{}", host_port(&cfg.address, cfg.engine_port)),
        })
    }

    // Optional operations. Each returns a new config only when it changed
    // one (none of these does).

    async fn start(&self, m: &Machine) -> Result<Option<Config>> {
        let cfg = config_of(m)?;
        start_host(m, &cfg)?;
        Ok(None)
    }

    async fn stop(&self, m: &Machine) -> Result<Option<Config>> {
        let cfg = config_of(m)?;
        stop_host(m, Duration::from_secs(cfg.stop_timeout)).await?;
        Ok(None)
    }

    async fn restart(&self, m: &Machine) -> Result<Option<Config>> {
        let cfg = config_of(m)?;
        stop_host(m, Duration::from_secs(cfg.stop_timeout)).await?;
        start_host(m, &cfg)?;
        Ok(None)
    }

    async fn kill(&self, m: &Machine) -> Result<Option<Config>> {
        config_of(m)?;
        kill_host(m).await?;
        Ok(None)
    }
}

fn main() -> std::process::ExitCode {
    // serve() does the whole plugin protocol: run by hand it explains
    // itself; started by machine it shakes hands, serves until machine
    // lets it go, and logs `tracing` events as JSON lines on stderr.
    machine_driver_sdk::serve(Hello)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(pairs: &[(&str, &str)]) -> FlagValues {
        let mut f = FlagValues::default();
        for (k, v) in pairs {
            f.insert_string(k, v);
        }
        f
    }

    #[test]
    fn parses_flags_with_defaults() {
        let cfg = parse(&flags(&[("hello-command", "exec sleep 9")])).unwrap();
        assert_eq!(cfg.address, "127.0.0.1");
        assert_eq!(
            (cfg.ssh_port, cfg.engine_port, cfg.stop_timeout),
            (0, 2376, 30)
        );
    }

    #[test]
    fn bad_flags_say_what_to_do() {
        let e = parse(&flags(&[])).unwrap_err();
        assert!(e.message.contains("--hello-command"), "{e}");
        assert!(e.hint.is_some());
        let e = parse(&flags(&[
            ("hello-command", "x"),
            ("hello-engine-port", "0"),
        ]))
        .unwrap_err();
        assert_eq!(e.message, "--hello-engine-port 0 is not a port (1-65535)");
        let e = parse(&flags(&[
            ("hello-command", "x"),
            ("hello-ssh-port", "70000"),
        ]))
        .unwrap_err();
        assert_eq!(e.message, "--hello-ssh-port 70000 is not a port (0-65535)");
    }

    #[test]
    fn brackets_ipv6_addresses() {
        assert_eq!(host_port("::1", 2376), "[::1]:2376");
        assert_eq!(host_port("10.0.0.5", 22), "10.0.0.5:22");
    }
}
