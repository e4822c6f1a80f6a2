//! The plugin side of the handshake and the process's whole life:
//! cookie check, version negotiation, socket, health, the one stdout line,
//! and shutdown on request, on stdin's end or on a signal.

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use machine_proto::handshake::{
    self, Address, CORE_PROTOCOL_VERSION, ENV_PROTOCOL_VERSIONS, ENV_TOKEN, ENV_TRANSPORT,
    ENV_UNIX_SOCKET_DIR, HEALTH_SERVICE, Handshake, MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE,
    TOKEN_METADATA_KEY, WIRE_PROTOCOL,
};
use machine_proto::plugin::Empty;
use machine_proto::plugin::grpc_controller_server::{GrpcController, GrpcControllerServer};
use machine_proto::v1::driver_server::DriverServer;
use tokio::sync::watch;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::transport::Server;
use tonic::{Request, Response, Status};

use crate::driver::Driver;
use crate::service::Service;

/// How long in-flight calls may finish after a shutdown request.
const GRACE: Duration = Duration::from_secs(2);

/// Why serving stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Running,
    Requested,
    HostGone,
    Signal,
}

struct Controller(watch::Sender<Stop>);

#[tonic::async_trait]
impl GrpcController for Controller {
    async fn shutdown(&self, _request: Request<Empty>) -> Result<Response<Empty>, Status> {
        tracing::debug!("shutdown requested");
        let _ = self.0.send(Stop::Requested);
        Ok(Response::new(Empty {}))
    }
}

/// Runs a driver as a plugin process until the host lets it go. Call it from
/// `main` and return its exit code:
///
/// ```no_run
/// # use machine_driver_sdk as sdk;
/// # struct MyDriver;
/// # #[sdk::async_trait] impl sdk::Driver for MyDriver {
/// #   fn info(&self) -> sdk::DriverInfo { unimplemented!() }
/// #   async fn create(&self, _: sdk::CreateRequest, _: sdk::Progress) -> sdk::Result<sdk::Config> { unimplemented!() }
/// #   async fn remove(&self, _: &sdk::Machine) -> sdk::Result<()> { unimplemented!() }
/// #   async fn state(&self, _: &sdk::Machine) -> sdk::Result<sdk::Status> { unimplemented!() }
/// #   async fn connection(&self, _: &sdk::Machine) -> sdk::Result<sdk::Connection> { unimplemented!() }
/// # }
/// fn main() -> std::process::ExitCode {
///     sdk::serve(MyDriver)
/// }
/// ```
///
/// Run by hand (without the host's cookie) it explains what it is and exits
/// 1; `--version` prints the driver's version.
pub fn serve<D: Driver>(driver: D) -> ExitCode {
    let info = driver.info();
    if std::env::args().nth(1).as_deref() == Some("--version") {
        println!(
            "machine-driver-{} {} (protocol {})",
            info.name,
            info.version,
            handshake::format_versions(crate::PROTOCOL_VERSIONS)
        );
        return ExitCode::SUCCESS;
    }
    if std::env::var(MAGIC_COOKIE_KEY).as_deref() != Ok(MAGIC_COOKIE_VALUE) {
        eprintln!(
            "This is a machine driver plugin (machine-driver-{name} {version}); \
             it is started by machine, not by hand.\n\
             Use it through machine, e.g. `machine create -d {name} NAME`; \
             `machine driver info {name}` shows what it offers.",
            name = info.name,
            version = info.version
        );
        return ExitCode::from(1);
    }
    crate::logging::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!(
                "machine-driver-{}: cannot start the async runtime: {e}",
                info.name
            );
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(run(Arc::new(driver), info.name));
    // Calls still running after the grace period are abandoned, not awaited.
    runtime.shutdown_timeout(Duration::from_millis(100));
    code
}

enum Listener {
    Unix(tokio::net::UnixListener, PathBuf),
    Tcp(tokio::net::TcpListener, SocketAddr),
}

fn bind(name: &str) -> Result<Listener, String> {
    if std::env::var(ENV_TRANSPORT).as_deref() == Ok("tcp") {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")
            .map_err(|e| format!("cannot listen on 127.0.0.1: {e}"))?;
        std_listener
            .set_nonblocking(true)
            .map_err(|e| format!("cannot listen on 127.0.0.1: {e}"))?;
        let addr = std_listener
            .local_addr()
            .map_err(|e| format!("cannot read the listening address: {e}"))?;
        let l = tokio::net::TcpListener::from_std(std_listener)
            .map_err(|e| format!("cannot listen on 127.0.0.1: {e}"))?;
        return Ok(Listener::Tcp(l, addr));
    }
    let dir = std::env::var_os(ENV_UNIX_SOCKET_DIR)
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let path = dir.join(format!("{name}-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let l = tokio::net::UnixListener::bind(&path)
        .map_err(|e| format!("cannot bind socket {}: {e}", path.display()))?;
    Ok(Listener::Unix(l, path))
}

/// Ends serving when stdin reaches its end: the host closed it or died.
fn watch_stdin(stop: watch::Sender<Stop>) {
    // A plain thread: a blocking read must not hold up the runtime's exit.
    let _ = std::thread::Builder::new()
        .name("stdin-watch".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 256];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            let _ = stop.send(Stop::HostGone);
        });
}

