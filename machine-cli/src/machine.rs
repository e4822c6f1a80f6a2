//! One machine as commands see it: its record in the store, its directory
//! and its driver, with the driver calls every command makes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use machine_proto::v1;

use crate::context::Context;
use crate::driver_host::{CallError, RunningDriver};
use crate::store::{MachineRecord, StoreError};

/// The name used when a command is given none, as in Docker Machine.
pub const DEFAULT_NAME: &str = "default";

/// A machine loaded from the store.
#[derive(Debug, Clone)]
pub struct Target {
    pub record: MachineRecord,
    pub dir: PathBuf,
}

/// A host's state as users see it (Docker Machine's words).
pub fn state_name(state: v1::State) -> &'static str {
    match state {
        v1::State::Running => "Running",
        v1::State::Stopped => "Stopped",
        v1::State::Starting => "Starting",
        v1::State::Stopping => "Stopping",
        v1::State::Paused => "Paused",
        v1::State::Saved => "Saved",
        v1::State::NotFound => "NotFound",
        v1::State::Error | v1::State::Unspecified => "Error",
    }
}

impl Target {
    pub fn load(ctx: &Context, name: &str) -> Result<Self, StoreError> {
        let record = ctx.store.load(name)?;
        Ok(Self {
            dir: ctx.store.machine_dir(name),
            record,
        })
    }

    pub fn name(&self) -> &str {
        &self.record.name
    }

    /// The machine as the protocol carries it.
    pub fn proto(&self) -> v1::Machine {
        v1::Machine {
            name: self.record.name.clone(),
            dir: self.dir.to_string_lossy().into_owned(),
            config_json: self.record.driver_config_json(),
        }
    }

    pub fn request(&self) -> v1::MachineRequest {
        v1::MachineRequest {
            machine: Some(self.proto()),
        }
    }

    /// The machine's driver, started if need be.
    pub async fn driver(&self, ctx: &Context) -> anyhow::Result<Arc<RunningDriver>> {
        ctx.host.get(&self.record.driver).await.map_err(|e| {
            anyhow::anyhow!("{e}").context(format!(
                "machine `{}` uses driver `{}`, which cannot be used",
                self.name(),
                self.record.driver
            ))
        })
    }

    /// The host's state from its driver, within `timeout`.
    pub async fn state(
        &self,
        driver: &RunningDriver,
        timeout: Duration,
    ) -> Result<v1::GetStateResponse, CallError> {
        driver
            .call(
                "GetState",
                || format!("cannot get the state of machine `{}`", self.name()),
                timeout,
                driver.client().get_state(self.request()),
            )
            .await
    }

    /// How to reach the host.
    pub async fn connection(
        &self,
        driver: &RunningDriver,
        timeout: Duration,
    ) -> Result<v1::GetConnectionResponse, CallError> {
        driver
            .call(
                "GetConnection",
                || format!("cannot get the address of machine `{}`", self.name()),
                timeout,
                driver.client().get_connection(self.request()),
            )
            .await
    }

    /// The connection of a machine that must be running (url, ip, env).
    pub async fn running_connection(
        &self,
        ctx: &Context,
    ) -> anyhow::Result<v1::GetConnectionResponse> {
        let driver = self.driver(ctx).await?;
        let state = self.state(&driver, driver.call_timeout()).await?;
        let state = state.state();
        if state != v1::State::Running {
            anyhow::bail!(
                "machine `{}` is not running (state: {})\n  hint: start it with `machine start {}`",
                self.name(),
                state_name(state),
                self.name()
            );
        }
        Ok(self.connection(&driver, driver.call_timeout()).await?)
    }
}

impl Target {
    /// Whether the machine was provisioned with TLS certificates.
    pub fn has_certs(&self) -> bool {
        self.dir.join("server.pem").is_file() && self.dir.join("ca.pem").is_file()
    }

    /// Checks, without touching the network, that the server certificate is
    /// still valid for the address in the machine's Docker URL: a host
    /// whose address changed (DHCP) needs new certificates, and saying so
    /// beats a TLS error from the docker client.
    pub fn check_certificate(&self, conn: &v1::GetConnectionResponse) -> anyhow::Result<()> {
        if !self.has_certs() {
            return Ok(());
        }
        let Some(host) = crate::provision::url_host(&conn.docker_url) else {
            return Ok(());
        };
        let read = |f: &str| {
            let p = self.dir.join(f);
            std::fs::read_to_string(&p)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))
        };
        let (cert, ca) = (read("server.pem")?, read("ca.pem")?);
        if !crate::certs::valid_for(&cert, &ca, &host) {
            anyhow::bail!(
                "machine `{0}` is now at {host}, but its certificate is not valid for that address (the address probably changed)\n  hint: run `machine regenerate-certs {0}`",
                self.name()
            );
        }
        Ok(())
    }
}

/// Names from the command line, or `default` when there are none.
pub fn names_or_default(names: Vec<String>) -> Vec<String> {
    if names.is_empty() {
        vec![DEFAULT_NAME.to_owned()]
    } else {
        names
    }
}

/// Loads a machine, with the error users need when it is missing.
pub fn load(ctx: &Context, name: &str) -> anyhow::Result<Target> {
    Ok(Target::load(ctx, name)?)
}
