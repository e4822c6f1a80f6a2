//! Finding, launching and supervising driver plugins.
//!
//! One process per driver per CLI run, shared by every machine of that
//! driver: [`DriverHost::get`] launches a driver the first time it is asked
//! for and hands out the same connection afterwards, also to concurrent
//! callers. [`DriverHost::shutdown`] ends them all; a driver that is not
//! shut down (a panic, an early return) is killed when its handle drops, and
//! one whose host is killed outright exits on its own (stdin's end and the
//! parent-death signal).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use machine_proto::client::{
    LaunchError, LaunchOptions, LogSink, Plugin, PluginChannel, PluginWatch, Transport,
};
use machine_proto::handshake::{self, HINT_METADATA_KEY};
use machine_proto::log::{Level, LogLine};
use machine_proto::v1;
use machine_proto::v1::driver_client::DriverClient;
use tokio::sync::OnceCell;

/// Prefix of every driver binary's name.
pub const BINARY_PREFIX: &str = "machine-driver-";
/// Limit for a driver to start, print its handshake and answer GetInfo.
pub const ENV_START_TIMEOUT: &str = "MACHINE_DRIVER_START_TIMEOUT";
/// Limit for one driver call (seconds); creates have their own, longer one.
pub const ENV_CALL_TIMEOUT: &str = "MACHINE_DRIVER_CALL_TIMEOUT";
/// `tcp` forces the TCP transport (used where unix sockets are missing).
pub const ENV_TRANSPORT: &str = "MACHINE_DRIVER_TRANSPORT";

/// Why a driver could not be found, started or used.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(
        "driver `{name}` not found: no executable `{BINARY_PREFIX}{name}` in {}\n  hint: `machine driver ls` lists the drivers found; install one with `machine driver install github.com/OWNER/REPO`",
        searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NotFound {
        name: String,
        searched: Vec<PathBuf>,
    },
    #[error("{} is not an executable file; give a driver name or the path of a driver binary", .0.display())]
    NoSuchBinary(PathBuf),
    #[error(
        "`{0}` is not a driver name: use letters, digits, '-', '_' or '.', or a path to a driver binary"
    )]
    BadName(String),
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error("driver `{name}` did not answer {rpc} within {timeout:?}")]
    Timeout {
        name: String,
        rpc: &'static str,
        timeout: Duration,
    },
    #[error("driver `{name}` failed GetInfo: {message}")]
    Info { name: String, message: String },
    #[error(
        "driver `{name}` answered for protocol version {info}, but its handshake chose {handshake}; the driver is broken"
    )]
    InfoProtocol {
        name: String,
        info: u32,
        handshake: u32,
    },
    #[error("cannot make a private directory for driver sockets: {0}")]
    SocketDir(std::io::Error),
    #[error(
        "driver {source_} is not installed\n  hint: install it with `machine driver install {source_}`"
    )]
    NotInstalled { source_: String },
    #[error("`{0}` is not a GitHub driver source: write it as github.com/OWNER/REPO")]
    BadSource(String),
    /// An installed driver whose binary no longer matches the lock file.
    #[error(transparent)]
    Installed(#[from] crate::install::lock::VerifyError),
}

/// A failed driver call, with what it was about.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {message}{}", hint.as_ref().map(|h| format!("\n  hint: {h}")).unwrap_or_default())]
pub struct CallError {
    /// "driver `qemu` could not stop machine `dev`".
    pub what: String,
    pub message: String,
    pub hint: Option<String>,
    pub code: tonic::Code,
}

/// Where drivers are looked for, in order.
#[derive(Debug, Clone)]
pub struct DriverSearch {
    pub dirs: Vec<PathBuf>,
    /// The installed-drivers directory, whose binaries are checked against
    /// its lock file when loaded.
    pub installed: PathBuf,
}

impl DriverSearch {
    /// The installed-drivers directory, the directory of the `machine`
    /// binary, then `PATH`.
    pub fn new(installed: PathBuf) -> Self {
        let mut dirs = vec![installed.clone()];
        if let Ok(exe) = std::env::current_exe()
            && let Some(dir) = exe.parent()
        {
            dirs.push(dir.to_owned());
        }
        if let Some(path) = std::env::var_os("PATH") {
            dirs.extend(std::env::split_paths(&path).filter(|p| !p.as_os_str().is_empty()));
        }
        let mut seen = std::collections::HashSet::new();
        dirs.retain(|d| seen.insert(d.clone()));
        Self { dirs, installed }
    }

