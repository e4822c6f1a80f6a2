//! The command line: every command, argument and global option, and the
//! pre-scan that finds `create`'s driver before clap parses, so the
//! driver's own flags can be added to `create` (and shown by `--help`).

use std::ffi::OsString;
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

/// The machine commands that take one optional name (default `default`).
#[derive(Debug, Args)]
pub struct OneMachine {
    /// Machine name [default: default]
    pub name: Option<String>,
}

/// The machine commands that take any number of names (default `default`).
#[derive(Debug, Args)]
pub struct Machines {
    /// Machine names [default: default]
    pub names: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a machine: the driver makes the host, machine sets up Docker.
    Create(CreateArgs),
    /// List machines.
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Show a machine's details as JSON, or through a template.
    Inspect {
        /// Format the output with a Go-style template, e.g. '{{.Driver.IPAddress}}'.
        #[arg(short, long)]
        format: Option<String>,
        #[command(flatten)]
        machine: OneMachine,
    },
    /// Print a machine's state.
    Status(OneMachine),
    /// Print a machine's Docker URL.
    Url(OneMachine),
    /// Print machines' IP addresses.
    Ip(Machines),
    /// Print the docker client flags for a machine.
    Config(OneMachine),
    /// Print the name of the active machine (the one DOCKER_HOST points to).
    Active {
        /// Limit for querying each machine, in seconds.
        #[arg(short, long, default_value_t = 10)]
        timeout: u64,
    },
    /// Print machine's version, or the Docker version of a machine.
    Version(OneMachine),
    /// Print the commands that point the docker client at a machine.
    Env(EnvArgs),
    /// Remove machines: the host at its provider, then the local entry.
    #[command(visible_alias = "remove")]
    Rm {
        /// Remove the local entry even when the driver cannot remove the host.
        #[arg(short, long)]
        force: bool,
        /// Do not ask for confirmation.
        #[arg(short = 'y', long)]
        yes: bool,
        /// Machine names
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Start machines.
    Start(Machines),
    /// Stop machines gracefully.
    Stop(Machines),
    /// Restart machines.
    Restart(Machines),
    /// Stop machines at once, without a graceful shutdown.
    Kill(Machines),
    /// Log in to a machine with SSH, or run a command there.
    Ssh {
        /// Machine name
        name: String,
        /// Command to run instead of a login shell (also after `--`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Copy files between machines and this computer: `[NAME:]PATH`.
    Scp {
        /// Copy directories recursively.
        #[arg(short, long)]
        recursive: bool,
        /// Source: a local path or NAME:PATH.
        source: String,
        /// Destination: a local path or NAME:PATH.
        destination: String,
    },
    /// Mount a machine's directory with sshfs, or unmount it (-u).
    #[command(after_help = "Examples:
  machine mount dev:/home/docker/src ./src
  machine mount dev: ~/dev-home            (the SSH user's home)
  machine mount root@dev:/etc ./dev-etc    (as another user)
  machine mount -u dev:/home/docker/src ./src

Needs sshfs (apt-get install sshfs). sshfs talks SFTP through machine's own SSH
connection, which checks the machine's pinned host key; no ssh binary is used.")]
    Mount {
        /// Unmount instead.
        #[arg(short, long)]
        unmount: bool,
        /// The directory: [USER@]NAME:PATH. A relative PATH starts at the
        /// SSH user's home; an empty one is the home itself.
        source: String,
        /// The local directory to mount it on, made if missing (default:
        /// the same path as on the machine, as Docker Machine did).
        dir: Option<PathBuf>,
    },
    /// sshfs runs this as its `ssh`: the machine's SFTP subsystem over
    /// stdin and stdout.
    #[command(name = "sftp-relay", hide = true)]
    SftpRelay {
        /// Log in as this user instead of the machine's SSH user.
        #[arg(long)]
        user: Option<String>,
        /// Machine name
        name: String,
        /// What sshfs adds for ssh (options, host, `-s sftp`); not used.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ssh_args: Vec<String>,
    },
    /// Provision (or re-provision) Docker on existing machines.
    Provision(Machines),
    /// Make new TLS certificates for machines and restart Docker.
    RegenerateCerts {
        /// Do not ask for confirmation.
        #[arg(short, long)]
        force: bool,
        /// Also make a new client certificate.
        #[arg(long)]
        client_certs: bool,
        #[command(flatten)]
        machines: Machines,
    },
    /// Upgrade Docker on machines, the way it was installed.
    Upgrade(Machines),
    /// Print a completion script for a shell.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Manage driver plugins.
    #[command(subcommand)]
    Driver(DriverCommand),
}

/// `create`'s own options; the driver's flags are added at run time.
#[derive(Debug, Args)]
#[command(
    after_help = "Each driver adds its own flags: `machine create -d DRIVER --help` shows them."
)]
pub struct CreateArgs {
    /// Driver to create the machine with.
    #[arg(short, long, env = "MACHINE_DRIVER", default_value = "virtualbox")]
    pub driver: String,
    /// Script that installs Docker when the host has none.
    #[arg(
        long,
        env = "MACHINE_DOCKER_INSTALL_URL",
        default_value = "https://get.docker.com"
    )]
    pub engine_install_url: String,
    /// How to install Docker: the install script, the distribution's package, or not at all.
    #[arg(long, value_enum, default_value_t = InstallMethod::Script)]
    pub engine_install_method: InstallMethod,
    /// Extra dockerd flag, e.g. `log-driver=journald` (repeatable).
    #[arg(long = "engine-opt", value_name = "OPT")]
    pub engine_opts: Vec<String>,
    /// Insecure registry for the engine (repeatable).
    #[arg(long = "engine-insecure-registry", value_name = "HOST")]
    pub engine_insecure_registries: Vec<String>,
    /// Registry mirror for the engine (repeatable).
    #[arg(long = "engine-registry-mirror", value_name = "URL")]
    pub engine_registry_mirrors: Vec<String>,
    /// Label for the engine, `key=value` (repeatable).
    #[arg(long = "engine-label", value_name = "KEY=VALUE")]
    pub engine_labels: Vec<String>,
    /// Storage driver for the engine.
    #[arg(long)]
    pub engine_storage_driver: Option<String>,
    /// Environment variable for the engine, `KEY=VALUE` (repeatable).
    #[arg(long = "engine-env", value_name = "KEY=VALUE")]
    pub engine_env: Vec<String>,
    /// Extra name or address for the machine's server certificate (repeatable).
    #[arg(long = "tls-san", value_name = "NAME")]
    pub tls_san: Vec<String>,
    /// Machine name
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum InstallMethod {
    /// Run the script at --engine-install-url.
    #[default]
    Script,
    /// Install the distribution's Docker package.
    Package,
    /// Do not install Docker (the host must have it).
    None,
}

