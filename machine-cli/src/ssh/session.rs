//! One SSH connection to a machine ([`Session`]) and the operations that
//! open channels on it: commands with captured output, commands as root,
//! file upload and download through `cat`. Connecting pins the host key
//! (see [`super::known_hosts`]) and authenticates with the machine's key.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use russh::client;
use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, ChannelReadHalf, Sig};
use tokio::io::AsyncWriteExt;

use super::error::{SshError, stderr_tail};
use super::keys::load_private_key;
use super::known_hosts::{self, Verdict};
use super::quote::{download_command, sudo_command, upload_script};

/// Where and as whom to connect, and where the machine's pinned host key lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The machine's name, for messages.
    pub machine: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    /// The private key (OpenSSH format) to authenticate with.
    pub key_path: PathBuf,
    /// The machine's pinned host keys (written on first contact).
    pub known_hosts: PathBuf,
}

/// What a remote command did. A command killed by a signal has status
/// 128 + the signal's number, as shells report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub status: u32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    /// Whether the command exited 0.
    pub fn success(&self) -> bool {
        self.status == 0
    }

    /// stdout as text (invalid UTF-8 replaced).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// One SSH connection; every operation opens its own channel on it, so
/// several can run at once.
pub struct Session {
    pub(super) handle: client::Handle<HostKeyCheck>,
    pub(super) target: Target,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("target", &self.target)
            .field("closed", &self.handle.is_closed())
            .finish()
    }
}

/// How long one attempt of [`Session::connect_with_retry`] may take: long
/// enough for a slow handshake, short enough that a host that silently
/// drops packets while booting gets tried again.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);

/// For how long authentication failures are retried: a host may accept
/// connections a moment before its key is installed (cloud-init), but a
/// wrong key should not make the user wait the whole boot allowance.
const AUTH_RETRY_WINDOW: Duration = Duration::from_secs(30);

impl Session {
    /// Connects once with public-key authentication, within `timeout`
    /// (TCP connection, handshake and authentication together).
    pub async fn connect(target: &Target, timeout: Duration) -> Result<Session, SshError> {
        // Read the key first: a bad key file is no reason to touch the network.
        let key = load_private_key(&target.key_path)?;
        match tokio::time::timeout(timeout, connect_with_key(target, key)).await {
            Ok(result) => result,
            Err(_) => Err(SshError::Timeout {
                machine: target.machine.clone(),
                host: target.host.clone(),
                port: target.port,
                after: timeout,
            }),
        }
    }

