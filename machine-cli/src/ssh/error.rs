//! The SSH layer's errors. Each one names what failed (machine, address,
//! user, key, command) and says what to do next, because they end up in
//! front of a person who did not see the SSH conversation.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong talking SSH to a machine.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// Nothing accepted the TCP connection (refused, unreachable, no route).
    #[error(
        "cannot connect to machine `{machine}` over SSH at {addr}: {source}; \
         the host may still be booting, or the SSH address or port is wrong",
        addr = display_addr(host, *port)
    )]
    Connect {
        machine: String,
        host: String,
        port: u16,
        #[source]
        source: std::io::Error,
    },

    /// Connecting, the handshake or authentication took longer than allowed.
    #[error(
        "timed out after {secs}s connecting to machine `{machine}` over SSH at {addr}; \
         the host may still be booting, a firewall may drop the packets, or the port is wrong",
        secs = after.as_secs_f32().round(),
        addr = display_addr(host, *port)
    )]
    Timeout {
        machine: String,
        host: String,
        port: u16,
        after: Duration,
    },

    /// `connect_with_retry` ran out of time; `last` is the last attempt's error.
    #[error(
        "gave up waiting for SSH on machine `{machine}` at {addr} after {secs}s \
         ({attempts} attempts); last error: {last}",
        secs = waited.as_secs(),
        addr = display_addr(host, *port)
    )]
    GaveUp {
        machine: String,
        host: String,
        port: u16,
        waited: Duration,
        attempts: u32,
        #[source]
        last: Box<SshError>,
    },

    /// The SSH protocol failed before authentication (version exchange, key
    /// exchange, a server that closed the connection).
    #[error(
        "SSH handshake with machine `{machine}` at {addr} failed: {source}; \
         check that an SSH server (not another service) listens on that port",
        addr = display_addr(host, *port)
    )]
    Handshake {
        machine: String,
        host: String,
        port: u16,
        #[source]
        source: Box<russh::Error>,
    },

    /// The server presented a host key other than the one pinned for it.
    #[error(
        "the SSH host key of machine `{machine}` at {addr} has changed: expected {expected_fingerprint}, \
         got {got_fingerprint}. This may be a man-in-the-middle attack, or the host was recreated \
         with a new key. If you know the host was recreated, delete {known_hosts} (or its line for \
         {pattern}) to trust the new key",
        addr = display_addr(host, *port),
        pattern = super::known_hosts::host_pattern(host, *port),
        known_hosts = known_hosts.display()
    )]
    HostKeyChanged {
        machine: String,
        host: String,
        port: u16,
        expected_fingerprint: String,
        got_fingerprint: String,
        known_hosts: PathBuf,
    },

    /// The pinned host keys file could not be read, parsed or written.
    #[error(
        "cannot use the SSH known-hosts file {path} of machine `{machine}`: {reason}; \
         fix its permissions, or delete it to pin the host key again on the next connection",
        path = path.display()
    )]
    KnownHosts {
        machine: String,
        path: PathBuf,
        reason: String,
    },

    /// The server refused our public key.
    #[error(
        "SSH authentication as user `{user}` on machine `{machine}` at {addr} failed with key {key}; \
         check that the key's public half ({key}.pub) is in ~{user}/.ssh/authorized_keys on the host \
         and that the user name is right",
        addr = display_addr(host, *port),
        key = key_path.display()
    )]
    Auth {
        machine: String,
        host: String,
        port: u16,
        user: String,
        key_path: PathBuf,
    },

    /// A private key could not be read or used.
    #[error(
        "cannot use the SSH private key {path}: {reason}; it must be an unencrypted \
         OpenSSH-format ed25519 or ECDSA key (`ssh-keygen -t ed25519 -N ''` makes one)",
        path = path.display()
    )]
    Key { path: PathBuf, reason: String },

    /// A key pair could not be written.
    #[error(
        "cannot write the SSH key {path}: {source}; check that its directory exists and is writable",
        path = path.display()
    )]
    KeyWrite {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The connection failed while a command was being set up or run.
    #[error(
        "the SSH connection to machine `{machine}` at {addr} failed while running `{command}`: {source}; \
         the host may have rebooted or the network dropped, try again",
        addr = display_addr(host, *port),
        command = truncate_command(command)
    )]
    Channel {
        machine: String,
        host: String,
        port: u16,
        command: String,
        #[source]
        source: Box<russh::Error>,
    },

    /// The server would not start the command (refused the exec request).
    #[error(
        "the SSH server of machine `{machine}` at {addr} refused to run `{command}`; \
         its configuration may forbid commands for user `{user}`",
        addr = display_addr(host, *port),
        command = truncate_command(command)
    )]
    ExecRefused {
        machine: String,
        host: String,
        port: u16,
        user: String,
        command: String,
    },

    /// The server has no such subsystem (sshd_config's `Subsystem` line).
    #[error(
        "the SSH server of machine `{machine}` at {addr} has no `{subsystem}` subsystem for user `{user}`; \
         add `Subsystem {subsystem} internal-{subsystem}` to the host's sshd_config and restart sshd",
        addr = display_addr(host, *port)
    )]
    SubsystemRefused {
        machine: String,
        host: String,
        port: u16,
        user: String,
        subsystem: String,
    },

    /// The command's channel closed without an exit status.
    #[error(
        "`{command}` on machine `{machine}` ended without an exit status; \
         the connection may have dropped or the host rebooted, try again",
        command = truncate_command(command)
    )]
    NoExitStatus { machine: String, command: String },

    /// A command exited non-zero (`run`, `sudo`, `upload`, `download`).
    #[error(
        "`{command}` failed on machine `{machine}` ({host}) with exit status {status}{tail}\n\
         (`machine ssh {machine}` opens a shell there to investigate)",
        command = truncate_command(command),
        tail = stderr_suffix(stderr)
    )]
    Command {
        machine: String,
        host: String,
        command: String,
        status: u32,
        /// The last lines of the command's stderr.
        stderr: String,
    },

    /// `sudo -n` could not run: a password is needed, the user may not use
    /// sudo, or sudo is missing.
    #[error(
        "user `{user}` on machine `{machine}` cannot run `{command}` as root: {reason}; {fix}",
        command = truncate_command(command)
    )]
    Sudo {
        machine: String,
        user: String,
        command: String,
        reason: String,
        /// What to change on the host (or in how machine connects).
        fix: String,
    },

    /// The local terminal or standard streams failed during `interactive`.
    #[error("{what} for the SSH session to machine `{machine}` failed: {source}")]
    Terminal {
        machine: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl SshError {
    /// Whether waiting and connecting again may help because the host may
    /// be booting: nothing listens yet, or sshd resets connections while it
    /// starts. (A refused key may also be a host whose key is not installed
    /// yet; `connect_with_retry` retries that only briefly.)
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SshError::Connect { .. } | SshError::Timeout { .. } | SshError::Handshake { .. }
        )
    }
}