impl InstallMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            InstallMethod::Script => "script",
            InstallMethod::Package => "package",
            InstallMethod::None => "none",
        }
    }
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Filter: driver=, state=, name= (a regex), label=, swarm= (repeatable).
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    pub filters: Vec<String>,
    /// Only names.
    #[arg(short, long)]
    pub quiet: bool,
    /// A Go-style template ('{{.Name}}'), 'table {{.Name}}\t...', or 'json'.
    #[arg(long)]
    pub format: Option<String>,
    /// Limit for querying each machine, in seconds.
    #[arg(short, long, default_value_t = 10)]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct EnvArgs {
    /// Shell to print for: bash, zsh, sh, fish, powershell, cmd, tcsh, emacs
    /// [default: detected].
    #[arg(long)]
    pub shell: Option<String>,
    /// Print the commands that unset the variables instead.
    #[arg(short, long)]
    pub unset: bool,
    /// Add the machine's IP to NO_PROXY.
    #[arg(long)]
    pub no_proxy: bool,
    #[command(flatten)]
    pub machine: OneMachine,
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
        /// A driver name (`qemu`), the path of a driver binary, or the
        /// source of an installed driver (`github.com/OWNER/REPO`).
        name: String,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Install a driver from a GitHub release, or a local binary (--path).
    Install(DriverInstallArgs),
    /// Remove an installed driver: its binary and its lock entry.
    #[command(visible_alias = "rm")]
    Remove {
        /// Remove it even when machines use it.
        #[arg(short, long)]
        force: bool,
        /// Driver name
        name: String,
    },
    /// Install newer releases of installed drivers, within the version or
    /// range each was installed with.
    Upgrade {
        /// Upgrade every installed driver.
        #[arg(long, conflicts_with = "names")]
        all: bool,
        /// A release without a valid signature is an error.
        #[arg(long)]
        require_signature: bool,
        /// Driver names
        #[arg(required_unless_present = "all")]
        names: Vec<String>,
    },
}

