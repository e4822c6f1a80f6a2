//! Talking to a provisioned Docker daemon over mutual TLS (DESIGN.md §5):
//! readiness is the Docker API answering, not a port accepting connections.
//!
//! Connections use bollard with rustls: the client presents `cert.pem` /
//! `key.pem` from a machine directory and checks the daemon's certificate
//! against `ca.pem` there. Failures are sorted into what a user can act on
//! ([`DockerApiError`]): the host or daemon not reachable, the machine's
//! address no longer matching its certificate (Docker Machine's most common
//! complaint: docker/machine#531, #568, #3093), other TLS failures, a
//! timeout, or an error answer from the API.
//!
//! Crypto provider: bollard's TLS needs a process-wide rustls
//! `CryptoProvider` (it panics without one when loading the client key). The
//! CLI's `main` installs rustls's ring provider once; every function here
//! also installs it if none is installed yet, so library callers and tests
//! need not remember.
//!
//! Caveat of bollard 0.21: besides `ca.pem` it also trusts the system's root
//! certificates (`rustls-native-certs`) for the daemon's certificate. The
//! client certificate still has to be accepted by the daemon, and the Docker
//! CLI (which trusts `ca.pem` only) is what users point at the machine.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;

/// Docker's port for the API over TLS, used when a URL has none.
pub const DEFAULT_TLS_PORT: u16 = 2376;

/// How long [`wait_ready`] keeps retrying TLS failures (a daemon restarting
/// with a new certificate may briefly still answer with the old one).
const TLS_GRACE: Duration = Duration::from_secs(5);
/// Upper bound for one attempt inside [`wait_ready`].
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The daemon's answer to `GET /version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerVersion {
    /// Engine version, e.g. `27.3.1`.
    pub version: String,
    /// Highest API version the engine speaks, e.g. `1.47`.
    pub api_version: String,
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// Architecture, e.g. `amd64`.
    pub arch: String,
}

/// The bits of `GET /info` that `ls`, `inspect` and the tests use.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EngineInfo {
    /// Engine version.
    pub server_version: String,
    /// Engine labels (`--engine-label`), as `key=value`.
    pub labels: Vec<String>,
    /// Storage driver, e.g. `overlay2`.
    pub storage_driver: String,
    /// Default logging driver, e.g. `json-file`.
    pub logging_driver: String,
    /// The daemon host's name.
    pub name: String,
    /// The host's operating system, e.g. `Debian GNU/Linux 12 (bookworm)`.
    pub operating_system: String,
    /// The host's kernel version.
    pub kernel_version: String,
    /// The host's architecture, e.g. `x86_64`.
    pub architecture: String,
    /// Number of CPUs.
    pub ncpu: i64,
    /// Memory in bytes.
    pub mem_total: i64,
}