    /// Resolves a driver name, a path to a driver binary, or the GitHub
    /// source of an installed driver (`github.com/OWNER/REPO[@RANGE]`) to
    /// its binary. A binary from the installed-drivers directory is checked
    /// against the lock file first.
    pub fn find(&self, name: &str) -> Result<PathBuf, HostError> {
        let path = self.find_unchecked(name)?;
        if path.parent() == Some(self.installed.as_path()) {
            crate::install::lock::verify_installed(&self.installed, &name_of_path(&path), &path)?;
        }
        Ok(path)
    }

    fn find_unchecked(&self, name: &str) -> Result<PathBuf, HostError> {
        if crate::install::github::Source::is_github(name) {
            let source = crate::install::github::Source::parse(name)
                .map_err(|_| HostError::BadSource(name.to_owned()))?
                .id();
            return match crate::install::lock::find_by_source(&self.installed, &source)
                .map_err(crate::install::lock::VerifyError::from)?
            {
                Some(n) => Ok(self.installed.join(format!("{BINARY_PREFIX}{n}"))),
                None => Err(HostError::NotInstalled { source_: source }),
            };
        }
        if is_path(name) {
            let p = PathBuf::from(name);
            return if is_executable(&p) {
                Ok(std::path::absolute(&p).unwrap_or(p))
            } else {
                Err(HostError::NoSuchBinary(p))
            };
        }
        if !valid_name(name) {
            return Err(HostError::BadName(name.to_owned()));
        }
        let file = format!("{BINARY_PREFIX}{name}");
        self.dirs
            .iter()
            .map(|d| d.join(&file))
            .find(|p| is_executable(p))
            .ok_or_else(|| HostError::NotFound {
                name: name.to_owned(),
                searched: self.dirs.clone(),
            })
    }

    /// Every driver found, by name; the first in search order wins.
    pub fn all(&self) -> BTreeMap<String, PathBuf> {
        let mut found = BTreeMap::new();
        for dir in &self.dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let file = entry.file_name();
                let Some(name) = file.to_str().and_then(|f| f.strip_prefix(BINARY_PREFIX)) else {
                    continue;
                };
                if !valid_name(name) || found.contains_key(name) {
                    continue;
                }
                let path = entry.path();
                if is_executable(&path) {
                    found.insert(name.to_owned(), path);
                }
            }
        }
        found
    }
}

fn is_path(name: &str) -> bool {
    name.contains(std::path::MAIN_SEPARATOR) || name.contains('/')
}

/// Driver names: what can follow `machine-driver-` in a file name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.')
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The provider name a path stands for: `machine-driver-x` gives `x`.
pub fn name_of_path(p: &Path) -> String {
    let file = p.file_name().and_then(|f| f.to_str()).unwrap_or_default();
    file.strip_prefix(BINARY_PREFIX).unwrap_or(file).to_owned()
}

/// A running driver, connected and introduced.
#[derive(Debug)]
pub struct RunningDriver {
    /// The provider name asked for (or derived from a path).
    pub name: String,
    pub path: PathBuf,
    pub info: v1::GetInfoResponse,
    pub pid: u32,
    client: DriverClient<PluginChannel>,
    watch: PluginWatch,
    plugin: Mutex<Option<Plugin>>,
    call_timeout: Duration,
}

impl RunningDriver {
    pub fn has(&self, cap: v1::Capability) -> bool {
        self.info.capabilities.contains(&(cap as i32))
    }

    /// A client for the driver service.
    pub fn client(&self) -> DriverClient<PluginChannel> {
        self.client.clone()
    }

