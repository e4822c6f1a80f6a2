//! The host side of the plugin protocol: start a driver binary, read its
//! handshake, connect to it, and end it.
//!
//! [`Plugin::launch`] does what hashicorp/go-plugin's client does, plus what
//! it lacks: the driver runs in its own process group with a parent-death
//! signal, its stdin is a pipe whose end tells it the host is gone, and a
//! [`Plugin`] that is dropped without [`Plugin::shutdown`] kills its process
//! group, so no driver outlives the process that started it.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{ChildStdin, ChildStdout, Command};
use tokio::sync::{Notify, watch};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::handshake::{
    self, Address, CORE_PROTOCOL_VERSION, ENV_PROTOCOL_VERSIONS, ENV_TOKEN, ENV_TRANSPORT,
    ENV_UNIX_SOCKET_DIR, Handshake, MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE, TOKEN_METADATA_KEY,
    WIRE_PROTOCOL,
};
use crate::log::{Level, LogLine};
use crate::plugin::grpc_controller_client::GrpcControllerClient;
use crate::v1::driver_client::DriverClient;

/// How many lines of a driver's output are kept for error reports.
const TAIL_LINES: usize = 40;

/// The transport a driver is asked to listen on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// A unix socket in the host's private socket directory.
    #[default]
    Unix,
    /// 127.0.0.1 with a per-launch token, for where unix sockets are missing.
    Tcp,
}

/// Receives every line a driver writes (stderr, and stdout after the
/// handshake).
pub type LogSink = Arc<dyn Fn(&LogLine) + Send + Sync>;

/// What to start and how.
pub struct LaunchOptions {
    /// The provider name, used in messages (`qemu` for `machine-driver-qemu`).
    pub name: String,
    pub program: PathBuf,
    /// An existing private directory (mode 0700) for the driver's socket.
    pub socket_dir: PathBuf,
    /// Application protocol versions offered to the driver.
    pub versions: Vec<u32>,
    pub transport: Transport,
    /// Limit for the process to print its handshake line.
    pub start_timeout: Duration,
    /// Extra environment for the driver.
    pub env: Vec<(OsString, OsString)>,
    pub on_log: Option<LogSink>,
}

impl fmt::Debug for LaunchOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LaunchOptions")
            .field("name", &self.name)
            .field("program", &self.program)
            .field("socket_dir", &self.socket_dir)
            .field("versions", &self.versions)
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

impl LaunchOptions {
    pub fn new(name: impl Into<String>, program: impl Into<PathBuf>, socket_dir: &Path) -> Self {
        Self {
            name: name.into(),
            program: program.into(),
            socket_dir: socket_dir.to_owned(),
            versions: handshake::APP_PROTOCOL_VERSIONS.to_vec(),
            transport: Transport::Unix,
            start_timeout: Duration::from_secs(10),
            env: Vec::new(),
            on_log: None,
        }
    }
}

/// The last lines a driver wrote, shown when it fails.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputTail(pub Vec<String>);

impl fmt::Display for OutputTail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("\n  (the driver wrote nothing on stderr)");
        }
        f.write_str("\n  driver output:")?;
        for line in &self.0 {
            write!(f, "\n    {line}")?;
        }
        Ok(())
    }
}

/// How a process ended, in words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit(pub ExitStatus);

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            if let Some(sig) = self.0.signal() {
                return write!(f, "was killed by signal {sig}{}", signal_name(sig));
            }
        }
        match self.0.code() {
            Some(code) => write!(f, "exited with status {code}"),
            None => f.write_str("exited"),
        }
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGABRT => " (SIGABRT: it aborted)",
        libc::SIGSEGV => " (SIGSEGV: it crashed)",
        libc::SIGKILL => " (SIGKILL)",
        libc::SIGTERM => " (SIGTERM)",
        libc::SIGBUS => " (SIGBUS: it crashed)",
        _ => "",
    }
}

