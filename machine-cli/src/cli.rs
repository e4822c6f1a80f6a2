//! The command line: every command, argument and global option.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Create Docker hosts anywhere and provision Docker on them over SSH.
#[derive(Debug, Parser)]
#[command(
    name = "machine",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Where machines, certificates and installed drivers are kept.
    #[arg(
        short = 's',
        long,
        env = "MACHINE_STORAGE_PATH",
        global = true,
        value_name = "DIR"
    )]
    pub storage_path: Option<PathBuf>,
    /// Show debug output, drivers' logs included.
    #[arg(short = 'D', long, env = "MACHINE_DEBUG", global = true)]
    pub debug: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage driver plugins.
    #[command(subcommand)]
    Driver(DriverCommand),
}

#[derive(Debug, Subcommand)]
pub enum DriverCommand {
    /// List the drivers found, with their versions and protocols.
    #[command(visible_alias = "list")]
    Ls {
        /// Only names, without starting any driver.
        #[arg(short, long)]
        quiet: bool,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show one driver's version, protocol, capabilities, path and flags.
    Info {
        /// A driver name (`qemu`) or the path of a driver binary.
        name: String,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}
