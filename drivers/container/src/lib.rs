//! The `container` driver: a machine is a systemd + sshd container on a
//! Docker engine, a cheap local stand-in for a VM that `machine` provisions
//! like any other host.
//!
//! The container runs without `--privileged` (which fails on hosts whose
//! capability bounding set lacks CAP_SYS_RESOURCE): SYS_ADMIN and NET_ADMIN,
//! no seccomp or AppArmor profile, the host's cgroup namespace, tmpfs on
//! /run, and a volume for /var/lib/docker (dockerd fails on overlayfs
//! otherwise). SSH and Docker ports are published on 127.0.0.1 only, the
//! Docker port with the same number inside and out so the daemon's
//! `-H tcp://0.0.0.0:PORT` matches the URL.
//!
//! The image must boot systemd with sshd enabled; `--container-image`
//! chooses it (default [`DEFAULT_IMAGE`], built from Debian packages by
//! `drivers/container/image/build.sh`).

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, HostConfig, HostConfigCgroupnsModeEnum,
    PortBinding,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, KillContainerOptions,
    RemoveContainerOptionsBuilder, RemoveVolumeOptions, RestartContainerOptionsBuilder,
    StartContainerOptions, StopContainerOptionsBuilder,
};
use futures_util::StreamExt;
use machine_driver_sdk::{
    Capability, Config, Connection, CreateRequest, Driver, DriverInfo, Error, Flag, Machine,
    Progress, Result, State, Status, async_trait,
};
use serde::{Deserialize, Serialize};

/// The image used when `--container-image` is not given.
pub const DEFAULT_IMAGE: &str = "machine/debian-ssh:bookworm";
/// Label on everything the driver makes, with the machine's name.
pub const LABEL: &str = "io.machine.name";
/// Label with the store the machine belongs to (its `machines/` parent).
pub const STORE_LABEL: &str = "io.machine.store";

/// The driver.
#[derive(Debug, Default)]
pub struct ContainerDriver;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ContainerConfig {
    /// Where the engine is: a unix:// or tcp:// URL.
    docker_host: String,
    container: String,
    volume: String,
    ssh_port: u16,
    engine_port: u16,
}

fn connect(host: &str) -> Result<Docker> {
    let docker = if let Some(path) = host.strip_prefix("unix://") {
        Docker::connect_with_unix(path, 120, bollard::API_DEFAULT_VERSION)
    } else {
        Docker::connect_with_http(host, 120, bollard::API_DEFAULT_VERSION)
    };
    docker.map_err(|e| {
        Error::unavailable(format!("cannot reach the Docker engine at {host}: {e}"))
            .with_hint("start dockerd, or point --container-docker-host at a running engine")
    })
}

fn engine_error(doing: &str, host: &str, e: bollard::errors::Error) -> Error {
    use bollard::errors::Error as B;
    match &e {
        B::DockerResponseServerError {
            status_code: 404,
            message,
        } => Error::not_found(format!("{doing}: {message}")),
        B::DockerResponseServerError {
            status_code: 409,
            message,
        } => Error::already_exists(format!("{doing}: {message}")),
        B::DockerResponseServerError { .. } => Error::internal(format!("{doing}: {e}")),
        _ => Error::unavailable(format!("{doing}: the Docker engine at {host}: {e}"))
            .with_hint("is dockerd running? check --container-docker-host"),
    }
}

fn default_docker_host() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned())
}

/// A port nobody listens on now (the engine binds it right after).
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::internal(format!("cannot find a free port on 127.0.0.1: {e}")))?;
    Ok(l.local_addr()
        .map_err(|e| Error::internal(e.to_string()))?
        .port())
}

fn port_flag(req: &CreateRequest, name: &str) -> Result<Option<u16>> {
    match req.flags.int(name)? {
        None | Some(0) => Ok(None),
        Some(p) => u16::try_from(p)
            .map(Some)
            .map_err(|_| Error::invalid_argument(format!("--{name} {p} is not a port (1-65535)"))),
    }
}

/// The container's name: the machine's, plus a short hash of its store
/// directory, so two stores with a machine of the same name (parallel test
/// runs, two users) do not collide on one engine.
fn container_name(machine: &str, dir: &std::path::Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut h);
    format!("machine-{machine}-{:08x}", h.finish() as u32)
}

