//! The plugin handshake: how a driver process is started and how it says
//! where it listens.
//!
//! The host starts the driver with [`MAGIC_COOKIE_KEY`] set to
//! [`MAGIC_COOKIE_VALUE`], the protocol versions it speaks in
//! [`ENV_PROTOCOL_VERSIONS`] and a private directory for the socket in
//! [`ENV_UNIX_SOCKET_DIR`]. The driver binds a socket and prints exactly one
//! line on stdout, `CORE|APP|NETWORK|ADDR|PROTOCOL`, parsed by
//! [`Handshake::parse`]. The names and the line are those of
//! hashicorp/go-plugin, so a go-plugin program is a valid driver.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Environment variable whose presence tells a driver binary it was started
/// by `machine` and not by hand.
pub const MAGIC_COOKIE_KEY: &str = "MACHINE_DRIVER_PLUGIN";
/// The value of [`MAGIC_COOKIE_KEY`]. Not a secret: a guard against running
/// a plugin by hand, nothing more.
pub const MAGIC_COOKIE_VALUE: &str = "8c2bd3a1e5f44b0d9a6e7f1c3b5d7e9f";
/// Comma-separated application protocol versions the host speaks.
pub const ENV_PROTOCOL_VERSIONS: &str = "PLUGIN_PROTOCOL_VERSIONS";
/// Directory (mode 0700, made by the host) in which the driver binds its
/// unix socket.
pub const ENV_UNIX_SOCKET_DIR: &str = "PLUGIN_UNIX_SOCKET_DIR";
/// `unix` (default) or `tcp`. With `tcp` the driver listens on 127.0.0.1 and
/// every call must carry [`ENV_TOKEN`]'s value in [`TOKEN_METADATA_KEY`].
pub const ENV_TRANSPORT: &str = "MACHINE_DRIVER_TRANSPORT";
/// Per-launch secret for the TCP transport, so other local users cannot call
/// the driver.
pub const ENV_TOKEN: &str = "MACHINE_DRIVER_TOKEN";
/// gRPC metadata key that carries the TCP transport's token.
pub const TOKEN_METADATA_KEY: &str = "machine-driver-token";
/// gRPC metadata key a driver may set on an error to tell the user what to do.
pub const HINT_METADATA_KEY: &str = "machine-hint";

/// The go-plugin core protocol version; always 1.
pub const CORE_PROTOCOL_VERSION: u32 = 1;
/// Application protocol versions this crate defines, oldest first.
pub const APP_PROTOCOL_VERSIONS: &[u32] = &[1];
/// The gRPC health service name a driver reports SERVING under.
pub const HEALTH_SERVICE: &str = "plugin";
/// The only wire protocol: gRPC over HTTP/2.
pub const WIRE_PROTOCOL: &str = "grpc";

/// Where a driver listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl Address {
    fn network(&self) -> &'static str {
        match self {
            Address::Unix(_) => "unix",
            Address::Tcp(_) => "tcp",
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "{}", p.display()),
            Address::Tcp(a) => write!(f, "{a}"),
        }
    }
}

/// The line a driver prints once on stdout when it is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    pub core_version: u32,
    pub app_version: u32,
    pub address: Address,
    pub protocol: String,
}

/// Why a handshake line was not understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HandshakeError {
    #[error("expected 5 or 6 fields separated by '|', found {0}")]
    FieldCount(usize),
    #[error("{field} is not a number: {value:?}")]
    NotANumber { field: &'static str, value: String },
    #[error("unknown network type {0:?} (expected unix or tcp)")]
    Network(String),
    #[error("bad tcp address {0:?}")]
    TcpAddress(String),
    #[error("empty address")]
    EmptyAddress,
}

