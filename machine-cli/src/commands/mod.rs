//! One module per command group; [`run`] dispatches.

pub mod create;
pub mod driver;
pub mod env;
pub mod info;
pub mod lifecycle;
pub mod ls;
pub mod mount;
pub mod remote;

use std::collections::HashMap;
use std::process::ExitCode;

use clap::CommandFactory;
use machine_proto::v1;

use crate::cli::{Cli, Command};
use crate::context::Context;
use lifecycle::Op;

pub async fn run(
    command: Command,
    ctx: &Context,
    create_flags: HashMap<String, v1::FlagValue>,
) -> anyhow::Result<ExitCode> {
    match command {
        Command::Create(args) => create::run(ctx, args, create_flags).await,
        Command::Ls(args) => ls::run(ctx, args).await,
        Command::Inspect { format, machine } => info::inspect(ctx, machine.name, format).await,
        Command::Status(m) => info::status(ctx, m.name).await,
        Command::Url(m) => info::url(ctx, m.name).await,
        Command::Ip(m) => info::ip(ctx, m.names).await,
        Command::Config(m) => info::config(ctx, m.name).await,
        Command::Active { timeout } => info::active(ctx, timeout).await,
        Command::Version(m) => info::version(ctx, m.name).await,
        Command::Env(args) => env::run(ctx, args).await,
        Command::Rm { force, yes, names } => lifecycle::rm(ctx, names, force, yes).await,
        Command::Start(m) => lifecycle::run(ctx, Op::Start, m.names).await,
        Command::Stop(m) => lifecycle::run(ctx, Op::Stop, m.names).await,
        Command::Restart(m) => lifecycle::run(ctx, Op::Restart, m.names).await,
        Command::Kill(m) => lifecycle::run(ctx, Op::Kill, m.names).await,
        Command::Ssh { name, command } => remote::ssh(ctx, &name, command).await,
        Command::Scp {
            recursive,
            source,
            destination,
        } => remote::scp(ctx, recursive, &source, &destination).await,
        Command::Mount {
            unmount,
            source,
            dir,
        } => mount::run(ctx, &source, dir, unmount).await,
        Command::SftpRelay { user, name, .. } => mount::sftp_relay(ctx, &name, user).await,
        Command::Provision(m) => remote::provision_cmd(ctx, m.names).await,
        Command::RegenerateCerts {
            force,
            client_certs,
            machines,
        } => remote::regenerate_certs(ctx, force, client_certs, machines.names).await,
        Command::Upgrade(m) => remote::upgrade(ctx, m.names).await,
        Command::Completion { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "machine", &mut out);
            crate::output::print(&String::from_utf8_lossy(&out))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Driver(cmd) => driver::run(cmd, ctx).await,
    }
}