/// Why a driver could not be started and connected.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("cannot start driver `{name}` ({}): {source}", program.display())]
    Spawn {
        name: String,
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "driver `{name}` ({}) {exit} before it finished the plugin handshake{tail}",
        program.display()
    )]
    ExitedBeforeHandshake {
        name: String,
        program: PathBuf,
        exit: Exit,
        tail: OutputTail,
    },
    #[error(
        "driver `{name}` ({}) did not print its handshake line within {timeout:?}; is it a machine driver?{tail}",
        program.display()
    )]
    HandshakeTimeout {
        name: String,
        program: PathBuf,
        timeout: Duration,
        tail: OutputTail,
    },
    #[error(
        "driver `{name}` ({}) printed {line:?} instead of a plugin handshake ({reason}); it may not be a machine driver, or it writes to stdout before its handshake{tail}",
        program.display()
    )]
    BadHandshake {
        name: String,
        program: PathBuf,
        line: String,
        reason: String,
        tail: OutputTail,
    },
    #[error(
        "driver `{name}` speaks plugin core protocol {driver}, machine speaks {host}: it was not built for machine"
    )]
    CoreProtocol {
        name: String,
        driver: u32,
        host: u32,
    },
    #[error(
        "driver `{name}` speaks protocol version {driver}, but this machine speaks version{} {}: install a release of the driver built for protocol {}, or a machine release that speaks protocol {driver}",
        if host.len() == 1 { "" } else { "s" },
        handshake::format_versions(host),
        handshake::format_versions(host),
    )]
    IncompatibleProtocol {
        name: String,
        driver: u32,
        host: Vec<u32>,
    },
    #[error("driver `{name}` offered wire protocol {protocol:?}; only \"grpc\" is supported")]
    WireProtocol { name: String, protocol: String },
    #[error("cannot connect to driver `{name}` at {address}: {source}{tail}")]
    Connect {
        name: String,
        address: String,
        #[source]
        source: tonic::transport::Error,
        tail: OutputTail,
    },
    #[error("driver `{name}` is not healthy: {message}{tail}")]
    Unhealthy {
        name: String,
        message: String,
        tail: OutputTail,
    },
}

/// Adds the TCP transport's token to every call.
#[derive(Debug, Clone, Default)]
pub struct Auth(Option<MetadataValue<Ascii>>);

impl Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            req.metadata_mut().insert(TOKEN_METADATA_KEY, token.clone());
        }
        Ok(req)
    }
}

/// A channel to a driver, with its authentication.
pub type PluginChannel = InterceptedService<Channel, Auth>;

/// Output lines shared between the reader tasks and error reports.
#[derive(Default)]
struct Output {
    tail: Mutex<VecDeque<String>>,
    stderr_closed: Notify,
    closed: Mutex<bool>,
}

impl Output {
    fn push(&self, line: String) {
        let mut tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }

    fn snapshot(&self) -> OutputTail {
        let tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        OutputTail(tail.iter().cloned().collect())
    }

    fn close(&self) {
        *self.closed.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.stderr_closed.notify_waiters();
    }

    /// Waits (bounded) until stderr reached its end, so a report of a dead
    /// driver holds everything it wrote.
    async fn drained(&self, limit: Duration) -> OutputTail {
        let notified = self.stderr_closed.notified();
        if !*self.closed.lock().unwrap_or_else(|e| e.into_inner()) {
            let _ = tokio::time::timeout(limit, notified).await;
        }
        self.snapshot()
    }
}

/// Watches a driver process's end and output.
#[derive(Clone)]
pub struct PluginWatch {
    exit: watch::Receiver<Option<ExitStatus>>,
    output: Arc<Output>,
}

impl fmt::Debug for PluginWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginWatch")
            .field("exit", &*self.exit.borrow())
            .finish_non_exhaustive()
    }
}

impl PluginWatch {
    /// Explains a failed call: when the driver died, says how and shows what
    /// it wrote; otherwise the call's own message.
    pub async fn explain(&self, status: &tonic::Status) -> String {
        let transport_failure = matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal
        ) && status
            .metadata()
            .get(handshake::HINT_METADATA_KEY)
            .is_none();
        if transport_failure {
            let mut exit = self.exit.clone();
            // A broken connection usually means the process is going away;
            // give its end a moment to be seen before deciding.
            if let Some(status) = wait_exit(&mut exit, Duration::from_millis(500)).await {
                let tail = self.output.drained(Duration::from_secs(1)).await;
                return format!("the driver process {}{tail}", Exit(status));
            }
        }
        status.message().to_owned()
    }
}

/// A running, connected driver process.
pub struct Plugin {
    name: String,
    program: PathBuf,
    pid: u32,
    handshake: Handshake,
    channel: Channel,
    auth: Auth,
    stdin: Option<ChildStdin>,
    exit: watch::Receiver<Option<ExitStatus>>,
    output: Arc<Output>,
    ended: bool,
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("program", &self.program)
            .field("pid", &self.pid)
            .field("handshake", &self.handshake)
            .finish_non_exhaustive()
    }
}

/// A process that has been spawned but not yet connected; killed on drop.
struct Spawned {
    pid: u32,
    exit: watch::Receiver<Option<ExitStatus>>,
    armed: bool,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if self.armed && self.exit.borrow().is_none() {
            kill_group(self.pid);
        }
    }
}

