//! `machine driver ...`: list, describe, install, upgrade and remove
//! driver plugins. Installing is in [`crate::install`]; this module turns
//! the command line into calls to it and its results into output.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use machine_proto::v1;
use serde::Serialize;

use crate::cli::{DriverCommand, DriverInstallArgs, Format};
use crate::context::Context;
use crate::driver_host::RunningDriver;
use crate::install::{self, Outcome, github::Source, lock};
use crate::{output, ui};

/// What the lock file says about an installed driver, for `ls` and `info`.
#[derive(Debug, Clone, Serialize)]
struct Installed {
    source: String,
    version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    requested: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    asset: Option<String>,
    sha256: String,
    protocol: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    public_key: Option<String>,
    installed_at: u64,
}

impl Installed {
    fn of(e: &lock::Entry) -> Self {
        Self {
            source: e.source.clone(),
            version: e.version.clone(),
            requested: e.requested.clone(),
            tag: e.tag.clone(),
            asset: e.asset.clone(),
            sha256: e.sha256.clone(),
            protocol: e.protocol,
            public_key: e.public_key.clone(),
            installed_at: e.installed_at,
        }
    }

    fn display(&self) -> String {
        if self.source.starts_with(lock::PATH_SOURCE_PREFIX) {
            self.source.clone()
        } else {
            format!("{}@{}", self.source, self.version)
        }
    }
}

/// The lock entry of the binary at `path`, if it is an installed one.
fn installed_of(
    ctx: &Context,
    lock: &lock::LockFile,
    name: &str,
    path: &Path,
) -> Option<Installed> {
    if path.parent() != Some(ctx.store.drivers_dir().as_path()) {
        return None;
    }
    lock.drivers.get(name).map(Installed::of)
}

