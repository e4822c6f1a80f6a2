//! `machine env`: the shell commands that point the docker client at a
//! machine (or, with `-u`, undo that). Everything goes to stdout, so
//! `eval $(machine env dev)` is safe.

use std::process::ExitCode;

use crate::cli::EnvArgs;
use crate::context::Context;
use crate::machine::{self, DEFAULT_NAME};
use crate::output;
use crate::shell::{self, Shell};

const VARS: [&str; 4] = [
    "DOCKER_TLS_VERIFY",
    "DOCKER_HOST",
    "DOCKER_CERT_PATH",
    "DOCKER_MACHINE_NAME",
];

pub async fn run(ctx: &Context, args: EnvArgs) -> anyhow::Result<ExitCode> {
    let sh = match &args.shell {
        Some(s) => Shell::parse(s)?,
        None => Shell::detect_from_environment(),
    };
    let name = args
        .machine
        .name
        .clone()
        .unwrap_or_else(|| DEFAULT_NAME.to_owned());
    let mut hint = String::from("machine env");
    if let Some(s) = &args.shell {
        hint += &format!(" --shell {s}");
    }
    if args.no_proxy {
        hint += " --no-proxy";
    }
    if args.unset {
        hint += " -u";
        let mut names: Vec<String> = VARS.iter().map(|v| (*v).to_owned()).collect();
        if args.no_proxy {
            let (var, _) = shell::no_proxy_var(|k| std::env::var(k).ok());
            names.push(var);
        }
        output::print(&shell::render_unset(sh, &names, &hint))?;
        return Ok(ExitCode::SUCCESS);
    }
    hint += &format!(" {name}");

    let t = machine::load(ctx, &name)?;
    let conn = t.running_connection(ctx).await?;
    t.check_certificate(&conn)?;
    let mut vars = vec![
        ("DOCKER_TLS_VERIFY".to_owned(), "1".to_owned()),
        ("DOCKER_HOST".to_owned(), conn.docker_url.clone()),
        (
            "DOCKER_CERT_PATH".to_owned(),
            t.dir.to_string_lossy().into_owned(),
        ),
        ("DOCKER_MACHINE_NAME".to_owned(), name.clone()),
    ];
    if args.no_proxy {
        let (var, existing) = shell::no_proxy_var(|k| std::env::var(k).ok());
        vars.push((var, shell::no_proxy_value(existing.as_deref(), &conn.ip)));
    }
    output::print(&shell::render_set(sh, &vars, &hint))?;
    Ok(ExitCode::SUCCESS)
}