/// `host:port`, with brackets around IPv6 addresses.
pub(crate) fn display_addr(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Commands can be long scripts; the first line, up to a limit, identifies them.
pub(crate) fn truncate_command(command: &str) -> String {
    const MAX: usize = 160;
    let first = command.trim().lines().next().unwrap_or_default();
    let multi_line = command.trim().lines().nth(1).is_some();
    if first.chars().count() > MAX {
        let cut: String = first.chars().take(MAX).collect();
        format!("{cut}…")
    } else if multi_line {
        format!("{first} …")
    } else {
        first.to_owned()
    }
}

/// The last lines of a command's stderr: where the reason for a failure is.
pub(crate) fn stderr_tail(stderr: &[u8]) -> String {
    const LINES: usize = 12;
    const MAX_CHARS: usize = 2000;
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let tail = lines[lines.len().saturating_sub(LINES)..].join("\n");
    let count = tail.chars().count();
    if count > MAX_CHARS {
        let cut: String = tail.chars().skip(count - MAX_CHARS).collect();
        format!("…{cut}")
    } else {
        tail
    }
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.trim().is_empty() {
        " and no output on stderr".to_owned()
    } else {
        format!(":\n{}", indent(stderr))
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_long_and_multi_line_commands() {
        assert_eq!(truncate_command("  ls -l "), "ls -l");
        assert_eq!(truncate_command("set -e\nrm x"), "set -e …");
        let long = "x".repeat(500);
        let t = truncate_command(&long);
        assert!(t.ends_with('…'));
        assert_eq!(t.chars().count(), 161);
    }

    #[test]
    fn stderr_tail_keeps_the_last_lines() {
        let err: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        let tail = stderr_tail(err.as_bytes());
        assert!(tail.starts_with("line 19\n"), "{tail}");
        assert!(tail.ends_with("line 30"), "{tail}");
    }

    #[test]
    fn command_error_names_everything() {
        let e = SshError::Command {
            machine: "dev".into(),
            host: "10.0.0.5".into(),
            command: "apt-get install -y docker.io".into(),
            status: 100,
            stderr: "E: Unable to locate package docker.io".into(),
        };
        let text = e.to_string();
        for part in [
            "`apt-get install -y docker.io`",
            "machine `dev`",
            "10.0.0.5",
            "exit status 100",
            "E: Unable to locate package docker.io",
        ] {
            assert!(text.contains(part), "{part:?} missing from {text}");
        }
    }

    #[test]
    fn ipv6_addresses_are_bracketed() {
        assert_eq!(display_addr("::1", 22), "[::1]:22");
        assert_eq!(display_addr("example.com", 2222), "example.com:2222");
    }
}