#[derive(Debug, Serialize)]
struct DriverRow {
    name: String,
    path: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    protocol: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sdk: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    capabilities: Option<Vec<String>>,
    /// For drivers installed with `machine driver install`.
    #[serde(skip_serializing_if = "Option::is_none")]
    installed: Option<Installed>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn capability_names(d: &RunningDriver) -> Vec<String> {
    d.info
        .capabilities
        .iter()
        .map(|c| match v1::Capability::try_from(*c) {
            Ok(v1::Capability::Start) => "start".to_owned(),
            Ok(v1::Capability::Stop) => "stop".to_owned(),
            Ok(v1::Capability::Restart) => "restart".to_owned(),
            Ok(v1::Capability::Kill) => "kill".to_owned(),
            _ => format!("unknown({c})"),
        })
        .collect()
}

fn row_of(d: &RunningDriver) -> DriverRow {
    DriverRow {
        name: d.name.clone(),
        path: d.path.clone(),
        version: Some(d.info.version.clone()),
        protocol: Some(d.info.protocol_version),
        sdk: Some(format!("{} {}", d.info.sdk_name, d.info.sdk_version)),
        description: Some(d.info.description.clone()),
        capabilities: Some(capability_names(d)),
        installed: None,
        error: None,
    }
}

pub async fn run(cmd: DriverCommand, ctx: &Context) -> anyhow::Result<ExitCode> {
    match cmd {
        DriverCommand::Ls { quiet, format } => ls(ctx, quiet, format).await,
        DriverCommand::Info { name, format } => info(ctx, &name, format).await,
        DriverCommand::Install(args) => install_cmd(ctx, args).await,
        DriverCommand::Remove { force, name } => remove(ctx, &name, force),
        DriverCommand::Upgrade {
            all,
            require_signature,
            names,
        } => upgrade(ctx, all, require_signature, names).await,
    }
}

async fn install_cmd(ctx: &Context, args: DriverInstallArgs) -> anyhow::Result<ExitCode> {
    let opts = install::Options {
        force: args.force,
        require_signature: args.require_signature,
        public_key: args.public_key,
        name: args.name,
    };
    let outcome = match (&args.path, &args.source) {
        (Some(path), _) => install::install_path(&ctx.store, path, &opts, ctx.debug).await?,
        (None, Some(source)) => {
            let src = Source::parse(source)?;
            install::install_github(&ctx.store, &src, &opts, ctx.debug).await?
        }
        (None, None) => anyhow::bail!("give a source (github.com/OWNER/REPO) or --path FILE"),
    };
    match outcome {
        Outcome::Installed { name, .. } => {
            // The drivers directory comes first in the search, so the new
            // driver hides any other of the same name: say which.
            let file = format!("{}{name}", crate::driver_host::BINARY_PREFIX);
            let search = ctx.host.search();
            if let Some(hidden) = search
                .dirs
                .iter()
                .filter(|d| **d != search.installed)
                .map(|d| d.join(&file))
                .find(|p| p.is_file())
            {
                ui::info(&format!(
                    "note: `-d {name}` now uses the installed driver, not {}",
                    hidden.display()
                ));
            }
        }
        Outcome::AlreadyInstalled { name, entry } => ui::info(&format!(
            "driver `{name}` {} from {} is already installed; --force installs it again",
            entry.version, entry.source
        )),
    }
    Ok(ExitCode::SUCCESS)
}

fn remove(ctx: &Context, name: &str, force: bool) -> anyhow::Result<ExitCode> {
    let entry = install::remove(&ctx.store, name, force, ctx.host.search())?;
    let from = entry
        .map(|e| format!(" (installed from {})", e.display_source()))
        .unwrap_or_default();
    ui::info(&format!("Removed driver `{name}`{from}"));
    Ok(ExitCode::SUCCESS)
}

async fn upgrade(
    ctx: &Context,
    all: bool,
    require_signature: bool,
    names: Vec<String>,
) -> anyhow::Result<ExitCode> {
    let names = if all {
        let lock = lock::load(&ctx.store.drivers_dir())?;
        if lock.drivers.is_empty() {
            ui::info("No drivers are installed with `machine driver install`.");
        }
        lock.drivers.into_keys().collect()
    } else {
        names
    };
    let opts = install::Options {
        require_signature,
        ..install::Options::default()
    };
    let total = names.len();
    let mut failed = Vec::new();
    for name in &names {
        if let Err(e) = install::upgrade(&ctx.store, name, &opts, ctx.debug).await {
            failed.push(anyhow::Error::from(e).context(format!("cannot upgrade driver `{name}`")));
        }
    }
    match failed.len() {
        0 => Ok(ExitCode::SUCCESS),
        1 if total == 1 => Err(failed.into_iter().next().expect("one")),
        n => {
            for e in &failed {
                ui::error(&format!("{e:#}"));
            }
            anyhow::bail!("{n} of {total} drivers could not be upgraded")
        }
    }
}

async fn ls(ctx: &Context, quiet: bool, format: Format) -> anyhow::Result<ExitCode> {
    let found = ctx.host.search().all();
    if quiet {
        let names: String = found.keys().map(|n| format!("{n}\n")).collect();
        output::print(&names)?;
        return Ok(ExitCode::SUCCESS);
    }
    // A broken lock file shows as each installed driver's error.
    let lock = lock::load(&ctx.store.drivers_dir()).unwrap_or_default();
    let lock = &lock;
    let launches = found.iter().map(|(name, path)| async move {
        let installed = installed_of(ctx, lock, name, path);
        match ctx.host.get(name).await {
            Ok(d) => DriverRow {
                installed,
                ..row_of(&d)
            },
            Err(e) => DriverRow {
                installed,
                name: name.clone(),
                path: path.clone(),
                version: None,
                protocol: None,
                sdk: None,
                description: None,
                capabilities: None,
                error: Some(e.to_string()),
            },
        }
    });
    let rows = futures_util::future::join_all(launches).await;
    match format {
        Format::Json => output::print_json(&rows)?,
        Format::Table => {
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.name.clone(),
                        r.version.clone().unwrap_or_default(),
                        r.protocol.map(|p| p.to_string()).unwrap_or_default(),
                        r.capabilities
                            .as_ref()
                            .map(|c| c.join(","))
                            .unwrap_or_default(),
                        r.installed
                            .as_ref()
                            .map(Installed::display)
                            .unwrap_or_default(),
                        r.path.display().to_string(),
                        r.error
                            .as_deref()
                            .map(|e| e.lines().next().unwrap_or_default().to_owned())
                            .unwrap_or_default(),
                    ]
                })
                .collect();
            output::print(&output::table(
                &[
                    "NAME",
                    "VERSION",
                    "PROTOCOL",
                    "CAPABILITIES",
                    "SOURCE",
                    "PATH",
                    "ERROR",
                ],
                &cells,
            ))?;
        }
    }
    let failed = rows.iter().any(|r| r.error.is_some());
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[derive(Debug, Serialize)]
struct FlagRow {
    name: String,
    #[serde(rename = "type")]
    ty: String,
    usage: String,
    default: String,
    env: String,
    required: bool,
    secret: bool,
}