fn watch_signals(stop: watch::Sender<Stop>) {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        let _ = stop.send(Stop::Signal);
    });
}

async fn run<D: Driver>(driver: Arc<D>, name: String) -> ExitCode {
    let offered = std::env::var(ENV_PROTOCOL_VERSIONS)
        .map(|v| handshake::parse_versions(&v))
        .unwrap_or_default();
    // With no common version we still answer with our newest, as go-plugin
    // does, so the host can name both sides' versions in its error.
    let version = handshake::negotiate(&offered, crate::PROTOCOL_VERSIONS)
        .unwrap_or_else(|| *crate::PROTOCOL_VERSIONS.iter().max().expect("one version"));

    let listener = match bind(&name) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(1);
        }
    };
    let token = std::env::var(ENV_TOKEN).ok();
    if matches!(listener, Listener::Tcp(..)) && token.as_deref().unwrap_or("").is_empty() {
        tracing::error!("the tcp transport needs {ENV_TOKEN}; refusing to listen without it");
        return ExitCode::from(1);
    }

    let (stop_tx, mut stop_rx) = watch::channel(Stop::Running);
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(HEALTH_SERVICE, tonic_health::ServingStatus::Serving)
        .await;

    let service = DriverServer::new(Service::new(driver, version));
    let controller = GrpcControllerServer::new(Controller(stop_tx.clone()));
    let check_token = move |req: Request<()>| -> Result<Request<()>, Status> {
        match &token {
            None => Ok(req),
            Some(want) => match req.metadata().get(TOKEN_METADATA_KEY) {
                Some(got) if got.as_bytes() == want.as_bytes() => Ok(req),
                _ => Err(Status::unauthenticated("missing or wrong driver token")),
            },
        }
    };
    let router = Server::builder()
        .layer(tonic::service::InterceptorLayer::new(check_token))
        .add_service(health)
        .add_service(service)
        .add_service(controller);

    let mut stop_for_server = stop_rx.clone();
    let shutdown = async move {
        let _ = stop_for_server.wait_for(|s| *s != Stop::Running).await;
    };

    let (address, socket) = match &listener {
        Listener::Unix(_, path) => (Address::Unix(path.clone()), Some(path.clone())),
        Listener::Tcp(_, addr) => (Address::Tcp(*addr), None),
    };
    let server = match listener {
        Listener::Unix(l, _) => {
            tokio::spawn(router.serve_with_incoming_shutdown(UnixListenerStream::new(l), shutdown))
        }
        Listener::Tcp(l, _) => {
            tokio::spawn(router.serve_with_incoming_shutdown(TcpListenerStream::new(l), shutdown))
        }
    };

    let line = Handshake {
        core_version: CORE_PROTOCOL_VERSION,
        app_version: version,
        address,
        protocol: WIRE_PROTOCOL.to_owned(),
    };
    {
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            tracing::error!("cannot write the handshake line to stdout");
            return ExitCode::from(1);
        }
    }
    redirect_stdout_to_stderr();
    watch_stdin(stop_tx.clone());
    watch_signals(stop_tx);

    let _ = stop_rx.wait_for(|s| *s != Stop::Running).await;
    let why = *stop_rx.borrow();
    tracing::debug!(reason = ?why, "shutting down");
    let grace = if why == Stop::Requested {
        GRACE
    } else {
        GRACE / 4
    };
    let code = match tokio::time::timeout(grace, server).await {
        Ok(Ok(Err(e))) => {
            tracing::error!("serving failed: {e}");
            ExitCode::from(1)
        }
        _ => ExitCode::SUCCESS,
    };
    if let Some(path) = socket {
        // The directory is the host's to remove: other drivers may share it.
        let _ = std::fs::remove_file(&path);
    }
    code
}

/// After the handshake nothing may reach the host through stdout; stray
/// prints (a dependency's, a debugging `println!`) go to stderr instead.
fn redirect_stdout_to_stderr() {
    #[cfg(unix)]
    // SAFETY: dup2 on the process's own standard descriptors.
    unsafe {
        libc::dup2(2, 1);
    }
}
