//! What `config.json` holds for one machine, and its schema version.
//!
//! Paths in it are relative to the machine's directory, so a store can be
//! moved or copied. A record written by a newer `machine` (a higher schema
//! version) is refused rather than misread.

use serde::{Deserialize, Serialize};

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Where a machine is in its life, as far as the store knows. The host's
/// own state (running, stopped) comes from its driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// `create` is under way (or was interrupted: see the lock).
    Creating,
    /// Created (and provisioned, where the driver allows it).
    #[default]
    Ready,
    /// Something failed; `error` says what.
    Failed,
}

/// Docker engine options given at create time (`--engine-*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct EngineOptions {
    /// Extra dockerd flags (`--engine-opt`), without leading dashes.
    pub opts: Vec<String>,
    pub labels: Vec<String>,
    pub env: Vec<String>,
    pub insecure_registries: Vec<String>,
    pub registry_mirrors: Vec<String>,
    pub storage_driver: String,
    pub install_url: String,
    pub install_method: String,
    /// Extra names and addresses for the server certificate (`--tls-san`).
    pub tls_san: Vec<String>,
}

/// How Docker got onto the host, so `upgrade` can do it the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DockerInstall {
    /// Not provisioned (yet), or a driver without SSH.
    #[default]
    Unknown,
    /// Docker was on the host before provisioning.
    Preinstalled,
    /// The distribution's package.
    Package,
    /// The install script at `engine.install_url`.
    Script,
}

/// One machine's `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineRecord {
    pub schema_version: u32,
    pub name: String,
    pub driver: String,
    /// The driver's own config, opaque to us.
    #[serde(default)]
    pub driver_config: serde_json::Value,
    #[serde(default)]
    pub phase: Phase,
    /// What failed, when `phase` is `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Seconds since the Unix epoch.
    #[serde(default)]
    pub created_at: u64,
    #[serde(default)]
    pub engine: EngineOptions,
    #[serde(default)]
    pub docker: DockerInstall,
}

impl MachineRecord {
    pub fn new(name: &str, driver: &str) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            name: name.to_owned(),
            driver: driver.to_owned(),
            driver_config: serde_json::Value::Null,
            phase: Phase::Creating,
            error: None,
            created_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default(),
            engine: EngineOptions::default(),
            docker: DockerInstall::Unknown,
        }
    }

    /// The driver config as the text the protocol carries.
    pub fn driver_config_json(&self) -> String {
        match &self.driver_config {
            serde_json::Value::Null => String::new(),
            v => v.to_string(),
        }
    }

    /// Stores a driver config received as JSON text.
    pub fn set_driver_config(&mut self, json: &str) -> Result<(), serde_json::Error> {
        self.driver_config = if json.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(json)?
        };
        Ok(())
    }
}
