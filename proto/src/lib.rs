//! The machine driver plugin protocol.
//!
//! This crate is the contract between the `machine` CLI and its driver
//! plugins, and nothing more:
//!
//! - [`driver::v1`]: the gRPC service every driver serves (generated from
//!   `proto/machine/driver/v1/driver.proto`);
//! - [`plugin`]: the controller service shared with hashicorp/go-plugin;
//! - [`handshake`]: the environment variables, the one stdout line and the
//!   version negotiation that start every plugin process;
//! - [`log`]: the structured log lines a driver writes on stderr;
//! - [`client`] (feature `client`): the host side, which launches a driver
//!   binary, reads its handshake and connects to it.
//!
//! See `docs/protocol.md` for the whole protocol in prose.

pub mod handshake;
pub mod log;

#[cfg(feature = "client")]
pub mod client;

/// The driver service, one module per protocol version.
pub mod driver {
    /// Protocol version 1: package `machine.driver.v1`.
    pub mod v1 {
        #![allow(missing_docs, unreachable_pub, clippy::all, rust_2018_idioms)]
        tonic::include_proto!("machine.driver.v1");
    }
}

/// The go-plugin compatible controller service (package `plugin`).
pub mod plugin {
    #![allow(missing_docs, unreachable_pub, clippy::all, rust_2018_idioms)]
    tonic::include_proto!("plugin");
}

pub use driver::v1;
