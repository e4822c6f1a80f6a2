//! Unpacking a downloaded `.tar.gz` into a private directory, refusing
//! anything that could write outside it or fill the disk.
//!
//! Refused: absolute paths and `..` in entry names, symbolic links whose
//! target is absolute or leads out of the directory, hard links to anything
//! that is not an earlier regular file of the archive, device files and
//! FIFOs, more than [`Limits::max_entries`] entries, an entry larger than
//! [`Limits::max_entry`] and more than [`Limits::max_total`] bytes in all.
//! The sizes are checked against each entry's header before it is read, and
//! the decompressed stream itself is counted too, so a gzip bomb stops at
//! the limit whatever its headers claim. Set-uid, set-gid and sticky bits
//! are dropped.

use std::collections::HashSet;
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

/// Caps on what one archive may unpack to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of file content, all entries together.
    pub max_total: u64,
    /// Bytes of one entry.
    pub max_entry: u64,
    pub max_entries: usize,
}

impl Default for Limits {
    /// A driver archive is a binary and a few text files; 256 MiB is
    /// several times the largest driver binaries (Go drivers with cloud
    /// SDKs are ~100 MB).
    fn default() -> Self {
        Self {
            max_total: 512 << 20,
            max_entry: 256 << 20,
            max_entries: 1000,
        }
    }
}

/// Why an archive was refused.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("entry `{entry}` has an absolute path")]
    Absolute { entry: String },
    #[error("entry `{entry}` has `..` in its path")]
    ParentDir { entry: String },
    #[error("entry `{entry}` is a symbolic link to `{target}`, which is outside the archive")]
    EscapingSymlink { entry: String, target: String },
    #[error(
        "entry `{entry}` is a hard link to `{target}`, which is not a file earlier in the archive"
    )]
    BadHardlink { entry: String, target: String },
    #[error("entry `{entry}` is a {kind}; driver archives hold only files, directories and links")]
    SpecialFile { entry: String, kind: &'static str },
    #[error("entry `{entry}` is {size} bytes, more than the {limit}-byte limit for one file")]
    EntryTooLarge {
        entry: String,
        size: u64,
        limit: u64,
    },
    #[error("the archive unpacks to more than {limit} bytes")]
    TotalTooLarge { limit: u64 },
    #[error("the archive has more than {limit} entries")]
    TooManyEntries { limit: usize },
    #[error("entry `{entry}` appears twice")]
    Duplicate { entry: String },
    #[error("it is not a valid .tar.gz: {0}")]
    Corrupt(String),
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("it has no file named `{want}` (at the top or in one directory); it has: {found}")]
    NoBinary { want: String, found: String },
    #[error("it has {count} files named `{want}`; expected one")]
    SeveralBinaries { want: String, count: usize },
}

/// Counts decompressed bytes and fails past a limit, whatever the tar
/// headers say.
struct Capped<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // One byte more tells a stream that ends exactly at the limit
            // from one that goes on.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other(TotalExceeded(self.limit))),
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

#[derive(Debug)]
struct TotalExceeded(u64);

impl std::fmt::Display for TotalExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "more than {} bytes decompressed", self.0)
    }
}

impl std::error::Error for TotalExceeded {}

fn io_or_cap(e: io::Error, path: &Path, limits: &Limits) -> UnpackError {
    if e.get_ref().is_some_and(|inner| inner.is::<TotalExceeded>()) {
        UnpackError::TotalTooLarge {
            limit: limits.max_total,
        }
    } else if matches!(
        e.kind(),
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidInput
    ) {
        UnpackError::Corrupt(e.to_string())
    } else {
        UnpackError::Io {
            path: path.to_owned(),
            source: e,
        }
    }
}

/// An entry's path as safe relative components, or why not.
fn safe_relative(entry: &str, raw: &Path) -> Result<PathBuf, UnpackError> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(UnpackError::ParentDir {
                    entry: entry.to_owned(),
                });
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(UnpackError::Absolute {
                    entry: entry.to_owned(),
                });
            }
        }
    }
    Ok(out)
}

