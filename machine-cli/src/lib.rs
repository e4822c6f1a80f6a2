//! `machine`: create Docker hosts anywhere through driver plugins and
//! provision Docker on them over SSH.
//!
//! The binary is a thin `main` over [`main`]. Modules by concern: [`cli`]
//! (the command line), [`commands`] (one module per command group),
//! [`driver_host`] (finding, launching and supervising drivers),
//! [`output`] (data on stdout) and [`ui`] (messages on stderr).

pub mod cli;
pub mod commands;
pub mod context;
pub mod driver_host;
pub mod filter;
pub mod output;
pub mod shell;
pub mod template;
pub mod ui;

use std::process::ExitCode;

use clap::Parser;

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
    let cli = cli::Cli::parse();
    init_tracing(cli.global.debug);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
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
        let ctx = context::Context::new(&cli.global)?;
        let result = commands::run(cli.command, &ctx).await;
        ctx.host.shutdown().await;
        result
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            report(&e);
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Prints an error and its causes on stderr.
fn report(e: &anyhow::Error) {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        text.push_str(&format!("\n  caused by: {cause}"));
    }
    ui::error(&text);
}