/// Why the Docker API could not be used; every message names the URL (or
/// file) and what to do.
#[derive(Debug, thiserror::Error)]
pub enum DockerApiError {
    /// The URL is not `tcp://host:port` (or `https://`, or `host:port`).
    #[error("{url:?} is not a Docker TLS address ({reason}); expected tcp://HOST:PORT")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A certificate file needed for the connection is missing or unusable.
    #[error("cannot use the TLS files for Docker in {}: {detail}; run `machine regenerate-certs {machine}`", dir.display())]
    Certs {
        /// The certificate directory.
        dir: PathBuf,
        /// What is wrong.
        detail: String,
        /// The machine's name as far as it can be told from `dir`.
        machine: String,
    },
    /// Nothing accepted the connection: the host is down or unreachable, or
    /// Docker is not (yet) listening on that port.
    #[error(
        "cannot reach Docker at {url}: {detail} (is the machine running, and Docker listening on that port?)"
    )]
    Unreachable {
        /// The URL.
        url: String,
        /// The underlying error, e.g. `Connection refused (os error 111)`.
        detail: String,
    },
    /// The daemon's certificate is not valid for the address connected to:
    /// the machine's address changed since the certificate was made.
    #[error(
        "the machine's address no longer matches its certificate: Docker at {url} presented a certificate for {presented}; run `machine regenerate-certs {machine}`"
    )]
    CertMismatch {
        /// The URL.
        url: String,
        /// The names the certificate is valid for, comma separated
        /// ("other names" when rustls did not say).
        presented: String,
        /// The machine's name as far as it can be told from the cert dir.
        machine: String,
    },
    /// TLS failed for another reason: the daemon's certificate is not from
    /// the machine's CA or expired, the daemon refused the client
    /// certificate, or the port does not speak TLS.
    #[error("TLS with Docker at {url} failed: {detail}; {hint}")]
    Tls {
        /// The URL.
        url: String,
        /// rustls's description.
        detail: String,
        /// What to do.
        hint: String,
    },
    /// No answer in time.
    #[error(
        "Docker at {url} did not answer within {timeout:?} (is the machine overloaded, or a firewall dropping packets?)"
    )]
    Timeout {
        /// The URL.
        url: String,
        /// The time allowed.
        timeout: Duration,
    },
    /// The daemon answered with an error, or with something that is not the
    /// Docker API.
    #[error("Docker at {url} answered {what} with an error: {detail}")]
    Api {
        /// The URL.
        url: String,
        /// The request, e.g. `GET /version`.
        what: &'static str,
        /// HTTP status, when there was one.
        status: Option<u16>,
        /// The error.
        detail: String,
    },
    /// [`wait_ready`] gave up; `last` is the last attempt's error.
    #[error("Docker at {url} was not ready after {waited:?}: {last}")]
    NotReady {
        /// The URL.
        url: String,
        /// How long it waited.
        waited: Duration,
        /// The last attempt's error.
        #[source]
        last: Box<DockerApiError>,
    },
}

impl DockerApiError {
    /// The daemon's certificate does not cover the address connected to
    /// (`machine regenerate-certs NAME` fixes it).
    pub fn is_cert_mismatch(&self) -> bool {
        match self {
            DockerApiError::CertMismatch { .. } => true,
            DockerApiError::NotReady { last, .. } => last.is_cert_mismatch(),
            _ => false,
        }
    }

    /// Nothing accepted the connection (host down, Docker not listening).
    pub fn is_unreachable(&self) -> bool {
        match self {
            DockerApiError::Unreachable { .. } => true,
            DockerApiError::NotReady { last, .. } => last.is_unreachable(),
            _ => false,
        }
    }

    /// Any TLS failure, the certificate mismatch included.
    pub fn is_tls(&self) -> bool {
        match self {
            DockerApiError::Tls { .. } | DockerApiError::CertMismatch { .. } => true,
            DockerApiError::NotReady { last, .. } => last.is_tls(),
            _ => false,
        }
    }

    /// No answer in time.
    pub fn is_timeout(&self) -> bool {
        match self {
            DockerApiError::Timeout { .. } => true,
            DockerApiError::NotReady { last, .. } => last.is_timeout(),
            _ => false,
        }
    }
}

/// Asks the daemon at `url` (`tcp://host:port`) for its version over mutual
/// TLS with `ca.pem`, `cert.pem` and `key.pem` from `cert_dir`, waiting at
/// most `timeout`.
pub async fn version(
    url: &str,
    cert_dir: &Path,
    timeout: Duration,
) -> Result<DockerVersion, DockerApiError> {
    let docker = connect(url, cert_dir, timeout)?;
    let v = request(url, cert_dir, timeout, "GET /version", docker.version()).await?;
    Ok(DockerVersion {
        version: v.version.unwrap_or_default(),
        api_version: v.api_version.unwrap_or_default(),
        os: v.os.unwrap_or_default(),
        arch: v.arch.unwrap_or_default(),
    })
}