/// Whether a symbolic link at `link` (relative to the root) pointing at
/// `target` stays inside the root, resolving `..` lexically.
fn symlink_stays_inside(link: &Path, target: &Path) -> bool {
    if target.has_root() {
        return false;
    }
    let mut depth: Vec<&std::ffi::OsStr> = link
        .parent()
        .map(|p| {
            p.components()
                .filter_map(|c| match c {
                    Component::Normal(n) => Some(n),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    for c in target.components() {
        match c {
            Component::Normal(n) => depth.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                if depth.pop().is_none() {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// Unpacks the `.tar.gz` at `archive` into the existing, empty directory
/// `dest`. Returns the relative paths of the regular files written.
pub fn unpack(archive: &Path, dest: &Path, limits: &Limits) -> Result<Vec<PathBuf>, UnpackError> {
    let file = std::fs::File::open(archive).map_err(|source| UnpackError::Io {
        path: archive.to_owned(),
        source,
    })?;
    // Room for the tar headers and padding on top of the content.
    let overhead = (limits.max_entries as u64 + 2) * 1024;
    let stream = Capped {
        inner: flate2::read::GzDecoder::new(io::BufReader::new(file)),
        left: limits.max_total + overhead,
        limit: limits.max_total,
    };
    let mut tar = tar::Archive::new(stream);
    let mut files: Vec<PathBuf> = Vec::new();
    let mut seen: HashSet<PathBuf> = HashSet::new();
    let mut total: u64 = 0;
    let mut count = 0usize;
    let entries = tar.entries().map_err(|e| io_or_cap(e, archive, limits))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| io_or_cap(e, archive, limits))?;
        let kind = entry.header().entry_type();
        // pax and GNU metadata records, folded into the next entry by tar.
        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
            continue;
        }
        count += 1;
        if count > limits.max_entries {
            return Err(UnpackError::TooManyEntries {
                limit: limits.max_entries,
            });
        }
        let raw = entry
            .path()
            .map_err(|e| UnpackError::Corrupt(e.to_string()))?
            .into_owned();
        let name = raw.display().to_string();
        let rel = safe_relative(&name, &raw)?;
        if rel.as_os_str().is_empty() {
            continue; // "./" itself
        }
        let out = dest.join(&rel);
        let io_err = |source| UnpackError::Io {
            path: out.clone(),
            source,
        };
        match kind {
            EntryType::Directory => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .create(&out)
                    .map_err(io_err)?;
                continue;
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {}
            EntryType::Symlink | EntryType::Link => {}
            EntryType::Char => return Err(special(&name, "character device")),
            EntryType::Block => return Err(special(&name, "block device")),
            EntryType::Fifo => return Err(special(&name, "FIFO")),
            _ => return Err(special(&name, "special entry")),
        }
        if !seen.insert(rel.clone()) {
            return Err(UnpackError::Duplicate { entry: name });
        }
        if let Some(parent) = out.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .create(parent)
                .map_err(io_err)?;
        }
        match kind {
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| UnpackError::Corrupt(e.to_string()))?
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                if target.as_os_str().is_empty() || !symlink_stays_inside(&rel, &target) {
                    return Err(UnpackError::EscapingSymlink {
                        entry: name,
                        target: target.display().to_string(),
                    });
                }
                std::os::unix::fs::symlink(&target, &out).map_err(io_err)?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| UnpackError::Corrupt(e.to_string()))?
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let target_rel = safe_relative(&name, &target).ok();
                let Some(target_rel) = target_rel.filter(|t| files.contains(t)) else {
                    return Err(UnpackError::BadHardlink {
                        entry: name,
                        target: target.display().to_string(),
                    });
                };
                // A copy, not a link: no two names for one inode to reason
                // about later.
                std::fs::copy(dest.join(&target_rel), &out).map_err(io_err)?;
                files.push(rel);
            }
            _ => {
                let size = entry
                    .header()
                    .size()
                    .map_err(|e| UnpackError::Corrupt(e.to_string()))?;
                if size > limits.max_entry {
                    return Err(UnpackError::EntryTooLarge {
                        entry: name,
                        size,
                        limit: limits.max_entry,
                    });
                }
                total = total.saturating_add(size);
                if total > limits.max_total {
                    return Err(UnpackError::TotalTooLarge {
                        limit: limits.max_total,
                    });
                }
                let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&out)
                    .map_err(io_err)?;
                // The header's size bounds what tar hands out; `take` makes
                // sure of it.
                let copied = io::copy(&mut (&mut entry).take(limits.max_entry + 1), &mut f)
                    .map_err(|e| io_or_cap(e, &out, limits))?;
                if copied > limits.max_entry {
                    return Err(UnpackError::EntryTooLarge {
                        entry: name,
                        size: copied,
                        limit: limits.max_entry,
                    });
                }
                f.set_permissions(std::fs::Permissions::from_mode(mode))
                    .map_err(io_err)?;
                files.push(rel);
            }
        }
    }
    Ok(files)
}

