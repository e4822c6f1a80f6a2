//! Provisioning: everything `machine` does to turn a host its driver made
//! into a Docker host, over one SSH connection.
//!
//! 1. wait for SSH and pin the host key;
//! 2. read `/etc/os-release` and pick the provisioner family;
//! 3. set the hostname;
//! 4. install Docker if it is missing (install script, the distribution's
//!    package, or refuse), never upgrading the rest of the system;
//! 5. make a server certificate for every address the CLI uses and upload
//!    it with the CA;
//! 6. configure dockerd (systemd drop-in, or OpenRC conf on Alpine) with
//!    the machine's engine options, using the dockerd that `command -v`
//!    finds;
//! 7. restart Docker and wait until its API answers over mutual TLS.
//!
//! Each step is shown on stderr with its time.

pub mod engine;
pub mod os;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use machine_proto::v1;

use crate::certs;
use crate::context::Context;
use crate::docker_api;
use crate::machine::Target;
use crate::ssh::{self, Session};
use crate::store::{DockerInstall, EngineOptions};
use crate::ui;
use os::{Family, OsRelease};

/// How long a booting host may take to answer SSH (VMs under TCG are slow).
pub const SSH_WAIT: Duration = Duration::from_secs(300);
/// How long Docker may take to answer after a restart.
pub const DOCKER_WAIT: Duration = Duration::from_secs(120);
/// Restarts Docker under systemd. docker.service allows three starts a
/// minute; provisioning, `regenerate-certs` and `upgrade` run back to back
/// must not trip that limit, so its counter is reset first.
const SYSTEMD_RESTART: &str =
    "systemctl reset-failed docker.service 2>/dev/null; systemctl restart docker.service";

/// The organisation written into certificates.
pub const CERT_ORG: &str = "machine";

/// The machine's own SSH key, made at create.
pub fn own_key(t: &Target) -> PathBuf {
    t.dir.join("id_ed25519")
}

/// How to reach a machine over SSH, from its driver's answer.
pub fn ssh_target(t: &Target, conn: &v1::GetConnectionResponse) -> anyhow::Result<ssh::Target> {
    if conn.ssh_host.is_empty() {
        anyhow::bail!(
            "machine `{}` has no SSH endpoint: its driver (`{}`) manages only a Docker URL",
            t.name(),
            t.record.driver
        );
    }
    let key_path = if conn.ssh_key_path.is_empty() {
        own_key(t)
    } else {
        PathBuf::from(&conn.ssh_key_path)
    };
    Ok(ssh::Target {
        machine: t.name().to_owned(),
        host: conn.ssh_host.clone(),
        port: u16::try_from(conn.ssh_port).unwrap_or(22),
        user: if conn.ssh_user.is_empty() {
            "root".to_owned()
        } else {
            conn.ssh_user.clone()
        },
        key_path,
        known_hosts: t.dir.join("known_hosts"),
    })
}

/// Connects, waiting for a booting host, and shows how long it took.
pub async fn connect(t: &Target, conn: &v1::GetConnectionResponse) -> anyhow::Result<Session> {
    let target = ssh_target(t, conn)?;
    let started = Instant::now();
    ui::step(&format!(
        "Waiting for SSH on {}:{}",
        target.host, target.port
    ));
    let session = Session::connect_with_retry(&target, SSH_WAIT, |_, _| {}).await?;
    ui::done("SSH is up", started.elapsed());
    Ok(session)
}

/// The port in a `tcp://host:port` URL.
pub fn url_port(url: &str) -> Option<u16> {
    url.rsplit_once(':')?.1.trim_end_matches('/').parse().ok()
}

/// The host in a `tcp://host:port` URL.
pub fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (host, _) = rest.rsplit_once(':')?;
    Some(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
    )
}

/// Every name and address the CLI (or the user) will reach Docker at.
pub fn server_sans(t: &Target, conn: &v1::GetConnectionResponse) -> Vec<String> {
    let mut sans = vec![conn.ip.clone(), conn.ssh_host.clone(), t.name().to_owned()];
    sans.extend(url_host(&conn.docker_url));
    sans.extend(t.record.engine.tls_san.iter().cloned());
    sans.retain(|s| !s.is_empty());
    let mut seen = std::collections::HashSet::new();
    sans.retain(|s| seen.insert(s.clone()));
    sans
}