    /// Connects, trying again while the host may still be booting (nothing
    /// listens, the connection is reset or times out, or, for a short
    /// while, authentication fails) until `total` has passed. Calls
    /// `on_wait(attempt, elapsed)` before each pause. Errors that waiting
    /// cannot fix (a changed host key, an unusable key file) end at once.
    pub async fn connect_with_retry(
        target: &Target,
        total: Duration,
        mut on_wait: impl FnMut(u32, Duration),
    ) -> Result<Session, SshError> {
        let started = Instant::now();
        let mut first_auth_failure: Option<Instant> = None;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let remaining = total.saturating_sub(started.elapsed());
            let per_attempt = remaining.clamp(Duration::from_secs(1), ATTEMPT_TIMEOUT);
            let error = match Session::connect(target, per_attempt).await {
                Ok(session) => return Ok(session),
                Err(e) => e,
            };
            let retry = match &error {
                SshError::Auth { .. } => {
                    let since = *first_auth_failure.get_or_insert_with(Instant::now);
                    since.elapsed() < AUTH_RETRY_WINDOW
                }
                e => e.is_transient(),
            };
            let elapsed = started.elapsed();
            if !retry {
                return Err(error);
            }
            if elapsed >= total {
                return Err(SshError::GaveUp {
                    machine: target.machine.clone(),
                    host: target.host.clone(),
                    port: target.port,
                    waited: elapsed,
                    attempts: attempt,
                    last: Box::new(error),
                });
            }
            tracing::debug!(
                "SSH attempt {attempt} to {} failed: {error}",
                target.machine
            );
            on_wait(attempt, elapsed);
            // Refused or reset at once: sshd is not up yet (a published
            // container port accepts and then resets until it is). Ask
            // again soon; a boot finishing is worth catching within
            // a quarter second. Slow failures keep the longer backoff.
            let quick = matches!(error, SshError::Connect { .. } | SshError::Handshake { .. });
            let pause = if quick { QUICK_RETRY } else { backoff(attempt) };
            let pause = pause.min(total - elapsed);
            tokio::time::sleep(pause).await;
        }
    }

    /// The target this session is connected to.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Whether commands already run as root (no sudo needed).
    pub fn is_root(&self) -> bool {
        self.target.user == "root"
    }

    /// Runs a command, capturing its stdout, stderr and exit status. Its
    /// stdin is empty (closed at once), so a command that reads stdin does
    /// not wait forever.
    pub async fn exec(&self, command: &str) -> Result<Output, SshError> {
        self.exec_with_input(command, &[]).await
    }

    /// Runs a command with `input` on its stdin, capturing its output.
    pub async fn exec_with_input(&self, command: &str, input: &[u8]) -> Result<Output, SshError> {
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| self.channel_error(command, e))?;
        channel
            .exec(true, command)
            .await
            .map_err(|e| self.channel_error(command, e))?;
        let (mut read, write) = channel.split();
        let mut writer = write.make_writer();
        // Feed stdin while collecting output: a command that writes much
        // before reading would otherwise fill the window both ways.
        let feed = async move {
            writer.write_all(input).await?;
            // Shutting the writer down sends EOF.
            writer.shutdown().await
        };
        let collect = collect(&mut read);
        tokio::pin!(feed, collect);
        let mut feed_error: Option<std::io::Error> = None;
        let mut fed = false;
        let collected = loop {
            tokio::select! {
                r = &mut feed, if !fed => {
                    fed = true;
                    feed_error = r.err();
                }
                c = &mut collect => break c,
            }
        };
        if collected.refused {
            let _ = write.close().await;
            return Err(SshError::ExecRefused {
                machine: self.target.machine.clone(),
                host: self.target.host.clone(),
                port: self.target.port,
                user: self.target.user.clone(),
                command: command.to_owned(),
            });
        }
        match collected.status {
            Some(status) => Ok(Output {
                status,
                stdout: collected.stdout,
                stderr: collected.stderr,
            }),
            None => match feed_error {
                Some(e) => Err(self.channel_error(command, russh::Error::IO(e))),
                None => Err(SshError::NoExitStatus {
                    machine: self.target.machine.clone(),
                    command: command.to_owned(),
                }),
            },
        }
    }

    /// Like [`Session::exec`], but a non-zero exit is an error naming the
    /// machine, the command, the status and the end of stderr; returns stdout.
    pub async fn run(&self, command: &str) -> Result<String, SshError> {
        let output = self.exec(command).await?;
        self.check(command, false, &output)?;
        Ok(output.stdout_text())
    }

    /// [`Session::run`] as root: wrapped in `sudo -n sh -c '<command>'`
    /// when the user is not root.
    pub async fn sudo(&self, command: &str) -> Result<String, SshError> {
        let output = self.exec(&self.as_root(command)).await?;
        self.check(command, !self.is_root(), &output)?;
        Ok(output.stdout_text())
    }

    /// Runs `script` as root with `sh -s`, the script on its stdin, so
    /// nothing in it (a private key) appears on the host's command lines.
    /// `shown` names the script in errors.
    pub async fn sudo_script(&self, shown: &str, script: &str) -> Result<String, SshError> {
        let output = self
            .exec_with_input(&self.as_root("sh -s"), script.as_bytes())
            .await?;
        self.check(shown, !self.is_root(), &output)?;
        Ok(output.stdout_text())
    }

    /// The command line that runs `command` as root for this session's user.
    pub fn as_root(&self, command: &str) -> String {
        if self.is_root() {
            command.to_owned()
        } else {
            sudo_command(command)
        }
    }

    /// Writes `bytes` to `remote_path` (as root) with `mode`, atomically:
    /// into a temporary file in the same directory, checked for size, then
    /// renamed over the path. The bytes go through the stdin of a `cat` on
    /// the host; no scp or sftp is needed there. Missing parent directories
    /// are created.
    pub async fn upload(&self, remote_path: &str, bytes: &[u8], mode: u32) -> Result<(), SshError> {
        let script = upload_script(remote_path, bytes.len(), mode);
        let output = self.exec_with_input(&self.as_root(&script), bytes).await?;
        let shown = format!("upload of {} bytes to {remote_path}", bytes.len());
        self.check(&shown, !self.is_root(), &output)
    }

    /// Reads a remote file (as root).
    pub async fn download(&self, remote_path: &str) -> Result<Vec<u8>, SshError> {
        let command = download_command(remote_path);
        let output = self.exec(&self.as_root(&command)).await?;
        self.check(&command, !self.is_root(), &output)?;
        Ok(output.stdout)
    }

    /// Says goodbye to the server; errors are of no interest at this point.
    pub async fn close(self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }

    /// An error for a non-zero exit of `shown`, recognising sudo's own
    /// failures (which need a different fix than the command's).
    fn check(&self, shown: &str, via_sudo: bool, output: &Output) -> Result<(), SshError> {
        if output.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        if via_sudo {
            let user = &self.target.user;
            let passwordless = format!(
                "allow passwordless sudo for `{user}` (a line `{user} ALL=(ALL) NOPASSWD:ALL` \
                 in /etc/sudoers.d/) or connect as root"
            );
            let problem = if stderr.contains("sudo: a password is required")
                || stderr.contains("sudo: a terminal is required")
            {
                Some(("sudo asks for a password", passwordless))
            } else if stderr.contains("is not in the sudoers file")
                || stderr.contains("is not allowed to execute")
            {
                Some(("the user may not use sudo", passwordless))
            } else if stderr.contains("sudo: not found")
                || stderr.contains("sudo: command not found")
            {
                Some((
                    "sudo is not installed",
                    "install sudo on the host and allow it for the user, or connect as root"
                        .to_owned(),
                ))
            } else {
                None
            };
            if let Some((reason, fix)) = problem {
                return Err(SshError::Sudo {
                    machine: self.target.machine.clone(),
                    user: user.clone(),
                    command: shown.to_owned(),
                    reason: reason.to_owned(),
                    fix,
                });
            }
        }
        Err(SshError::Command {
            machine: self.target.machine.clone(),
            host: self.target.host.clone(),
            command: if via_sudo {
                format!("{shown} (with sudo)")
            } else {
                shown.to_owned()
            },
            status: output.status,
            stderr: stderr_tail(&output.stderr),
        })
    }

    pub(super) fn channel_error(&self, command: &str, source: russh::Error) -> SshError {
        SshError::Channel {
            machine: self.target.machine.clone(),
            host: self.target.host.clone(),
            port: self.target.port,
            command: command.to_owned(),
            source: Box::new(source),
        }
    }
}