/// `driver install`'s arguments.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  machine driver install github.com/acme/machine-driver-foo
  machine driver install github.com/acme/machine-driver-foo@^1.2
  machine driver install 'github.com/acme/machine-driver-foo@>=1.2, <2'
  machine driver install github.com/acme/machine-driver-foo@1.3.0-rc.1
  machine driver install --path ./target/release/machine-driver-foo

Releases must carry archives named machine-driver-NAME_VERSION_pPROTOCOL_OS_ARCH.tar.gz
and a SHA256SUMS file; a minisign signature of it (SHA256SUMS.minisig) is checked when
present. MACHINE_GITHUB_TOKEN raises GitHub's rate limit; MACHINE_GITHUB_API_URL points
at another API (GitHub Enterprise).")]
pub struct DriverInstallArgs {
    /// github.com/OWNER/REPO, optionally @VERSION (1.2.3) or @RANGE (^1.2).
    #[arg(
        value_name = "SOURCE",
        required_unless_present = "path",
        conflicts_with = "path"
    )]
    pub source: Option<String>,
    /// Install a local driver binary instead (for driver authors).
    #[arg(long, value_name = "FILE")]
    pub path: Option<PathBuf>,
    /// The driver's name: with --path, the name to install the file under
    /// (default: its file name without machine-driver-); from GitHub, which
    /// driver when a release has archives for several.
    #[arg(long)]
    pub name: Option<String>,
    /// Reinstall the same version, or replace a driver installed from
    /// elsewhere.
    #[arg(short, long)]
    pub force: bool,
    /// The author's minisign public key (the RW... line, or a minisign.pub
    /// file); the release's SHA256SUMS must be signed with it.
    #[arg(long, value_name = "KEY")]
    pub public_key: Option<String>,
    /// Refuse a release whose SHA256SUMS has no signature that can be
    /// verified.
    #[arg(long)]
    pub require_signature: bool,
}

/// What the raw arguments say before clap parses them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Prescan {
    pub subcommand: Option<String>,
    /// `create`'s `-d`/`--driver`, when given on the command line.
    pub driver: Option<String>,
    pub storage_path: Option<PathBuf>,
    pub debug: bool,
    pub help: bool,
}

/// Reads the subcommand, `create`'s driver and the global options from the
/// raw arguments, without failing on anything clap will report later.
pub fn prescan(args: &[OsString]) -> Prescan {
    let mut p = Prescan::default();
    let mut it = args
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned());
    while let Some(arg) = it.next() {
        if arg == "--" {
            break;
        }
        match arg.as_str() {
            "-s" | "--storage-path" => p.storage_path = it.next().map(PathBuf::from),
            "-D" | "--debug" => p.debug = true,
            "-h" | "--help" => p.help = true,
            _ if arg.starts_with("--storage-path=") => {
                p.storage_path = Some(PathBuf::from(&arg["--storage-path=".len()..]));
            }
            _ if p.subcommand.as_deref() == Some("create") => match arg.as_str() {
                "-d" | "--driver" => p.driver = it.next(),
                _ if arg.starts_with("--driver=") => p.driver = Some(arg[9..].to_owned()),
                _ if arg.starts_with("-d") && !arg.starts_with("--") => {
                    p.driver = Some(arg[2..].trim_start_matches('=').to_owned());
                }
                _ => {}
            },
            _ if !arg.starts_with('-') && p.subcommand.is_none() => p.subcommand = Some(arg),
            _ => {}
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(args: &str) -> Prescan {
        let v: Vec<OsString> = std::iter::once("machine")
            .chain(args.split_whitespace())
            .map(OsString::from)
            .collect();
        prescan(&v)
    }

    #[test]
    fn finds_create_and_its_driver_in_every_spelling() {
        for args in [
            "create -d none x",
            "create --driver none x",
            "create --driver=none x",
            "create -dnone x",
            "-D create --url u -d none x",
        ] {
            let p = scan(args);
            assert_eq!(p.subcommand.as_deref(), Some("create"), "{args}");
            assert_eq!(p.driver.as_deref(), Some("none"), "{args}");
        }
        assert_eq!(scan("create x").driver, None);
        assert_eq!(scan("ls -d none").driver, None);
    }

    #[test]
    fn finds_global_options() {
        let p = scan("-s /tmp/st --debug create --help");
        assert_eq!(p.storage_path, Some(PathBuf::from("/tmp/st")));
        assert!(p.debug && p.help);
        assert_eq!(p.subcommand.as_deref(), Some("create"));
        assert_eq!(
            scan("--storage-path=/a ls").storage_path,
            Some(PathBuf::from("/a"))
        );
    }
}
