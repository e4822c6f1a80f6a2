//! The lock file of installed drivers, `<store>/drivers/lock.json`, and the
//! check made each time an installed driver is loaded.
//!
//! The lock records where each installed driver came from (source, version,
//! asset), the SHA-256 of the binary that was verified and handshaken at
//! install time, and the public key it was verified with, so an upgrade is
//! held to the same key. A binary in the drivers directory that has an entry
//! here must still have that digest when it is loaded; one without an entry
//! (copied there by hand) is loaded as before.
//!
//! Loading must stay cheap (`machine env` has a 10 ms budget, and a driver
//! written in Go is often 20–40 MB), so the entry also holds the binary's
//! file identity at install time (device, inode, size, mtime and ctime). When
//! all of them still match, the content cannot have been changed through
//! the file system since (any write, truncate, chmod or rename sets ctime,
//! which no unprivileged process can set back), and the hash is skipped. When
//! any differs (a `touch`, a copy of the store), the binary is hashed and
//! compared. The one write this misses is one of the same size within the
//! same clock tick as the install's final `stat`, on kernels with coarse
//! file times (Linux 6.13 and later give such a write a newer time on ext4,
//! xfs, btrfs and tmpfs). The check guards against a binary replaced or
//! damaged by mistake; whoever can write the binary can write this file too.
//! See docs/drivers.md, "Installing drivers".

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The lock file's name inside the drivers directory.
pub const LOCK_FILE: &str = "lock.json";
/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;
/// Source prefix of drivers installed with `install --path`.
pub const PATH_SOURCE_PREFIX: &str = "path:";

/// The whole lock file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockFile {
    pub schema_version: u32,
    /// By driver name (`qemu` for `machine-driver-qemu`).
    #[serde(default)]
    pub drivers: BTreeMap<String, Entry>,
}

impl Default for LockFile {
    fn default() -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            drivers: BTreeMap::new(),
        }
    }
}

/// One installed driver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// `github.com/OWNER/REPO`, or `path:/abs/file` for `install --path`.
    pub source: String,
    /// The version or range asked for (`^1.2`, `1.2.3`); none means the
    /// newest release. `upgrade` resolves it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<String>,
    /// The release's version (semver, without a leading `v`); for a path
    /// install, the version the driver reports.
    pub version: String,
    /// The release's tag as published (`v1.2.3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The archive that was downloaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// SHA-256 of the archive, as listed in the release's SHA256SUMS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_sha256: Option<String>,
    /// SHA-256 of the installed binary, lowercase hex: what loading checks.
    pub sha256: String,
    /// The driver protocol version the asset was built for.
    pub protocol: u32,
    /// The minisign public key (base64) the release's SHA256SUMS was
    /// verified with; every later install of this driver must verify with
    /// it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// Where that key came from: `--public-key`, the lock, or the release's
    /// `minisign.pub` (trusted on first use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_source: Option<String>,
    /// Seconds since the Unix epoch.
    pub installed_at: u64,
    /// The binary's file identity right after it was put in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileId>,
    /// Set only while an install replaces the binary: the digest of the one
    /// being replaced, which is accepted too until the new one is in place.
    /// A crash between the two steps thus leaves a driver that loads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacing_sha256: Option<String>,
}

impl Entry {
    /// The source with the version, for tables: `github.com/a/b@1.2.3`.
    pub fn display_source(&self) -> String {
        if self.source.starts_with(PATH_SOURCE_PREFIX) {
            self.source.clone()
        } else {
            format!("{}@{}", self.source, self.version)
        }
    }

    /// What to run to put this driver right again.
    pub fn reinstall_command(&self, name: &str) -> String {
        match self.source.strip_prefix(PATH_SOURCE_PREFIX) {
            Some(path) => format!("machine driver install --path {path} --name {name} --force"),
            None => {
                let at = self
                    .requested
                    .as_deref()
                    .map(|r| format!("@{r}"))
                    .unwrap_or_default();
                format!("machine driver install {}{at} --force", self.source)
            }
        }
    }
}