    /// The default limit for one call.
    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// Runs one call with a limit, and turns a failure into an error that
    /// says which driver failed doing what, how it died if it did, and what
    /// to do.
    pub async fn call<T, F>(
        &self,
        rpc: &'static str,
        what: impl FnOnce() -> String,
        timeout: Duration,
        fut: F,
    ) -> Result<T, CallError>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        match tokio::time::timeout(timeout, fut).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => Err(self.explain(rpc, what(), &status).await),
            Err(_) => Err(CallError {
                what: what(),
                message: format!(
                    "driver `{}` did not answer {rpc} within {timeout:?}",
                    self.name
                ),
                hint: Some(format!(
                    "the driver may be stuck; run with --debug to see its log, or raise {ENV_CALL_TIMEOUT}"
                )),
                code: tonic::Code::DeadlineExceeded,
            }),
        }
    }

    /// Turns a failed call's status into an error with context.
    pub async fn explain(&self, rpc: &str, what: String, status: &tonic::Status) -> CallError {
        let hint = status
            .metadata()
            .get(HINT_METADATA_KEY)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let message = match status.code() {
            tonic::Code::Unimplemented => format!(
                "driver `{}` does not support {}",
                self.name,
                rpc_operation(rpc)
            ),
            _ => self.watch.explain(status).await,
        };
        CallError {
            what,
            message,
            hint,
            code: status.code(),
        }
    }

    /// Called when the CLI is done with every call: the driver is told to
    /// exit and not waited for (it exits on its own, and on Linux the
    /// parent-death signal ends it with the CLI at the latest).
    async fn shutdown(&self, grace: Duration) {
        let plugin = self.plugin.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(plugin) = plugin {
            plugin.release(grace).await;
        }
    }
}

fn rpc_operation(rpc: &str) -> String {
    match rpc {
        "Start" => "starting machines".into(),
        "Stop" => "stopping machines".into(),
        "Restart" => "restarting machines".into(),
        "Kill" => "killing machines".into(),
        other => format!("the {other} call"),
    }
}

type Slot = Arc<OnceCell<Result<Arc<RunningDriver>, Arc<HostError>>>>;

/// The drivers of one CLI run.
#[derive(Debug)]
pub struct DriverHost {
    search: DriverSearch,
    /// Made when the first driver starts: most runs of `ls -q` need none.
    socket_dir: std::sync::OnceLock<tempfile::TempDir>,
    slots: Mutex<HashMap<String, Slot>>,
    debug: bool,
}

fn env_secs(var: &str, default: u64) -> Duration {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_secs(default))
}

/// A private (0700) directory with a short path, so socket paths stay under
/// the 104/108-byte limit.
pub(crate) fn make_socket_dir() -> Result<tempfile::TempDir, HostError> {
    let base = std::env::temp_dir();
    let base = if base.as_os_str().len() > 60 {
        PathBuf::from("/tmp")
    } else {
        base
    };
    sweep_socket_dirs(&base);
    use std::os::unix::fs::PermissionsExt;
    // Other local users must not reach the drivers' sockets. The pid in the
    // name lets a later run tidy up after one killed before it could.
    tempfile::Builder::new()
        .prefix(&format!("{SOCKET_DIR_PREFIX}{}-", std::process::id()))
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(base)
        .map_err(HostError::SocketDir)
}

const SOCKET_DIR_PREFIX: &str = "machine-";

/// Removes the socket directories of `machine` processes that are gone (a
/// CLI killed by SIGKILL cannot remove its own; its drivers die with it).
/// Only this user's directories, named `machine-<pid>-…` with a dead pid
/// and holding nothing but sockets, are touched.
fn sweep_socket_dirs(base: &Path) {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(SOCKET_DIR_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only asks whether the process exists.
        let alive = pid > 0
            && (unsafe { libc::kill(pid, 0) } == 0
                || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM));
        if alive {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() || meta.uid() != me {
            continue;
        }
        let Ok(inside) = std::fs::read_dir(&path) else {
            continue;
        };
        let inside: Vec<_> = inside.flatten().collect();
        if inside
            .iter()
            .all(|f| f.file_type().is_ok_and(|t| t.is_socket()))
        {
            for f in &inside {
                let _ = std::fs::remove_file(f.path());
            }
            let _ = std::fs::remove_dir(&path);
        }
    }
}

impl DriverHost {
    pub fn new(search: DriverSearch, debug: bool) -> Result<Self, HostError> {
        Ok(Self {
            search,
            socket_dir: std::sync::OnceLock::new(),
            slots: Mutex::new(HashMap::new()),
            debug,
        })
    }

    pub fn search(&self) -> &DriverSearch {
        &self.search
    }

