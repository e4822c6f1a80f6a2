//! A complete driver in one file: "hosts" that are directories under a
//! root, each "running" or "stopped". Nothing real is created, but every
//! part of the protocol is exercised, so it passes the conformance kit.
//!
//! ```sh
//! cargo build -p machine-driver-sdk --example machine-driver-example
//! machine driver info ./target/debug/examples/machine-driver-example
//! ```

use std::path::PathBuf;

use machine_driver_sdk::{
    Capability, Config, Connection, CreateRequest, Driver, DriverInfo, Error, Flag, Machine,
    Progress, Result, State, Status, async_trait,
};
use serde::{Deserialize, Serialize};

/// What the driver remembers about each machine, in the store's config.json.
#[derive(Debug, Serialize, Deserialize)]
struct ExampleConfig {
    address: String,
}

#[derive(Debug)]
struct Example;

fn marker(m: &Machine) -> PathBuf {
    m.dir.join("example-host")
}

#[async_trait]
impl Driver for Example {
    fn info(&self) -> DriverInfo {
        DriverInfo {
            name: "example".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "an example driver whose hosts are directories".into(),
            capabilities: vec![Capability::Start, Capability::Stop],
        }
    }

    async fn create_flags(&self) -> Result<Vec<Flag>> {
        Ok(vec![
            Flag::string("example-address", "the address the host pretends to have")
                .default_value("127.0.0.1")
                .env("EXAMPLE_ADDRESS"),
        ])
    }

    async fn create(&self, req: CreateRequest, progress: Progress) -> Result<Config> {
        let address = req.flags.string_or("example-address", "127.0.0.1")?;
        if address.parse::<std::net::IpAddr>().is_err() {
            return Err(Error::invalid_argument(format!(
                "--example-address {address:?} is not an IP address"
            )));
        }
        progress.step("making the host").await;
        std::fs::create_dir_all(&req.machine.dir)?;
        std::fs::write(marker(&req.machine), "running")?;
        Config::of(&ExampleConfig { address })
    }

    async fn remove(&self, m: &Machine) -> Result<()> {
        match std::fs::remove_file(marker(m)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn state(&self, m: &Machine) -> Result<Status> {
        Ok(match std::fs::read_to_string(marker(m)).ok().as_deref() {
            None => State::NotFound,
            Some("running") => State::Running,
            Some(_) => State::Stopped,
        }
        .into())
    }

    async fn connection(&self, m: &Machine) -> Result<Connection> {
        let cfg: ExampleConfig = m.config()?;
        Ok(Connection {
            ip: cfg.address.clone(),
            ssh_host: cfg.address.clone(),
            ssh_port: 22,
            ssh_user: "root".into(),
            ssh_key_path: None,
            docker_url: format!("tcp://{}:2376", cfg.address),
        })
    }

    async fn start(&self, m: &Machine) -> Result<Option<Config>> {
        std::fs::write(marker(m), "running")?;
        Ok(None)
    }

    async fn stop(&self, m: &Machine) -> Result<Option<Config>> {
        std::fs::write(marker(m), "stopped")?;
        Ok(None)
    }
}

fn main() -> std::process::ExitCode {
    machine_driver_sdk::serve(Example)
}
