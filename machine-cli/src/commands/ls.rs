//! `machine ls`: every machine with its driver, state, URL and Docker
//! version, queried concurrently (one driver process per driver, shared),
//! filtered and formatted the way Docker Machine users script it.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use machine_proto::v1;
use serde::Serialize;

use crate::cli::LsArgs;
use crate::context::Context;
use crate::filter::{Candidate, Filters, natural_cmp};
use crate::machine::{Target, state_name};
use crate::output;
use crate::store::{MachineRecord, Phase};
use crate::template::{self, Template};

/// One row, with Docker Machine's field names for `--format` templates.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Row {
    pub name: String,
    pub active: String,
    pub active_host: bool,
    pub active_swarm: bool,
    pub driver_name: String,
    pub state: String,
    #[serde(rename = "URL")]
    pub url: String,
    pub swarm: String,
    pub docker_version: String,
    pub error: String,
    pub response_time: String,
    #[serde(skip)]
    labels: Vec<String>,
}

impl Row {
    fn new(name: &str, record: Option<&MachineRecord>) -> Self {
        Row {
            name: name.to_owned(),
            active: "-".into(),
            active_host: false,
            active_swarm: false,
            driver_name: record.map(|r| r.driver.clone()).unwrap_or_default(),
            state: String::new(),
            url: String::new(),
            swarm: String::new(),
            docker_version: String::new(),
            error: String::new(),
            response_time: String::new(),
            labels: record.map(|r| r.engine.labels.clone()).unwrap_or_default(),
        }
    }

    fn candidate(&self) -> Candidate<'_> {
        Candidate {
            name: &self.name,
            driver: &self.driver_name,
            state: &self.state,
            swarm_master: None,
            labels: &self.labels,
        }
    }
}

/// The header of a `table` template column, from its field.
fn header_of(field: &str) -> String {
    match field.trim_start_matches('.') {
        "Name" => "NAME".into(),
        "Active" => "ACTIVE".into(),
        "ActiveHost" => "ACTIVE_HOST".into(),
        "ActiveSwarm" => "ACTIVE_SWARM".into(),
        "DriverName" => "DRIVER".into(),
        "State" => "STATE".into(),
        "URL" => "URL".into(),
        "Swarm" => "SWARM".into(),
        "DockerVersion" => "DOCKER".into(),
        "Error" => "ERRORS".into(),
        "ResponseTime" => "RESPONSE".into(),
        other => {
            // CamelCase to UPPER_SNAKE.
            let mut out = String::new();
            for (i, c) in other.chars().enumerate() {
                if c.is_uppercase() && i > 0 {
                    out.push('_');
                }
                out.extend(c.to_uppercase());
            }
            out
        }
    }
}

/// An object in which every field a template names holds its header.
fn header_data(fields: &[String]) -> serde_json::Value {
    let mut root = serde_json::Map::new();
    for field in fields {
        let mut parts = field.split('.').filter(|p| !p.is_empty()).peekable();
        let mut node = &mut root;
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                node.insert(part.to_owned(), serde_json::Value::from(header_of(field)));
                break;
            }
            let next = node
                .entry(part.to_owned())
                .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
            if !next.is_object() {
                *next = serde_json::Value::Object(serde_json::Map::new());
            }
            node = next.as_object_mut().expect("just made an object");
        }
    }
    serde_json::Value::Object(root)
}

enum Output {
    Default,
    Json,
    Template(Template),
    Table(Vec<String>, Template),
}

fn output_of(format: Option<&str>) -> anyhow::Result<Output> {
    Ok(match format {
        None => Output::Default,
        Some("json") => Output::Json,
        Some(src) => match template::parse_table(src) {
            Some((fields, t)) => Output::Table(fields, t),
            None => Output::Template(Template::parse(src)?),
        },
    })
}