fn body(
    image: &str,
    machine: &str,
    store: &str,
    volume: &str,
    ssh_port: u16,
    engine_port: u16,
) -> ContainerCreateBody {
    let loopback = |port: u16| {
        Some(vec![PortBinding {
            host_ip: Some("127.0.0.1".into()),
            host_port: Some(port.to_string()),
        }])
    };
    let mut ports = HashMap::new();
    ports.insert("22/tcp".to_owned(), loopback(ssh_port));
    ports.insert(format!("{engine_port}/tcp"), loopback(engine_port));
    let tmpfs = HashMap::from([
        ("/run".to_owned(), String::new()),
        ("/run/lock".to_owned(), String::new()),
    ]);
    ContainerCreateBody {
        image: Some(image.to_owned()),
        hostname: Some(machine.to_owned()),
        cmd: Some(vec!["/sbin/init".into()]),
        labels: Some(HashMap::from([
            (LABEL.to_owned(), machine.to_owned()),
            (STORE_LABEL.to_owned(), store.to_owned()),
        ])),
        exposed_ports: Some(vec!["22/tcp".into(), format!("{engine_port}/tcp")]),
        stop_signal: Some("SIGRTMIN+3".into()),
        host_config: Some(HostConfig {
            cap_add: Some(vec!["SYS_ADMIN".into(), "NET_ADMIN".into()]),
            security_opt: Some(vec![
                "seccomp=unconfined".into(),
                "apparmor=unconfined".into(),
            ]),
            cgroupns_mode: Some(HostConfigCgroupnsModeEnum::HOST),
            tmpfs: Some(tmpfs),
            binds: Some(vec![
                "/sys/fs/cgroup:/sys/fs/cgroup:rw".into(),
                format!("{volume}:/var/lib/docker"),
            ]),
            port_bindings: Some(ports),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    }
}

/// A tar archive holding root's `.ssh/authorized_keys` with the key.
fn authorized_keys_tar(public_key: &str) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o700);
    dir.set_uid(0);
    dir.set_gid(0);
    dir.set_size(0);
    tar.append_data(&mut dir, "root/.ssh", std::io::empty())?;
    let body = format!("{}\n", public_key.trim());
    let mut file = tar::Header::new_gnu();
    file.set_mode(0o600);
    file.set_uid(0);
    file.set_gid(0);
    file.set_size(body.len() as u64);
    tar.append_data(&mut file, "root/.ssh/authorized_keys", body.as_bytes())?;
    tar.into_inner()
}

/// Puts the machine's public key in place for root, before the container
/// starts: copying a file into a created container costs the engine far
/// less than a `docker exec` into a booting one, which matters when
/// several machines are created at once.
async fn install_key(docker: &Docker, container: &str, public_key: &str) -> Result<()> {
    if public_key.trim().is_empty() {
        return Ok(());
    }
    let tar = authorized_keys_tar(public_key)
        .map_err(|e| Error::internal(format!("packing the SSH key for {container}: {e}")))?;
    let opts = bollard::query_parameters::UploadToContainerOptionsBuilder::default()
        .path("/")
        .build();
    docker
        .upload_to_container(container, Some(opts), bollard::body_full(tar.into()))
        .await
        .map_err(|e| Error::internal(format!("copying the SSH key into {container}: {e}")))
}

async fn remove_all(docker: &Docker, cfg: &ContainerConfig) -> Result<()> {
    let opts = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(&cfg.container, Some(opts)).await {
        Ok(()) => {}
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        Err(e) => return Err(engine_error("removing the container", &cfg.docker_host, e)),
    }
    match docker
        .remove_volume(&cfg.volume, Some(RemoveVolumeOptions { force: true }))
        .await
    {
        Ok(()) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(e) => Err(engine_error("removing the volume", &cfg.docker_host, e)),
    }
}

#[async_trait]
impl Driver for ContainerDriver {
    fn info(&self) -> DriverInfo {
        DriverInfo {
            name: "container".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "systemd + sshd containers on a Docker engine".into(),
            capabilities: Capability::ALL.to_vec(),
        }
    }

