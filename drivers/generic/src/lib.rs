//! The `generic` driver: adopts an existing host reachable over SSH, as
//! Docker Machine's generic driver did. Nothing is created at a provider;
//! `machine` provisions Docker on the host over SSH with the key the user
//! gives. The host's state is whether its SSH port accepts a connection.

use std::path::{Path, PathBuf};
use std::time::Duration;

use machine_driver_sdk::{
    Config, Connection, CreateRequest, Driver, DriverInfo, Error, Flag, Machine, Progress, Result,
    State, Status, async_trait,
};
use serde::{Deserialize, Serialize};

/// The driver.
#[derive(Debug, Default)]
pub struct GenericDriver;

/// The copy of the user's key kept in the machine's directory, so the
/// store stays complete when the original moves.
const KEY_FILE: &str = "id_generic";

#[derive(Debug, Serialize, Deserialize)]
struct GenericConfig {
    ip_address: String,
    ssh_user: String,
    ssh_port: u16,
    engine_port: u16,
}

fn port(flags: &machine_driver_sdk::FlagValues, name: &str, default: u16) -> Result<u16> {
    match flags.int(name)? {
        None => Ok(default),
        Some(p) => u16::try_from(p).ok().filter(|p| *p > 0).ok_or_else(|| {
            Error::invalid_argument(format!("--{name} {p} is not a port (1-65535)"))
        }),
    }
}

fn key_path(dir: &Path) -> PathBuf {
    dir.join(KEY_FILE)
}

struct Parsed {
    config: GenericConfig,
    key: PathBuf,
}

fn parse(req: &CreateRequest) -> Result<Parsed> {
    let ip = req
        .flags
        .string("generic-ip-address")?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            Error::invalid_argument("the generic driver needs --generic-ip-address").with_hint(
                "give the address of the host to adopt, e.g. --generic-ip-address 203.0.113.7",
            )
        })?;
    let key = req
        .flags
        .string("generic-ssh-key")?
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| {
            Error::invalid_argument("the generic driver needs --generic-ssh-key")
                .with_hint("give the private key that logs in to the host, e.g. --generic-ssh-key ~/.ssh/id_ed25519")
        })?;
    if !key.is_file() {
        return Err(Error::invalid_argument(format!(
            "--generic-ssh-key {}: no such file",
            key.display()
        )));
    }
    Ok(Parsed {
        config: GenericConfig {
            ip_address: ip,
            ssh_user: req.flags.string_or("generic-ssh-user", "root")?,
            ssh_port: port(&req.flags, "generic-ssh-port", 22)?,
            engine_port: port(&req.flags, "generic-engine-port", 2376)?,
        },
        key,
    })
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[async_trait]
impl Driver for GenericDriver {
    fn info(&self) -> DriverInfo {
        DriverInfo {
            name: "generic".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "an existing host reached over SSH".into(),
            capabilities: vec![],
        }
    }

    async fn create_flags(&self) -> Result<Vec<Flag>> {
        Ok(vec![
            Flag::string("generic-ip-address", "IP address or name of the host")
                .env("GENERIC_IP_ADDRESS")
                .required(),
            Flag::string("generic-ssh-user", "SSH user")
                .default_value("root")
                .env("GENERIC_SSH_USER"),
            Flag::string("generic-ssh-key", "private key that logs in to the host")
                .env("GENERIC_SSH_KEY")
                .required(),
            Flag::int("generic-ssh-port", "SSH port")
                .default_value(22)
                .env("GENERIC_SSH_PORT"),
            Flag::int("generic-engine-port", "port Docker will listen on")
                .default_value(2376)
                .env("GENERIC_ENGINE_PORT"),
        ])
    }

    async fn pre_create_check(&self, req: &CreateRequest) -> Result<Vec<String>> {
        parse(req)?;
        Ok(Vec::new())
    }

    async fn create(&self, req: CreateRequest, progress: Progress) -> Result<Config> {
        let Parsed { config, key } = parse(&req)?;
        progress
            .step(format!(
                "adopting {}",
                host_port(&config.ip_address, config.ssh_port)
            ))
            .await;
        std::fs::create_dir_all(&req.machine.dir)?;
        let bytes = std::fs::read(&key).map_err(|e| {
            Error::invalid_argument(format!(
                "cannot read --generic-ssh-key {}: {e}",
                key.display()
            ))
        })?;
        let dest = key_path(&req.machine.dir);
        write_private(&dest, &bytes)?;
        Config::of(&config)
    }

    async fn remove(&self, m: &Machine) -> Result<()> {
        // The host is someone else's: forget it, leave it running.
        match std::fs::remove_file(key_path(&m.dir)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn state(&self, m: &Machine) -> Result<Status> {
        if m.config_json.is_empty() {
            return Ok(State::NotFound.into());
        }
        let cfg: GenericConfig = m.config()?;
        // The Docker port first: accepting a connection costs dockerd
        // nothing, while sshd forks a child for each one (a few ms of CPU
        // on every `env`, `ls` and `url`). The SSH port decides for a host
        // whose Docker is not set up yet, as in Docker Machine.
        let docker = host_port(&cfg.ip_address, cfg.engine_port);
        if let Ok(Ok(_)) = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(&docker),
        )
        .await
        {
            return Ok(State::Running.into());
        }
        let addr = host_port(&cfg.ip_address, cfg.ssh_port);
        let dial = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(&addr),
        )
        .await;
        Ok(match dial {
            Ok(Ok(_)) => State::Running.into(),
            Ok(Err(e)) => Status {
                state: State::Stopped,
                detail: format!("{addr}: {e}"),
            },
            Err(_) => Status {
                state: State::Stopped,
                detail: format!("{addr}: no answer within 5s"),
            },
        })
    }

    async fn connection(&self, m: &Machine) -> Result<Connection> {
        let cfg: GenericConfig = m.config()?;
        Ok(Connection {
            ip: cfg.ip_address.clone(),
            ssh_host: cfg.ip_address.clone(),
            ssh_port: cfg.ssh_port,
            ssh_user: cfg.ssh_user,
            ssh_key_path: Some(key_path(&m.dir)),
            docker_url: format!("tcp://{}", host_port(&cfg.ip_address, cfg.engine_port)),
        })
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
