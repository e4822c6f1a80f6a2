//! The store's PKI for Docker's mutual TLS (DESIGN.md §4–5).
//!
//! `<store>/certs/` holds one CA (`ca.pem`, `ca-key.pem`) and one client
//! certificate (`cert.pem`, `key.pem`); each machine gets a server
//! certificate signed by that CA, and a copy of `ca.pem`, `cert.pem` and
//! `key.pem` so its directory is a complete `DOCKER_CERT_PATH`.
//!
//! Keys are ECDSA P-256. The CA is valid 10 years; client and server
//! certificates 3 years, and a client certificate that expired (or no longer
//! chains to the CA) is replaced by [`ensure_ca`] on its own, so the day
//! Docker Machine's 1080-day certificates expired for everyone at once does
//! not repeat. Validity starts a day in the past, for hosts whose clock lags.
//!
//! Files are written atomically (temporary file, fsync, rename, fsync of
//! the directory); the certs directory is 0700, keys 0600, certificates 0644.
//! Concurrent callers serialise on an `flock` of `certs/.lock`.
//!
//! Certificates are read with a small DER reader of our own (subject,
//! validity, key, SANs, subject key identifier): enough to sign with an
//! existing CA and to report what a certificate covers, without an X.509
//! parser dependency. [`valid_for`] asks rustls's WebPKI verifier, the same
//! check a TLS client makes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use time::{Duration, OffsetDateTime};

/// File name of the CA certificate (in the store's certs dir and in machine dirs).
pub const CA_FILE: &str = "ca.pem";
/// File name of the CA's private key (store's certs dir only).
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// File name of the client certificate.
pub const CERT_FILE: &str = "cert.pem";
/// File name of the client certificate's private key.
pub const KEY_FILE: &str = "key.pem";
/// Lock file taken while the certs dir is read or changed.
const LOCK_FILE: &str = ".lock";

/// How long a new CA is valid.
pub const CA_VALIDITY: Duration = Duration::days(3653);
/// How long a new client or server certificate is valid.
pub const LEAF_VALIDITY: Duration = Duration::days(3 * 365 + 1);
/// How far in the past validity starts (hosts whose clock lags behind).
const BACKDATE: Duration = Duration::days(1);

const DIR_MODE: u32 = 0o700;
const KEY_MODE: u32 = 0o600;
const CERT_MODE: u32 = 0o644;

/// Paths of the store's CA and client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    /// CA certificate, `ca.pem`.
    pub ca: PathBuf,
    /// CA private key, `ca-key.pem`.
    pub ca_key: PathBuf,
    /// Client certificate, `cert.pem`.
    pub cert: PathBuf,
    /// Client private key, `key.pem`.
    pub key: PathBuf,
}

impl CertPaths {
    /// The standard file names inside `certs_dir` (nothing is checked).
    pub fn in_dir(certs_dir: &Path) -> Self {
        CertPaths {
            ca: certs_dir.join(CA_FILE),
            ca_key: certs_dir.join(CA_KEY_FILE),
            cert: certs_dir.join(CERT_FILE),
            key: certs_dir.join(KEY_FILE),
        }
    }
}

/// What a certificate covers, as read by [`cert_info`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Subject alternative names: DNS names as written, IP addresses in
    /// their usual text form.
    pub sans: Vec<String>,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

/// Failures of the certificate functions; each names the file or name at
/// fault and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Reading, writing, locking or creating a file or directory failed.
    #[error("cannot {action} {}: {source} (check that the store is writable by you)", path.display())]
    Io {
        /// What was being done ("read", "write", "create directory", ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A certificate file does not hold a usable certificate.
    #[error(
        "{} is not a usable certificate ({reason}); move it away and run `machine regenerate-certs` to make new certificates",
        path.display()
    )]
    BadCertFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A PEM string given by the caller does not hold a usable certificate.
    #[error("not a usable PEM certificate: {reason}")]
    BadCertPem {
        /// What is wrong with it.
        reason: String,
    },
    /// A key file does not hold a usable private key.
    #[error(
        "{} is not a usable private key ({reason}); move it away and run `machine regenerate-certs` to make new certificates",
        path.display()
    )]
    BadKeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The CA certificate exists but its key does not: new server
    /// certificates cannot be signed, and replacing the CA silently would
    /// lock every existing machine out.
    #[error(
        "the CA certificate {} exists but its key {} is missing: restore the key from a backup, or move {} away to start a new CA (every machine then needs `machine regenerate-certs NAME`)",
        cert.display(),
        key.display(),
        dir.display()
    )]
    MissingCaKey {
        /// `ca.pem`.
        cert: PathBuf,
        /// `ca-key.pem`.
        key: PathBuf,
        /// The certs dir.
        dir: PathBuf,
    },
    /// A key file does not belong to the certificate next to it.
    #[error(
        "the key {} does not belong to the certificate {}: restore the matching pair from a backup, or move both away and run `machine regenerate-certs`",
        key.display(),
        cert.display()
    )]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
    },
    /// rcgen could not make a key or certificate.
    #[error("cannot make {what}: {source}")]
    Generate {
        /// What was being made.
        what: String,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// A name cannot go into a certificate's subject alternative names.
    #[error("{name:?} cannot go into a certificate ({reason}); give host names or IP addresses")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Why not.
        reason: String,
    },
}

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> CertError + use<'a> {
    move |source| CertError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

