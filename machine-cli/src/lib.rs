//! `machine`: create Docker hosts anywhere through driver plugins and
//! provision Docker on them over SSH.
//!
//! The binary is a thin `main` over [`main`]. Modules by concern: [`cli`]
//! (the command line), [`commands`] (one module per command group),
//! [`driver_host`] (finding, launching and supervising drivers),
//! [`store`] (machines on disk), [`output`] (data on stdout) and [`ui`]
//! (messages on stderr).

pub mod certs;
pub mod cli;
pub mod commands;
pub mod context;
pub mod docker_api;
pub mod driver_flags;
pub mod driver_host;
pub mod filter;
pub mod install;
pub mod machine;
pub mod output;
pub mod provision;
pub mod shell;
pub mod ssh;
pub mod store;
pub mod template;
pub mod ui;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use machine_proto::v1;

/// Exit status for errors in the command's work (usage errors exit 2).
pub const EXIT_FAILURE: u8 = 1;

fn init_tracing(debug: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("MACHINE_LOG")
        .unwrap_or_else(|_| EnvFilter::new(if debug { "debug" } else { "warn" }));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .try_init();
}

/// Runs the CLI and returns the process's exit status.
pub fn main() -> ExitCode {
    // One TLS crypto backend (ring) for the whole process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<OsString> = std::env::args_os().collect();
    let pre = cli::prescan(&args);
    let debug = pre.debug || std::env::var_os("MACHINE_DEBUG").is_some_and(|v| !v.is_empty());
    init_tracing(debug);
    // One thread: the CLI's work is waiting on drivers, sockets and SSH, and
    // a single thread spares every call the hand-offs between threads (a
    // driver call takes about half as long). Drivers are spawned from this
    // thread, which lives as long as the process, as their parent-death
    // signal requires.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            ui::error(&format!("cannot start the async runtime: {e}"));
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let result = runtime.block_on(async {
        let storage = context::storage_path(pre.storage_path.as_deref())?;
        let ctx = context::Context::new(storage, debug)?;
        let result = run(&ctx, &pre, args).await;
        ctx.host.shutdown().await;
        result
    });
    // Worker threads have nothing left to do; do not wait for them.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(e) => {
            report(&e);
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

async fn run(
    ctx: &context::Context,
    pre: &cli::Prescan,
    args: Vec<OsString>,
) -> anyhow::Result<ExitCode> {
    let mut command = cli::Cli::command();
    // `create` learns its driver's flags before parsing.
    let mut driver_flags: Vec<v1::Flag> = Vec::new();
    if pre.subcommand.as_deref() == Some("create") {
        let driver = pre
            .driver
            .clone()
            .or_else(|| {
                std::env::var("MACHINE_DRIVER")
                    .ok()
                    .filter(|d| !d.is_empty())
            })
            .unwrap_or_else(|| "virtualbox".to_owned());
        // `-d github.com/OWNER/REPO` installs the driver first (not for
        // `--help`, which must not change anything).
        if !pre.help {
            install::ensure_for_create(&ctx.store, &driver, ctx.debug).await?;
        }
        match commands::create::driver_flags(ctx, &driver).await {
            Ok(flags) => {
                command =
                    command.mut_subcommand("create", |c| driver_flags::add_to(c, &driver, &flags));
                driver_flags = flags;
            }
            // Help still works without the driver, with a word about it.
            Err(e) if pre.help => ui::warn(&format!("{e:#}")),
            Err(e) => return Err(e),
        }
    }
    let matches = match command.try_get_matches_from(args) {
        Ok(m) => m,
        Err(e) => {
            let code = e.exit_code();
            let _ = e.print();
            return Ok(ExitCode::from(u8::try_from(code).unwrap_or(2)));
        }
    };
    let cli = cli::Cli::from_arg_matches(&matches).map_err(|e| anyhow::anyhow!("{e}"))?;
    let create_matches = matches.subcommand_matches("create");
    let flag_values = create_matches
        .map(|m| driver_flags::values(m, &driver_flags))
        .unwrap_or_default();
    commands::run(cli.command, ctx, flag_values).await
}

/// Prints an error and its causes on stderr.
fn report(e: &anyhow::Error) {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        text.push_str(&format!("\n  caused by: {cause}"));
    }
    ui::error(&text);
}