fn special(entry: &str, kind: &'static str) -> UnpackError {
    UnpackError::SpecialFile {
        entry: entry.to_owned(),
        kind,
    }
}

/// The driver binary among the unpacked files: a regular file named
/// `file_name` at the top, or inside one directory.
pub fn find_binary(
    dest: &Path,
    files: &[PathBuf],
    file_name: &str,
) -> Result<PathBuf, UnpackError> {
    let hits: Vec<&PathBuf> = files
        .iter()
        .filter(|f| f.components().count() <= 2 && f.file_name().is_some_and(|n| n == file_name))
        .collect();
    match hits.as_slice() {
        [one] => Ok(dest.join(one)),
        [] => {
            let mut found: Vec<String> = files
                .iter()
                .take(20)
                .map(|f| f.display().to_string())
                .collect();
            if found.is_empty() {
                found.push("no files".into());
            }
            Err(UnpackError::NoBinary {
                want: file_name.to_owned(),
                found: found.join(", "),
            })
        }
        many => Err(UnpackError::SeveralBinaries {
            want: file_name.to_owned(),
            count: many.len(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    enum E<'a> {
        File(&'a str, &'a [u8]),
        Raw(&'a [u8], EntryType, u64, &'a [u8], &'a str),
        Symlink(&'a str, &'a str),
    }

    fn tar_gz(entries: &[E<'_>]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        for e in entries {
            match e {
                E::File(path, data) => {
                    let mut h = tar::Header::new_gnu();
                    h.set_size(data.len() as u64);
                    h.set_mode(0o4755);
                    h.set_entry_type(EntryType::Regular);
                    b.append_data(&mut h, path, *data).unwrap();
                }
                E::Symlink(path, target) => {
                    let mut h = tar::Header::new_gnu();
                    h.set_entry_type(EntryType::Symlink);
                    h.set_size(0);
                    b.append_link(&mut h, path, target).unwrap();
                }
                E::Raw(name, kind, size, data, link) => {
                    // Written by hand: tar's builder refuses such names.
                    let mut h = tar::Header::new_old();
                    h.as_old_mut().name[..name.len()].copy_from_slice(name);
                    h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
                    h.set_entry_type(*kind);
                    h.set_size(*size);
                    h.set_mode(0o644);
                    h.set_cksum();
                    b.get_mut().write_all(h.as_bytes()).unwrap();
                    b.get_mut().write_all(data).unwrap();
                    let pad = (512 - data.len() % 512) % 512;
                    b.get_mut().write_all(&vec![0; pad]).unwrap();
                }
            }
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    fn run(
        entries: &[E<'_>],
        limits: Limits,
    ) -> (tempfile::TempDir, Result<Vec<PathBuf>, UnpackError>) {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.tar.gz");
        std::fs::write(&archive, tar_gz(entries)).unwrap();
        let dest = dir.path().join("out");
        std::fs::create_dir(&dest).unwrap();
        let r = unpack(&archive, &dest, &limits);
        (dir, r)
    }

    #[test]
    fn unpacks_files_and_finds_the_binary() {
        let (dir, r) = run(
            &[
                E::File("pkg/machine-driver-x", b"#!bin"),
                E::File("pkg/README.md", b"hi"),
                E::Symlink("pkg/latest", "machine-driver-x"),
            ],
            Limits::default(),
        );
        let files = r.unwrap();
        let dest = dir.path().join("out");
        let bin = find_binary(&dest, &files, "machine-driver-x").unwrap();
        assert_eq!(std::fs::read(&bin).unwrap(), b"#!bin");
        let mode = std::fs::metadata(&bin).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o755, "set-uid dropped");
        let err = find_binary(&dest, &files, "machine-driver-y")
            .unwrap_err()
            .to_string();
        assert!(err.contains("pkg/README.md"), "{err}");
    }

    #[test]
    fn refuses_paths_out_of_the_directory() {
        for (entries, want) in [
            (
                vec![E::Raw(b"../x", EntryType::Regular, 1, b"x", "")],
                "has `..`",
            ),
            (
                vec![E::Raw(b"a/../../x", EntryType::Regular, 1, b"x", "")],
                "has `..`",
            ),
            (
                vec![E::Raw(b"/etc/x", EntryType::Regular, 1, b"x", "")],
                "absolute path",
            ),
            (
                vec![E::Symlink("evil", "/etc/passwd")],
                "outside the archive",
            ),
            (vec![E::Symlink("a/evil", "../../x")], "outside the archive"),
            (
                vec![E::Raw(b"h", EntryType::Link, 0, b"", "/etc/passwd")],
                "hard link",
            ),
            (
                vec![E::Raw(b"h", EntryType::Link, 0, b"", "missing")],
                "hard link",
            ),
            (
                vec![E::Raw(b"dev", EntryType::Block, 0, b"", "")],
                "block device",
            ),
            (
                vec![E::Raw(b"dev", EntryType::Char, 0, b"", "")],
                "character device",
            ),
            (vec![E::Raw(b"p", EntryType::Fifo, 0, b"", "")], "FIFO"),
        ] {
            let (dir, r) = run(&entries, Limits::default());
            let err = r.unwrap_err().to_string();
            assert!(err.contains(want), "{err} (wanted {want})");
            assert!(!dir.path().join("x").exists());
        }
        // A link that stays inside is fine.
        let (_dir, r) = run(
            &[E::File("a/f", b"1"), E::Symlink("a/b/l", "../f")],
            Limits::default(),
        );
        r.unwrap();
    }

    #[test]
    fn caps_entries_sizes_and_bombs() {
        let small = Limits {
            max_total: 1000,
            max_entry: 600,
            max_entries: 3,
        };
        let big = vec![0u8; 700];
        let (_d, r) = run(&[E::File("a", &big)], small);
        assert!(
            matches!(r, Err(UnpackError::EntryTooLarge { size: 700, .. })),
            "{r:?}"
        );
        let half = vec![0u8; 500];
        let (_d, r) = run(
            &[
                E::File("a", &half),
                E::File("b", &half),
                E::File("c", &half),
            ],
            small,
        );
        assert!(matches!(r, Err(UnpackError::TotalTooLarge { .. })), "{r:?}");
        let (_d, r) = run(
            &[
                E::File("a", b""),
                E::File("b", b""),
                E::File("c", b""),
                E::File("d", b""),
            ],
            small,
        );
        assert!(
            matches!(r, Err(UnpackError::TooManyEntries { .. })),
            "{r:?}"
        );
        // A header that claims a huge size is refused before reading.
        let (_d, r) = run(
            &[E::Raw(b"bomb", EntryType::Regular, 1 << 40, b"", "")],
            Limits::default(),
        );
        assert!(matches!(r, Err(UnpackError::EntryTooLarge { .. })), "{r:?}");
        // The decompressed stream is capped whatever the entries are: a
        // pax global header (skipped, never written) of 20 000 bytes.
        let filler = vec![b'a'; 20_000];
        let (_d, r) = run(
            &[E::Raw(b"g", EntryType::XGlobalHeader, 20_000, &filler, "")],
            small,
        );
        assert!(matches!(r, Err(UnpackError::TotalTooLarge { .. })), "{r:?}");
    }

    #[test]
    fn refuses_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.tar.gz");
        std::fs::write(&archive, b"this is not gzip").unwrap();
        let r = unpack(&archive, dir.path(), &Limits::default());
        assert!(matches!(r, Err(UnpackError::Corrupt(_))), "{r:?}");
    }
}