/// A file's identity: when all of it matches, the content has not been
/// changed through the file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
    pub ctime: i64,
    pub ctime_nsec: i64,
}

impl FileId {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            ctime: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
        }
    }
}

/// Why the lock file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{} is not a valid driver lock file: {reason}\n  hint: fix the file, or remove it and reinstall the drivers in {} with `machine driver install`",
        path.display(),
        path.parent().map(|p| p.display().to_string()).unwrap_or_default()
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "{} was written by a newer machine (lock schema {found}; this one reads up to {SCHEMA_VERSION})\n  hint: upgrade machine",
        path.display()
    )]
    NewerSchema { path: PathBuf, found: u64 },
}

/// Why an installed driver was refused at load.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Lock(#[from] LockError),
    /// Boxed: this error travels inside every driver-host result.
    #[error(transparent)]
    Modified(Box<Modified>),
    #[error("cannot read driver `{name}` ({}) to check it against the lock file: {source}", path.display())]
    Read {
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// An installed binary whose digest is not the recorded one.
#[derive(Debug, thiserror::Error)]
#[error(
    "driver `{name}` ({}) is not the binary that `machine driver install` installed: its SHA-256 is {found}, the lock file records {expected} ({origin})\n  hint: reinstall it with `{reinstall}`, or remove it with `machine driver remove {name}`",
    path.display()
)]
pub struct Modified {
    pub name: String,
    pub path: PathBuf,
    pub expected: String,
    pub found: String,
    /// "installed from github.com/a/b@1.2.3".
    pub origin: String,
    pub reinstall: String,
}

pub fn path_in(dir: &Path) -> PathBuf {
    dir.join(LOCK_FILE)
}

/// Reads the lock file of the drivers directory `dir`; none is an empty one.
pub fn load(dir: &Path) -> Result<LockFile, LockError> {
    let path = path_in(dir);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(LockFile::default()),
        Err(source) => {
            return Err(LockError::Io {
                action: "read",
                path,
                source,
            });
        }
    };
    parse(&bytes, &path)
}

fn parse(bytes: &[u8], path: &Path) -> Result<LockFile, LockError> {
    let corrupt = |reason: String| LockError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    let found = value
        .get("schema_version")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| corrupt("it has no schema_version".into()))?;
    if found > u64::from(SCHEMA_VERSION) {
        return Err(LockError::NewerSchema {
            path: path.to_owned(),
            found,
        });
    }
    serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))
}