/// The pause after a connection that was refused or reset at once.
const QUICK_RETRY: Duration = Duration::from_millis(250);

/// Pauses between connection attempts: quick at first (the host may be
/// seconds from ready), then every few seconds.
fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(match attempt {
        0 | 1 => 1,
        2 => 2,
        3 => 3,
        _ => 5,
    })
}

async fn connect_with_key(
    target: &Target,
    key: russh::keys::PrivateKey,
) -> Result<Session, SshError> {
    let stream = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|source| SshError::Connect {
            machine: target.machine.clone(),
            host: target.host.clone(),
            port: target.port,
            source,
        })?;
    // Interactive sessions send keystrokes one by one.
    let _ = stream.set_nodelay(true);
    let refusal = Arc::new(Mutex::new(None));
    let check = HostKeyCheck {
        target: target.clone(),
        refusal: Arc::clone(&refusal),
    };
    let config = Arc::new(client::Config {
        // Commands such as package installs can be silent for minutes;
        // keepalives tell a dead peer from a quiet one instead of a timeout.
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 4,
        ..Default::default()
    });
    let handshake_error = |source: russh::Error| SshError::Handshake {
        machine: target.machine.clone(),
        host: target.host.clone(),
        port: target.port,
        source: Box::new(source),
    };
    let mut handle = match client::connect_stream(config, stream, check).await {
        Ok(handle) => handle,
        Err(e) => {
            let refused = refusal.lock().unwrap_or_else(|p| p.into_inner()).take();
            return Err(refused.unwrap_or_else(|| handshake_error(e)));
        }
    };
    let auth = handle
        .authenticate_publickey(
            target.user.clone(),
            // ed25519 and ECDSA keys have no choice of hash.
            PrivateKeyWithHashAlg::new(Arc::new(key), None),
        )
        .await
        .map_err(handshake_error)?;
    if !auth.success() {
        return Err(SshError::Auth {
            machine: target.machine.clone(),
            host: target.host.clone(),
            port: target.port,
            user: target.user.clone(),
            key_path: target.key_path.clone(),
        });
    }
    Ok(Session {
        handle,
        target: target.clone(),
    })
}

