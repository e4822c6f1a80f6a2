//! The one way the driver runs `VBoxManage`: finding it, running it with
//! its output captured, and turning a failure into an error that names the
//! command line and VirtualBox's own message.
//!
//! Every call is logged at debug level (`machine --debug` shows them), so a
//! failed create can be replayed by hand.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use machine_driver_sdk::{Error, ErrorKind};

/// Environment variable naming the VBoxManage program to run, before `PATH`
/// is searched (tests point it at a stand-in).
pub const ENV_VBOXMANAGE: &str = "MACHINE_VBOXMANAGE";

/// The oldest VirtualBox the driver supports: 6.1 brought the DHCP server
/// whose leases `dhcpserver findlease` reads.
pub const MIN_VERSION: Version = Version(6, 1, 0);

/// From this version on, Linux and macOS hosts refuse host-only addresses
/// outside the ranges `/etc/vbox/networks.conf` allows.
pub const RANGE_RULE_VERSION: Version = Version(6, 1, 28);

const INSTALL_HINT: &str = "install VirtualBox 6.1 or newer from https://www.virtualbox.org/wiki/Downloads \
     (Debian/Ubuntu: Oracle's virtualbox-7.0 package), or set MACHINE_VBOXMANAGE to its VBoxManage; \
     or use the qemu driver instead: `machine create -d qemu NAME`";

/// A VirtualBox version, as `VBoxManage --version` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

impl Version {
    /// Parses `7.0.14r161095`, `6.1.50_Ubuntur161033` and the like: the
    /// leading dotted numbers.
    pub fn parse(text: &str) -> Option<Version> {
        let numeric: String = text
            .trim()
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let mut parts = numeric.split('.').map(|p| p.parse::<u32>().ok());
        let major = parts.next()??;
        let minor = parts.next().flatten().unwrap_or(0);
        let patch = parts.next().flatten().unwrap_or(0);
        Some(Version(major, minor, patch))
    }
}

/// A failed VBoxManage run.
#[derive(Debug, thiserror::Error)]
pub enum VBoxError {
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {message}")]
    Failed {
        command: String,
        status: String,
        /// VirtualBox's message, without the `VBoxManage: error:` prefixes.
        message: String,
        /// All of stderr, for the debug log.
        stderr: String,
    },
}

impl VBoxError {
    /// VirtualBox's message (or the spawn error).
    pub fn message(&self) -> String {
        match self {
            VBoxError::Spawn { source, .. } => source.to_string(),
            VBoxError::Failed { message, .. } => message.clone(),
        }
    }

    /// Whether VirtualBox said the object (VM, lease, medium) does not exist.
    pub fn is_not_found(&self) -> bool {
        match self {
            VBoxError::Failed {
                message, stderr, ..
            } => {
                stderr.contains("VBOX_E_OBJECT_NOT_FOUND")
                    || message.contains("Could not find a registered machine")
            }
            VBoxError::Spawn { .. } => false,
        }
    }

    /// The error for the user: `doing` says what the driver was at.
    pub fn to_error(&self, doing: &str) -> Error {
        let kind = if self.is_not_found() {
            ErrorKind::NotFound
        } else {
            ErrorKind::Internal
        };
        let hint = match self {
            VBoxError::Spawn { .. } => INSTALL_HINT,
            VBoxError::Failed { message, .. }
                if message.contains("kernel driver") || message.contains("vboxdrv") =>
            {
                "VirtualBox's kernel module is not loaded: run `sudo /sbin/vboxconfig` (or reinstall VirtualBox)"
            }
            VBoxError::Failed { message, .. } if message.contains("locked") => {
                "another VirtualBox program holds the VM (the VirtualBox window?); close it and try again"
            }
            _ => "VirtualBox's message is above; `machine --debug` shows every VBoxManage call",
        };
        Error::new(kind, format!("{doing}: {self}")).with_hint(hint)
    }
}

/// The VBoxManage program.
#[derive(Debug, Clone)]
pub struct VBoxManage {
    program: PathBuf,
}

