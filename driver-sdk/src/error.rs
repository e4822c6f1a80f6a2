//! Driver errors and how they travel: each kind maps to one gRPC code, and an
//! optional hint (what the user should do) travels in the `machine-hint`
//! metadata of the status.

use machine_proto::handshake::HINT_METADATA_KEY;
use tonic::{Code, Status};

/// The kind of a driver error; decides the gRPC code the CLI sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A flag or config value is wrong (INVALID_ARGUMENT).
    InvalidArgument,
    /// The provider has no such host (NOT_FOUND).
    NotFound,
    /// The host already exists at the provider (ALREADY_EXISTS).
    AlreadyExists,
    /// Something the operation needs is missing: a tool not installed, the
    /// host in the wrong state (FAILED_PRECONDITION).
    FailedPrecondition,
    /// The driver does not implement this operation (UNIMPLEMENTED).
    Unsupported,
    /// The provider cannot be reached now; trying again may work (UNAVAILABLE).
    Unavailable,
    /// Credentials were refused (PERMISSION_DENIED).
    PermissionDenied,
    /// The provider took too long (DEADLINE_EXCEEDED).
    Timeout,
    /// Anything else (INTERNAL).
    Internal,
}

impl ErrorKind {
    pub fn code(self) -> Code {
        match self {
            ErrorKind::InvalidArgument => Code::InvalidArgument,
            ErrorKind::NotFound => Code::NotFound,
            ErrorKind::AlreadyExists => Code::AlreadyExists,
            ErrorKind::FailedPrecondition => Code::FailedPrecondition,
            ErrorKind::Unsupported => Code::Unimplemented,
            ErrorKind::Unavailable => Code::Unavailable,
            ErrorKind::PermissionDenied => Code::PermissionDenied,
            ErrorKind::Timeout => Code::DeadlineExceeded,
            ErrorKind::Internal => Code::Internal,
        }
    }
}

/// An error a driver returns from an operation.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    /// What the user should do about it, shown after the message.
    pub hint: Option<String>,
}

/// Result of a driver operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            hint: None,
        }
    }

    /// Adds what the user should do next.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::AlreadyExists, message)
    }
    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::FailedPrecondition, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
    /// The operation is not implemented by this driver.
    pub fn unsupported(operation: &str) -> Self {
        Self::new(
            ErrorKind::Unsupported,
            format!("this driver does not support {operation}"),
        )
    }

    /// Wraps any error with what was being done.
    pub fn context(kind: ErrorKind, doing: &str, err: impl std::fmt::Display) -> Self {
        Self::new(kind, format!("{doing}: {err}"))
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let mut status = Status::new(e.kind.code(), e.message);
        if let Some(hint) = e.hint {
            // Metadata is ASCII without line breaks; keep what fits.
            let clean: String = hint
                .chars()
                .map(|c| {
                    if c.is_ascii_graphic() || c == ' ' {
                        c
                    } else {
                        ' '
                    }
                })
                .collect();
            if let Ok(v) = clean.parse() {
                status.metadata_mut().insert(HINT_METADATA_KEY, v);
            }
        }
        status
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        let kind = match e.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            std::io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
            std::io::ErrorKind::TimedOut => ErrorKind::Timeout,
            _ => ErrorKind::Internal,
        };
        Self::new(kind, e.to_string())
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Self::new(ErrorKind::Internal, format!("driver config: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_and_hint_reach_the_status() {
        let status: Status = Error::failed_precondition("VBoxManage not found")
            .with_hint("install VirtualBox\nfrom virtualbox.org")
            .into();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.message(), "VBoxManage not found");
        assert_eq!(
            status.metadata().get(HINT_METADATA_KEY).unwrap(),
            "install VirtualBox from virtualbox.org"
        );
    }
}