fn gen_err(what: &str) -> impl FnOnce(rcgen::Error) -> CertError + use<'_> {
    move |source| CertError::Generate {
        what: what.to_owned(),
        source,
    }
}

/// Loads the CA and client certificate from `certs_dir`, creating what is
/// missing: the directory (0700), an ECDSA P-256 CA valid 10 years for
/// organisation `org`, and a client certificate valid 3 years. A client
/// certificate that has expired, expires within 30 days, or was not signed by
/// this CA is replaced. An existing CA is never replaced (machines trust
/// it); a CA certificate without its key is an error.
///
/// Safe when several processes call it at once: they serialise on an
/// exclusive lock of `certs_dir/.lock`.
pub fn ensure_ca(certs_dir: &Path, org: &str) -> Result<CertPaths, CertError> {
    with_lock(certs_dir, |paths| {
        let ca = load_or_create_ca(certs_dir, paths, org)?;
        if let Some(why) = client_needs_renewal(paths, &ca)? {
            tracing::info!(
                "making a new client certificate {}: {why}",
                paths.cert.display()
            );
            write_client(paths, &ca, org)?;
        }
        Ok(())
    })
}

/// Replaces the client certificate and key with new ones signed by the CA
/// (creating the CA first if there is none), for
/// `regenerate-certs --client-certs`. Machines keep working: their Docker
/// daemons trust the CA, not a particular client certificate; their copies
/// are refreshed with [`install_client_copy`].
pub fn regenerate_client(certs_dir: &Path, org: &str) -> Result<CertPaths, CertError> {
    with_lock(certs_dir, |paths| {
        let ca = load_or_create_ca(certs_dir, paths, org)?;
        write_client(paths, &ca, org)
    })
}

/// Makes a server certificate signed by the CA in `paths`, valid 3 years,
/// with extended key usage serverAuth and common name `common_name`. Its
/// subject alternative names are every name in `sans` (IP addresses become
/// IP SANs, with or without `[]`; anything else a DNS SAN; empty strings and
/// duplicates are dropped) plus `localhost` and `127.0.0.1`.
///
/// Returns `(certificate PEM, private key PEM)`; the key is new (P-256).
pub fn server_cert(
    paths: &CertPaths,
    sans: &[String],
    common_name: &str,
) -> Result<(String, String), CertError> {
    let ca = LoadedCa::load(paths)?;
    let mut names: Vec<SanType> = Vec::new();
    let mut push = |san: SanType| {
        if !names.contains(&san) {
            names.push(san);
        }
    };
    for name in sans
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .chain(["localhost", "127.0.0.1"])
    {
        push(san_for(name)?);
    }
    let mut params = leaf_params(&ca, common_name, ExtendedKeyUsagePurpose::ServerAuth);
    params.subject_alt_names = names;
    let key = new_key("a server key")?;
    let cert = ca.sign(&params, &key, "a server certificate")?;
    Ok((cert, key.serialize_pem()))
}

/// Copies `ca.pem`, `cert.pem` and `key.pem` from the store into
/// `machine_dir` (created if missing), so that it is a complete
/// `DOCKER_CERT_PATH`; the key copy is 0600.
pub fn install_client_copy(paths: &CertPaths, machine_dir: &Path) -> Result<(), CertError> {
    fs::create_dir_all(machine_dir).map_err(io_err("create directory", machine_dir))?;
    for (from, name, mode) in [
        (&paths.ca, CA_FILE, CERT_MODE),
        (&paths.cert, CERT_FILE, CERT_MODE),
        (&paths.key, KEY_FILE, KEY_MODE),
    ] {
        let bytes = fs::read(from).map_err(io_err("read", from))?;
        write_atomic(&machine_dir.join(name), &bytes, mode)?;
    }
    Ok(())
}

/// Subject alternative names and validity of the first certificate in
/// `cert_pem`.
pub fn cert_info(cert_pem: &str) -> Result<CertInfo, CertError> {
    let der = first_cert(cert_pem.as_bytes()).map_err(|reason| CertError::BadCertPem { reason })?;
    let parsed = ParsedCert::parse(&der).map_err(|reason| CertError::BadCertPem { reason })?;
    Ok(CertInfo {
        sans: parsed.sans,
        not_before: parsed.not_before,
        not_after: parsed.not_after,
    })
}

/// Whether a TLS client that trusts only `ca_pem` would accept the server
/// certificate `cert_pem` for `name` (a DNS name or an IP address, `[]`
/// allowed) right now: rustls's WebPKI verifier checks the signature chain,
/// the validity period and the name. `false` for anything unparsable.
///
/// This is how `env` and `ls` notice that a machine's address changed
/// since its certificate was made.
pub fn valid_for(cert_pem: &str, ca_pem: &str, name: &str) -> bool {
    let Ok(cert) = first_cert(cert_pem.as_bytes()) else {
        return false;
    };
    let Ok(server_name) = ServerName::try_from(strip_brackets(name.trim()).to_owned()) else {
        return false;
    };
    let Ok(verifier) = server_verifier(ca_pem) else {
        return false;
    };
    verifier
        .verify_server_cert(&cert, &[], &server_name, &[], UnixTime::now())
        .is_ok()
}

