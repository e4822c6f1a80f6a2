//! `docker_api`'s failures without a daemon: a refused connection, a
//! server that never answers, missing client files. Talking to a real
//! dockerd over mutual TLS is tested end to end on provisioned hosts
//! (integration/tests/provision.rs). A second dockerd on this machine is
//! not an option: even with `--bridge none` its start deletes the system
//! daemon's docker0 bridge.

use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use machine_cli::certs;
use machine_cli::docker_api::{self, DockerApiError};

fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A store with a CA and a machine dir `machines/dev` holding the client
/// copies.
struct Store {
    _tmp: tempfile::TempDir,
    machine_dir: PathBuf,
}

fn new_store() -> Store {
    let tmp = tempfile::tempdir().unwrap();
    let paths = certs::ensure_ca(&tmp.path().join("certs"), "machine-test").unwrap();
    let machine_dir = tmp.path().join("machines").join("dev");
    certs::install_client_copy(&paths, &machine_dir).unwrap();
    Store {
        _tmp: tmp,
        machine_dir,
    }
}

#[tokio::test]
async fn refused_connection_is_unreachable() {
    install_provider();
    let store = new_store();
    let port = {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("tcp://127.0.0.1:{port}");
    let err = docker_api::version(&url, &store.machine_dir, Duration::from_secs(5))
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert!(err.is_unreachable(), "{err:?}");
    assert!(!err.is_tls());

    let t = Instant::now();
    let err = docker_api::wait_ready(&url, &store.machine_dir, Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(matches!(err, DockerApiError::NotReady { .. }), "{err:?}");
    assert!(err.is_unreachable(), "{err:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[tokio::test]
async fn silent_server_times_out() {
    install_provider();
    let store = new_store();
    // The kernel completes TCP handshakes; nobody ever answers TLS.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let url = format!("tcp://{}", listener.local_addr().unwrap());
    let t = Instant::now();
    let err = docker_api::version(&url, &store.machine_dir, Duration::from_millis(800))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    drop(listener);
}

#[tokio::test]
async fn missing_client_files_are_named() {
    install_provider();
    let store = new_store();
    std::fs::remove_file(store.machine_dir.join("key.pem")).unwrap();
    let err = docker_api::version(
        "tcp://127.0.0.1:2376",
        &store.machine_dir,
        Duration::from_secs(1),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, DockerApiError::Certs { .. }), "{err:?}");
    assert!(err.to_string().contains("key.pem"), "{err}");
}