async fn timed<T>(what: &str, fut: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    let started = Instant::now();
    ui::step(what);
    let out = fut.await?;
    ui::done(what, started.elapsed());
    Ok(out)
}

/// Provisions Docker on the machine; updates `t.record` with how Docker was
/// installed (the caller saves it).
pub async fn provision(
    ctx: &Context,
    t: &mut Target,
    conn: &v1::GetConnectionResponse,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let session = connect(t, conn).await?;
    let result = provision_over(ctx, t, conn, &session).await;
    session.close().await;
    result?;
    ui::done(
        &format!("Docker is up on `{}`", t.name()),
        started.elapsed(),
    );
    Ok(())
}

async fn provision_over(
    ctx: &Context,
    t: &mut Target,
    conn: &v1::GetConnectionResponse,
    session: &Session,
) -> anyhow::Result<()> {
    let name = t.name().to_owned();
    let os = timed("Detecting the operating system", detect_os(session)).await?;
    let family = os.family().with_context(|| {
        format!(
            "machine `{name}` runs {} (ID={}), which machine cannot provision\n  hint: supported: Debian, Ubuntu, Fedora, CentOS/RHEL/Rocky/Alma, openSUSE/SLES, Arch, Alpine, Flatcar",
            if os.pretty_name.is_empty() { "an unknown system" } else { &os.pretty_name },
            os.id
        )
    })?;
    ui::info(&format!("    {} ({family} provisioner)", os.pretty_name));

    timed(
        &format!("Setting the hostname to {name}"),
        set_hostname(session, &name),
    )
    .await?;

    let engine = t.record.engine.clone();
    let (dockerd, install) = timed(
        "Checking for Docker",
        ensure_docker(session, family, &engine, &name),
    )
    .await?;
    t.record.docker = install;

    timed(
        "Installing TLS certificates",
        install_certs(ctx, t, conn, session),
    )
    .await?;

    let port = url_port(&conn.docker_url).with_context(|| {
        format!(
            "driver gave machine `{name}` the Docker URL {:?}, which has no port",
            conn.docker_url
        )
    })?;
    timed(
        "Configuring and restarting Docker",
        configure_docker(session, family, &dockerd, &engine, port, &t.record.driver),
    )
    .await?;

    let started = Instant::now();
    ui::step(&format!("Waiting for Docker at {}", conn.docker_url));
    let version = docker_api::wait_ready(&conn.docker_url, &t.dir, DOCKER_WAIT)
        .await
        .with_context(|| format!("Docker on machine `{name}` did not answer over TLS"))?;
    ui::done(
        &format!("Docker {} answers over mutual TLS", version.version),
        started.elapsed(),
    );
    Ok(())
}

async fn detect_os(session: &Session) -> anyhow::Result<OsRelease> {
    let text = session
        .run("cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release")
        .await?;
    Ok(OsRelease::parse(&text))
}

async fn set_hostname(session: &Session, name: &str) -> anyhow::Result<()> {
    let q = engine::sh_quote(name);
    session
        .sudo(&format!(
            "hostname {q} && echo {q} > /etc/hostname && \
             (grep -q \"[[:space:]]{name}$\" /etc/hosts || echo \"127.0.1.1 {name}\" >> /etc/hosts)"
        ))
        .await?;
    Ok(())
}

/// Where dockerd is, if anywhere. `sudo` because root's PATH has sbin.
async fn find_dockerd(session: &Session) -> anyhow::Result<Option<String>> {
    let found = session
        .sudo("command -v dockerd || true")
        .await?
        .trim()
        .to_owned();
    Ok((!found.is_empty()).then_some(found))
}