    /// The running driver `name` (a provider name or a binary path),
    /// launching it on first use.
    pub async fn get(&self, name: &str) -> Result<Arc<RunningDriver>, Arc<HostError>> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.entry(name.to_owned()).or_default().clone()
        };
        slot.get_or_init(|| async { self.launch(name).await.map(Arc::new).map_err(Arc::new) })
            .await
            .clone()
    }

    async fn launch(&self, name: &str) -> Result<RunningDriver, HostError> {
        let path = self.search.find(name)?;
        let name = if is_path(name) {
            name_of_path(&path)
        } else {
            name.to_owned()
        };
        // One limit for the whole start: handshake, health and GetInfo.
        let start_timeout = env_secs(ENV_START_TIMEOUT, 10);
        let deadline = tokio::time::Instant::now() + start_timeout;
        let remaining = || deadline.saturating_duration_since(tokio::time::Instant::now());
        let socket_dir = match self.socket_dir.get() {
            Some(d) => d,
            None => {
                let made = make_socket_dir()?;
                // A concurrent launch may have made one first; keep theirs.
                let _ = self.socket_dir.set(made);
                self.socket_dir.get().expect("set above")
            }
        };
        let mut opts = LaunchOptions::new(name.clone(), path.clone(), socket_dir.path());
        opts.start_timeout = start_timeout;
        if std::env::var(ENV_TRANSPORT).as_deref() == Ok("tcp") {
            opts.transport = Transport::Tcp;
        }
        if self.debug {
            opts.env.push((
                OsString::from("MACHINE_DRIVER_LOG"),
                OsString::from("debug"),
            ));
        }
        opts.on_log = Some(log_sink(name.clone(), self.debug));
        tracing::debug!(driver = %name, path = %path.display(), "starting driver");
        let plugin = Plugin::launch(opts).await?;
        plugin.check_health(remaining()).await?;

        let mut client = plugin.driver();
        let info =
            match tokio::time::timeout(remaining(), client.get_info(v1::GetInfoRequest {})).await {
                Ok(Ok(resp)) => resp.into_inner(),
                Ok(Err(status)) => {
                    return Err(HostError::Info {
                        message: plugin.explain(&status).await,
                        name,
                    });
                }
                Err(_) => {
                    return Err(HostError::Timeout {
                        name,
                        rpc: "GetInfo",
                        timeout: start_timeout,
                    });
                }
            };
        let chosen = plugin.handshake().app_version;
        if info.protocol_version != chosen {
            return Err(HostError::InfoProtocol {
                name,
                info: info.protocol_version,
                handshake: chosen,
            });
        }
        if info.name != name && !info.name.is_empty() {
            tracing::warn!(
                "driver binary {} calls itself `{}`; machines will record it as `{name}`",
                path.display(),
                info.name
            );
        }
        tracing::debug!(
            driver = %name,
            version = %info.version,
            protocol = chosen,
            pid = plugin.pid(),
            "driver ready"
        );
        Ok(RunningDriver {
            name,
            path,
            pid: plugin.pid(),
            info,
            client,
            watch: plugin.watch(),
            plugin: Mutex::new(Some(plugin)),
            call_timeout: env_secs(ENV_CALL_TIMEOUT, 60),
        })
    }

    /// Ends every driver this run started.
    pub async fn shutdown(&self) {
        let slots: Vec<Slot> = self
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, s)| s)
            .collect();
        let mut ends = tokio::task::JoinSet::new();
        for slot in slots {
            if let Some(Ok(driver)) = slot.get() {
                let driver = driver.clone();
                ends.spawn(async move { driver.shutdown(Duration::from_secs(3)).await });
            }
        }
        while ends.join_next().await.is_some() {}
    }
}

/// Shows a driver's log lines on our stderr: warnings and errors always,
/// the rest with `--debug`.
pub(crate) fn log_sink(driver: String, debug: bool) -> LogSink {
    Arc::new(move |line: &LogLine| {
        let level = line.level.unwrap_or(Level::Debug);
        if level < Level::Warn && !debug {
            return;
        }
        let who = match &line.machine {
            Some(m) => format!("{driver}/{m}"),
            None => driver.clone(),
        };
        crate::ui::driver_line(&who, level, &line.to_string());
    })
}

/// The protocol versions this CLI speaks, for messages.
pub fn protocol_versions() -> String {
    handshake::format_versions(handshake::APP_PROTOCOL_VERSIONS)
}
