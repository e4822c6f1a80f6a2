//! What every command needs: the store's location and the driver host.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::cli::Global;
use crate::driver_host::{DriverHost, DriverSearch};

/// Shared state of one CLI run.
#[derive(Debug)]
pub struct Context {
    pub storage: PathBuf,
    pub host: DriverHost,
    pub debug: bool,
}

/// `$MACHINE_STORAGE_PATH`, else the platform's data directory
/// (`~/.local/share/machine` on Linux).
pub fn default_storage() -> anyhow::Result<PathBuf> {
    directories::ProjectDirs::from("", "", "machine")
        .map(|d| d.data_dir().to_owned())
        .context("cannot find a home directory for the store; set MACHINE_STORAGE_PATH or pass --storage-path")
}

impl Context {
    pub fn new(global: &Global) -> anyhow::Result<Self> {
        let storage = match &global.storage_path {
            Some(p) => {
                std::path::absolute(p).with_context(|| format!("storage path {}", p.display()))?
            }
            None => default_storage()?,
        };
        let search = DriverSearch::new(storage.join("drivers"));
        let host = DriverHost::new(search, global.debug)?;
        Ok(Self {
            storage,
            host,
            debug: global.debug,
        })
    }
}