/// The client side of the handshake: checks the server's key against the
/// machine's pinned one, and leaves the reason for a refusal where
/// `connect` finds it (russh only reports "unknown server key").
#[derive(Debug)]
pub(super) struct HostKeyCheck {
    target: Target,
    refusal: Arc<Mutex<Option<SshError>>>,
}

impl client::Handler for HostKeyCheck {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = server_key.public_key();
        let t = &self.target;
        let refusal =
            match known_hosts::check_and_pin(&t.machine, &t.known_hosts, &t.host, t.port, &key) {
                Ok(Verdict::Known) => return Ok(true),
                Ok(Verdict::Pinned) => {
                    tracing::debug!(
                        "pinned the SSH host key {} of {} in {}",
                        known_hosts::fingerprint(&key),
                        t.machine,
                        t.known_hosts.display()
                    );
                    return Ok(true);
                }
                Ok(Verdict::Changed {
                    expected_fingerprint,
                }) => SshError::HostKeyChanged {
                    machine: t.machine.clone(),
                    host: t.host.clone(),
                    port: t.port,
                    expected_fingerprint,
                    got_fingerprint: known_hosts::fingerprint(&key),
                    known_hosts: t.known_hosts.clone(),
                },
                Err(e) => e,
            };
        *self.refusal.lock().unwrap_or_else(|p| p.into_inner()) = Some(refusal);
        Ok(false)
    }
}

/// A channel's output until the server closes it.
#[derive(Debug, Default)]
struct Collected {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    status: Option<u32>,
    refused: bool,
}

async fn collect(read: &mut ChannelReadHalf) -> Collected {
    let mut c = Collected::default();
    let mut started = false;
    while let Some(msg) = read.wait().await {
        match msg {
            ChannelMsg::Data { data } => c.stdout.extend_from_slice(&data),
            // Extended data type 1 is stderr (RFC 4254 §5.2).
            ChannelMsg::ExtendedData { data, ext: 1 } => c.stderr.extend_from_slice(&data),
            ChannelMsg::ExitStatus { exit_status } => c.status = Some(exit_status),
            ChannelMsg::ExitSignal { signal_name, .. } => {
                c.status = Some(signal_status(&signal_name));
            }
            ChannelMsg::Success => started = true,
            // A failure reply to our exec request: the server will not run
            // it, and leaves the channel open, so stop here.
            ChannelMsg::Failure if !started => {
                c.refused = true;
                break;
            }
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    c
}

/// The status a shell gives a command killed by `signal`: 128 + its number
/// (Linux numbering; the hosts are Linux).
pub(super) fn signal_status(signal: &Sig) -> u32 {
    128 + match signal {
        Sig::HUP => 1,
        Sig::INT => 2,
        Sig::QUIT => 3,
        Sig::ILL => 4,
        Sig::ABRT => 6,
        Sig::FPE => 8,
        Sig::KILL => 9,
        Sig::USR1 => 10,
        Sig::SEGV => 11,
        Sig::PIPE => 13,
        Sig::ALRM => 14,
        Sig::TERM => 15,
        Sig::Custom(_) => 127,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_map_to_shell_statuses() {
        assert_eq!(signal_status(&Sig::KILL), 137);
        assert_eq!(signal_status(&Sig::TERM), 143);
        assert_eq!(signal_status(&Sig::Custom("XCPU".into())), 255);
    }

    /// Sessions and their operations are used from spawned tasks, and the
    /// errors end up in `anyhow` at the binary's edge.
    #[test]
    fn types_and_futures_cross_tasks() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<Session>();
        send_sync::<Target>();
        send_sync::<SshError>();
    }

    #[allow(dead_code)]
    fn futures_are_send(s: &Session, t: &Target) {
        fn send<T: Send>(_: T) {}
        send(Session::connect(t, Duration::ZERO));
        send(Session::connect_with_retry(t, Duration::ZERO, |_, _| {}));
        send(s.exec(""));
        send(s.sudo(""));
        send(s.upload("", &[], 0));
        send(s.download(""));
        send(s.interactive(None));
    }

    #[test]
    fn backoff_is_bounded() {
        let total: Duration = (1..=10).map(backoff).sum();
        assert_eq!(total, Duration::from_secs(1 + 2 + 3 + 5 * 7));
    }
}