/// A rustls verifier for server certificates that trusts the CA(s) in
/// `ca_pem` only, with the ring provider (no process default needed).
fn server_verifier(ca_pem: &str) -> Result<Arc<rustls::client::WebPkiServerVerifier>, CertError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| CertError::BadCertPem {
            reason: e.to_string(),
        })?;
        roots.add(cert).map_err(|e| CertError::BadCertPem {
            reason: e.to_string(),
        })?;
    }
    rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .map_err(|e| CertError::BadCertPem {
        reason: e.to_string(),
    })
}

// ---------------------------------------------------------------------------
// The CA and the client certificate.

/// The CA as loaded from disk: enough to sign with it.
struct LoadedCa {
    issuer: Issuer<'static, KeyPair>,
    /// DER of the CA certificate.
    der: CertificateDer<'static>,
    /// Raw DER of the CA's subject, which must come out byte for byte as the
    /// issuer of what it signs.
    subject: Vec<u8>,
    /// Whether the CA has a subject key identifier to repeat as authority
    /// key identifier.
    has_ski: bool,
    /// The CA's organisation, repeated in what it signs.
    org: Option<String>,
    not_after: OffsetDateTime,
}

impl LoadedCa {
    fn load(paths: &CertPaths) -> Result<Self, CertError> {
        if !paths.ca.exists() {
            return Err(CertError::Io {
                action: "read",
                path: paths.ca.clone(),
                source: io::Error::new(
                    io::ErrorKind::NotFound,
                    "no CA yet (`machine create` makes one)",
                ),
            });
        }
        let pem = fs::read(&paths.ca).map_err(io_err("read", &paths.ca))?;
        let bad_cert = |reason: String| CertError::BadCertFile {
            path: paths.ca.clone(),
            reason,
        };
        let der = first_cert(&pem).map_err(bad_cert)?;
        let parsed = ParsedCert::parse(&der).map_err(bad_cert)?;
        let key_pem = match fs::read_to_string(&paths.ca_key) {
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(CertError::MissingCaKey {
                    cert: paths.ca.clone(),
                    key: paths.ca_key.clone(),
                    dir: paths.ca.parent().unwrap_or(Path::new(".")).to_owned(),
                });
            }
            Err(e) => return Err(io_err("read", &paths.ca_key)(e)),
        };
        let key = KeyPair::from_pem(&key_pem).map_err(|e| CertError::BadKeyFile {
            path: paths.ca_key.clone(),
            reason: e.to_string(),
        })?;
        if key.public_key_raw() != parsed.public_key {
            return Err(CertError::KeyMismatch {
                key: paths.ca_key.clone(),
                cert: paths.ca.clone(),
            });
        }
        let dn = distinguished_name(parsed.subject_content).map_err(bad_cert)?;
        let org = match dn.get(&DnType::OrganizationName) {
            Some(DnValue::Utf8String(s)) => Some(s.clone()),
            Some(DnValue::PrintableString(s)) => Some(s.as_str().to_owned()),
            _ => None,
        };
        let mut params = CertificateParams::default();
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let has_ski = parsed.ski.is_some();
        if let Some(ski) = parsed.ski {
            params.key_identifier_method = KeyIdMethod::PreSpecified(ski.to_vec());
        }
        let subject = parsed.subject_raw.to_vec();
        let not_after = parsed.not_after;
        Ok(LoadedCa {
            issuer: Issuer::new(params, key),
            der: CertificateDer::from(der.to_vec()),
            subject,
            has_ski,
            org,
            not_after,
        })
    }

    /// Signs `params` for `key`; returns the certificate PEM.
    fn sign(
        &self,
        params: &CertificateParams,
        key: &KeyPair,
        what: &str,
    ) -> Result<String, CertError> {
        let mut params = params.clone();
        params.use_authority_key_identifier_extension = self.has_ski;
        let cert = params.signed_by(key, &self.issuer).map_err(gen_err(what))?;
        // Chains are built by comparing the issuer with the CA's subject byte
        // for byte: refuse to hand out a certificate that would not chain.
        let parsed = ParsedCert::parse(cert.der()).map_err(|reason| CertError::BadCertPem {
            reason: format!("the new {what} does not parse: {reason}"),
        })?;
        if parsed.issuer_raw != self.subject.as_slice() {
            return Err(CertError::BadCertPem {
                reason: format!(
                    "the new {what} names its issuer differently from the CA's subject (a CA subject encoding this program cannot reproduce); start a new CA"
                ),
            });
        }
        Ok(cert.pem())
    }
}

/// Runs `f` with the certs dir created (0700) and exclusively locked.
fn with_lock(
    certs_dir: &Path,
    f: impl FnOnce(&CertPaths) -> Result<(), CertError>,
) -> Result<CertPaths, CertError> {
    fs::create_dir_all(certs_dir).map_err(io_err("create directory", certs_dir))?;
    fs::set_permissions(certs_dir, fs::Permissions::from_mode(DIR_MODE))
        .map_err(io_err("set permissions of", certs_dir))?;
    let lock_path = certs_dir.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(KEY_MODE)
        .open(&lock_path)
        .map_err(io_err("open", &lock_path))?;
    lock.lock().map_err(io_err("lock", &lock_path))?;
    let paths = CertPaths::in_dir(certs_dir);
    let result = f(&paths);
    // Dropping the file releases the lock too; unlock explicitly anyway.
    let _ = lock.unlock();
    result.map(|()| paths)
}

