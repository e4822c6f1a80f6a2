//! Checking a release: its `SHA256SUMS` (always required) and the minisign
//! signature of that file, `SHA256SUMS.minisig`, when the author signs.
//!
//! Which key a signature must verify with is decided in `install`: the
//! `--public-key` flag, else the key recorded in the lock file by an earlier
//! install of the same driver, else the release's own `minisign.pub`
//! (trusted on first use, then pinned in the lock).

use std::collections::HashMap;
use std::path::Path;

/// A minisign public key, with its key ID for messages.
#[derive(Clone)]
pub struct PublicKey {
    key: minisign_verify::PublicKey,
    /// The base64 form (`RW...`), as recorded in the lock file.
    pub base64: String,
    /// The key ID as minisign prints it (16 uppercase hex digits).
    pub id: String,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.id)
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.base64 == other.base64
    }
}

/// Decodes standard base64 (with padding), as minisign writes it.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in text.trim().bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// minisign's key ID: bytes 2..10 of the key (or signature), little-endian,
/// printed as 16 hex digits.
fn key_id(bytes: &[u8]) -> Option<String> {
    let id: [u8; 8] = bytes.get(2..10)?.try_into().ok()?;
    Some(format!("{:016X}", u64::from_le_bytes(id)))
}

impl PublicKey {
    /// Parses a key: its base64 line (`RW...`), the text of a
    /// `minisign.pub` file, or the path of such a file.
    pub fn parse(given: &str) -> Result<Self, String> {
        let given = given.trim();
        let text = if !given.contains('\n') && Path::new(given).is_file() {
            std::fs::read_to_string(given).map_err(|e| format!("cannot read {given}: {e}"))?
        } else {
            given.to_owned()
        };
        // The key is the last non-comment line, so both forms work.
        let line = text
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
            .ok_or("it is empty")?;
        let key = minisign_verify::PublicKey::from_base64(line)
            .map_err(|e| format!("`{line}` is not a minisign public key ({e})"))?;
        let id = base64_decode(line)
            .as_deref()
            .and_then(key_id)
            .ok_or("it is not base64")?;
        Ok(Self {
            key,
            base64: line.to_owned(),
            id,
        })
    }
}

/// The key ID a signature file names, for messages.
pub fn signature_key_id(sig_text: &str) -> Option<String> {
    let line = sig_text.lines().nth(1)?;
    key_id(&base64_decode(line)?)
}

/// Checks `data` (the SHA256SUMS file) against a minisign signature and
/// returns the signature's trusted comment.
pub fn verify_signature(data: &[u8], sig_text: &str, key: &PublicKey) -> Result<String, String> {
    let sig = minisign_verify::Signature::decode(sig_text)
        .map_err(|e| format!("is not a minisign signature ({e})"))?;
    if let Some(signed_by) = signature_key_id(sig_text)
        && signed_by != key.id
    {
        return Err(format!(
            "was made with key {signed_by}, not with the trusted key {}",
            key.id
        ));
    }
    // Legacy (non-prehashed) signatures are refused, as minisign does by
    // default.
    key.key
        .verify(data, &sig, false)
        .map_err(|e| format!("does not verify with key {} ({e})", key.id))?;
    Ok(sig.trusted_comment().to_owned())
}

/// Parses a `sha256sum`-style file: `HEX  NAME` or `HEX *NAME` per line.
/// Lines that are not of that form are ignored; a name listed twice with
/// different digests is an error.
pub fn parse_sums(text: &str) -> Result<HashMap<String, String>, String> {
    let mut sums = HashMap::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        let Some((hex, name)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        let name = name.trim_start();
        let name = name.strip_prefix('*').unwrap_or(name);
        // Some tools write `./name`.
        let name = name.strip_prefix("./").unwrap_or(name).trim_end();
        if name.is_empty() {
            continue;
        }
        let hex = hex.to_ascii_lowercase();
        if let Some(prev) = sums.insert(name.to_owned(), hex.clone())
            && prev != hex
        {
            return Err(format!("it lists {name} twice, with different digests"));
        }
    }
    Ok(sums)
}

#[cfg(test)]
mod tests {
    use super::*;

    // From minisign-verify's documentation: a real key and signature.
    const PK: &str = "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3";
    const SIG: &str = "untrusted comment: signature from minisign secret key
RUQf6LRCGA9i559r3g7V1qNyJDApGip8MfqcadIgT9CuhV3EMhHoN1mGTkUidF/z7SrlQgXdy8ofjb7bNJJylDOocrCo8KLzZwo=
trusted comment: timestamp:1633700835\tfile:test\tprehashed
wLMDjy9FLAuxZ3q4NlEvkgtyhrr0gtTu6KC4KBJdITbbOeAi1zBIYo0v4iTgt8jJpIidRJnp94ABQkJAgAooBQ==";

    #[test]
    fn verifies_minisign_signatures() {
        let key = PublicKey::parse(PK).unwrap();
        assert_eq!(key.id, "E7620F1842B4E81F");
        let from_file =
            PublicKey::parse(&format!("untrusted comment: minisign public key\n{PK}\n")).unwrap();
        assert_eq!(from_file, key);
        let comment = verify_signature(b"test", SIG, &key).unwrap();
        assert!(comment.starts_with("timestamp:1633700835"), "{comment}");
        let err = verify_signature(b"tampered", SIG, &key).unwrap_err();
        assert!(
            err.contains("does not verify with key E7620F1842B4E81F"),
            "{err}"
        );
        assert!(verify_signature(b"test", "garbage", &key).is_err());
        assert!(PublicKey::parse("RWnotakey").is_err());
    }

    #[test]
    fn parses_sha256sums() {
        let a = "a".repeat(64);
        let b = "B".repeat(64);
        let text = format!("{a}  x.tar.gz\n{b} *./y.tar.gz\r\nnot a line\n\n");
        let sums = parse_sums(&text).unwrap();
        assert_eq!(sums.get("x.tar.gz"), Some(&a));
        assert_eq!(sums.get("y.tar.gz"), Some(&b.to_ascii_lowercase()));
        assert_eq!(sums.len(), 2);
        assert!(parse_sums(&format!("{a}  x\n{}  x\n", "c".repeat(64))).is_err());
    }
}