/// Calls [`version`] until the daemon answers or `total` has passed, with
/// a short backoff (0.25 s growing to 2 s); returns the version.
///
/// Unreachable daemons, timeouts and error answers are retried until the
/// end; TLS failures only for a few seconds (long enough for a daemon that
/// is restarting with a new certificate), since waiting does not fix a
/// certificate. Bad URLs and missing certificate files fail at once. On
/// giving up the error is [`DockerApiError::NotReady`] around the last
/// attempt's error.
pub async fn wait_ready(
    url: &str,
    cert_dir: &Path,
    total: Duration,
) -> Result<DockerVersion, DockerApiError> {
    let start = tokio::time::Instant::now();
    let deadline = start + total;
    let mut backoff = Duration::from_millis(250);
    let mut tls_since: Option<tokio::time::Instant> = None;
    loop {
        let now = tokio::time::Instant::now();
        let attempt = deadline
            .saturating_duration_since(now)
            .clamp(Duration::from_secs(1), ATTEMPT_TIMEOUT);
        let err = match version(url, cert_dir, attempt).await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let now = tokio::time::Instant::now();
        match &err {
            DockerApiError::BadUrl { .. } | DockerApiError::Certs { .. } => return Err(err),
            DockerApiError::Tls { .. } | DockerApiError::CertMismatch { .. } => {
                let since = *tls_since.get_or_insert(now);
                if now.duration_since(since) >= TLS_GRACE {
                    return Err(not_ready(url, start, err));
                }
            }
            _ => tls_since = None,
        }
        tracing::debug!("Docker at {url} not ready yet: {err}");
        if now + backoff >= deadline {
            return Err(not_ready(url, start, err));
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 3 / 2).min(Duration::from_secs(2));
    }
}

fn not_ready(url: &str, start: tokio::time::Instant, last: DockerApiError) -> DockerApiError {
    DockerApiError::NotReady {
        url: url.to_owned(),
        waited: Duration::from_secs(start.elapsed().as_secs()),
        last: Box::new(last),
    }
}

/// Asks the daemon at `url` for engine information (labels, storage and
/// logging drivers, version, host facts), waiting at most `timeout`.
pub async fn info(
    url: &str,
    cert_dir: &Path,
    timeout: Duration,
) -> Result<EngineInfo, DockerApiError> {
    let docker = connect(url, cert_dir, timeout)?;
    let i = request(url, cert_dir, timeout, "GET /info", docker.info()).await?;
    Ok(EngineInfo {
        server_version: i.server_version.unwrap_or_default(),
        labels: i.labels.unwrap_or_default(),
        storage_driver: i.driver.unwrap_or_default(),
        logging_driver: i.logging_driver.unwrap_or_default(),
        name: i.name.unwrap_or_default(),
        operating_system: i.operating_system.unwrap_or_default(),
        kernel_version: i.kernel_version.unwrap_or_default(),
        architecture: i.architecture.unwrap_or_default(),
        ncpu: i.ncpu.unwrap_or_default(),
        mem_total: i.mem_total.unwrap_or_default(),
    })
}

