//! Host-key pinning: a machine's `known_hosts` file records the host key
//! its SSH server showed on first contact, and later connections must show
//! the same key. The file uses OpenSSH's known_hosts syntax (`host` for
//! port 22, `[host]:port` otherwise, then key type and base64), so it also
//! works with `ssh -o UserKnownHostsFile=<file>`.

use std::path::Path;
use std::sync::Mutex;

use russh::keys::ssh_key::{HashAlg, PublicKey};

use super::error::SshError;
use super::keys::write_atomically;

/// What the pinned file says about a server's key.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The key is the pinned one.
    Known,
    /// Nothing was pinned for this address: the key is now.
    Pinned,
    /// Another key is pinned for this address.
    Changed { expected_fingerprint: String },
}

/// Connections of one process to one machine may race to pin the first
/// key; the read-modify-write of the file happens under this lock so no
/// entry is lost.
static WRITE_LOCK: Mutex<()> = Mutex::new(());

/// The OpenSSH `SHA256:...` fingerprint of a key.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The host pattern OpenSSH writes for an address.
pub(crate) fn host_pattern(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    }
}

/// Checks `key` against the entries for `host:port` in `path`, pinning it
/// when there are none. Any pinned key of the address counts as a match;
/// a key of another type than the pinned ones is a change too (a server
/// that suddenly offers only a different type is as suspicious).
pub(crate) fn check_and_pin(
    machine: &str,
    path: &Path,
    host: &str,
    port: u16,
    key: &PublicKey,
) -> Result<Verdict, SshError> {
    let _guard = WRITE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let file_error = |reason: String| SshError::KnownHosts {
        machine: machine.to_owned(),
        path: path.to_owned(),
        reason,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(file_error(e.to_string())),
    };
    let pattern = host_pattern(host, port);
    let mut pinned: Vec<PublicKey> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((hosts, key_text)) = line.split_once(char::is_whitespace) else {
            return Err(file_error(format!(
                "line {} is not `host key-type base64`",
                n + 1
            )));
        };
        if !hosts.split(',').any(|h| h == pattern) {
            continue;
        }
        let pinned_key = PublicKey::from_openssh(key_text.trim())
            .map_err(|e| file_error(format!("line {} holds no valid key ({e})", n + 1)))?;
        pinned.push(pinned_key);
    }
    if pinned.iter().any(|p| p.key_data() == key.key_data()) {
        return Ok(Verdict::Known);
    }
    if let Some(first) = pinned.first() {
        return Ok(Verdict::Changed {
            expected_fingerprint: fingerprint(first),
        });
    }
    let key_text = PublicKey::new(key.key_data().clone(), "")
        .to_openssh()
        .map_err(|e| file_error(format!("cannot encode the server's key: {e}")))?;
    let mut new_text = text;
    if !new_text.is_empty() && !new_text.ends_with('\n') {
        new_text.push('\n');
    }
    new_text.push_str(&format!("{pattern} {}\n", key_text.trim()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| file_error(e.to_string()))?;
    }
    write_atomically(path, new_text.as_bytes(), 0o600).map_err(|e| file_error(e.to_string()))?;
    Ok(Verdict::Pinned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use russh::keys::ssh_key::{Algorithm, PrivateKey};

    fn key() -> PublicKey {
        let mut rng = russh::keys::key::safe_rng();
        PrivateKey::random(&mut rng, Algorithm::Ed25519)
            .expect("key")
            .public_key()
            .clone()
    }

    #[test]
    fn pins_then_accepts_then_refuses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("known_hosts");
        let (a, b) = (key(), key());
        assert_eq!(
            check_and_pin("dev", &path, "10.0.0.5", 2222, &a).expect("pin"),
            Verdict::Pinned
        );
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(
            text.starts_with("[10.0.0.5]:2222 ssh-ed25519 AAAA"),
            "{text}"
        );
        assert_eq!(
            check_and_pin("dev", &path, "10.0.0.5", 2222, &a).expect("known"),
            Verdict::Known
        );
        assert_eq!(
            check_and_pin("dev", &path, "10.0.0.5", 2222, &b).expect("changed"),
            Verdict::Changed {
                expected_fingerprint: fingerprint(&a)
            }
        );
        // Another address of the same machine is a first contact.
        assert_eq!(
            check_and_pin("dev", &path, "10.0.0.5", 22, &b).expect("pin 22"),
            Verdict::Pinned
        );
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 2);
        assert!(
            text.lines()
                .nth(1)
                .expect("line 2")
                .starts_with("10.0.0.5 ssh-ed25519 ")
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn fingerprints_look_like_openssh() {
        let f = fingerprint(&key());
        assert!(f.starts_with("SHA256:"), "{f}");
        assert_eq!(f.len(), "SHA256:".len() + 43, "{f}");
    }

    #[test]
    fn a_broken_file_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("known_hosts");
        std::fs::write(&path, "[h]:2222 ssh-ed25519 !!!\n").expect("write");
        let e = check_and_pin("dev", &path, "h", 2222, &key()).expect_err("broken");
        let text = e.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("line 1"), "{text}");
        assert!(text.contains("delete it"), "{text}");
    }
}
