//! A test driver that behaves like a real one until told to misbehave.
//!
//! Without faults it keeps each machine as a small state file in the
//! machine's directory and supports the whole lifecycle, so it passes the
//! SDK's conformance kit. Faults come from the `MACHINE_FAULT` environment
//! variable (for the whole process) or the `--fault-inject` create flag (for
//! one machine), as comma-separated items:
//!
//! | item | effect |
//! | --- | --- |
//! | `handshake=garbage` | prints a line that is not a handshake, then waits |
//! | `handshake=none` | prints nothing and waits forever |
//! | `handshake=exit` | writes an error on stderr and exits 3 before the handshake |
//! | `protocol=N` | announces application protocol version N |
//! | `crash=RPC` | aborts the process inside RPC (e.g. `crash=GetState`) |
//! | `hang=RPC` | never answers RPC |
//! | `fail=RPC` | answers RPC with an error carrying a hint |
//! | `stdout=RPC` | prints to stdout inside RPC, then answers normally |
//!
//! RPC names are the protocol's (GetInfo is answered by the SDK itself, so
//! it cannot be made to fail here): GetCreateFlags, PreCreateCheck,
//! Create, Remove, Start, Stop, Restart, Kill, GetState, GetConnection.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use machine_driver_sdk::{
    Capability, Config, Connection, CreateRequest, Driver, DriverInfo, Error, Flag, Machine,
    Progress, Result, State, Status, async_trait,
};
use serde::{Deserialize, Serialize};

/// The environment variable with process-wide faults.
pub const ENV_FAULT: &str = "MACHINE_FAULT";
const STATE_FILE: &str = "fault-state.json";

/// One injected fault.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fault {
    HandshakeGarbage,
    HandshakeNone,
    HandshakeExit,
    Protocol(u32),
    Crash(String),
    Hang(String),
    Fail(String),
    Stdout(String),
}

fn parse_faults(spec: &str) -> Vec<Fault> {
    spec.split(',')
        .filter_map(|item| {
            let (k, v) = item.trim().split_once('=')?;
            Some(match (k, v) {
                ("handshake", "garbage") => Fault::HandshakeGarbage,
                ("handshake", "none") => Fault::HandshakeNone,
                ("handshake", "exit") => Fault::HandshakeExit,
                ("protocol", n) => Fault::Protocol(n.parse().ok()?),
                ("crash", rpc) => Fault::Crash(rpc.to_owned()),
                ("hang", rpc) => Fault::Hang(rpc.to_owned()),
                ("fail", rpc) => Fault::Fail(rpc.to_owned()),
                ("stdout", rpc) => Fault::Stdout(rpc.to_owned()),
                _ => return None,
            })
        })
        .collect()
}

fn process_faults() -> Vec<Fault> {
    std::env::var(ENV_FAULT)
        .map(|s| parse_faults(&s))
        .unwrap_or_default()
}

/// What the driver keeps per machine.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct FaultConfig {
    #[serde(default)]
    faults: String,
    ssh_port: u16,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
enum Recorded {
    Running,
    Stopped,
}

/// The driver.
#[derive(Debug, Default)]
pub struct FaultDriver;

