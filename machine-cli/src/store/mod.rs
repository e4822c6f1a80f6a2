//! The store: every machine's directory and `config.json`, the shared
//! certificates, and installed drivers, under one root
//! (`$MACHINE_STORAGE_PATH`, else the platform data directory).
//!
//! ```text
//! ROOT/                 0700
//!   certs/              0700  CA and client certificate
//!   machines/NAME/      0700  config.json, SSH key, certificates, .lock
//!   drivers/                  installed driver binaries and their lock file
//! ```
//!
//! Creating a machine reserves its name with `mkdir`, so of two concurrent
//! creates exactly one wins. Commands that change a machine hold an
//! exclusive lock on `machines/NAME/.lock` while they work.

mod atomic;
pub mod record;

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub use atomic::write as write_atomic;
pub use record::{DockerInstall, EngineOptions, MachineRecord, Phase, SCHEMA_VERSION};

const CONFIG: &str = "config.json";
const LOCK: &str = ".lock";

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("machine `{0}` does not exist\n  hint: `machine ls` lists the machines in this store")]
    NotFound(String),
    #[error(
        "machine `{0}` already exists\n  hint: pick another name, or remove it first with `machine rm {0}`"
    )]
    AlreadyExists(String),
    #[error(
        "`{0}` is not a valid machine name: use letters, digits, '.' and '-', starting with a letter or digit"
    )]
    InvalidName(String),
    #[error("{} is not a valid machine config: {reason}\n  hint: fix the file, or remove the machine with `machine rm -f {name}`", path.display())]
    Corrupt {
        name: String,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "{} was written by a newer machine (config schema {found}; this one reads up to {SCHEMA_VERSION})\n  hint: upgrade machine to use this machine",
        path.display()
    )]
    NewerSchema { path: PathBuf, found: u32 },
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_owned();
    move |source| StoreError::Io {
        action,
        path,
        source,
    }
}

/// Machine names: `^[a-zA-Z0-9][a-zA-Z0-9.-]*$`, as in Docker Machine.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
}

/// An exclusive hold on one machine; released on drop.
#[derive(Debug)]
pub struct MachineLock {
    _file: File,
}

/// A store rooted at one directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

fn mkdir_private(path: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io("cannot create directory", path))
}