impl Spawned {
    async fn kill(&mut self) -> Option<ExitStatus> {
        if self.exit.borrow().is_none() {
            kill_group(self.pid);
        }
        self.armed = false;
        wait_exit(&mut self.exit, Duration::from_secs(5)).await
    }
}

fn kill_group(pid: u32) {
    #[cfg(unix)]
    {
        // The driver leads its own process group, so this reaches helpers it
        // started too. A driver whose children must outlive it (a VM
        // monitor) puts them in a session of their own.
        let pid = pid as libc::pid_t;
        // SAFETY: plain syscalls on a pid we spawned and have not reaped.
        unsafe {
            if libc::killpg(pid, libc::SIGKILL) != 0 {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

async fn wait_exit(
    exit: &mut watch::Receiver<Option<ExitStatus>>,
    limit: Duration,
) -> Option<ExitStatus> {
    let waited = tokio::time::timeout(limit, exit.wait_for(Option::is_some))
        .await
        .ok()
        .and_then(|r| r.ok().and_then(|s| *s));
    waited.or_else(|| *exit.borrow())
}

fn random_token() -> String {
    // RandomState is seeded from the OS's random source; two draws give a
    // 128-bit token without another dependency.
    let draw = || {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    };
    format!("{:016x}{:016x}", draw(), draw())
}

fn spawn_reader<R>(reader: R, output: Arc<Output>, sink: Option<LogSink>, is_stderr: bool)
where
    R: AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut reader = BufReader::new(reader);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&buf);
            let text = text.trim_end_matches(['\r', '\n']);
            let mut line = LogLine::parse(text);
            if !is_stderr {
                // A driver must not write to stdout after its handshake; what
                // it writes is shown as a warning and never reaches our stdout.
                line = LogLine {
                    level: Some(Level::Warn),
                    message: format!("wrote to stdout: {text}"),
                    machine: None,
                    fields: Vec::new(),
                };
            }
            output.push(match line.level {
                Some(level) => format!("[{level}] {line}"),
                None => line.message.clone(),
            });
            if let Some(sink) = &sink {
                sink(&line);
            }
        }
        if is_stderr {
            output.close();
        }
    });
}

