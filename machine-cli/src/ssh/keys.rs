//! SSH key files: making a machine's ed25519 key pair at create, reading the
//! public half of a key a user brings (the generic driver), and loading a
//! private key for authentication, with errors that say which file and why.

use std::io::Write;
use std::path::{Path, PathBuf};

use russh::keys::ssh_key::{Algorithm, LineEnding, PrivateKey};

use super::error::SshError;

/// Generates an ed25519 key pair: the private key in OpenSSH format at
/// `path` (mode 0600, written atomically so a crash never leaves half a
/// key), the public key at `path.pub`. Returns the authorized_keys line,
/// `ssh-ed25519 AAAA... <comment>`.
pub fn generate_key(path: &Path, comment: &str) -> Result<String, SshError> {
    let mut rng = russh::keys::key::safe_rng();
    let mut key = PrivateKey::random(&mut rng, Algorithm::Ed25519).map_err(|e| SshError::Key {
        path: path.to_owned(),
        reason: format!("generating an ed25519 key failed: {e}"),
    })?;
    key.set_comment(comment);
    let private = key.to_openssh(LineEnding::LF).map_err(|e| SshError::Key {
        path: path.to_owned(),
        reason: format!("encoding the key failed: {e}"),
    })?;
    let public = authorized_line(&key, path)?;
    write_atomically(path, private.as_bytes(), 0o600).map_err(|source| SshError::KeyWrite {
        path: path.to_owned(),
        source,
    })?;
    let pub_path = pub_path(path);
    write_atomically(&pub_path, format!("{public}\n").as_bytes(), 0o644).map_err(|source| {
        SshError::KeyWrite {
            path: pub_path.clone(),
            source,
        }
    })?;
    Ok(public)
}

/// The authorized_keys line of the private key at `path` (with the comment
/// stored in the key, if any).
pub fn public_key_of(path: &Path) -> Result<String, SshError> {
    let key = load_private_key(path)?;
    authorized_line(&key, path)
}

/// Loads an unencrypted private key in OpenSSH (or PEM/PKCS#8) format, and
/// refuses early the kinds this build cannot sign with, so the user reads
/// "unsupported key" rather than a puzzling authentication failure.
pub(crate) fn load_private_key(path: &Path) -> Result<PrivateKey, SshError> {
    let key_error = |reason: String| SshError::Key {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| key_error(e.to_string()))?;
    let key = russh::keys::decode_secret_key(&text, None).map_err(|e| match e {
        russh::keys::Error::KeyIsEncrypted => {
            key_error("it is protected by a passphrase, which machine cannot ask for".to_owned())
        }
        other => key_error(format!("it is not a usable private key ({other})")),
    })?;
    if key.is_encrypted() {
        return Err(key_error(
            "it is protected by a passphrase, which machine cannot ask for".to_owned(),
        ));
    }
    match key.algorithm() {
        Algorithm::Ed25519 | Algorithm::Ecdsa { .. } => Ok(key),
        other => Err(key_error(format!(
            "{} keys are not supported (this build signs with ed25519 and ECDSA only)",
            other.as_str()
        ))),
    }
}

fn authorized_line(key: &PrivateKey, path: &Path) -> Result<String, SshError> {
    key.public_key()
        .to_openssh()
        .map(|line| line.trim().to_owned())
        .map_err(|e| SshError::Key {
            path: path.to_owned(),
            reason: format!("encoding its public key failed: {e}"),
        })
}

/// `path` with `.pub` appended (not replacing an extension: `id.key` has
/// `id.key.pub`, as ssh-keygen does).
fn pub_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// Writes `bytes` to `path` through a temporary file in the same directory
/// that already has `mode` before any byte is written, then renames it over
/// `path`: readers see the old file or the whole new one, and secrets are
/// never briefly world-readable.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".tmp-");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(mode));
    }
    #[cfg(not(unix))]
    let _ = mode; // Windows has no mode bits; the file inherits its directory's ACL.
    let mut file = builder.tempfile_in(dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip_with_modes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("id_ed25519");
        let line = generate_key(&path, "machine-dev").expect("generate");
        assert!(line.starts_with("ssh-ed25519 AAAA"), "{line}");
        assert!(line.ends_with(" machine-dev"), "{line}");
        let private = std::fs::read_to_string(&path).expect("read key");
        assert!(private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        let public = std::fs::read_to_string(dir.path().join("id_ed25519.pub")).expect("read pub");
        assert_eq!(public, format!("{line}\n"));
        assert_eq!(public_key_of(&path).expect("public_key_of"), line);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Only the two key files: no temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 2);
        // A second key is a different key.
        let again = generate_key(&path, "machine-dev").expect("generate again");
        assert_ne!(again, line);
    }

    #[test]
    fn unusable_keys_are_explained() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope");
        let e = public_key_of(&missing).expect_err("missing key");
        assert!(
            e.to_string().contains(&missing.display().to_string()),
            "{e}"
        );

        let garbage = dir.path().join("garbage");
        std::fs::write(&garbage, "not a key").expect("write");
        let e = public_key_of(&garbage).expect_err("garbage key");
        let text = e.to_string();
        assert!(text.contains("not a usable private key"), "{text}");
        assert!(text.contains("ssh-keygen -t ed25519"), "{text}");
    }

    #[test]
    fn pub_path_appends() {
        assert_eq!(pub_path(Path::new("/a/id.key")), Path::new("/a/id.key.pub"));
    }
}
