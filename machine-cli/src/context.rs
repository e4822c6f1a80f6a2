//! What every command needs: the store and the driver host.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::driver_host::{DriverHost, DriverSearch};
use crate::store::Store;

/// Shared state of one CLI run.
#[derive(Debug)]
pub struct Context {
    pub store: Store,
    pub host: DriverHost,
    pub debug: bool,
}

/// `--storage-path`/`$MACHINE_STORAGE_PATH`, else the platform's data
/// directory (`~/.local/share/machine` on Linux).
pub fn storage_path(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let from_env = std::env::var_os("MACHINE_STORAGE_PATH")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    match given.map(Path::to_owned).or(from_env) {
        Some(p) => std::path::absolute(&p).with_context(|| format!("storage path {}", p.display())),
        None => directories::ProjectDirs::from("", "", "machine")
            .map(|d| d.data_dir().to_owned())
            .context("cannot find a home directory for the store; set MACHINE_STORAGE_PATH or pass --storage-path"),
    }
}

impl Context {
    pub fn new(storage: PathBuf, debug: bool) -> anyhow::Result<Self> {
        let store = Store::new(storage);
        let host = DriverHost::new(DriverSearch::new(store.drivers_dir()), debug)?;
        Ok(Self { store, host, debug })
    }
}