/// Writes the lock file atomically (temporary file, fsync, rename, fsync of
/// the directory).
pub fn save(dir: &Path, lock: &LockFile) -> Result<(), LockError> {
    let path = path_in(dir);
    let mut text = serde_json::to_vec_pretty(lock).map_err(|e| LockError::Corrupt {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    text.push(b'\n');
    crate::store::write_atomic(&path, &text, 0o644).map_err(|source| LockError::Io {
        action: "write",
        path,
        source,
    })
}

/// SHA-256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    // Large reads: fewer system calls; the hash dominates anyway.
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => ctx.update(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(hex::encode(ctx.finish()))
}

/// The name of the installed driver that came from `source`
/// (`github.com/OWNER/REPO`), if there is one.
pub fn find_by_source(dir: &Path, source: &str) -> Result<Option<String>, LockError> {
    Ok(load(dir)?
        .drivers
        .into_iter()
        .find(|(_, e)| e.source.eq_ignore_ascii_case(source))
        .map(|(name, _)| name))
}

/// Checks a driver binary about to be loaded from the drivers directory
/// `dir` against its lock entry, if it has one. Cheap when the file is
/// untouched since install: one `stat` and reading the small lock file.
pub fn verify_installed(dir: &Path, name: &str, path: &Path) -> Result<(), VerifyError> {
    let lock = load(dir)?;
    let Some(entry) = lock.drivers.get(name) else {
        return Ok(());
    };
    let read_error = |source| VerifyError::Read {
        name: name.to_owned(),
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_error)?;
    if entry.replacing_sha256.is_none() && entry.file == Some(FileId::of(&meta)) {
        return Ok(());
    }
    let found = sha256_file(path).map_err(read_error)?;
    if found.eq_ignore_ascii_case(&entry.sha256)
        || entry
            .replacing_sha256
            .as_deref()
            .is_some_and(|r| found.eq_ignore_ascii_case(r))
    {
        return Ok(());
    }
    Err(VerifyError::Modified(Box::new(Modified {
        name: name.to_owned(),
        path: path.to_owned(),
        expected: entry.sha256.clone(),
        found,
        origin: format!("installed from {}", entry.display_source()),
        reinstall: entry.reinstall_command(name),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(sha: &str) -> Entry {
        Entry {
            source: "github.com/acme/machine-driver-x".into(),
            requested: Some("^1".into()),
            version: "1.2.3".into(),
            tag: Some("v1.2.3".into()),
            asset: Some("machine-driver-x_1.2.3_p1_linux_amd64.tar.gz".into()),
            url: None,
            archive_sha256: None,
            sha256: sha.into(),
            protocol: 1,
            public_key: None,
            key_source: None,
            installed_at: 1,
            file: None,
            replacing_sha256: None,
        }
    }

    #[test]
    fn round_trips_and_refuses_newer_schemas() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), LockFile::default());
        let mut lock = LockFile::default();
        lock.drivers.insert("x".into(), entry("ab"));
        save(dir.path(), &lock).unwrap();
        assert_eq!(load(dir.path()).unwrap(), lock);
        std::fs::write(
            path_in(dir.path()),
            r#"{"schema_version": 9, "drivers": {}}"#,
        )
        .unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("newer machine"), "{err}");
        std::fs::write(path_in(dir.path()), "{").unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not a valid driver lock file"), "{err}");
    }

    #[test]
    fn verifies_by_identity_then_by_digest() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("machine-driver-x");
        std::fs::write(&bin, b"binary one").unwrap();
        let digest = sha256_file(&bin).unwrap();
        let mut lock = LockFile::default();
        lock.drivers.insert("x".into(), entry(&digest));
        save(dir.path(), &lock).unwrap();
        // No identity recorded: hashed, and it matches.
        verify_installed(dir.path(), "x", &bin).unwrap();
        // Unknown drivers are not checked.
        verify_installed(dir.path(), "y", &bin).unwrap();

        std::fs::write(&bin, b"binary two").unwrap();
        let err = verify_installed(dir.path(), "x", &bin)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not the binary"), "{err}");
        assert!(
            err.contains("machine driver install github.com/acme/machine-driver-x@^1 --force"),
            "{err}"
        );
        assert!(err.contains("machine driver remove x"), "{err}");

        // While an install replaces it, the old digest is accepted too.
        lock.drivers.get_mut("x").unwrap().replacing_sha256 = Some(sha256_file(&bin).unwrap());
        save(dir.path(), &lock).unwrap();
        verify_installed(dir.path(), "x", &bin).unwrap();
    }

    #[test]
    fn a_matching_identity_skips_the_hash() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("machine-driver-x");
        std::fs::write(&bin, b"binary").unwrap();
        let mut e = entry("not the digest");
        e.file = Some(FileId::of(&std::fs::metadata(&bin).unwrap()));
        let mut lock = LockFile::default();
        lock.drivers.insert("x".into(), e);
        save(dir.path(), &lock).unwrap();
        // The recorded digest is wrong, but the identity says the file is
        // the one recorded: no hash, no error. This is the fast path.
        verify_installed(dir.path(), "x", &bin).unwrap();
        // A change to the file changes its identity. (Size here: a
        // same-size write within one clock tick of the install keeps the
        // times on kernels with coarse timestamps, see the module docs.)
        std::fs::write(&bin, b"binary, changed").unwrap();
        assert!(verify_installed(dir.path(), "x", &bin).is_err());
    }
}
