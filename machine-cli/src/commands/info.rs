//! The read-only machine commands: `inspect`, `status`, `url`, `ip`,
//! `config`, `active` and `version`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use machine_proto::v1;
use serde_json::{Value, json};

use crate::context::Context;
use crate::machine::{self, Target, names_or_default, state_name};
use crate::output;
use crate::template::Template;

fn name_or_default(name: Option<String>) -> String {
    name.unwrap_or_else(|| machine::DEFAULT_NAME.to_owned())
}

/// The machine's details in Docker Machine's shape, so `inspect -f`
/// templates written for it keep working.
async fn details(ctx: &Context, t: &Target) -> Value {
    let mut state = String::new();
    let mut conn = v1::GetConnectionResponse::default();
    let mut error = t.record.error.clone().unwrap_or_default();
    match t.driver(ctx).await {
        Ok(driver) => match t.state(&driver, driver.call_timeout()).await {
            Ok(s) => {
                state = state_name(s.state()).to_owned();
                if s.state() == v1::State::Running {
                    match t.connection(&driver, driver.call_timeout()).await {
                        Ok(c) => conn = c,
                        Err(e) => error = e.to_string(),
                    }
                }
            }
            Err(e) => error = e.to_string(),
        },
        Err(e) => error = format!("{e:#}"),
    }
    let mut driver = match &t.record.driver_config {
        Value::Object(m) => Value::Object(m.clone()),
        _ => json!({}),
    };
    let store = ctx.store.root().to_string_lossy().into_owned();
    let dir = t.dir.to_string_lossy().into_owned();
    let certs = ctx.store.certs_dir().to_string_lossy().into_owned();
    if let Value::Object(m) = &mut driver {
        m.insert("MachineName".into(), json!(t.name()));
        m.insert("IPAddress".into(), json!(conn.ip));
        m.insert("SSHUser".into(), json!(conn.ssh_user));
        m.insert("SSHPort".into(), json!(conn.ssh_port));
        m.insert("SSHKeyPath".into(), json!(conn.ssh_key_path));
        m.insert("StorePath".into(), json!(store));
    }
    let e = &t.record.engine;
    json!({
        "ConfigVersion": t.record.schema_version,
        "Name": t.name(),
        "DriverName": t.record.driver,
        "Driver": driver,
        "State": state,
        "URL": conn.docker_url,
        "Phase": t.record.phase,
        "Error": error,
        "HostOptions": {
            "EngineOptions": {
                "ArbitraryFlags": e.opts,
                "Env": e.env,
                "InsecureRegistry": e.insecure_registries,
                "Labels": e.labels,
                "RegistryMirror": e.registry_mirrors,
                "StorageDriver": e.storage_driver,
                "InstallURL": e.install_url,
                "InstallMethod": e.install_method,
            },
            "AuthOptions": {
                "CertDir": certs,
                "CaCertPath": format!("{certs}/ca.pem"),
                "CaPrivateKeyPath": format!("{certs}/ca-key.pem"),
                "ClientCertPath": format!("{certs}/cert.pem"),
                "ClientKeyPath": format!("{certs}/key.pem"),
                "ServerCertPath": format!("{dir}/server.pem"),
                "ServerKeyPath": format!("{dir}/server-key.pem"),
                "StorePath": dir,
                "ServerCertSANs": e.tls_san,
            },
        },
    })
}

pub async fn inspect(
    ctx: &Context,
    name: Option<String>,
    format: Option<String>,
) -> anyhow::Result<ExitCode> {
    let template = format.as_deref().map(Template::parse).transpose()?;
    let t = machine::load(ctx, &name_or_default(name))?;
    let value = details(ctx, &t).await;
    match template {
        Some(tpl) => {
            let mut text = tpl.render(&value)?;
            text.push('\n');
            output::print(&text)?;
        }
        None => output::print_json(&value)?,
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn status(ctx: &Context, name: Option<String>) -> anyhow::Result<ExitCode> {
    let t = machine::load(ctx, &name_or_default(name))?;
    let driver = t.driver(ctx).await?;
    let state = t.state(&driver, driver.call_timeout()).await?;
    output::print(&format!("{}\n", state_name(state.state())))?;
    Ok(ExitCode::SUCCESS)
}

pub async fn url(ctx: &Context, name: Option<String>) -> anyhow::Result<ExitCode> {
    let t = machine::load(ctx, &name_or_default(name))?;
    let conn = t.running_connection(ctx).await?;
    t.check_certificate(&conn)?;
    output::print(&format!("{}\n", conn.docker_url))?;
    Ok(ExitCode::SUCCESS)
}

pub async fn ip(ctx: &Context, names: Vec<String>) -> anyhow::Result<ExitCode> {
    let mut text = String::new();
    for name in names_or_default(names) {
        let t = machine::load(ctx, &name)?;
        let conn = t.running_connection(ctx).await?;
        text += &conn.ip;
        text.push('\n');
    }
    output::print(&text)?;
    Ok(ExitCode::SUCCESS)
}

pub async fn config(ctx: &Context, name: Option<String>) -> anyhow::Result<ExitCode> {
    let t = machine::load(ctx, &name_or_default(name))?;
    let conn = t.running_connection(ctx).await?;
    t.check_certificate(&conn)?;
    let dir = t.dir.display();
    output::print(&format!(
        "--tlsverify\n--tlscacert=\"{dir}/ca.pem\"\n--tlscert=\"{dir}/cert.pem\"\n--tlskey=\"{dir}/key.pem\"\n-H={}\n",
        conn.docker_url
    ))?;
    Ok(ExitCode::SUCCESS)
}

pub async fn active(ctx: &Context, timeout: u64) -> anyhow::Result<ExitCode> {
    let docker_host = std::env::var("DOCKER_HOST").unwrap_or_default();
    if docker_host.is_empty() {
        anyhow::bail!("no active host: DOCKER_HOST is not set\n  hint: eval $(machine env NAME)");
    }
    let timeout = Duration::from_secs(timeout.max(1));
    let names = ctx.store.names()?;
    let found = futures_util::future::join_all(names.iter().map(|name| async {
        let t = Target::load(ctx, name).ok()?;
        let driver = t.driver(ctx).await.ok()?;
        let conn = t.connection(&driver, timeout).await.ok()?;
        (conn.docker_url == docker_host).then(|| name.clone())
    }))
    .await;
    match found.into_iter().flatten().next() {
        Some(name) => {
            output::print(&format!("{name}\n"))?;
            Ok(ExitCode::SUCCESS)
        }
        None => anyhow::bail!("no active host: no machine has the URL DOCKER_HOST={docker_host}"),
    }
}

pub async fn version(ctx: &Context, name: Option<String>) -> anyhow::Result<ExitCode> {
    match name {
        None => {
            output::print(&format!(
                "machine {} (driver protocol {})\n",
                env!("CARGO_PKG_VERSION"),
                crate::driver_host::protocol_versions()
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Some(name) => {
            let t = machine::load(ctx, &name)?;
            let conn = t.running_connection(ctx).await?;
            t.check_certificate(&conn)?;
            let v = crate::docker_api::version(&conn.docker_url, &t.dir, Duration::from_secs(20))
                .await
                .with_context(|| {
                    format!("cannot ask Docker on machine `{name}` for its version")
                })?;
            output::print(&format!("{}\n", v.version))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
