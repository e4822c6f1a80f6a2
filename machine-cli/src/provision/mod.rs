//! Provisioning: everything `machine` does to turn a host its driver made
//! into a Docker host, over one SSH connection.
//!
//! 1. wait for SSH and pin the host key;
//! 2. inspect the host in one round trip: `/etc/os-release` (which picks
//!    the provisioner family), where dockerd is, whether Docker uses socket
//!    activation, and the current systemd drop-in;
//! 3. install Docker if it is missing (install script, the distribution's
//!    package, or refuse), never upgrading the rest of the system;
//! 4. make a server certificate for every address the CLI uses;
//! 5. in one more round trip ([`apply`]): set the hostname, upload the CA,
//!    certificate and key, configure dockerd (systemd drop-in and
//!    environment file, or OpenRC conf on Alpine) with the machine's engine
//!    options and the dockerd that `command -v` found, and restart Docker;
//! 6. wait until Docker's API answers over mutual TLS.
//!
//! Each step is shown on stderr with its time. Few round trips matter for
//! hosts far away; few processes on the host matter when many machines
//! boot at once on few cores.

pub mod apply;
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
use apply::{Apply, TextFile};
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
    let mut facts = timed(
        "Inspecting the host (operating system, Docker)",
        inspect(session),
    )
    .await?;
    let os = &facts.os;
    let family = os.family().with_context(|| {
        format!(
            "machine `{name}` runs {} (ID={}), which machine cannot provision\n  hint: supported: Debian, Ubuntu, Fedora, CentOS/RHEL/Rocky/Alma, openSUSE/SLES, Arch, Alpine, Flatcar",
            if os.pretty_name.is_empty() { "an unknown system" } else { &os.pretty_name },
            os.id
        )
    })?;
    ui::info(&format!("    {} ({family} provisioner)", os.pretty_name));

    let engine = t.record.engine.clone();
    let (dockerd, install) = match facts.dockerd.clone() {
        Some(path) => {
            ui::info(&format!("    Docker is installed ({path})"));
            (path, DockerInstall::Preinstalled)
        }
        None => {
            let install = timed(
                "Installing Docker",
                install_docker(session, family, &engine, &name),
            )
            .await?;
            // The package may bring socket activation and a drop-in.
            facts = inspect(session).await?;
            let path = facts.dockerd.clone().with_context(|| {
                format!(
                    "Docker was installed on machine `{name}`, but dockerd is not on root's PATH"
                )
            })?;
            (path, install)
        }
    };
    t.record.docker = install;

    let port = url_port(&conn.docker_url).with_context(|| {
        format!(
            "driver gave machine `{name}` the Docker URL {:?}, which has no port",
            conn.docker_url
        )
    })?;
    let mut plan = Apply {
        hostname: Some(name.clone()),
        files: cert_files(ctx, t, conn)?,
        ..Apply::default()
    };
    configure_docker(
        &mut plan,
        family,
        &facts,
        &dockerd,
        &engine,
        port,
        &t.record.driver,
    );
    timed(
        "Installing TLS certificates, configuring and restarting Docker",
        run_apply(session, &name, &plan),
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

/// What provisioning needs to know about a host, learnt in one round trip.
#[derive(Debug)]
struct HostFacts {
    os: OsRelease,
    /// Where root's PATH finds dockerd.
    dockerd: Option<String>,
    /// Whether docker.service is socket-activated (Debian's docker.io):
    /// dockerd then keeps the socket unit's listener (`-H fd://`).
    socket_unit: bool,
    /// The current drop-in, empty when there is none.
    dropin: String,
}

/// Separates the parts of [`inspect`]'s output.
const SECTION: &str = "--machine-section--";

async fn inspect(session: &Session) -> anyhow::Result<HostFacts> {
    // `sudo` because root's PATH has sbin, where distributions put dockerd.
    let out = session
        .sudo(&format!(
            "cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release 2>/dev/null; echo {SECTION}; \
             command -v dockerd; echo {SECTION}; \
             systemctl cat docker.socket >/dev/null 2>&1 && echo socket; echo {SECTION}; \
             cat {dropin} 2>/dev/null; true",
            dropin = engine::DROPIN
        ))
        .await?;
    Ok(parse_facts(&out))
}

fn parse_facts(out: &str) -> HostFacts {
    let separator = format!("{SECTION}\n");
    let mut parts = out.split(&separator);
    let mut next = || parts.next().unwrap_or_default();
    let os = OsRelease::parse(next());
    let dockerd = next().trim().to_owned();
    let socket_unit = next().trim() == "socket";
    let dropin = next().to_owned();
    HostFacts {
        os,
        dockerd: (!dockerd.is_empty()).then_some(dockerd),
        socket_unit,
        dropin,
    }
}

/// Where root's PATH finds dockerd, if anywhere.
async fn find_dockerd(session: &Session) -> anyhow::Result<Option<String>> {
    let found = session
        .sudo("command -v dockerd || true")
        .await?
        .trim()
        .to_owned();
    Ok((!found.is_empty()).then_some(found))
}

async fn install_docker(
    session: &Session,
    family: Family,
    engine: &EngineOptions,
    name: &str,
) -> anyhow::Result<DockerInstall> {
    Ok(match engine.install_method.as_str() {
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
    })
}

/// Makes the machine's server certificate, keeps copies in its directory
/// (with the client certificate, a complete DOCKER_CERT_PATH) and returns
/// the CA, certificate and key to upload.
fn cert_files(
    ctx: &Context,
    t: &Target,
    conn: &v1::GetConnectionResponse,
) -> anyhow::Result<Vec<TextFile>> {
    let paths = certs::ensure_ca(&ctx.store.certs_dir(), CERT_ORG)?;
    let sans = server_sans(t, conn);
    let (cert, key) = certs::server_cert(&paths, &sans, t.name())?;
    crate::store::write_atomic(&t.dir.join("server.pem"), cert.as_bytes(), 0o644)?;
    crate::store::write_atomic(&t.dir.join("server-key.pem"), key.as_bytes(), 0o600)?;
    certs::install_client_copy(&paths, &t.dir)?;
    let ca = std::fs::read_to_string(&paths.ca)
        .with_context(|| format!("cannot read {}", paths.ca.display()))?;
    let file = |path: &str, mode, content| TextFile {
        path: path.to_owned(),
        mode,
        content,
    };
    Ok(vec![
        file(engine::REMOTE_CA, 0o644, ca),
        file(engine::REMOTE_CERT, 0o644, cert),
        file(engine::REMOTE_KEY, 0o600, key),
    ])
}

/// Adds dockerd's configuration, enabling and the restart to `plan`.
fn configure_docker(
    plan: &mut Apply,
    family: Family,
    facts: &HostFacts,
    dockerd: &str,
    engine: &EngineOptions,
    port: u16,
    driver: &str,
) {
    plan.dirs.push(engine::REMOTE_DIR.to_owned());
    if family.openrc() {
        let args = engine::dockerd_args(engine, port, driver, "unix:///var/run/docker.sock");
        plan.dirs.push("/etc/conf.d".to_owned());
        plan.files.push(TextFile {
            path: engine::OPENRC_CONF.to_owned(),
            mode: 0o644,
            content: engine::openrc_conf(&args, &engine.env),
        });
        plan.then
            .push("rc-update add docker default >/dev/null".to_owned());
        plan.finally = Some("rc-service docker restart".to_owned());
        return;
    }
    let unix = if facts.socket_unit {
        "fd://"
    } else {
        "unix:///var/run/docker.sock"
    };
    let args = engine::dockerd_args(engine, port, driver, unix);
    let config = engine::systemd_config(dockerd, &args, &engine.env);
    match config.env_file {
        Some(env_file) => plan.files.push(TextFile {
            path: engine::ENV_FILE.to_owned(),
            mode: 0o644,
            content: env_file,
        }),
        None => plan.remove.push(engine::ENV_FILE.to_owned()),
    }
    // Reload only when the drop-in changes (an image can ship it). Enable
    // without Debian's SysV compatibility scripts (`systemctl enable` runs
    // update-rc.d through them: 0.4 s here, for an init.d link systemd
    // never reads) and without a second reload.
    if facts.dropin.trim_end() != config.dropin.trim_end() {
        plan.dirs.push(engine::DROPIN_DIR.to_owned());
        plan.files.push(TextFile {
            path: engine::DROPIN.to_owned(),
            mode: 0o644,
            content: config.dropin,
        });
        plan.then.push("systemctl daemon-reload".to_owned());
    }
    plan.then.push(
        "systemctl is-enabled --quiet docker.service \
         || SYSTEMCTL_SKIP_SYSV=1 systemctl enable --no-reload docker.service >/dev/null 2>&1"
            .to_owned(),
    );
    plan.finally = Some(SYSTEMD_RESTART.to_owned());
}

/// Runs the plan; a failed restart is told apart from the steps before it.
async fn run_apply(session: &Session, name: &str, plan: &Apply) -> anyhow::Result<()> {
    let shown = "the configuration script (hostname, TLS files, Docker's configuration, restart)";
    match session.sudo_script(shown, &plan.script()).await {
        Ok(_) => Ok(()),
        Err(e @ ssh::SshError::Command { status, .. }) if status == apply::RESTART_FAILED => {
            Err(anyhow::Error::new(e).context(format!(
                "restarting Docker with the new configuration failed on machine `{name}`\n  hint: `machine ssh {name} -- journalctl -u docker --no-pager -n 50` shows dockerd's own error"
            )))
        }
        Err(e) => Err(e.into()),
    }
}

/// Regenerates the machine's server certificate and restarts Docker only.
pub async fn regenerate_certs(
    ctx: &Context,
    t: &Target,
    conn: &v1::GetConnectionResponse,
) -> anyhow::Result<()> {
    let session = connect(t, conn).await?;
    let result = async {
        let os = detect_os(&session).await?;
        let restart = if os.family().is_some_and(Family::openrc) {
            "rc-service docker restart"
        } else {
            SYSTEMD_RESTART
        };
        let plan = Apply {
            dirs: vec![engine::REMOTE_DIR.to_owned()],
            files: cert_files(ctx, t, conn)?,
            finally: Some(restart.to_owned()),
            ..Apply::default()
        };
        timed(
            "Installing new TLS certificates and restarting Docker",
            run_apply(&session, t.name(), &plan),
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_are_read_section_by_section() {
        let out = format!(
            "ID=debian\nPRETTY_NAME=\"Debian 12\"\n{SECTION}\n/usr/sbin/dockerd\n{SECTION}\nsocket\n{SECTION}\n[Service]\nExecStart=\n"
        );
        let f = parse_facts(&out);
        assert_eq!(f.os.id, "debian");
        assert_eq!(f.dockerd.as_deref(), Some("/usr/sbin/dockerd"));
        assert!(f.socket_unit);
        assert_eq!(f.dropin, "[Service]\nExecStart=\n");

        let bare = parse_facts(&format!("ID=alpine\n{SECTION}\n{SECTION}\n{SECTION}\n"));
        assert_eq!(bare.os.id, "alpine");
        assert_eq!(bare.dockerd, None);
        assert!(!bare.socket_unit);
        assert_eq!(bare.dropin, "");
    }
}
