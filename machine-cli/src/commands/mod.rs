//! One module per command group; `run` dispatches.

pub mod driver;

use std::process::ExitCode;

use crate::cli::Command;
use crate::context::Context;

pub async fn run(command: Command, ctx: &Context) -> anyhow::Result<ExitCode> {
    match command {
        Command::Driver(cmd) => driver::run(cmd, ctx).await,
    }
}
