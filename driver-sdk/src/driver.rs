//! The [`Driver`] trait a driver implements, and the types its operations
//! take and return.

use std::path::PathBuf;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::flags::{Flag, FlagValues};

/// Optional operations; announce the ones you implement in [`DriverInfo`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    Start,
    Stop,
    Restart,
    Kill,
}

impl Capability {
    /// Every optional operation, for a driver that implements them all.
    pub const ALL: [Capability; 4] = [
        Capability::Start,
        Capability::Stop,
        Capability::Restart,
        Capability::Kill,
    ];
}

/// Who the driver is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverInfo {
    /// The provider name: `qemu` for the binary `machine-driver-qemu`.
    pub name: String,
    /// The driver's own version, usually `env!("CARGO_PKG_VERSION")`.
    pub version: String,
    pub description: String,
    pub capabilities: Vec<Capability>,
}

/// The lifecycle state of a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Running,
    Stopped,
    Starting,
    Stopping,
    Paused,
    Saved,
    Error,
    /// The provider has no such host.
    NotFound,
}

/// A state with an optional reason (required in spirit for [`State::Error`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub state: State,
    pub detail: String,
}

impl From<State> for Status {
    fn from(state: State) -> Self {
        Status {
            state,
            detail: String::new(),
        }
    }
}

/// The machine an operation is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub name: String,
    /// The machine's directory in the store; the driver may keep files here.
    pub dir: PathBuf,
    /// The driver's config for this machine, as JSON text ("" before create).
    pub config_json: String,
}

impl Machine {
    /// Parses the driver's config into its own type.
    pub fn config<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(&self.config_json).map_err(|e| {
            Error::internal(format!(
                "the stored config of machine `{}` is not what this driver expects: {e}",
                self.name
            ))
            .with_hint("was the machine created by another version of this driver?")
        })
    }
}

/// A create (or pre-create check) request.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateRequest {
    pub machine: Machine,
    pub flags: FlagValues,
    /// The machine's SSH public key, in authorized_keys form.
    pub ssh_public_key: String,
    /// The private key's path in the store.
    pub ssh_private_key_path: PathBuf,
}

/// The driver's config to store, from create or from an operation that
/// changed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config(pub String);

impl Config {
    /// Serializes the driver's own config type.
    pub fn of<T: Serialize>(value: &T) -> Result<Self> {
        Ok(Config(serde_json::to_string(value)?))
    }
}

/// How to reach a host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Connection {
    /// Address users reach the host at (`machine ip`).
    pub ip: String,
    pub ssh_host: String,
    pub ssh_port: u16,
    pub ssh_user: String,
    /// Empty: the CLI's own key for the machine.
    pub ssh_key_path: Option<PathBuf>,
    /// e.g. `tcp://127.0.0.1:2376`.
    pub docker_url: String,
}

/// Sends progress during [`Driver::create`]; shown by the CLI.
#[derive(Debug, Clone)]
pub struct Progress {
    tx: mpsc::Sender<(String, f64)>,
}

impl Progress {
    pub(crate) fn new(tx: mpsc::Sender<(String, f64)>) -> Self {
        Self { tx }
    }

    /// A progress sink that drops everything, for tests.
    pub fn discard() -> Self {
        let (tx, _rx) = mpsc::channel(1);
        Self { tx }
    }

    /// Says what the driver is doing now.
    pub async fn step(&self, message: impl Into<String>) {
        let _ = self.tx.send((message.into(), -1.0)).await;
    }

    /// Says how far a long step is, `fraction` in [0, 1].
    pub async fn fraction(&self, message: impl Into<String>, fraction: f64) {
        let _ = self
            .tx
            .send((message.into(), fraction.clamp(0.0, 1.0)))
            .await;
    }
}

/// A machine driver: one provider's way to create and manage hosts.
///
/// Every operation gets the whole [`Machine`] (name, directory and the
/// driver's stored config): keep no per-machine state in the process, one
/// process serves many machines. Optional operations default to
/// "unsupported"; announce the ones you implement in [`DriverInfo`].
#[async_trait]
pub trait Driver: Send + Sync + 'static {
    fn info(&self) -> DriverInfo;

    /// The flags `machine create -d <driver>` accepts.
    async fn create_flags(&self) -> Result<Vec<Flag>> {
        Ok(Vec::new())
    }

    /// Checks flags and the provider before anything is created.
    async fn pre_create_check(&self, _req: &CreateRequest) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// Creates the host and returns the config to store.
    async fn create(&self, req: CreateRequest, progress: Progress) -> Result<Config>;

    /// Removes the host; succeeds when it is already gone.
    async fn remove(&self, machine: &Machine) -> Result<()>;

    async fn state(&self, machine: &Machine) -> Result<Status>;

    async fn connection(&self, machine: &Machine) -> Result<Connection>;

    /// Returns a new config when starting changed it.
    async fn start(&self, _machine: &Machine) -> Result<Option<Config>> {
        Err(Error::unsupported("start"))
    }
    async fn stop(&self, _machine: &Machine) -> Result<Option<Config>> {
        Err(Error::unsupported("stop"))
    }
    async fn restart(&self, _machine: &Machine) -> Result<Option<Config>> {
        Err(Error::unsupported("restart"))
    }
    async fn kill(&self, _machine: &Machine) -> Result<Option<Config>> {
        Err(Error::unsupported("kill"))
    }
}
