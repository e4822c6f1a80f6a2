//! The CLI's SSH client, built on russh: no ssh, scp or sftp binary is
//! needed on either side. One [`Session`] is one connection to a machine;
//! provisioning runs its commands ([`Session::run`], [`Session::sudo`]) and
//! copies its files ([`Session::upload`]) over it, and `machine ssh` attaches
//! the terminal to it ([`Session::interactive`]).
//!
//! Host keys are pinned per machine on first contact and a changed key is
//! refused ([`SshError::HostKeyChanged`]); machines get their own ed25519
//! key ([`generate_key`]).

mod error;
mod interactive;
mod keys;
mod known_hosts;
mod quote;
mod session;

pub use error::SshError;
pub use keys::{generate_key, public_key_of};
pub use known_hosts::fingerprint;
pub use quote::{shell_quote, sudo_command};
pub use session::{Output, Session, Target};