/// `host:port` from `tcp://host:port`, `https://host:port` or `host:port`;
/// the port defaults to 2376.
fn host_port(url: &str) -> Result<String, DockerApiError> {
    let bad = |reason: &str| DockerApiError::BadUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let rest = match url.split_once("://") {
        Some(("tcp" | "https", rest)) => rest,
        Some((scheme, _)) => {
            return Err(bad(&format!("scheme {scheme}:// is not Docker over TLS")));
        }
        None => url,
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return Err(bad("expected only a host and a port"));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
        match after {
            "" => (format!("[{addr}]"), None),
            p => (
                format!("[{addr}]"),
                Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ']'"))?),
            ),
        }
    } else {
        match rest.matches(':').count() {
            0 => (rest.to_owned(), None),
            1 => {
                let (h, p) = rest.split_once(':').unwrap_or((rest, ""));
                (h.to_owned(), Some(p))
            }
            _ => return Err(bad("an IPv6 address must be in brackets, like [::1]:2376")),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err(bad("no host"));
    }
    let port = match port {
        None => DEFAULT_TLS_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?,
    };
    Ok(format!("{host}:{port}"))
}

/// The machine's name as far as it can be told from its cert dir
/// (`machines/<name>/`), for messages.
fn machine_name(cert_dir: &Path) -> String {
    match cert_dir.file_name().and_then(|n| n.to_str()) {
        Some(n) if !n.is_empty() && n != "certs" => n.to_owned(),
        _ => "NAME".to_owned(),
    }
}

fn connect(url: &str, cert_dir: &Path, timeout: Duration) -> Result<Docker, DockerApiError> {
    // bollard's TLS needs a process-wide provider; installing fails
    // harmlessly when `main` (or anyone) already installed one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let addr = host_port(url)?;
    let certs_err = |detail: String| DockerApiError::Certs {
        dir: cert_dir.to_owned(),
        detail,
        machine: machine_name(cert_dir),
    };
    let ca = cert_dir.join("ca.pem");
    let cert = cert_dir.join("cert.pem");
    let key = cert_dir.join("key.pem");
    // bollard reads cert.pem and key.pem only during the handshake and,
    // if they are unusable, silently sends no client certificate; check
    // them here so the message names the file.
    for file in [&ca, &cert, &key] {
        if let Err(e) = std::fs::File::open(file) {
            return Err(certs_err(format!("cannot read {}: {e}", file.display())));
        }
    }
    // Our own timeout (below) is the one that fires; bollard's, in whole
    // seconds, is a backstop.
    let secs = timeout.as_secs() + 2;
    Docker::connect_with_ssl(
        &format!("https://{addr}"),
        &key,
        &cert,
        &ca,
        secs,
        bollard::API_DEFAULT_VERSION,
    )
    .map_err(|e| match e {
        bollard::errors::Error::LoadNativeCertsErrors { errors } => certs_err(format!(
            "cannot load the system's root certificates, which bollard also loads ({}); check SSL_CERT_FILE and SSL_CERT_DIR",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        )),
        other => certs_err(other.to_string()),
    })
}

/// Runs one request with `timeout` and sorts its failure.
async fn request<T>(
    url: &str,
    cert_dir: &Path,
    timeout: Duration,
    what: &'static str,
    fut: impl Future<Output = Result<T, bollard::errors::Error>>,
) -> Result<T, DockerApiError> {
    match tokio::time::timeout(timeout, fut).await {
        Err(_) => Err(DockerApiError::Timeout {
            url: url.to_owned(),
            timeout,
        }),
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(classify(url, cert_dir, timeout, what, &e)),
    }
}

/// The next error in a chain. An `io::Error` wrapping another error
/// answers `source()` with the *wrapped error's* source, skipping the
/// wrapped error itself (and hyper-rustls wraps rustls's `io::Error` in
/// another one), so step into it with `get_ref` instead.
fn next_in_chain<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a (dyn std::error::Error + 'static)> {
    match e.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
        Some(inner) => Some(inner),
        None => e.source(),
    }
}

/// Every error in `err`'s chain, `err` first.
fn chain_of<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(err), |&e| next_in_chain(e)).take(32)
}

/// The first rustls error in `err`'s chain.
fn find_tls_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    chain_of(err).find_map(|e| e.downcast_ref::<rustls::Error>())
}

/// Where to start walking a bollard error's chain: its `transparent`
/// variants forward `source()` past the error they wrap.
fn chain_start(err: &bollard::errors::Error) -> &(dyn std::error::Error + 'static) {
    match err {
        bollard::errors::Error::IOError { err } => err,
        bollard::errors::Error::HyperResponseError { err } => err,
        other => other,
    }
}

/// The innermost message of an error chain (e.g. the OS error).
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    chain_of(err).last().unwrap_or(err).to_string()
}