/// Quotes an argument for the command lines shown in errors and logs.
fn quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=.,:/@%+".contains(c))
    {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// VirtualBox's message in a failed run's stderr: the `VBoxManage: error:`
/// lines, without the `Details:` and `Context:` lines (COM plumbing), but
/// with the error code the `Details:` line names.
pub fn error_message(stderr: &str, stdout: &str) -> String {
    let mut lines = Vec::new();
    let mut code = None;
    for line in stderr.lines() {
        let Some((_, rest)) = line.split_once(": error: ") else {
            continue;
        };
        let rest = rest.trim();
        if let Some(details) = rest.strip_prefix("Details: code ") {
            code = details.split_whitespace().next().map(str::to_owned);
        } else if rest.starts_with("Context: ") || rest.is_empty() {
            continue;
        } else if let Some(coded) = rest.strip_prefix("Code ") {
            // `Code E_ACCESSDENIED (0x80070005) - Access denied (...)`
            code = coded.split_whitespace().next().map(str::to_owned);
            lines.push(rest.to_owned());
        } else {
            lines.push(rest.to_owned());
        }
    }
    let mut message = if lines.is_empty() {
        // No VBoxManage error lines (a wrapper script, a crash): the
        // output's last lines say the most.
        let text = if stderr.trim().is_empty() {
            stdout
        } else {
            stderr
        };
        let tail: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let from = tail.len().saturating_sub(3);
        tail[from..].join(" / ")
    } else {
        lines.join(" / ")
    };
    if let Some(code) = code
        && !message.contains(&code)
    {
        message.push_str(&format!(" ({code})"));
    }
    if message.is_empty() {
        message = "no message".into();
    }
    message
}

/// Searches `path` (a `PATH` value) for the first of `names` that is an
/// executable file.
pub fn find_in_path(names: &[&str], path: &std::ffi::OsStr) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    for dir in std::env::split_paths(path) {
        for name in names {
            let candidate = dir.join(name);
            if candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            {
                return Some(candidate);
            }
        }
    }
    None
}

impl VBoxManage {
    /// Uses this program.
    pub fn at(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
        }
    }

    /// Finds VBoxManage: `explicit` (from settings or `MACHINE_VBOXMANAGE`)
    /// when given, else `VBoxManage` or `vboxmanage` on `path`, else where
    /// the VirtualBox installers put it.
    pub fn find(explicit: Option<&Path>, path: Option<OsString>) -> Result<Self, Error> {
        if let Some(program) = explicit {
            return if program.is_file() {
                Ok(Self::at(program))
            } else {
                Err(Error::failed_precondition(format!(
                    "VirtualBox is not installed: {ENV_VBOXMANAGE} names {}, which does not exist",
                    program.display()
                ))
                .with_hint(INSTALL_HINT))
            };
        }
        let path = path.unwrap_or_default();
        if let Some(found) = find_in_path(&["VBoxManage", "vboxmanage"], &path) {
            return Ok(Self::at(found));
        }
        // The macOS installer's app bundle, when /usr/local/bin is not on PATH.
        let bundle = Path::new("/Applications/VirtualBox.app/Contents/MacOS/VBoxManage");
        if cfg!(target_os = "macos") && bundle.is_file() {
            return Ok(Self::at(bundle));
        }
        Err(
            Error::failed_precondition("VirtualBox is not installed: no `VBoxManage` on PATH")
                .with_hint(INSTALL_HINT),
        )
    }

    pub fn program(&self) -> &Path {
        &self.program
    }

    /// The command line as shown to people.
    pub fn command_line(&self, args: &[String]) -> String {
        let name = self
            .program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "VBoxManage".into());
        let mut line = name;
        for a in args {
            line.push(' ');
            line.push_str(&quote(a));
        }
        line
    }

    fn command(&self, args: &[String]) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // VBoxManage's messages are what the errors quote: keep them in
            // English whatever the user's locale.
            .env("LC_ALL", "C");
        cmd
    }

    fn finish(
        &self,
        args: &[String],
        result: std::io::Result<Output>,
    ) -> Result<String, VBoxError> {
        let command = self.command_line(args);
        let out = result.map_err(|source| VBoxError::Spawn {
            command: command.clone(),
            source,
        })?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        tracing::debug!(
            "{command}: {}; stdout: {:?}; stderr: {:?}",
            out.status,
            stdout.trim(),
            stderr.trim()
        );
        if out.status.success() {
            return Ok(stdout);
        }
        Err(VBoxError::Failed {
            status: match out.status.code() {
                Some(code) => format!("exit status {code}"),
                None => out.status.to_string(),
            },
            message: error_message(&stderr, &stdout),
            command,
            stderr,
        })
    }

    /// Runs VBoxManage with `args` and returns its stdout.
    pub async fn run<S: AsRef<str>>(&self, args: &[S]) -> Result<String, VBoxError> {
        let args: Vec<String> = args.iter().map(|a| a.as_ref().to_owned()).collect();
        let result = tokio::process::Command::from(self.command(&args))
            .kill_on_drop(true)
            .output()
            .await;
        self.finish(&args, result)
    }

    /// Runs VBoxManage and blocks the thread: for clean-ups that run in
    /// `Drop`, where nothing can be awaited.
    pub fn run_blocking<S: AsRef<str>>(&self, args: &[S]) -> Result<String, VBoxError> {
        let args: Vec<String> = args.iter().map(|a| a.as_ref().to_owned()).collect();
        let result = self.command(&args).output();
        self.finish(&args, result)
    }

    /// The VirtualBox version, checked against [`MIN_VERSION`].
    pub async fn version(&self) -> Result<Version, Error> {
        let out = self.run(&["--version"]).await.map_err(|e| match e {
            VBoxError::Spawn { .. } => {
                Error::failed_precondition(format!("VirtualBox is not usable: {e}"))
                    .with_hint(INSTALL_HINT)
            }
            e => e.to_error("checking the VirtualBox version"),
        })?;
        check_version(&out)
    }
}