async fn info(ctx: &Context, name: &str, format: Format) -> anyhow::Result<ExitCode> {
    let driver = ctx.host.get(name).await?;
    let flags = driver
        .call(
            "GetCreateFlags",
            || format!("driver `{}` could not list its create flags", driver.name),
            driver.call_timeout(),
            driver
                .client()
                .get_create_flags(v1::GetCreateFlagsRequest {}),
        )
        .await?;
    let flags: Vec<FlagRow> = flags
        .flags
        .into_iter()
        .map(|f| FlagRow {
            ty: match v1::FlagType::try_from(f.r#type) {
                Ok(v1::FlagType::Int) => "int",
                Ok(v1::FlagType::Bool) => "bool",
                Ok(v1::FlagType::StringList) => "string list",
                _ => "string",
            }
            .to_owned(),
            name: f.name,
            usage: f.usage,
            default: f.default_value,
            env: f.env_var,
            required: f.required,
            secret: f.secret,
        })
        .collect();
    let lock = lock::load(&ctx.store.drivers_dir()).unwrap_or_default();
    let row = DriverRow {
        installed: installed_of(ctx, &lock, &driver.name, &driver.path),
        ..row_of(&driver)
    };
    match format {
        Format::Json => {
            #[derive(Serialize)]
            struct Info<'a> {
                #[serde(flatten)]
                driver: &'a DriverRow,
                flags: &'a [FlagRow],
            }
            output::print_json(&Info {
                driver: &row,
                flags: &flags,
            })?;
        }
        Format::Table => {
            let mut text = String::new();
            let field = |k: &str, v: &str| format!("{k:<14}{v}\n");
            text += &field("Name:", &row.name);
            text += &field("Version:", row.version.as_deref().unwrap_or_default());
            text += &field(
                "Description:",
                row.description.as_deref().unwrap_or_default(),
            );
            text += &field("Protocol:", &row.protocol.unwrap_or_default().to_string());
            text += &field("SDK:", row.sdk.as_deref().unwrap_or_default());
            text += &field(
                "Capabilities:",
                &row.capabilities.as_deref().unwrap_or_default().join(", "),
            );
            text += &field("Path:", &row.path.display().to_string());
            if let Some(i) = &row.installed {
                text += &field("Source:", &i.display());
                text += &field("SHA-256:", &i.sha256);
                if let Some(k) = &i.public_key {
                    text += &field("Signed by:", k);
                }
            }
            text += "Create flags:\n";
            if flags.is_empty() {
                text += "  (none)\n";
            }
            for f in &flags {
                let mut extra = Vec::new();
                if !f.default.is_empty() {
                    extra.push(format!("default {}", f.default));
                }
                if !f.env.is_empty() {
                    extra.push(format!("env ${}", f.env));
                }
                if f.required {
                    extra.push("required".to_owned());
                }
                if f.secret {
                    extra.push("secret".to_owned());
                }
                let extra = if extra.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", extra.join(", "))
                };
                text += &format!("  --{} <{}>  {}{extra}\n", f.name, f.ty, f.usage);
            }
            output::print(&text)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