fn classify(
    url: &str,
    cert_dir: &Path,
    timeout: Duration,
    what: &'static str,
    err: &bollard::errors::Error,
) -> DockerApiError {
    use bollard::errors::Error as B;
    let url_owned = url.to_owned();
    let chain = chain_start(err);
    if let Some(tls) = find_tls_error(chain) {
        return classify_tls(url, cert_dir, tls);
    }
    match err {
        B::RequestTimeoutError => DockerApiError::Timeout {
            url: url_owned,
            timeout,
        },
        B::HyperLegacyError { err: inner } if inner.is_connect() => DockerApiError::Unreachable {
            url: url_owned,
            detail: root_cause(chain),
        },
        B::DockerResponseServerError {
            status_code,
            message,
        } => DockerApiError::Api {
            url: url_owned,
            what,
            status: Some(*status_code),
            detail: message.clone(),
        },
        B::CertPathError { .. } | B::CertParseError { .. } | B::CertMultipleKeys { .. } => {
            DockerApiError::Certs {
                dir: cert_dir.to_owned(),
                detail: err.to_string(),
                machine: machine_name(cert_dir),
            }
        }
        _ => {
            // The innermost `io::Error` is the most specific.
            let io_kind = chain_of(chain)
                .filter_map(|e| e.downcast_ref::<io::Error>())
                .map(io::Error::kind)
                .last();
            match io_kind {
                Some(
                    io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::HostUnreachable
                    | io::ErrorKind::NetworkUnreachable
                    | io::ErrorKind::AddrNotAvailable,
                ) => DockerApiError::Unreachable {
                    url: url_owned,
                    detail: root_cause(chain),
                },
                Some(io::ErrorKind::TimedOut) => DockerApiError::Timeout {
                    url: url_owned,
                    timeout,
                },
                _ => DockerApiError::Api {
                    url: url_owned,
                    what,
                    status: None,
                    detail: format!("{err} ({})", root_cause(chain)),
                },
            }
        }
    }
}

fn classify_tls(url: &str, cert_dir: &Path, tls: &rustls::Error) -> DockerApiError {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let machine = machine_name(cert_dir);
    let ca = cert_dir.join("ca.pem");
    let cert = cert_dir.join("cert.pem");
    let hint = match tls {
        E::InvalidCertificate(C::NotValidForName) => {
            return DockerApiError::CertMismatch {
                url: url.to_owned(),
                presented: "other names".to_owned(),
                machine,
            };
        }
        E::InvalidCertificate(C::NotValidForNameContext { presented, .. }) => {
            let names: Vec<String> = presented.iter().filter_map(|n| plain_name(n)).collect();
            return DockerApiError::CertMismatch {
                url: url.to_owned(),
                presented: if names.is_empty() {
                    "other names".to_owned()
                } else {
                    names.join(", ")
                },
                machine,
            };
        }
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => format!(
            "the daemon's certificate has expired; run `machine regenerate-certs {machine}`"
        ),
        E::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => format!(
            "the daemon's certificate is not valid yet: check the clock here and on the machine, or run `machine regenerate-certs {machine}`"
        ),
        E::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => format!(
            "the daemon's certificate was not issued by the CA in {}: the machine was provisioned from another store or its certificates were replaced; run `machine regenerate-certs {machine}`",
            ca.display()
        ),
        E::InvalidCertificate(_) => format!(
            "the daemon's certificate is unusable; run `machine regenerate-certs {machine}`"
        ),
        E::AlertReceived(
            A::BadCertificate
            | A::UnknownCA
            | A::CertificateRequired
            | A::CertificateExpired
            | A::CertificateUnknown
            | A::CertificateRevoked
            | A::UnsupportedCertificate
            | A::AccessDenied,
        ) => format!(
            "the daemon refused the client certificate {}: it was not issued by the CA the daemon trusts, or has expired; run `machine regenerate-certs {machine}` (add --client-certs if the client certificate is at fault)",
            cert.display()
        ),
        E::InvalidMessage(_) | E::InappropriateMessage { .. } | E::PeerSentOversizedRecord => {
            "does that port speak TLS? Docker may be listening without TLS, or another service answers there".to_owned()
        }
        _ => format!("check the certificates in {}, or run `machine regenerate-certs {machine}`", cert_dir.display()),
    };
    DockerApiError::Tls {
        url: url.to_owned(),
        detail: tls.to_string(),
        hint,
    }
}