impl Store {
    /// A store at `root`; nothing is touched until it is used.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn machines_dir(&self) -> PathBuf {
        self.root.join("machines")
    }

    pub fn certs_dir(&self) -> PathBuf {
        self.root.join("certs")
    }

    pub fn drivers_dir(&self) -> PathBuf {
        self.root.join("drivers")
    }

    pub fn machine_dir(&self, name: &str) -> PathBuf {
        self.machines_dir().join(name)
    }

    fn config_path(&self, name: &str) -> PathBuf {
        self.machine_dir(name).join(CONFIG)
    }

    /// Names of every machine directory, unsorted. A store that does not
    /// exist yet has no machines.
    pub fn names(&self) -> Result<Vec<String>> {
        let dir = self.machines_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("cannot list machines in", &dir)(e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io("cannot list machines in", &dir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if valid_name(&name) && entry.file_type().is_ok_and(|t| t.is_dir()) {
                names.push(name);
            }
        }
        Ok(names)
    }

    pub fn exists(&self, name: &str) -> bool {
        valid_name(name) && self.machine_dir(name).is_dir()
    }

    /// Reads a machine's config.
    pub fn load(&self, name: &str) -> Result<MachineRecord> {
        if !valid_name(name) {
            return Err(StoreError::InvalidName(name.to_owned()));
        }
        let path = self.config_path(name);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(if self.machine_dir(name).is_dir() {
                    StoreError::Corrupt {
                        name: name.to_owned(),
                        path,
                        reason: "the file is missing".into(),
                    }
                } else {
                    StoreError::NotFound(name.to_owned())
                });
            }
            Err(e) => return Err(io("cannot read", &path)(e)),
        };
        let corrupt = |reason: String| StoreError::Corrupt {
            name: name.to_owned(),
            path: path.clone(),
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        let found = value
            .get("schema_version")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| corrupt("it has no schema_version".into()))?;
        if found > u64::from(SCHEMA_VERSION) {
            return Err(StoreError::NewerSchema {
                path,
                found: u32::try_from(found).unwrap_or(u32::MAX),
            });
        }
        let record: MachineRecord =
            serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
        if record.name != name {
            return Err(corrupt(format!(
                "it describes machine `{}`, but lives in the directory of `{name}`",
                record.name
            )));
        }
        Ok(record)
    }

    /// Writes a machine's config atomically (mode 0600).
    pub fn save(&self, record: &MachineRecord) -> Result<()> {
        let path = self.config_path(&record.name);
        let mut bytes = serde_json::to_vec_pretty(record).expect("records serialize");
        bytes.push(b'\n');
        atomic::write(&path, &bytes, 0o600).map_err(io("cannot write", &path))
    }

    /// Reserves `name` for a new machine: makes its directory (failing if
    /// it exists), locks it and writes a record in the `creating` phase.
    pub fn reserve(&self, name: &str, driver: &str) -> Result<(MachineRecord, MachineLock)> {
        if !valid_name(name) {
            return Err(StoreError::InvalidName(name.to_owned()));
        }
        mkdir_private(&self.root)?;
        mkdir_private(&self.machines_dir())?;
        let dir = self.machine_dir(name);
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                return Err(StoreError::AlreadyExists(name.to_owned()));
            }
            Err(e) => return Err(io("cannot create directory", &dir)(e)),
        }
        let reserved = (|| {
            let lock = self.try_lock(name)?.ok_or_else(|| {
                // Only a concurrent `rm` + `create` of the same name gets here.
                StoreError::AlreadyExists(name.to_owned())
            })?;
            let record = MachineRecord::new(name, driver);
            self.save(&record)?;
            Ok((record, lock))
        })();
        if reserved.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        reserved
    }

    fn lock_file(&self, name: &str) -> Result<File> {
        let path = self.machine_dir(name).join(LOCK);
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| {
                if e.kind() == ErrorKind::NotFound {
                    StoreError::NotFound(name.to_owned())
                } else {
                    io("cannot open lock file", &path)(e)
                }
            })
    }

    /// Takes the machine's lock if nobody holds it.
    pub fn try_lock(&self, name: &str) -> Result<Option<MachineLock>> {
        let file = self.lock_file(name)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(MachineLock { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(io("cannot lock", &self.machine_dir(name).join(LOCK))(e))
            }
        }
    }

    /// Takes the machine's lock, waiting for another command to let go.
    pub async fn lock(&self, name: &str) -> Result<MachineLock> {
        if let Some(lock) = self.try_lock(name)? {
            return Ok(lock);
        }
        crate::ui::info(&format!(
            "waiting for another machine command to finish with `{name}`..."
        ));
        let file = self.lock_file(name)?;
        let path = self.machine_dir(name).join(LOCK);
        tokio::task::spawn_blocking(move || file.lock().map(|()| MachineLock { _file: file }))
            .await
            .expect("lock task")
            .map_err(io("cannot lock", &path))
    }

    /// Whether some process holds the machine's lock now.
    pub fn is_locked(&self, name: &str) -> bool {
        matches!(self.try_lock(name), Ok(None))
    }

    /// Deletes a machine's directory and everything in it.
    pub fn remove(&self, name: &str) -> Result<()> {
        let dir = self.machine_dir(name);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(io("cannot remove", &dir)(e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::new(d.path().join("store"));
        (d, s)
    }

    #[test]
    fn names_follow_docker_machine_rules() {
        for ok in ["a", "dev", "m-1.example", "0x"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "-a", ".a", "a_b", "a/b", "a b", "ü"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn reserve_save_load_round_trip_with_private_modes() {
        let (_d, s) = store();
        let (mut rec, lock) = s.reserve("dev", "none").unwrap();
        assert_eq!(rec.phase, Phase::Creating);
        rec.set_driver_config(r#"{"url":"tcp://1.2.3.4:2376"}"#)
            .unwrap();
        rec.phase = Phase::Ready;
        s.save(&rec).unwrap();
        drop(lock);
        assert_eq!(s.load("dev").unwrap(), rec);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(s.root()), 0o700);
        assert_eq!(mode(&s.machine_dir("dev")), 0o700);
        assert_eq!(mode(&s.machine_dir("dev").join("config.json")), 0o600);
        assert_eq!(s.names().unwrap(), vec!["dev".to_string()]);
    }

    #[test]
    fn a_second_reserve_of_the_same_name_fails() {
        let (_d, s) = store();
        let _first = s.reserve("dev", "none").unwrap();
        assert!(matches!(
            s.reserve("dev", "none"),
            Err(StoreError::AlreadyExists(_))
        ));
    }

    #[test]
    fn the_lock_is_exclusive_and_released_on_drop() {
        let (_d, s) = store();
        let (_, lock) = s.reserve("dev", "none").unwrap();
        assert!(s.is_locked("dev"));
        assert!(s.try_lock("dev").unwrap().is_none());
        drop(lock);
        assert!(!s.is_locked("dev"));
    }

    #[test]
    fn corrupt_and_newer_configs_are_reported_with_their_path() {
        let (_d, s) = store();
        drop(s.reserve("bad", "none").unwrap());
        std::fs::write(s.machine_dir("bad").join("config.json"), "{not json").unwrap();
        let e = s.load("bad").unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("machine rm -f bad"), "{e}");

        drop(s.reserve("new", "none").unwrap());
        std::fs::write(
            s.machine_dir("new").join("config.json"),
            r#"{"schema_version": 99, "name": "new"}"#,
        )
        .unwrap();
        let e = s.load("new").unwrap_err();
        assert!(
            matches!(e, StoreError::NewerSchema { found: 99, .. }),
            "{e}"
        );
        assert!(matches!(s.load("nope"), Err(StoreError::NotFound(_))));
    }
}