async fn ensure_docker(
    session: &Session,
    family: Family,
    engine: &EngineOptions,
    name: &str,
) -> anyhow::Result<(String, DockerInstall)> {
    if let Some(path) = find_dockerd(session).await? {
        ui::info(&format!("    Docker is installed ({path})"));
        return Ok((path, DockerInstall::Preinstalled));
    }
    let install = match engine.install_method.as_str() {
        "none" => anyhow::bail!(
            "Docker is not installed on machine `{name}`, and --engine-install-method none says not to install it\n  hint: install Docker on the host, or create the machine with --engine-install-method package"
        ),
        "package" => {
            let cmd = family.package_install().with_context(|| {
                format!("{family} has no Docker package to install; its image ships Docker")
            })?;
            ui::info(&format!(
                "    installing the distribution's Docker package: {cmd}"
            ));
            session.sudo(cmd).await?;
            DockerInstall::Package
        }
        _ => {
            let url = &engine.install_url;
            ui::info(&format!("    running the install script from {url}"));
            session
                .sudo(&format!(
                    "(command -v curl >/dev/null && curl -fsSL {u} || wget -qO- {u}) | sh",
                    u = engine::sh_quote(url)
                ))
                .await
                .with_context(|| {
                    format!("the Docker install script {url} failed on machine `{name}`\n  hint: --engine-install-method package uses the distribution's package instead")
                })?;
            DockerInstall::Script
        }
    };
    let path = find_dockerd(session).await?.with_context(|| {
        format!("Docker was installed on machine `{name}`, but dockerd is not on root's PATH")
    })?;
    Ok((path, install))
}

async fn install_certs(
    ctx: &Context,
    t: &Target,
    conn: &v1::GetConnectionResponse,
    session: &Session,
) -> anyhow::Result<()> {
    let paths = certs::ensure_ca(&ctx.store.certs_dir(), CERT_ORG)?;
    let sans = server_sans(t, conn);
    let (cert, key) = certs::server_cert(&paths, &sans, t.name())?;
    crate::store::write_atomic(&t.dir.join("server.pem"), cert.as_bytes(), 0o644)?;
    crate::store::write_atomic(&t.dir.join("server-key.pem"), key.as_bytes(), 0o600)?;
    certs::install_client_copy(&paths, &t.dir)?;
    let ca =
        std::fs::read(&paths.ca).with_context(|| format!("cannot read {}", paths.ca.display()))?;
    session
        .sudo(&format!("mkdir -p {}", engine::REMOTE_DIR))
        .await?;
    session.upload(engine::REMOTE_CA, &ca, 0o644).await?;
    session
        .upload(engine::REMOTE_CERT, cert.as_bytes(), 0o644)
        .await?;
    session
        .upload(engine::REMOTE_KEY, key.as_bytes(), 0o600)
        .await?;
    Ok(())
}

async fn configure_docker(
    session: &Session,
    family: Family,
    dockerd: &str,
    engine: &EngineOptions,
    port: u16,
    driver: &str,
) -> anyhow::Result<()> {
    if family.openrc() {
        let args = engine::dockerd_args(engine, port, driver, "unix:///var/run/docker.sock");
        let conf = engine::openrc_conf(&args, &engine.env);
        session
            .upload(engine::OPENRC_CONF, conf.as_bytes(), 0o644)
            .await?;
        session
            .sudo("rc-update add docker default >/dev/null && rc-service docker restart")
            .await?;
        return Ok(());
    }
    // One round trip learns whether socket activation is there (Debian's
    // docker.io: keep the socket unit's listener; otherwise dockerd makes
    // its own) and what the drop-in says now, and makes its directory.
    const SOCKET_MARK: &str = "machine:socket-unit";
    let probe = session
        .sudo(&format!(
            "systemctl cat docker.socket >/dev/null 2>&1 && echo {SOCKET_MARK}; \
             mkdir -p {dir}; cat {dropin} 2>/dev/null || true",
            dir = engine::DROPIN_DIR,
            dropin = engine::DROPIN
        ))
        .await?;
    let (socket_unit, current) = match probe.strip_prefix(SOCKET_MARK) {
        Some(rest) => (true, rest.strip_prefix('\n').unwrap_or(rest)),
        None => (false, probe.as_str()),
    };
    let unix = if socket_unit {
        "fd://"
    } else {
        "unix:///var/run/docker.sock"
    };
    let args = engine::dockerd_args(engine, port, driver, unix);
    let dropin = engine::systemd_dropin(dockerd, &args, &engine.env);
    // Reload only when the drop-in changes. Enable without Debian's SysV
    // compatibility scripts (`systemctl enable` runs update-rc.d through
    // them: 0.4 s here, for an init.d link systemd never reads) and
    // without a second reload.
    let reload = if current.trim_end() != dropin.trim_end() {
        session
            .upload(engine::DROPIN, dropin.as_bytes(), 0o644)
            .await?;
        "systemctl daemon-reload; "
    } else {
        ""
    };
    session
        .sudo(&format!(
            "{reload}systemctl is-enabled --quiet docker.service \
             || SYSTEMCTL_SKIP_SYSV=1 systemctl enable --no-reload docker.service >/dev/null 2>&1; \
             {SYSTEMD_RESTART}"
        ))
        .await
        .context("restarting Docker with the new configuration failed")?;
    Ok(())
}