/// Loads the CA, or makes one when there is no `ca.pem`.
fn load_or_create_ca(
    certs_dir: &Path,
    paths: &CertPaths,
    org: &str,
) -> Result<LoadedCa, CertError> {
    if !paths.ca.exists() {
        // Without ca.pem nothing can have been signed by a previous CA key,
        // so a leftover ca-key.pem (a crash between the two writes) goes.
        tracing::info!("making a new CA in {}", certs_dir.display());
        let key = new_key("the CA key")?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{org} CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_VALIDITY;
        let cert = params
            .self_signed(&key)
            .map_err(gen_err("the CA certificate"))?;
        write_atomic(&paths.ca_key, key.serialize_pem().as_bytes(), KEY_MODE)?;
        write_atomic(&paths.ca, cert.pem().as_bytes(), CERT_MODE)?;
    }
    let ca = LoadedCa::load(paths)?;
    let now = OffsetDateTime::now_utc();
    if ca.not_after < now + Duration::days(90) {
        tracing::warn!(
            "the CA {} expires on {}: move {} away and run `machine regenerate-certs` for every machine",
            paths.ca.display(),
            ca.not_after.date(),
            certs_dir.display()
        );
    }
    Ok(ca)
}

/// Why the client certificate must be made anew, or `None` if it is fine.
fn client_needs_renewal(paths: &CertPaths, ca: &LoadedCa) -> Result<Option<String>, CertError> {
    if !paths.cert.exists() || !paths.key.exists() {
        return Ok(Some("there is none".to_owned()));
    }
    let pem = fs::read(&paths.cert).map_err(io_err("read", &paths.cert))?;
    let der = match first_cert(&pem) {
        Ok(der) => der,
        Err(reason) => return Ok(Some(format!("the old one is unreadable ({reason})"))),
    };
    let parsed = match ParsedCert::parse(&der) {
        Ok(p) => p,
        Err(reason) => return Ok(Some(format!("the old one is unreadable ({reason})"))),
    };
    let key_ok = fs::read_to_string(&paths.key)
        .ok()
        .and_then(|k| KeyPair::from_pem(&k).ok())
        .is_some_and(|k| k.public_key_raw() == parsed.public_key);
    if !key_ok {
        return Ok(Some(format!(
            "{} does not hold its key",
            paths.key.display()
        )));
    }
    if parsed.not_after < OffsetDateTime::now_utc() + Duration::days(30) {
        return Ok(Some(format!(
            "the old one expires on {}",
            parsed.not_after.date()
        )));
    }
    let mut roots = rustls::RootCertStore::empty();
    if roots.add(ca.der.clone()).is_err() {
        return Ok(Some("the CA is not usable as a trust anchor".to_owned()));
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build();
    let Ok(verifier) = verifier else {
        return Ok(Some("the CA is not usable as a trust anchor".to_owned()));
    };
    match verifier.verify_client_cert(&der, &[], UnixTime::now()) {
        Ok(_) => Ok(None),
        Err(e) => Ok(Some(format!(
            "the old one does not verify against the CA ({e})"
        ))),
    }
}

/// Writes a new client key and certificate signed by `ca`.
fn write_client(paths: &CertPaths, ca: &LoadedCa, org: &str) -> Result<(), CertError> {
    let key = new_key("the client key")?;
    let mut params = leaf_params(ca, "machine client", ExtendedKeyUsagePurpose::ClientAuth);
    if ca.org.is_none() {
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
    }
    let cert = ca.sign(&params, &key, "the client certificate")?;
    write_atomic(&paths.key, key.serialize_pem().as_bytes(), KEY_MODE)?;
    write_atomic(&paths.cert, cert.as_bytes(), CERT_MODE)
}

/// Parameters shared by client and server certificates.
fn leaf_params(
    ca: &LoadedCa,
    common_name: &str,
    eku: ExtendedKeyUsagePurpose,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    if let Some(org) = &ca.org {
        params
            .distinguished_name
            .push(DnType::OrganizationName, org.as_str());
    }
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![eku];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = (now + LEAF_VALIDITY).min(ca.not_after);
    params
}

fn new_key(what: &str) -> Result<KeyPair, CertError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err(what))
}

fn strip_brackets(name: &str) -> &str {
    name.strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name)
}

/// The SAN for one name: an IP SAN for an address, else a DNS SAN for a
/// valid (possibly wildcard) DNS name.
fn san_for(name: &str) -> Result<SanType, CertError> {
    let invalid = |reason: &str| CertError::InvalidName {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    if let Ok(ip) = strip_brackets(name).parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let dns = name.trim_end_matches('.').to_ascii_lowercase();
    let checked = dns.strip_prefix("*.").unwrap_or(&dns);
    if rustls::pki_types::DnsName::try_from(checked).is_err() || checked.parse::<IpAddr>().is_ok() {
        return Err(invalid("neither an IP address nor a valid DNS name"));
    }
    let ia5 = rcgen::string::Ia5String::try_from(dns)
        .map_err(|_| invalid("DNS names in certificates must be ASCII"))?;
    Ok(SanType::DnsName(ia5))
}

// ---------------------------------------------------------------------------
// Files.

/// Writes `bytes` to `path` atomically with permissions `mode`: a temporary
/// file in the same directory, fsync, rename, fsync of the directory.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CertError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(io_err("create a temporary file in", dir))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_err("set permissions of", tmp.path()))?;
    tmp.write_all(bytes).map_err(io_err("write", path))?;
    tmp.as_file().sync_all().map_err(io_err("sync", path))?;
    tmp.persist(path)
        .map_err(|e| io_err("replace", path)(e.error))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync directory", dir))
}