impl Plugin {
    /// Starts the driver, reads its handshake and connects to it.
    pub async fn launch(opts: LaunchOptions) -> Result<Self, LaunchError> {
        let LaunchOptions {
            name,
            program,
            socket_dir,
            versions,
            transport,
            start_timeout,
            env,
            on_log,
        } = opts;

        let token = (transport == Transport::Tcp).then(random_token);
        let mut cmd = Command::new(&program);
        cmd.env(MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE)
            .env(ENV_PROTOCOL_VERSIONS, handshake::format_versions(&versions))
            .env(ENV_UNIX_SOCKET_DIR, &socket_dir)
            // go-plugin reads these: mTLS and multiplexing the host does
            // not speak, so a value left in the user's environment must not
            // reach the driver.
            .env_remove("PLUGIN_CLIENT_CERT")
            .env_remove("PLUGIN_MULTIPLEX_GRPC")
            .envs(env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match &token {
            Some(token) => {
                cmd.env(ENV_TRANSPORT, "tcp").env(ENV_TOKEN, token);
            }
            None => {
                cmd.env_remove(ENV_TRANSPORT).env_remove(ENV_TOKEN);
            }
        }
        #[cfg(unix)]
        {
            cmd.process_group(0);
            let parent = std::process::id() as libc::pid_t;
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    // SIGKILL, not SIGTERM: a driver stuck or ignoring
                    // signals must not outlive a host that was killed.
                    // Linux ties the parent-death signal to the thread that
                    // forked, so drivers must be spawned from a thread that
                    // lives as long as the host (a runtime worker or main,
                    // never a blocking-pool thread).
                    #[cfg(target_os = "linux")]
                    {
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                        if libc::getppid() != parent {
                            // The host died between fork and prctl.
                            libc::_exit(1);
                        }
                    }
                    let _ = parent;
                    Ok(())
                });
            }
        }

        let mut child = cmd.spawn().map_err(|source| LaunchError::Spawn {
            name: name.clone(),
            program: program.clone(),
            source,
        })?;
        let pid = child.id().unwrap_or_default();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");

        let (exit_tx, exit_rx) = watch::channel(None);
        tokio::spawn(async move {
            let status = child.wait().await.ok();
            let _ = exit_tx.send(status);
        });
        let mut spawned = Spawned {
            pid,
            exit: exit_rx.clone(),
            armed: true,
        };

        let output = Arc::new(Output::default());
        spawn_reader(stderr, output.clone(), on_log.clone(), true);

        let fail = |output: &Arc<Output>| {
            let output = output.clone();
            async move { output.drained(Duration::from_secs(2)).await }
        };

        let mut stdout = BufReader::new(stdout);
        let line = match read_handshake_line(&mut stdout, start_timeout).await {
            HandshakeRead::Line(line) => line,
            HandshakeRead::Ended => {
                let status = wait_exit(&mut spawned.exit, Duration::from_secs(2)).await;
                let status = match status {
                    Some(s) => s,
                    None => spawned.kill().await.unwrap_or_default(),
                };
                spawned.armed = false;
                return Err(LaunchError::ExitedBeforeHandshake {
                    name,
                    program,
                    exit: Exit(status),
                    tail: fail(&output).await,
                });
            }
            HandshakeRead::TimedOut => {
                spawned.kill().await;
                return Err(LaunchError::HandshakeTimeout {
                    name,
                    program,
                    timeout: start_timeout,
                    tail: fail(&output).await,
                });
            }
        };

        let parsed = match Handshake::parse(&line) {
            Ok(h) => h,
            Err(e) => {
                spawned.kill().await;
                let mut shown: String = line.trim_end().chars().take(200).collect();
                if shown.len() < line.trim_end().len() {
                    shown.push('…');
                }
                return Err(LaunchError::BadHandshake {
                    name,
                    program,
                    line: shown,
                    reason: e.to_string(),
                    tail: fail(&output).await,
                });
            }
        };
        if parsed.core_version != CORE_PROTOCOL_VERSION {
            spawned.kill().await;
            return Err(LaunchError::CoreProtocol {
                name,
                driver: parsed.core_version,
                host: CORE_PROTOCOL_VERSION,
            });
        }
        if !versions.contains(&parsed.app_version) {
            spawned.kill().await;
            return Err(LaunchError::IncompatibleProtocol {
                name,
                driver: parsed.app_version,
                host: versions,
            });
        }
        if let Address::Tcp(addr) = &parsed.address
            && !addr.ip().is_loopback()
        {
            spawned.kill().await;
            return Err(LaunchError::BadHandshake {
                name,
                program,
                line: line.trim_end().to_owned(),
                reason: format!("it listens on {addr}, which is not a loopback address"),
                tail: fail(&output).await,
            });
        }
        if parsed.protocol != WIRE_PROTOCOL {
            spawned.kill().await;
            return Err(LaunchError::WireProtocol {
                name,
                protocol: parsed.protocol,
            });
        }

        spawn_stdout_relay(stdout, output.clone(), on_log);

        let channel = match connect(&parsed.address).await {
            Ok(c) => c,
            Err(source) => {
                spawned.kill().await;
                return Err(LaunchError::Connect {
                    name,
                    address: parsed.address.to_string(),
                    source,
                    tail: fail(&output).await,
                });
            }
        };
        let auth = Auth(token.map(|t| t.parse().expect("hex token is valid metadata")));
        spawned.armed = false;
        Ok(Self {
            name,
            program,
            pid,
            handshake: parsed,
            channel,
            auth,
            stdin,
            exit: exit_rx,
            output,
            ended: false,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn program(&self) -> &Path {
        &self.program
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn handshake(&self) -> &Handshake {
        &self.handshake
    }

    /// A client for the driver service.
    pub fn driver(&self) -> DriverClient<PluginChannel> {
        DriverClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    /// A client for the controller service (shutdown).
    pub fn controller(&self) -> GrpcControllerClient<PluginChannel> {
        GrpcControllerClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    /// A client for the gRPC health service.
    pub fn health(&self) -> tonic_health::pb::health_client::HealthClient<PluginChannel> {
        tonic_health::pb::health_client::HealthClient::with_interceptor(
            self.channel.clone(),
            self.auth.clone(),
        )
    }

    /// Checks that the driver reports its `plugin` service SERVING.
    pub async fn check_health(&self, limit: Duration) -> Result<(), LaunchError> {
        use tonic_health::pb::HealthCheckRequest;
        use tonic_health::pb::health_check_response::ServingStatus;
        let mut req = tonic::Request::new(HealthCheckRequest {
            service: handshake::HEALTH_SERVICE.to_owned(),
        });
        req.set_timeout(limit);
        let message = match self.health().check(req).await {
            Ok(resp) if resp.get_ref().status == ServingStatus::Serving as i32 => return Ok(()),
            Ok(resp) => format!("health status {:?}", resp.get_ref().status()),
            Err(status) => self.explain(&status).await,
        };
        Err(LaunchError::Unhealthy {
            name: self.name.clone(),
            message,
            tail: self.output.snapshot(),
        })
    }

    /// How the process ended, if it has.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        *self.exit.borrow()
    }

    /// The last lines the driver wrote.
    pub fn output_tail(&self) -> OutputTail {
        self.output.snapshot()
    }

    /// Closes the driver's stdin, as a host that dies does.
    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// Waits, at most `limit`, for the process to end.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        wait_exit(&mut self.exit, limit).await
    }

    /// A cloneable view of the process's end and output, for explaining
    /// failed calls.
    pub fn watch(&self) -> PluginWatch {
        PluginWatch {
            exit: self.exit.clone(),
            output: self.output.clone(),
        }
    }

    /// Explains a failed call: see [`PluginWatch::explain`].
    pub async fn explain(&self, status: &tonic::Status) -> String {
        self.watch().explain(status).await
    }

    /// Ends the driver: the controller's Shutdown call, stdin closed, `grace`
    /// to exit, then its process group killed. Returns how it ended.
    pub async fn shutdown(mut self, grace: Duration) -> Option<ExitStatus> {
        self.ended = true;
        if self.exit_status().is_none() {
            let mut req = tonic::Request::new(crate::plugin::Empty {});
            req.set_timeout(grace);
            let _ = tokio::time::timeout(grace, self.controller().shutdown(req)).await;
            self.stdin.take();
            if let Some(status) = wait_exit(&mut self.exit, grace).await {
                return Some(status);
            }
            kill_group(self.pid);
        }
        wait_exit(&mut self.exit, Duration::from_secs(5)).await
    }

    /// Lets the driver go without waiting for it to exit: the controller's
    /// Shutdown call, then stdin closed. Use it when the host is about to
    /// exit itself and nothing is in flight; a driver that does not
    /// acknowledge is ended as by [`Plugin::shutdown`]. (On Linux the
    /// parent-death signal ends an acknowledged driver at the latest when
    /// the host exits.)
    pub async fn release(mut self, grace: Duration) {
        if self.exit_status().is_some() {
            self.ended = true;
            return;
        }
        let mut req = tonic::Request::new(crate::plugin::Empty {});
        req.set_timeout(grace);
        let acked = matches!(
            tokio::time::timeout(grace, self.controller().shutdown(req)).await,
            Ok(Ok(_))
        );
        if acked {
            self.ended = true;
            self.stdin.take();
            return;
        }
        self.shutdown(grace).await;
    }

    /// Kills the driver's process group at once.
    pub async fn kill(mut self) -> Option<ExitStatus> {
        self.ended = true;
        if self.exit_status().is_none() {
            kill_group(self.pid);
        }
        wait_exit(&mut self.exit, Duration::from_secs(5)).await
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        if !self.ended && self.exit.borrow().is_none() {
            kill_group(self.pid);
        }
    }
}

enum HandshakeRead {
    Line(String),
    Ended,
    TimedOut,
}

async fn read_handshake_line(
    stdout: &mut BufReader<ChildStdout>,
    limit: Duration,
) -> HandshakeRead {
    let mut buf = Vec::new();
    // The process's end closes its stdout, so end of output stands for "exited".
    match tokio::time::timeout(limit, stdout.read_until(b'\n', &mut buf)).await {
        Err(_) => HandshakeRead::TimedOut,
        Ok(Ok(0)) | Ok(Err(_)) => HandshakeRead::Ended,
        Ok(Ok(_)) => HandshakeRead::Line(String::from_utf8_lossy(&buf).into_owned()),
    }
}

fn spawn_stdout_relay(stdout: BufReader<ChildStdout>, output: Arc<Output>, sink: Option<LogSink>) {
    spawn_reader(stdout, output, sink, false);
}

async fn connect(address: &Address) -> Result<Channel, tonic::transport::Error> {
    match address {
        Address::Tcp(addr) => {
            Endpoint::from_shared(format!("http://{addr}"))?
                .connect_timeout(Duration::from_secs(5))
                .connect()
                .await
        }
        Address::Unix(path) => {
            let path = path.clone();
            // The URI is unused: the connector dials the socket.
            Endpoint::from_static("http://driver.invalid")
                .connect_timeout(Duration::from_secs(5))
                .connect_with_connector(tower::service_fn(move |_| {
                    let path = path.clone();
                    async move {
                        let stream = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(TokioIo::new(stream))
                    }
                }))
                .await
        }
    }
}
