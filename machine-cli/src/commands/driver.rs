//! `machine driver ...`: list and describe driver plugins.

use std::path::PathBuf;
use std::process::ExitCode;

use machine_proto::v1;
use serde::Serialize;

use crate::cli::{DriverCommand, Format};
use crate::context::Context;
use crate::driver_host::RunningDriver;
use crate::output;

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
        error: None,
    }
}

pub async fn run(cmd: DriverCommand, ctx: &Context) -> anyhow::Result<ExitCode> {
    match cmd {
        DriverCommand::Ls { quiet, format } => ls(ctx, quiet, format).await,
        DriverCommand::Info { name, format } => info(ctx, &name, format).await,
    }
}

async fn ls(ctx: &Context, quiet: bool, format: Format) -> anyhow::Result<ExitCode> {
    let found = ctx.host.search().all();
    if quiet {
        let names: String = found.keys().map(|n| format!("{n}\n")).collect();
        output::print(&names)?;
        return Ok(ExitCode::SUCCESS);
    }
    let launches = found.iter().map(|(name, path)| async move {
        match ctx.host.get(name).await {
            Ok(d) => row_of(&d),
            Err(e) => DriverRow {
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
    let row = row_of(&driver);
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