/// The DER of the first certificate in a PEM text.
fn first_cert(pem: &[u8]) -> Result<CertificateDer<'static>, String> {
    match CertificateDer::pem_slice_iter(pem).next() {
        Some(Ok(der)) => Ok(der),
        Some(Err(e)) => Err(format!("bad PEM: {e}")),
        None => Err("no CERTIFICATE block".to_owned()),
    }
}

// ---------------------------------------------------------------------------
// A minimal DER reader for X.509 certificates.

/// One tag-length-value.
#[derive(Debug, Clone, Copy)]
struct Tlv<'a> {
    tag: u8,
    content: &'a [u8],
    /// The whole encoding, header included.
    raw: &'a [u8],
}

/// Reads consecutive TLVs from a byte slice.
#[derive(Debug)]
struct Der<'a>(&'a [u8]);

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

impl<'a> Der<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn peek(&self) -> Option<u8> {
        self.0.first().copied()
    }

    fn next(&mut self) -> Result<Tlv<'a>, String> {
        let data = self.0;
        let (&tag, rest) = data.split_first().ok_or("truncated DER")?;
        if tag & 0x1f == 0x1f {
            return Err("multi-byte DER tags are not supported".to_owned());
        }
        let (&first, rest) = rest.split_first().ok_or("truncated DER length")?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return Err("unsupported DER length".to_owned());
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, &rest[n..])
        };
        if rest.len() < len {
            return Err("truncated DER value".to_owned());
        }
        let header = data.len() - rest.len();
        let tlv = Tlv {
            tag,
            content: &rest[..len],
            raw: &data[..header + len],
        };
        self.0 = &rest[len..];
        Ok(tlv)
    }

    fn expect(&mut self, tag: u8, what: &str) -> Result<Tlv<'a>, String> {
        let tlv = self.next().map_err(|e| format!("{what}: {e}"))?;
        if tlv.tag == tag {
            Ok(tlv)
        } else {
            Err(format!(
                "{what}: expected tag {tag:#04x}, found {:#04x}",
                tlv.tag
            ))
        }
    }
}

/// The parts of a certificate this module needs.
#[derive(Debug)]
struct ParsedCert<'a> {
    issuer_raw: &'a [u8],
    subject_raw: &'a [u8],
    subject_content: &'a [u8],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    /// The subjectPublicKey bits (for EC: the uncompressed point).
    public_key: &'a [u8],
    sans: Vec<String>,
    ski: Option<&'a [u8]>,
}

const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];
const OID_SKI: &[u8] = &[0x55, 0x1d, 0x0e];

impl<'a> ParsedCert<'a> {
    fn parse(der: &'a [u8]) -> Result<Self, String> {
        let mut outer = Der(der);
        let cert = outer.expect(SEQUENCE, "certificate")?;
        let mut cert = Der(cert.content);
        let tbs = cert.expect(SEQUENCE, "tbsCertificate")?;
        let mut tbs = Der(tbs.content);
        if tbs.peek() == Some(0xa0) {
            tbs.next()?;
        }
        tbs.expect(INTEGER, "serial number")?;
        tbs.expect(SEQUENCE, "signature algorithm")?;
        let issuer = tbs.expect(SEQUENCE, "issuer")?;
        let validity = tbs.expect(SEQUENCE, "validity")?;
        let mut validity = Der(validity.content);
        let not_before = parse_time(validity.next()?)?;
        let not_after = parse_time(validity.next()?)?;
        let subject = tbs.expect(SEQUENCE, "subject")?;
        let spki = tbs.expect(SEQUENCE, "subject public key info")?;
        let mut spki = Der(spki.content);
        spki.expect(SEQUENCE, "public key algorithm")?;
        let bits = spki.expect(BIT_STRING, "public key")?;
        let public_key = bits.content.get(1..).ok_or("empty public key")?;
        let mut sans = Vec::new();
        let mut ski = None;
        while let Some(tag) = tbs.peek() {
            let field = tbs.next()?;
            if tag != 0xa3 {
                continue; // issuer/subject unique IDs
            }
            let list = Der(field.content).expect(SEQUENCE, "extensions")?;
            let mut list = Der(list.content);
            while !list.is_empty() {
                let ext = list.expect(SEQUENCE, "extension")?;
                let mut ext = Der(ext.content);
                let oid = ext.expect(OID, "extension id")?;
                if ext.peek() == Some(BOOLEAN) {
                    ext.next()?;
                }
                let value = ext.expect(OCTET_STRING, "extension value")?;
                if oid.content == OID_SAN {
                    sans = parse_sans(value.content)?;
                } else if oid.content == OID_SKI {
                    ski = Some(
                        Der(value.content)
                            .expect(OCTET_STRING, "key identifier")?
                            .content,
                    );
                }
            }
        }
        Ok(ParsedCert {
            issuer_raw: issuer.raw,
            subject_raw: subject.raw,
            subject_content: subject.content,
            not_before,
            not_after,
            public_key,
            sans,
            ski,
        })
    }
}