    async fn create_flags(&self) -> Result<Vec<Flag>> {
        Ok(vec![
            Flag::string("container-image", "image that boots systemd with sshd")
                .default_value(DEFAULT_IMAGE)
                .env("CONTAINER_IMAGE"),
            Flag::string(
                "container-docker-host",
                "Docker engine to run the container on",
            )
            .default_value("$DOCKER_HOST, else unix:///var/run/docker.sock")
            .env("CONTAINER_DOCKER_HOST"),
            Flag::int(
                "container-ssh-port",
                "port on 127.0.0.1 for SSH (0: any free port)",
            )
            .default_value(0),
            Flag::int(
                "container-engine-port",
                "port on 127.0.0.1 for Docker (0: any free port)",
            )
            .default_value(0),
        ])
    }

    async fn pre_create_check(&self, req: &CreateRequest) -> Result<Vec<String>> {
        let host = req
            .flags
            .string("container-docker-host")?
            .unwrap_or_else(default_docker_host);
        let docker = connect(&host)?;
        docker
            .ping()
            .await
            .map_err(|e| engine_error("checking the Docker engine", &host, e))?;
        let image = req.flags.string_or("container-image", DEFAULT_IMAGE)?;
        if let Err(e) = docker.inspect_image(&image).await {
            return Err(match e {
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                } => Error::failed_precondition(format!(
                    "image {image} is not on the Docker engine at {host}"
                ))
                .with_hint(
                    "build the default one with drivers/container/image/build.sh, or pass --container-image",
                ),
                e => engine_error("checking the image", &host, e),
            });
        }
        port_flag(req, "container-ssh-port")?;
        port_flag(req, "container-engine-port")?;
        Ok(Vec::new())
    }

    async fn create(&self, req: CreateRequest, progress: Progress) -> Result<Config> {
        let name = req.machine.name.clone();
        let docker_host = req
            .flags
            .string("container-docker-host")?
            .unwrap_or_else(default_docker_host);
        let image = req.flags.string_or("container-image", DEFAULT_IMAGE)?;
        let docker = connect(&docker_host)?;
        let fixed_ssh = port_flag(&req, "container-ssh-port")?;
        let fixed_engine = port_flag(&req, "container-engine-port")?;
        let container = container_name(&name, &req.machine.dir);
        let volume = format!("{container}-docker");
        // machines/NAME -> the store's root.
        let store = req
            .machine
            .dir
            .parent()
            .and_then(std::path::Path::parent)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();

        // Free ports can be taken between the check and the bind by a
        // concurrent create; try again with new ones.
        let mut attempt = 0;
        let cfg = loop {
            attempt += 1;
            let cfg = ContainerConfig {
                docker_host: docker_host.clone(),
                container: container.clone(),
                volume: volume.clone(),
                ssh_port: fixed_ssh.map_or_else(free_port, Ok)?,
                engine_port: fixed_engine.map_or_else(free_port, Ok)?,
            };
            progress
                .step(format!("creating container {container} from {image}"))
                .await;
            let opts = CreateContainerOptionsBuilder::new()
                .name(&container)
                .build();
            docker
                .create_container(
                    Some(opts),
                    body(
                        &image,
                        &name,
                        &store,
                        &volume,
                        cfg.ssh_port,
                        cfg.engine_port,
                    ),
                )
                .await
                .map_err(|e| {
                    engine_error(&format!("creating container {container}"), &docker_host, e)
                })?;
            if let Err(e) = install_key(&docker, &container, &req.ssh_public_key).await {
                let _ = remove_all(&docker, &cfg).await;
                return Err(e);
            }
            match docker
                .start_container(&container, None::<StartContainerOptions>)
                .await
            {
                Ok(()) => break cfg,
                Err(e) => {
                    let clash = e.to_string().contains("port is already allocated")
                        || e.to_string().contains("address already in use");
                    let _ = remove_all(&docker, &cfg).await;
                    if !clash || attempt >= 5 || (fixed_ssh.is_some() && fixed_engine.is_some()) {
                        return Err(engine_error(
                            &format!("starting container {container}"),
                            &docker_host,
                            e,
                        ));
                    }
                }
            }
        };
        Config::of(&cfg)
    }

    async fn remove(&self, m: &Machine) -> Result<()> {
        let cfg: ContainerConfig = if m.config_json.is_empty() {
            // A create that was interrupted before it returned a config may
            // still have made the container: its names follow from the
            // machine, so remove those.
            let container = container_name(&m.name, &m.dir);
            ContainerConfig {
                docker_host: default_docker_host(),
                volume: format!("{container}-docker"),
                container,
                ssh_port: 0,
                engine_port: 0,
            }
        } else {
            m.config()?
        };
        let docker = connect(&cfg.docker_host)?;
        remove_all(&docker, &cfg).await
    }

    async fn state(&self, m: &Machine) -> Result<Status> {
        if m.config_json.is_empty() {
            return Ok(State::NotFound.into());
        }
        let cfg: ContainerConfig = m.config()?;
        let docker = connect(&cfg.docker_host)?;
        let inspect = match docker
            .inspect_container(&cfg.container, None::<InspectContainerOptions>)
            .await
        {
            Ok(i) => i,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(State::NotFound.into()),
            Err(e) => {
                return Err(engine_error(
                    "inspecting the container",
                    &cfg.docker_host,
                    e,
                ));
            }
        };
        let status = inspect.state.and_then(|s| s.status);
        Ok(match status {
            Some(ContainerStateStatusEnum::RUNNING) => State::Running,
            Some(ContainerStateStatusEnum::PAUSED) => State::Paused,
            Some(ContainerStateStatusEnum::RESTARTING) => State::Starting,
            Some(ContainerStateStatusEnum::REMOVING) => State::Stopping,
            Some(ContainerStateStatusEnum::CREATED | ContainerStateStatusEnum::EXITED) => {
                State::Stopped
            }
            Some(ContainerStateStatusEnum::DEAD) => {
                return Ok(Status {
                    state: State::Error,
                    detail: format!("container {} is dead", cfg.container),
                });
            }
            _ => State::Error,
        }
        .into())
    }

    async fn connection(&self, m: &Machine) -> Result<Connection> {
        let cfg: ContainerConfig = m.config()?;
        Ok(Connection {
            ip: "127.0.0.1".into(),
            ssh_host: "127.0.0.1".into(),
            ssh_port: cfg.ssh_port,
            ssh_user: "root".into(),
            ssh_key_path: None,
            docker_url: format!("tcp://127.0.0.1:{}", cfg.engine_port),
        })
    }

    async fn start(&self, m: &Machine) -> Result<Option<Config>> {
        let cfg: ContainerConfig = m.config()?;
        connect(&cfg.docker_host)?
            .start_container(&cfg.container, None::<StartContainerOptions>)
            .await
            .map_err(|e| engine_error("starting the container", &cfg.docker_host, e))?;
        Ok(None)
    }

    async fn stop(&self, m: &Machine) -> Result<Option<Config>> {
        let cfg: ContainerConfig = m.config()?;
        // systemd's clean shutdown takes a few seconds; then the engine kills.
        let opts = StopContainerOptionsBuilder::new().t(30).build();
        connect(&cfg.docker_host)?
            .stop_container(&cfg.container, Some(opts))
            .await
            .map_err(|e| engine_error("stopping the container", &cfg.docker_host, e))?;
        Ok(None)
    }

    async fn restart(&self, m: &Machine) -> Result<Option<Config>> {
        let cfg: ContainerConfig = m.config()?;
        let opts = RestartContainerOptionsBuilder::new().t(30).build();
        connect(&cfg.docker_host)?
            .restart_container(&cfg.container, Some(opts))
            .await
            .map_err(|e| engine_error("restarting the container", &cfg.docker_host, e))?;
        Ok(None)
    }

    async fn kill(&self, m: &Machine) -> Result<Option<Config>> {
        let cfg: ContainerConfig = m.config()?;
        let docker = connect(&cfg.docker_host)?;
        docker
            .kill_container(&cfg.container, None::<KillContainerOptions>)
            .await
            .map_err(|e| engine_error("killing the container", &cfg.docker_host, e))?;
        // A killed container is Stopped once the engine has reaped it.
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            let mut waits = docker.wait_container(
                &cfg.container,
                None::<bollard::query_parameters::WaitContainerOptions>,
            );
            while waits.next().await.is_some() {}
        })
        .await;
        Ok(None)
    }
}