/// Regenerates the machine's server certificate and restarts Docker only.
pub async fn regenerate_certs(
    ctx: &Context,
    t: &Target,
    conn: &v1::GetConnectionResponse,
) -> anyhow::Result<()> {
    let session = connect(t, conn).await?;
    let result = async {
        timed(
            "Installing new TLS certificates",
            install_certs(ctx, t, conn, &session),
        )
        .await?;
        let os = detect_os(&session).await?;
        let restart = if os.family().is_some_and(Family::openrc) {
            "rc-service docker restart"
        } else {
            SYSTEMD_RESTART
        };
        timed("Restarting Docker", async {
            session.sudo(restart).await?;
            Ok(())
        })
        .await?;
        let v = docker_api::wait_ready(&conn.docker_url, &t.dir, DOCKER_WAIT).await?;
        ui::info(&format!(
            "Docker {} answers with the new certificates",
            v.version
        ));
        anyhow::Ok(())
    }
    .await;
    session.close().await;
    result
}

/// Upgrades Docker the way it was installed, then restarts it.
pub async fn upgrade(t: &Target, conn: &v1::GetConnectionResponse) -> anyhow::Result<()> {
    let name = t.name();
    let session = connect(t, conn).await?;
    let result = async {
        let os = detect_os(&session).await?;
        let family = os
            .family()
            .with_context(|| format!("machine `{name}` runs an unsupported system ({})", os.id))?;
        let before = session.sudo("dockerd --version").await.unwrap_or_default();
        match t.record.docker {
            DockerInstall::Script => {
                timed("Re-running the Docker install script", async {
                    session
                        .sudo(&format!(
                            "(command -v curl >/dev/null && curl -fsSL {u} || wget -qO- {u}) | sh",
                            u = engine::sh_quote(&t.record.engine.install_url)
                        ))
                        .await?;
                    Ok(())
                })
                .await?;
            }
            DockerInstall::Package | DockerInstall::Preinstalled => {
                let dockerd = find_dockerd(&session)
                    .await?
                    .with_context(|| format!("dockerd is not installed on machine `{name}`"))?;
                let owner = family
                    .package_owner(&dockerd)
                    .with_context(|| format!("{family} manages Docker as part of its image; upgrade the image instead"))?;
                let package = session.sudo(&owner).await?.trim().to_owned();
                if package.is_empty() {
                    anyhow::bail!("no package owns {dockerd} on machine `{name}`; upgrade Docker the way it was installed");
                }
                let cmd = family.package_upgrade(&package).expect("family has packages");
                timed(&format!("Upgrading the {package} package"), async {
                    session.sudo(&cmd).await?;
                    Ok(())
                })
                .await?;
            }
            DockerInstall::Unknown => anyhow::bail!(
                "machine `{name}` was never provisioned, so how Docker was installed is unknown\n  hint: `machine provision {name}`"
            ),
        }
        let restart = if family.openrc() {
            "rc-service docker restart"
        } else {
            SYSTEMD_RESTART
        };
        session.sudo(restart).await?;
        let v = docker_api::wait_ready(&conn.docker_url, &t.dir, DOCKER_WAIT).await?;
        let after = session.sudo("dockerd --version").await.unwrap_or_default();
        ui::info(&format!("Before: {}\nAfter:  {}", before.trim(), after.trim()));
        ui::info(&format!("Docker {} answers on `{name}`", v.version));
        anyhow::Ok(())
    }
    .await;
    session.close().await;
    result
}