fn parse_sans(value: &[u8]) -> Result<Vec<String>, String> {
    let names = Der(value).expect(SEQUENCE, "subject alternative names")?;
    let mut names = Der(names.content);
    let mut out = Vec::new();
    while !names.is_empty() {
        let name = names.next()?;
        match name.tag {
            // dNSName [2] IA5String
            0x82 => out.push(String::from_utf8_lossy(name.content).into_owned()),
            // iPAddress [7] OCTET STRING
            0x87 => match name.content.len() {
                4 => {
                    let b: [u8; 4] = name.content.try_into().map_err(|_| "bad IP SAN")?;
                    out.push(IpAddr::from(b).to_string());
                }
                16 => {
                    let b: [u8; 16] = name.content.try_into().map_err(|_| "bad IP SAN")?;
                    out.push(IpAddr::from(b).to_string());
                }
                n => return Err(format!("IP address SAN of {n} bytes")),
            },
            _ => {}
        }
    }
    Ok(out)
}

fn parse_time(tlv: Tlv<'_>) -> Result<OffsetDateTime, String> {
    let text = std::str::from_utf8(tlv.content).map_err(|_| "time is not ASCII")?;
    let digits = text.strip_suffix('Z').ok_or("time is not in UTC")?;
    let (year, rest) = match tlv.tag {
        UTC_TIME if digits.len() == 12 => {
            let yy: i32 = digits[..2].parse().map_err(|_| "bad year")?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        GENERALIZED_TIME if digits.len() == 14 => {
            (digits[..4].parse().map_err(|_| "bad year")?, &digits[4..])
        }
        _ => return Err(format!("unsupported time {text:?}")),
    };
    let num = |i: usize| -> Result<u8, String> {
        rest.get(i..i + 2)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad time {text:?}"))
    };
    let month = time::Month::try_from(num(0)?).map_err(|e| e.to_string())?;
    let date = time::Date::from_calendar_date(year, month, num(2)?).map_err(|e| e.to_string())?;
    let time = time::Time::from_hms(num(4)?, num(6)?, num(8)?).map_err(|e| e.to_string())?;
    Ok(time::PrimitiveDateTime::new(date, time).assume_utc())
}

/// Rebuilds a certificate subject as an rcgen name that encodes to the same
/// bytes: one attribute per RDN, each with its original string type.
fn distinguished_name(subject: &[u8]) -> Result<DistinguishedName, String> {
    let mut dn = DistinguishedName::new();
    let mut rdns = Der(subject);
    while !rdns.is_empty() {
        let set = rdns.expect(SET, "subject RDN")?;
        let mut set = Der(set.content);
        let attr = set.expect(SEQUENCE, "subject attribute")?;
        if !set.is_empty() {
            return Err("multi-valued subject RDNs are not supported".to_owned());
        }
        let mut attr = Der(attr.content);
        let oid = attr.expect(OID, "subject attribute type")?;
        let value = attr.next()?;
        let ty = DnType::from_oid(&oid_arcs(oid.content)?);
        if dn.get(&ty).is_some() {
            return Err("repeated subject attributes are not supported".to_owned());
        }
        let text = || {
            std::str::from_utf8(value.content)
                .map(str::to_owned)
                .map_err(|_| "subject attribute is not UTF-8".to_owned())
        };
        let bad = |e: rcgen::Error| e.to_string();
        let value = match value.tag {
            0x0c => DnValue::Utf8String(text()?),
            0x13 => DnValue::PrintableString(text()?.try_into().map_err(bad)?),
            0x16 => DnValue::Ia5String(text()?.try_into().map_err(bad)?),
            0x14 => DnValue::TeletexString(text()?.try_into().map_err(bad)?),
            t => return Err(format!("subject string type {t:#04x} is not supported")),
        };
        dn.push(ty, value);
    }
    Ok(dn)
}

fn oid_arcs(content: &[u8]) -> Result<Vec<u64>, String> {
    let mut arcs = Vec::new();
    let mut acc: u64 = 0;
    for (i, &b) in content.iter().enumerate() {
        acc = acc.checked_shl(7).ok_or("OID arc too large")? | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (acc / 40).min(2);
                arcs.push(first);
                arcs.push(acc - first * 40);
            } else {
                arcs.push(acc);
            }
            acc = 0;
        } else if i + 1 == content.len() {
            return Err("truncated OID".to_owned());
        }
    }
    Ok(arcs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls_provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap()
    }

    #[test]
    fn ensure_ca_creates_files_with_modes_and_is_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("certs");
        let paths = ensure_ca(&dir, "alice").unwrap();
        assert_eq!(paths, CertPaths::in_dir(&dir));
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&paths.ca_key), 0o600);
        assert_eq!(mode(&paths.key), 0o600);
        assert_eq!(mode(&paths.ca), 0o644);
        assert_eq!(mode(&paths.cert), 0o644);
        let (ca, ca_key, cert, key) = (
            read(&paths.ca),
            read(&paths.ca_key),
            read(&paths.cert),
            read(&paths.key),
        );
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(ca_key.starts_with("-----BEGIN PRIVATE KEY-----"));

        let again = ensure_ca(&dir, "alice").unwrap();
        assert_eq!(again, paths);
        assert_eq!(read(&paths.ca), ca, "the CA is kept");
        assert_eq!(read(&paths.ca_key), ca_key);
        assert_eq!(read(&paths.cert), cert, "a good client cert is kept");
        assert_eq!(read(&paths.key), key);
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".tmp"))
            .collect();
        assert!(names.is_empty(), "temporary files left: {names:?}");
    }

    #[test]
    fn validity_periods() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = ensure_ca(tmp.path(), "org").unwrap();
        let now = OffsetDateTime::now_utc();
        let ca = cert_info(&read(&paths.ca)).unwrap();
        assert!(ca.not_after > now + Duration::days(3650));
        assert!(ca.not_before < now);
        let client = cert_info(&read(&paths.cert)).unwrap();
        assert!(client.not_after > now + Duration::days(3 * 365));
        assert!(client.not_after < now + Duration::days(3 * 365 + 2));
    }

    #[test]
    fn concurrent_ensure_ca_agrees_on_one_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("certs");
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    let paths = ensure_ca(&dir, "org").unwrap();
                    (read(&paths.ca), read(&paths.cert))
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(
            results.windows(2).all(|w| w[0] == w[1]),
            "one CA, one client cert"
        );
    }

    #[test]
    fn server_cert_verifies_for_its_names_only() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = ensure_ca(tmp.path(), "org").unwrap();
        let ca = read(&paths.ca);
        let sans = vec![
            "192.168.99.100".to_owned(),
            "docker.example.com".to_owned(),
            "[fd00::5]".to_owned(),
            " ".to_owned(),
            "docker.example.com".to_owned(),
        ];
        let (cert, key) = server_cert(&paths, &sans, "dev").unwrap();
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
        for name in [
            "192.168.99.100",
            "docker.example.com",
            "DOCKER.example.com",
            "fd00::5",
            "[fd00::5]",
            "localhost",
            "127.0.0.1",
        ] {
            assert!(valid_for(&cert, &ca, name), "valid for {name}");
        }
        for name in ["192.168.99.101", "other.example.com", "example.com", "::1"] {
            assert!(!valid_for(&cert, &ca, name), "not valid for {name}");
        }
        let info = cert_info(&cert).unwrap();
        assert_eq!(
            info.sans,
            [
                "192.168.99.100",
                "docker.example.com",
                "fd00::5",
                "localhost",
                "127.0.0.1"
            ]
        );

        // Another CA's server certificate is not trusted.
        let other = tempfile::tempdir().unwrap();
        let other_paths = ensure_ca(other.path(), "org").unwrap();
        let (foreign, _) = server_cert(&other_paths, &sans, "dev").unwrap();
        assert!(!valid_for(&foreign, &ca, "192.168.99.100"));
        assert!(valid_for(
            &foreign,
            &read(&other_paths.ca),
            "192.168.99.100"
        ));
        assert!(!valid_for("garbage", &ca, "localhost"));
    }

    #[test]
    fn bad_names_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = ensure_ca(tmp.path(), "org").unwrap();
        for bad in ["bad name", "häst.example", "a..b"] {
            let err = server_cert(&paths, &[bad.to_owned()], "x").unwrap_err();
            assert!(matches!(err, CertError::InvalidName { .. }), "{bad}: {err}");
        }
        let (cert, _) = server_cert(&paths, &["*.example.com".to_owned()], "x").unwrap();
        assert!(valid_for(&cert, &read(&paths.ca), "a.example.com"));
    }

    #[test]
    fn install_client_copy_makes_a_docker_cert_path() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = ensure_ca(&tmp.path().join("certs"), "org").unwrap();
        let machine = tmp.path().join("machines").join("dev");
        install_client_copy(&paths, &machine).unwrap();
        assert_eq!(read(&machine.join("ca.pem")), read(&paths.ca));
        assert_eq!(read(&machine.join("cert.pem")), read(&paths.cert));
        assert_eq!(read(&machine.join("key.pem")), read(&paths.key));
        assert_eq!(mode(&machine.join("key.pem")), 0o600);
        assert!(!machine.join("ca-key.pem").exists());
    }

    #[test]
    fn regenerate_client_keeps_the_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = ensure_ca(tmp.path(), "org").unwrap();
        let (ca, cert, key) = (read(&paths.ca), read(&paths.cert), read(&paths.key));
        regenerate_client(tmp.path(), "org").unwrap();
        assert_eq!(read(&paths.ca), ca);
        assert_ne!(read(&paths.cert), cert);
        assert_ne!(read(&paths.key), key);
        assert_eq!(mode(&paths.key), 0o600);
    }

    #[test]
    fn broken_client_cert_is_replaced_but_missing_ca_key_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = ensure_ca(tmp.path(), "org").unwrap();
        let ca = read(&paths.ca);
        // A client cert from another CA is replaced.
        let other = tempfile::tempdir().unwrap();
        let other_paths = ensure_ca(other.path(), "org").unwrap();
        fs::copy(&other_paths.cert, &paths.cert).unwrap();
        fs::copy(&other_paths.key, &paths.key).unwrap();
        ensure_ca(tmp.path(), "org").unwrap();
        assert_ne!(read(&paths.cert), read(&other_paths.cert));
        assert_eq!(read(&paths.ca), ca);
        // Mismatched key.
        fs::copy(&other_paths.key, &paths.key).unwrap();
        ensure_ca(tmp.path(), "org").unwrap();
        assert_ne!(read(&paths.key), read(&other_paths.key));

        fs::remove_file(&paths.ca_key).unwrap();
        let err = ensure_ca(tmp.path(), "org").unwrap_err();
        assert!(matches!(err, CertError::MissingCaKey { .. }), "{err}");
        assert!(err.to_string().contains("ca-key.pem"), "{err}");
        fs::copy(&other_paths.ca_key, &paths.ca_key).unwrap();
        let err = ensure_ca(tmp.path(), "org").unwrap_err();
        assert!(matches!(err, CertError::KeyMismatch { .. }), "{err}");
    }

    #[test]
    fn der_reader_round_trips_a_printable_string_subject() {
        // A CA made elsewhere (e.g. Go's crypto/x509 uses PrintableString).
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(
            DnType::OrganizationName,
            DnValue::PrintableString("bob".try_into().unwrap()),
        );
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let ca = params.self_signed(&key).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let paths = CertPaths::in_dir(tmp.path());
        fs::write(&paths.ca, ca.pem()).unwrap();
        fs::write(&paths.ca_key, key.serialize_pem()).unwrap();
        let paths = ensure_ca(tmp.path(), "ignored").unwrap();
        let (server, _) = server_cert(&paths, &["10.0.0.1".to_owned()], "s").unwrap();
        assert!(valid_for(&server, &ca.pem(), "10.0.0.1"));
    }

    #[test]
    fn oid_arcs_decode() {
        assert_eq!(oid_arcs(&[0x55, 0x04, 0x03]).unwrap(), [2, 5, 4, 3]);
        assert_eq!(
            oid_arcs(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d]).unwrap(),
            [1, 2, 840, 113549]
        );
    }

    /// Moves TLS records between a client and a server until neither has
    /// anything to send; returns the first error either side reports.
    fn pump(
        client: &mut rustls::ClientConnection,
        server: &mut rustls::ServerConnection,
    ) -> Result<(), rustls::Error> {
        loop {
            let mut buf = Vec::new();
            let mut moved = false;
            while client.wants_write() {
                client.write_tls(&mut buf).unwrap();
            }
            if !buf.is_empty() {
                moved = true;
                let mut rd = buf.as_slice();
                while !rd.is_empty() {
                    server.read_tls(&mut rd).unwrap();
                }
                server.process_new_packets()?;
            }
            buf.clear();
            while server.wants_write() {
                server.write_tls(&mut buf).unwrap();
            }
            if !buf.is_empty() {
                moved = true;
                let mut rd = buf.as_slice();
                while !rd.is_empty() {
                    client.read_tls(&mut rd).unwrap();
                }
                client.process_new_packets()?;
            }
            if !moved {
                return Ok(());
            }
        }
    }

    fn private_key(pem: &str) -> rustls::pki_types::PrivateKeyDer<'static> {
        rustls::pki_types::PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn roots(ca_pem: &str) -> Arc<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        for c in certs(ca_pem) {
            roots.add(c).unwrap();
        }
        Arc::new(roots)
    }

    fn handshake(
        server_paths: &CertPaths,
        client_paths: &CertPaths,
        name: &str,
    ) -> Result<(), rustls::Error> {
        let (server_pem, server_key) =
            server_cert(server_paths, &["10.1.2.3".to_owned()], "s").unwrap();
        let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots(&read(&server_paths.ca)),
            tls_provider(),
        )
        .build()
        .unwrap();
        let server_config = rustls::ServerConfig::builder_with_provider(tls_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(certs(&server_pem), private_key(&server_key))
            .unwrap();
        let client_config = rustls::ClientConfig::builder_with_provider(tls_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots(&read(&client_paths.ca)))
            .with_client_auth_cert(
                certs(&read(&client_paths.cert)),
                private_key(&read(&client_paths.key)),
            )
            .unwrap();
        let mut client = rustls::ClientConnection::new(
            Arc::new(client_config),
            ServerName::try_from(name.to_owned()).unwrap(),
        )
        .unwrap();
        let mut server = rustls::ServerConnection::new(Arc::new(server_config)).unwrap();
        pump(&mut client, &mut server)?;
        assert!(!client.is_handshaking() && !server.is_handshaking());
        assert!(server.peer_certificates().is_some_and(|c| !c.is_empty()));
        client.writer().write_all(b"GET /version").unwrap();
        pump(&mut client, &mut server)?;
        let mut got = [0u8; 12];
        io::Read::read_exact(&mut server.reader(), &mut got).unwrap();
        assert_eq!(&got, b"GET /version");
        Ok(())
    }

    #[test]
    fn mutual_tls_handshake_in_memory() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = ensure_ca(tmp.path(), "org").unwrap();
        handshake(&paths, &paths, "10.1.2.3").unwrap();
        handshake(&paths, &paths, "localhost").unwrap();

        let err = handshake(&paths, &paths, "10.9.9.9").unwrap_err();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName
                        | rustls::CertificateError::NotValidForNameContext { .. }
                )
            ),
            "{err:?}"
        );

        // A client certificate from another CA is refused by the server.
        let other = tempfile::tempdir().unwrap();
        let mut stranger = ensure_ca(other.path(), "org").unwrap();
        stranger.ca = paths.ca.clone(); // trusts the right CA for the server
        let err = handshake(&paths, &stranger, "10.1.2.3").unwrap_err();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer
                        | rustls::CertificateError::BadSignature
                ) | rustls::Error::AlertReceived(_)
            ),
            "{err:?}"
        );
    }
}