impl Handshake {
    /// Parses `CORE|APP|NETWORK|ADDR|PROTOCOL`, with go-plugin's optional
    /// sixth field (a server certificate for its auto-mTLS) tolerated.
    pub fn parse(line: &str) -> Result<Self, HandshakeError> {
        let line = line.trim_end_matches(['\r', '\n']);
        let fields: Vec<&str> = line.split('|').collect();
        if !(5..=6).contains(&fields.len()) {
            return Err(HandshakeError::FieldCount(fields.len()));
        }
        let number = |field: &'static str, value: &str| {
            value
                .parse::<u32>()
                .map_err(|_| HandshakeError::NotANumber {
                    field,
                    value: value.to_owned(),
                })
        };
        let core_version = number("core protocol version", fields[0])?;
        let app_version = number("app protocol version", fields[1])?;
        if fields[3].is_empty() {
            return Err(HandshakeError::EmptyAddress);
        }
        let address = match fields[2] {
            "unix" => Address::Unix(PathBuf::from(fields[3])),
            "tcp" => Address::Tcp(
                fields[3]
                    .parse()
                    .map_err(|_| HandshakeError::TcpAddress(fields[3].to_owned()))?,
            ),
            other => return Err(HandshakeError::Network(other.to_owned())),
        };
        Ok(Self {
            core_version,
            app_version,
            address,
            protocol: fields[4].to_owned(),
        })
    }
}

impl fmt::Display for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}|{}|{}|{}|{}",
            self.core_version,
            self.app_version,
            self.address.network(),
            self.address,
            self.protocol
        )
    }
}

/// Parses the comma-separated version list of [`ENV_PROTOCOL_VERSIONS`],
/// skipping entries that are not numbers.
pub fn parse_versions(list: &str) -> Vec<u32> {
    list.split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect()
}

/// Renders a version list for [`ENV_PROTOCOL_VERSIONS`].
pub fn format_versions(versions: &[u32]) -> String {
    versions
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The highest version both sides speak.
pub fn negotiate(offered: &[u32], supported: &[u32]) -> Option<u32> {
    offered
        .iter()
        .copied()
        .filter(|v| supported.contains(v))
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_unix_line() {
        let h = Handshake::parse("1|1|unix|/tmp/m/sock|grpc\n").unwrap();
        assert_eq!(h.core_version, 1);
        assert_eq!(h.app_version, 1);
        assert_eq!(h.address, Address::Unix("/tmp/m/sock".into()));
        assert_eq!(h.protocol, "grpc");
        assert_eq!(h.to_string(), "1|1|unix|/tmp/m/sock|grpc");
    }

    #[test]
    fn parses_tcp_line_with_go_plugin_cert_field() {
        let h = Handshake::parse("1|2|tcp|127.0.0.1:4000|grpc|MIIB").unwrap();
        assert_eq!(h.address, Address::Tcp("127.0.0.1:4000".parse().unwrap()));
        assert_eq!(h.app_version, 2);
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(
            Handshake::parse("hello world"),
            Err(HandshakeError::FieldCount(1))
        );
        assert!(matches!(
            Handshake::parse("x|1|unix|/s|grpc"),
            Err(HandshakeError::NotANumber { .. })
        ));
        assert_eq!(
            Handshake::parse("1|1|udp|/s|grpc"),
            Err(HandshakeError::Network("udp".into()))
        );
        assert_eq!(
            Handshake::parse("1|1|tcp|nowhere|grpc"),
            Err(HandshakeError::TcpAddress("nowhere".into()))
        );
        assert_eq!(
            Handshake::parse("1|1|unix||grpc"),
            Err(HandshakeError::EmptyAddress)
        );
    }

    #[test]
    fn negotiates_highest_common_version() {
        assert_eq!(negotiate(&[1, 2, 3], &[1, 2]), Some(2));
        assert_eq!(negotiate(&[3], &[1, 2]), None);
        assert_eq!(parse_versions("1, 2,x,3"), vec![1, 2, 3]);
        assert_eq!(format_versions(&[1, 2]), "1,2");
    }
}