pub async fn run(ctx: &Context, args: LsArgs) -> anyhow::Result<ExitCode> {
    let filters = Filters::parse(&args.filters)?;
    let out = output_of(args.format.as_deref())?;
    let mut names = ctx.store.names()?;
    names.sort_by(|a, b| natural_cmp(a, b));
    let records: Vec<(String, anyhow::Result<MachineRecord>)> = names
        .into_iter()
        .map(|n| {
            let r = ctx.store.load(&n).map_err(anyhow::Error::from);
            (n, r)
        })
        .collect();

    // `-q` answers from the store alone unless a filter needs the state.
    let need_query = !args.quiet || filters.needs_state();
    let timeout = Duration::from_secs(args.timeout.max(1));
    let docker_host = std::env::var("DOCKER_HOST").unwrap_or_default();
    let rows: Vec<Row> = if need_query {
        futures_util::future::join_all(
            records
                .iter()
                .map(|(name, rec)| query(ctx, name, rec, timeout, &docker_host)),
        )
        .await
    } else {
        records
            .iter()
            .map(|(name, rec)| Row::new(name, rec.as_ref().ok()))
            .collect()
    };
    let rows: Vec<Row> = rows
        .into_iter()
        .filter(|r| filters.matches(&r.candidate()))
        .collect();

    if args.quiet {
        output::print(
            &rows
                .iter()
                .map(|r| format!("{}\n", r.name))
                .collect::<String>(),
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    match out {
        Output::Json => output::print_json(&rows)?,
        Output::Default => {
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.name.clone(),
                        r.active.clone(),
                        r.driver_name.clone(),
                        r.state.clone(),
                        r.url.clone(),
                        r.swarm.clone(),
                        r.docker_version.clone(),
                        r.error.clone(),
                    ]
                })
                .collect();
            output::print(&output::table(
                &[
                    "NAME", "ACTIVE", "DRIVER", "STATE", "URL", "SWARM", "DOCKER", "ERRORS",
                ],
                &cells,
            ))?;
        }
        Output::Template(t) => {
            let mut text = String::new();
            for r in &rows {
                text += &t.render(&serde_json::to_value(r)?)?;
                text.push('\n');
            }
            output::print(&text)?;
        }
        Output::Table(fields, t) => {
            // The header is the template rendered over each field's header
            // name, so it has the row's exact shape.
            let line = t.render(&header_data(&fields))?;
            let header: Vec<&str> = line.split('\t').collect();
            let mut cells = Vec::new();
            for r in &rows {
                let line = t.render(&serde_json::to_value(r)?)?;
                cells.push(line.split('\t').map(str::to_owned).collect());
            }
            output::print(&output::table(&header, &cells))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Asks a machine's driver for its state and address, within `timeout`.
async fn query(
    ctx: &Context,
    name: &str,
    record: &anyhow::Result<MachineRecord>,
    timeout: Duration,
    docker_host: &str,
) -> Row {
    let started = Instant::now();
    let record = match record {
        Ok(r) => r,
        Err(e) => {
            let mut row = Row::new(name, None);
            row.state = "Error".into();
            row.error = one_line(&format!("{e:#}"));
            return row;
        }
    };
    let mut row = Row::new(name, Some(record));
    match record.phase {
        Phase::Creating if ctx.store.is_locked(name) => {
            row.state = "Creating".into();
            return row;
        }
        Phase::Creating => {
            row.state = "Error".into();
            row.error = format!("create was interrupted; `machine rm -f {name}` cleans up");
            return row;
        }
        Phase::Failed => row.error = one_line(record.error.as_deref().unwrap_or("failed")),
        Phase::Ready => {}
    }
    let target = Target {
        record: record.clone(),
        dir: ctx.store.machine_dir(name),
    };
    let queried = tokio::time::timeout(timeout, async {
        let driver = target.driver(ctx).await?;
        let state = target.state(&driver, timeout).await?;
        let conn = if state.state() == v1::State::Running {
            Some(target.connection(&driver, timeout).await?)
        } else {
            None
        };
        anyhow::Ok((state, conn))
    })
    .await;
    match queried {
        Err(_) => {
            row.state = "Timeout".into();
            row.error = format!("no answer within {timeout:?}");
        }
        Ok(Err(e)) => {
            row.state = "Error".into();
            row.error = one_line(&format!("{e:#}"));
        }
        Ok(Ok((state, conn))) => {
            row.state = state_name(state.state()).to_owned();
            if !state.detail.is_empty() && row.error.is_empty() {
                row.error = one_line(&state.detail);
            }
            if let Some(conn) = conn {
                row.active_host = !docker_host.is_empty() && docker_host == conn.docker_url;
                if row.active_host {
                    row.active = "*".into();
                }
                row.docker_version = "Unknown".into();
                if let Err(e) = target.check_certificate(&conn) {
                    row.error = one_line(&format!("{e:#}"));
                } else if target.has_certs() {
                    let left = timeout.saturating_sub(started.elapsed());
                    match crate::docker_api::version(&conn.docker_url, &target.dir, left).await {
                        Ok(v) => row.docker_version = format!("v{}", v.version),
                        Err(e) if row.error.is_empty() => row.error = one_line(&e.to_string()),
                        Err(_) => {}
                    }
                }
                row.url = conn.docker_url;
            }
        }
    }
    row.response_time = format!("{}ms", started.elapsed().as_millis());
    row
}

fn one_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_owned()
}
