//! Digests of boot images and the checksum files distributions publish
//! beside them (`SHA512SUMS`, `SHA256SUMS`, in GNU or BSD layout).

use std::fmt;

use sha2::Digest as _;

/// A digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algo {
    Sha256,
    Sha512,
}

impl Algo {
    fn hex_len(self) -> usize {
        match self {
            Algo::Sha256 => 64,
            Algo::Sha512 => 128,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Algo::Sha256 => "sha256",
            Algo::Sha512 => "sha512",
        }
    }

    /// A running hash of this kind.
    pub fn hasher(self) -> Hasher {
        match self {
            Algo::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algo::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }
}

/// An expected or computed digest, lower-case hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub algo: Algo,
    pub hex: String,
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algo.name(), self.hex)
    }
}

impl Digest {
    /// Parses `sha256:HEX` or `sha512:HEX`.
    pub fn parse(text: &str) -> Option<Digest> {
        let (algo, hex) = text.split_once(':')?;
        let algo = match algo.to_ascii_lowercase().as_str() {
            "sha256" => Algo::Sha256,
            "sha512" => Algo::Sha512,
            _ => return None,
        };
        Self::of_hex(algo, hex)
    }

    fn of_hex(algo: Algo, hex: &str) -> Option<Digest> {
        (hex.len() == algo.hex_len() && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| {
            Digest {
                algo,
                hex: hex.to_ascii_lowercase(),
            }
        })
    }
}

/// A running SHA-2 hash.
#[derive(Debug, Clone)]
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    pub fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest {
                algo: Algo::Sha256,
                hex: hex::encode(h.finalize()),
            },
            Hasher::Sha512(h) => Digest {
                algo: Algo::Sha512,
                hex: hex::encode(h.finalize()),
            },
        }
    }
}

/// Finds `file`'s digest in a checksum file. `algo` is the kind the file
/// holds when its name says so (SHA512SUMS); BSD lines name it themselves.
/// Accepts GNU lines (`HEX  name`, `HEX *name`) and BSD lines
/// (`SHA256 (name) = HEX`); a path in the name is matched by its last part.
pub fn find_in_sums(sums: &str, file: &str, algo: Option<Algo>) -> Option<Digest> {
    let base = |name: &str| name.rsplit('/').next().unwrap_or(name).to_owned();
    for line in sums.lines() {
        let line = line.trim();
        if let Some(rest) = line
            .strip_prefix("SHA256 (")
            .map(|r| (Algo::Sha256, r))
            .or_else(|| line.strip_prefix("SHA512 (").map(|r| (Algo::Sha512, r)))
        {
            let (kind, rest) = rest;
            if let Some((name, hex)) = rest.split_once(") = ")
                && base(name) == file
            {
                return Digest::of_hex(kind, hex.trim());
            }
            continue;
        }
        let Some((hex, name)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        let name = name.trim_start().trim_start_matches('*');
        if base(name) != file {
            continue;
        }
        let kind = algo.or(match hex.len() {
            64 => Some(Algo::Sha256),
            128 => Some(Algo::Sha512),
            _ => None,
        })?;
        return Digest::of_hex(kind, hex);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const A256: &str = "aa9f4d2ba5b8ae5d6f5a8d47cbd2ddc1a4e8ee8e1b6fbb0ef4a8cb1bd5a7cafe";

    #[test]
    fn parses_digest_flags() {
        let d = Digest::parse(&format!("SHA256:{}", A256.to_uppercase())).unwrap();
        assert_eq!(d.algo, Algo::Sha256);
        assert_eq!(d.hex, A256);
        assert!(Digest::parse("sha256:abc").is_none());
        assert!(Digest::parse("md5:abc").is_none());
        assert!(Digest::parse(A256).is_none());
    }

    #[test]
    fn finds_gnu_and_bsd_lines() {
        let gnu = format!("{A256}  other.qcow2\n{A256} *debian-13-genericcloud-amd64.qcow2\n");
        let d = find_in_sums(&gnu, "debian-13-genericcloud-amd64.qcow2", None).unwrap();
        assert_eq!(d.algo, Algo::Sha256);
        let bsd = format!("SHA256 (images/disk.img) = {A256}\n");
        assert_eq!(find_in_sums(&bsd, "disk.img", None).unwrap().hex, A256);
        assert!(find_in_sums(&gnu, "missing.img", None).is_none());
    }

    #[test]
    fn hashes() {
        let mut h = Algo::Sha256.hasher();
        h.update(b"abc");
        assert_eq!(
            h.finish().hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