/// A name as webpki describes it (`DnsName("a.example")`,
/// `IpAddress(10.0.0.5)`) in plain form; `None` for kinds of names that
/// cannot match an address.
fn plain_name(described: &str) -> Option<String> {
    if let Some(dns) = described
        .strip_prefix("DnsName(\"")
        .and_then(|n| n.strip_suffix("\")"))
    {
        return Some(dns.to_owned());
    }
    if let Some(ip) = described
        .strip_prefix("IpAddress(")
        .and_then(|n| n.strip_suffix(')'))
    {
        return Some(ip.to_owned());
    }
    (!described.contains('(') && described != "DirectoryName").then(|| described.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        let ok = |u: &str| host_port(u).unwrap();
        assert_eq!(ok("tcp://192.168.99.100:2376"), "192.168.99.100:2376");
        assert_eq!(
            ok("https://docker.example.com:2377/"),
            "docker.example.com:2377"
        );
        assert_eq!(ok("10.0.0.1"), "10.0.0.1:2376");
        assert_eq!(ok("tcp://[fd00::1]:2376"), "[fd00::1]:2376");
        assert_eq!(ok("tcp://[fd00::1]"), "[fd00::1]:2376");
        for bad in [
            "unix:///var/run/docker.sock",
            "ssh://host",
            "tcp://",
            "tcp://fd00::1:2376",
            "tcp://host:port",
            "tcp://host:0",
            "tcp://host:2376/path",
        ] {
            assert!(
                matches!(host_port(bad), Err(DockerApiError::BadUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn machine_name_from_dir() {
        assert_eq!(machine_name(Path::new("/s/machines/dev")), "dev");
        assert_eq!(machine_name(Path::new("/s/certs")), "NAME");
    }

    #[test]
    fn tls_errors_are_sorted() {
        let dir = Path::new("/store/machines/dev");
        let e = classify_tls(
            "tcp://10.0.0.9:2376",
            dir,
            &rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForNameContext {
                expected: rustls::pki_types::ServerName::try_from("10.0.0.9").unwrap(),
                presented: vec![
                    "IpAddress(10.0.0.5)".to_owned(),
                    "DnsName(\"localhost\")".to_owned(),
                    "DirectoryName".to_owned(),
                ],
            }),
        );
        assert!(e.is_cert_mismatch() && e.is_tls());
        let msg = e.to_string();
        assert!(msg.contains("no longer matches its certificate"), "{msg}");
        assert!(msg.contains("machine regenerate-certs dev"), "{msg}");
        assert!(msg.contains("10.0.0.5, localhost"), "{msg}");

        let e = classify_tls(
            "tcp://10.0.0.9:2376",
            dir,
            &rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate),
        );
        assert!(!e.is_cert_mismatch() && e.is_tls());
        assert!(e.to_string().contains("cert.pem"), "{e}");

        let wrapped = DockerApiError::NotReady {
            url: "tcp://x:1".to_owned(),
            waited: Duration::from_secs(3),
            last: Box::new(classify_tls(
                "tcp://x:1",
                dir,
                &rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName),
            )),
        };
        assert!(wrapped.is_cert_mismatch());
    }

    #[test]
    fn tls_error_is_found_inside_io_error() {
        let io = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName),
        );
        // hyper-rustls wraps tokio-rustls's io::Error in another one.
        let io = io::Error::other(io);
        let outer = bollard::errors::Error::IOError { err: io };
        assert!(matches!(
            find_tls_error(chain_start(&outer)),
            Some(rustls::Error::InvalidCertificate(_))
        ));
    }
}