/// Reads `VBoxManage --version` output. On Linux a warning about the
/// kernel module can come before the version, so the version is the last
/// line.
pub fn check_version(out: &str) -> Result<Version, Error> {
    if out.contains("kernel module is not loaded") || out.contains("vboxdrv kernel module") {
        return Err(Error::failed_precondition(
            "VirtualBox's kernel module (vboxdrv) is not loaded, so VirtualBox cannot start VMs",
        )
        .with_hint("run `sudo /sbin/vboxconfig`, or reinstall VirtualBox for the running kernel"));
    }
    let line = out
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    let version = Version::parse(line).ok_or_else(|| {
        Error::failed_precondition(format!(
            "cannot read the VirtualBox version from `VBoxManage --version`: {:?}",
            out.trim()
        ))
        .with_hint(INSTALL_HINT)
    })?;
    if version < MIN_VERSION {
        return Err(Error::failed_precondition(format!(
            "VirtualBox {version} is too old: this driver needs VirtualBox {MIN_VERSION} or newer"
        ))
        .with_hint(
            "upgrade VirtualBox from https://www.virtualbox.org/wiki/Downloads, or use `-d qemu`",
        ));
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!(Version::parse("7.0.14r161095"), Some(Version(7, 0, 14)));
        assert_eq!(
            Version::parse("6.1.50_Ubuntur161033"),
            Some(Version(6, 1, 50))
        );
        assert_eq!(Version::parse("7.1.4r165100\n"), Some(Version(7, 1, 4)));
        assert_eq!(Version::parse("garbage"), None);
        assert!(Version(6, 1, 28) > Version(6, 1, 27));
        assert!(Version(7, 0, 0) > RANGE_RULE_VERSION);
    }

    #[test]
    fn version_check_reads_the_last_line_and_refuses_old_ones() {
        assert_eq!(check_version("7.0.14r161095\n").unwrap(), Version(7, 0, 14));
        let old = check_version("6.0.24r139119\n").unwrap_err();
        assert!(old.message.contains("6.0.24 is too old"), "{}", old.message);
        let warned = "WARNING: The vboxdrv kernel module is not loaded. Either there is no module\n\
                      available for the current kernel (6.1.0-18-amd64) or it failed to\n\
                      load.\n\n7.0.14r161095\n";
        let e = check_version(warned).unwrap_err();
        assert!(e.hint.unwrap().contains("vboxconfig"));
    }

    #[test]
    fn error_message_keeps_the_message_and_code() {
        let stderr = "VBoxManage: error: Could not find a registered machine named 'dev'\n\
            VBoxManage: error: Details: code VBOX_E_OBJECT_NOT_FOUND (0x80bb0001), component VirtualBoxWrap, interface IVirtualBox, callee nsISupports\n\
            VBoxManage: error: Context: \"FindMachine(Bstr(VMNameOrUuid).raw(), machine.asOutParam())\" at line 3160 of file VBoxManageInfo.cpp\n";
        assert_eq!(
            error_message(stderr, ""),
            "Could not find a registered machine named 'dev' (VBOX_E_OBJECT_NOT_FOUND)"
        );
        let denied = "VBoxManage: error: Code E_ACCESSDENIED (0x80070005) - Access denied (extended info not available)\n\
            VBoxManage: error: Context: \"EnableStaticIPConfig(Bstr(pszIp).raw(), Bstr(pszNetmask).raw())\" at line 242 of file VBoxManageHostonly.cpp\n";
        assert_eq!(
            error_message(denied, ""),
            "Code E_ACCESSDENIED (0x80070005) - Access denied (extended info not available)"
        );
        assert_eq!(error_message("", "x\ny\n"), "x / y");
    }

    #[test]
    fn command_lines_quote_what_needs_it() {
        let v = VBoxManage::at("/usr/bin/VBoxManage");
        let line = v.command_line(&[
            "sharedfolder".into(),
            "--hostpath".into(),
            "/home/a b".into(),
            "--natpf1".into(),
            "ssh,tcp,127.0.0.1,2222,,22".into(),
        ]);
        assert_eq!(
            line,
            "VBoxManage sharedfolder --hostpath '/home/a b' --natpf1 ssh,tcp,127.0.0.1,2222,,22"
        );
    }

    #[test]
    fn finds_programs_on_a_path() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let empty = tempfile::tempdir().unwrap();
        let prog = dir.path().join("vboxmanage");
        std::fs::write(&prog, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = std::env::join_paths([empty.path(), dir.path()]).unwrap();
        assert_eq!(
            find_in_path(&["VBoxManage", "vboxmanage"], &path),
            Some(prog)
        );
        let err = VBoxManage::find(None, Some(empty.path().as_os_str().to_owned())).unwrap_err();
        assert_eq!(err.kind, ErrorKind::FailedPrecondition);
        assert!(err.message.contains("VirtualBox is not installed"));
        assert!(err.hint.unwrap().contains("-d qemu"));
    }
}
