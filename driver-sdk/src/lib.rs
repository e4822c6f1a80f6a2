//! Write `machine` driver plugins in Rust.
//!
//! A driver is a program named `machine-driver-<provider>` that knows how to
//! create, start, stop and remove hosts on one provider. `machine` starts
//! it, talks to it over gRPC (protocol `machine.driver.v1`), and does
//! everything Docker-related itself. This crate does the plugin plumbing:
//! implement [`Driver`], call [`serve`] from `main`, done.
//!
//! ```no_run
//! use machine_driver_sdk::{
//!     async_trait, Config, Connection, CreateRequest, Driver, DriverInfo, Error, Flag,
//!     Machine, Progress, Result, State, Status,
//! };
//!
//! struct Static;
//!
//! #[async_trait]
//! impl Driver for Static {
//!     fn info(&self) -> DriverInfo {
//!         DriverInfo {
//!             name: "static".into(),
//!             version: env!("CARGO_PKG_VERSION").into(),
//!             description: "an existing host at a fixed address".into(),
//!             capabilities: vec![],
//!         }
//!     }
//!
//!     async fn create_flags(&self) -> Result<Vec<Flag>> {
//!         Ok(vec![Flag::string("static-ip", "the host's address").required()])
//!     }
//!
//!     async fn create(&self, req: CreateRequest, progress: Progress) -> Result<Config> {
//!         let ip = req.flags.string("static-ip")?
//!             .ok_or_else(|| Error::invalid_argument("--static-ip is required"))?;
//!         progress.step("remembering the address").await;
//!         Config::of(&serde_json::json!({ "ip": ip }))
//!     }
//!
//!     async fn remove(&self, _m: &Machine) -> Result<()> { Ok(()) }
//!
//!     async fn state(&self, _m: &Machine) -> Result<Status> { Ok(State::Running.into()) }
//!
//!     async fn connection(&self, m: &Machine) -> Result<Connection> {
//!         let cfg: serde_json::Value = m.config()?;
//!         let ip = cfg["ip"].as_str().unwrap_or_default().to_owned();
//!         Ok(Connection {
//!             docker_url: format!("tcp://{ip}:2376"),
//!             ssh_host: ip.clone(),
//!             ssh_port: 22,
//!             ssh_user: "root".into(),
//!             ip,
//!             ssh_key_path: None,
//!         })
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     machine_driver_sdk::serve(Static)
//! }
//! ```
//!
//! A complete, runnable driver is `examples/machine-driver-example.rs`
//! (`cargo build -p machine-driver-sdk --example machine-driver-example`,
//! then `machine driver info ./target/debug/examples/machine-driver-example`).
//! With the `conformance` feature, [`conformance`] runs any driver binary
//! through the protocol's lifecycle and error cases from your own tests.

mod driver;
mod error;
mod flags;
mod logging;
mod serve;
mod service;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use async_trait::async_trait;
pub use driver::{
    Capability, Config, Connection, CreateRequest, Driver, DriverInfo, Machine, Progress, State,
    Status,
};
pub use error::{Error, ErrorKind, Result};
pub use flags::{Flag, FlagType, FlagValues};
pub use logging::ENV_LOG;
pub use machine_proto as proto;
pub use serve::serve;

/// This SDK's name, reported in GetInfo.
pub const SDK_NAME: &str = "machine-driver-sdk (rust)";
/// This SDK's version, reported in GetInfo.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");
/// Application protocol versions this SDK serves.
pub const PROTOCOL_VERSIONS: &[u32] = machine_proto::handshake::APP_PROTOCOL_VERSIONS;