impl FaultDriver {
    /// Applies the faults for `rpc`, from the process and from the machine.
    async fn inject(&self, rpc: &str, machine: Option<&Machine>) -> Result<()> {
        let mut faults = process_faults();
        if let Some(m) = machine
            && let Ok(cfg) = serde_json::from_str::<FaultConfig>(&m.config_json)
        {
            faults.extend(parse_faults(&cfg.faults));
        }
        for fault in faults {
            match fault {
                Fault::Crash(r) if r == rpc => {
                    eprintln!("fault: crashing inside {rpc} as asked");
                    std::process::abort();
                }
                Fault::Hang(r) if r == rpc => {
                    eprintln!("fault: hanging inside {rpc} as asked");
                    std::future::pending::<()>().await;
                }
                Fault::Fail(r) if r == rpc => {
                    return Err(Error::unavailable(format!("injected failure in {rpc}"))
                        .with_hint("unset MACHINE_FAULT"));
                }
                Fault::Stdout(r) if r == rpc => {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "fault: stray stdout output inside {rpc}");
                    let _ = out.flush();
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn state_path(dir: &Path) -> PathBuf {
    dir.join(STATE_FILE)
}

fn read_state(dir: &Path) -> Result<Option<Recorded>> {
    match std::fs::read(state_path(dir)) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn write_state(dir: &Path, state: Recorded) -> Result<()> {
    let tmp = dir.join(format!("{STATE_FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec(&state)?)?;
    std::fs::rename(&tmp, state_path(dir))?;
    Ok(())
}

fn existing(m: &Machine) -> Result<Recorded> {
    read_state(&m.dir)?
        .ok_or_else(|| Error::not_found(format!("fault host `{}` does not exist", m.name)))
}

#[async_trait]
impl Driver for FaultDriver {
    fn info(&self) -> DriverInfo {
        DriverInfo {
            name: "fault".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "a test driver that misbehaves on request".into(),
            capabilities: Capability::ALL.to_vec(),
        }
    }

    async fn create_flags(&self) -> Result<Vec<Flag>> {
        self.inject("GetCreateFlags", None).await?;
        Ok(vec![
            Flag::string(
                "fault-inject",
                "faults for this machine (see the driver's docs)",
            )
            .env("FAULT_INJECT"),
            Flag::int(
                "fault-ssh-port",
                "the SSH port to report (0: the host has no SSH)",
            )
            .default_value(0),
        ])
    }

    async fn pre_create_check(&self, req: &CreateRequest) -> Result<Vec<String>> {
        self.inject("PreCreateCheck", None).await?;
        if let Some(port) = req.flags.int("fault-ssh-port")?
            && !(0..=65535).contains(&port)
        {
            return Err(Error::invalid_argument(format!(
                "--fault-ssh-port {port} is not a port number (0-65535)"
            )));
        }
        Ok(Vec::new())
    }

    async fn create(&self, req: CreateRequest, progress: Progress) -> Result<Config> {
        self.inject("Create", None).await?;
        let faults = req.flags.string_or("fault-inject", "")?;
        let ssh_port = req.flags.int("fault-ssh-port")?.unwrap_or(0);
        let ssh_port = u16::try_from(ssh_port).ok().ok_or_else(|| {
            Error::invalid_argument(format!(
                "--fault-ssh-port {ssh_port} is not a port number (0-65535)"
            ))
        })?;
        if read_state(&req.machine.dir)?.is_some() {
            return Err(Error::already_exists(format!(
                "fault host `{}` already exists",
                req.machine.name
            )));
        }
        progress.step("pretending to boot").await;
        std::fs::create_dir_all(&req.machine.dir)?;
        write_state(&req.machine.dir, Recorded::Running)?;
        Config::of(&FaultConfig { faults, ssh_port })
    }

    async fn remove(&self, m: &Machine) -> Result<()> {
        self.inject("Remove", Some(m)).await?;
        match std::fs::remove_file(state_path(&m.dir)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn state(&self, m: &Machine) -> Result<Status> {
        self.inject("GetState", Some(m)).await?;
        Ok(match read_state(&m.dir)? {
            None => State::NotFound,
            Some(Recorded::Running) => State::Running,
            Some(Recorded::Stopped) => State::Stopped,
        }
        .into())
    }

    async fn connection(&self, m: &Machine) -> Result<Connection> {
        self.inject("GetConnection", Some(m)).await?;
        existing(m)?;
        let cfg: FaultConfig = m.config()?;
        // Without a port the host has no SSH, so nothing is provisioned.
        let ssh_host = if cfg.ssh_port == 0 { "" } else { "127.0.0.1" };
        Ok(Connection {
            ip: "127.0.0.1".into(),
            ssh_host: ssh_host.into(),
            ssh_port: cfg.ssh_port,
            ssh_user: "root".into(),
            ssh_key_path: None,
            docker_url: "tcp://127.0.0.1:2376".into(),
        })
    }

    async fn start(&self, m: &Machine) -> Result<Option<Config>> {
        self.inject("Start", Some(m)).await?;
        existing(m)?;
        write_state(&m.dir, Recorded::Running)?;
        Ok(None)
    }

    async fn stop(&self, m: &Machine) -> Result<Option<Config>> {
        self.inject("Stop", Some(m)).await?;
        existing(m)?;
        write_state(&m.dir, Recorded::Stopped)?;
        Ok(None)
    }

    async fn restart(&self, m: &Machine) -> Result<Option<Config>> {
        self.inject("Restart", Some(m)).await?;
        existing(m)?;
        write_state(&m.dir, Recorded::Running)?;
        Ok(None)
    }

    async fn kill(&self, m: &Machine) -> Result<Option<Config>> {
        self.inject("Kill", Some(m)).await?;
        existing(m)?;
        write_state(&m.dir, Recorded::Stopped)?;
        Ok(None)
    }
}

/// The binary's entry point: handshake faults happen here, before serving.
pub fn main() -> ExitCode {
    use machine_driver_sdk::proto::handshake::{MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE};
    let started_by_host = std::env::var(MAGIC_COOKIE_KEY).as_deref() == Ok(MAGIC_COOKIE_VALUE);
    if started_by_host {
        for fault in process_faults() {
            match fault {
                Fault::HandshakeGarbage => {
                    println!("Welcome to the fault driver! Nothing to see here.");
                    return wait_for_host();
                }
                Fault::HandshakeNone => return wait_forever(),
                Fault::HandshakeExit => {
                    eprintln!("fault: cannot open /dev/fault0: permission denied");
                    return ExitCode::from(3);
                }
                Fault::Protocol(v) => {
                    println!("1|{v}|unix|/nonexistent/fault.sock|grpc");
                    return wait_for_host();
                }
                _ => {}
            }
        }
    }
    machine_driver_sdk::serve(FaultDriver)
}

/// Waits until the host closes stdin, like a well-behaved plugin.
fn wait_for_host() -> ExitCode {
    let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
    ExitCode::SUCCESS
}

/// Ignores stdin's end and signals that ask politely: only SIGKILL ends it.
fn wait_forever() -> ExitCode {
    // SAFETY: setting signal dispositions to "ignore" has no preconditions.
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
    loop {
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fault_lists() {
        assert_eq!(
            parse_faults("crash=GetState, hang=Create,protocol=99,nonsense,handshake=exit"),
            vec![
                Fault::Crash("GetState".into()),
                Fault::Hang("Create".into()),
                Fault::Protocol(99),
                Fault::HandshakeExit,
            ]
        );
    }
}
