//! Shell syntax for `machine env`: the commands that point a shell's Docker
//! client at a machine, or that undo that (`machine env -u`).
//!
//! The output follows Docker Machine 0.16's `docker-machine env` line for
//! line, so scripts and habits carry over:
//!
//! | shell | set | unset | comment |
//! | --- | --- | --- | --- |
//! | [`Shell::Posix`] (bash, zsh, sh, ksh, dash) | `export KEY="value"` | `unset KEY` | `#` |
//! | [`Shell::Fish`] | `set -gx KEY "value";` | `set -e KEY;` | `#` |
//! | [`Shell::PowerShell`] | `$Env:KEY = "value"` | `Remove-Item Env:\\KEY` | `#` |
//! | [`Shell::Cmd`] | `SET KEY=value` | `SET KEY=` | `REM` |
//! | [`Shell::Tcsh`] (and csh) | `setenv KEY "value";` | `unsetenv KEY;` | `:` |
//! | [`Shell::Emacs`] | `(setenv "KEY" "value")` | `(setenv "KEY" nil)` | `;;` |
//!
//! After the variables comes a two-line usage hint in the shell's comment
//! syntax, e.g. for a POSIX shell:
//!
//! ```text
//! # Run this command to configure your shell:
//! # eval $(machine env dev)
//! ```
//!
//! Everything goes to stdout and is meant to be evaluated by the shell, so
//! every value is quoted for its shell: spaces, quotes, `$`, backticks and
//! backslashes come through unchanged, and no value can run a command.
//! Shell-specific notes:
//!
//! - **POSIX**: double quotes, with `\`, `"`, `$` and `` ` `` escaped by a
//!   backslash; `{` is produced by `$(printf '\173')`, because ksh93
//!   brace-expands the words of an unquoted `eval $(…)` before `eval` sees
//!   the quotes. With the hint's unquoted `eval $(machine env dev)` the shell
//!   splits the output into words and `eval` joins them with single spaces,
//!   so a run of whitespace inside a value (two spaces, a tab, a newline)
//!   arrives as one space; `eval "$(machine env dev)"` keeps values exact.
//! - **fish**: double quotes with `\`, `"` and `$` escaped; line breaks are
//!   written as `\n`/`\r` escapes outside the quotes, so values survive
//!   `eval (…)` (which joins lines) unchanged.
//! - **PowerShell**: double quotes with `` ` ``, `"`, `$` and the typographic
//!   double quotes PowerShell also accepts (`“ ” „`) escaped by a backtick;
//!   line breaks become `` `n ``/`` `r ``. Note that PowerShell removes a
//!   variable that is set to the empty string.
//! - **cmd**: like Docker Machine, values are written unquoted: cmd has no
//!   quoting that works both when a line is typed and when it runs through
//!   the `FOR /f` idiom of the hint. Values with `&`, `|`, `<`, `>`, `^`, `%`
//!   or `"` may therefore be misread, and `SET KEY=` with an empty value
//!   removes the variable. Line breaks cannot be represented and are written
//!   as spaces, so a value can never start a new command.
//! - **tcsh/csh**: double quotes for ordinary text; `"`, `$`, `` ` ``, `!`
//!   and `\` (and `~` or `=` after whitespace) are backslash-escaped outside
//!   the quotes, and `{` is produced by `` `printf '\173'` ``: tcsh splits
//!   the output of ``eval `…` `` into words and brace-, tilde- and
//!   `=N`-expands them before `eval` sees the quotes. The comment is `:`
//!   (the null command), as in Docker Machine, because an interactive tcsh
//!   does not treat `#` as a comment in `eval`; the hint's text is
//!   single-quoted so that it is never expanded. Line breaks cannot survive
//!   ``eval `…` `` and are written as spaces; as with POSIX, runs of
//!   whitespace collapse to one space with ``eval `…` `` but are kept with
//!   ``eval "`…`"``.
//! - **Emacs**: Lisp strings with `\` and `"` escaped and line breaks
//!   written as `\n`/`\r`.
//!
//! Variable names must be plain identifiers (`[A-Za-z_][A-Za-z0-9_]*`), as
//! all the names `machine env` uses are; see [`is_valid_env_name`].

use std::fmt;
use std::str::FromStr;

/// The shell names [`Shell::parse`] accepts (the values of `--shell`).
pub const SHELL_NAMES: [&str; 12] = [
    "bash",
    "zsh",
    "sh",
    "ksh",
    "dash",
    "fish",
    "powershell",
    "pwsh",
    "cmd",
    "tcsh",
    "csh",
    "emacs",
];

/// The variables `machine env` always sets, in the order Docker Machine
/// prints them (`NO_PROXY` or `no_proxy` may follow with `--no-proxy`).
pub const DOCKER_ENV_NAMES: [&str; 4] = [
    "DOCKER_TLS_VERIFY",
    "DOCKER_HOST",
    "DOCKER_CERT_PATH",
    "DOCKER_MACHINE_NAME",
];

/// The first line of the usage hint, after the comment marker. The trailing
/// space is Docker Machine's.
const HINT_INTRO: &str = "Run this command to configure your shell: ";

/// A family of shells that share one syntax for setting variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shell {
    /// bash, zsh, sh, ksh, dash: `export KEY="value"`.
    Posix,
    /// fish: `set -gx KEY "value";`.
    Fish,
    /// PowerShell (Windows PowerShell and `pwsh`): `$Env:KEY = "value"`.
    PowerShell,
    /// Windows `cmd.exe`: `SET KEY=value`.
    Cmd,
    /// tcsh and csh: `setenv KEY "value";`.
    Tcsh,
    /// Emacs Lisp, to evaluate in Emacs: `(setenv "KEY" "value")`.
    Emacs,
}

/// Errors from choosing a shell.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShellError {
    /// The name is none of [`SHELL_NAMES`].
    #[error("unknown shell `{0}`; valid shells: {names}", names = SHELL_NAMES.join(", "))]
    Unknown(String),
}

impl Shell {
    /// Parses a shell name as given to `--shell` (ASCII case-insensitive,
    /// surrounding whitespace ignored). Accepts the names in
    /// [`SHELL_NAMES`]; anything else is [`ShellError::Unknown`], whose
    /// message lists the valid names.
    pub fn parse(name: &str) -> Result<Shell, ShellError> {
        let shell = match name.trim().to_ascii_lowercase().as_str() {
            "bash" | "zsh" | "sh" | "ksh" | "dash" => Shell::Posix,
            "fish" => Shell::Fish,
            "powershell" | "pwsh" => Shell::PowerShell,
            "cmd" => Shell::Cmd,
            "tcsh" | "csh" => Shell::Tcsh,
            "emacs" => Shell::Emacs,
            _ => return Err(ShellError::Unknown(name.to_owned())),
        };
        Ok(shell)
    }

    /// Guesses the user's shell, as `docker-machine env` does without
    /// `--shell`.
    ///
    /// `parent_process_name` is the name of the process that started
    /// `machine` (a path, a `.exe` suffix or a login shell's leading `-` are
    /// ignored): if it is PowerShell (`pwsh`, `powershell`) or `cmd`, that
    /// wins, since such shells are often started from another login shell.
    /// Otherwise the base name of `env_shell` (the value of `$SHELL`, e.g.
    /// `/usr/bin/fish`) decides. Anything unknown or missing means
    /// [`Shell::Posix`].
    pub fn detect(env_shell: Option<&str>, parent_process_name: Option<&str>) -> Shell {
        if let Some(parent) = parent_process_name {
            match program_name(parent).as_str() {
                "pwsh" | "powershell" => return Shell::PowerShell,
                "cmd" => return Shell::Cmd,
                _ => {}
            }
        }
        env_shell
            .and_then(|shell| Shell::parse(&program_name(shell)).ok())
            .unwrap_or(Shell::Posix)
    }

    /// [`Shell::detect`] for this process: reads `$SHELL` and, on Linux, the
    /// parent process's name from `/proc/<ppid>/comm`. On Windows, where
    /// neither is usually available, an unset `$SHELL` means [`Shell::Cmd`]
    /// as it does for Docker Machine.
    pub fn detect_from_environment() -> Shell {
        let env_shell = std::env::var("SHELL").ok().filter(|s| !s.trim().is_empty());
        let parent = parent_process_name();
        if cfg!(windows) && env_shell.is_none() && parent.is_none() {
            return Shell::Cmd;
        }
        Shell::detect(env_shell.as_deref(), parent.as_deref())
    }

    /// A canonical name for the shell family, accepted by [`Shell::parse`]:
    /// `sh`, `fish`, `powershell`, `cmd`, `tcsh` or `emacs`.
    pub fn name(self) -> &'static str {
        match self {
            Shell::Posix => "sh",
            Shell::Fish => "fish",
            Shell::PowerShell => "powershell",
            Shell::Cmd => "cmd",
            Shell::Tcsh => "tcsh",
            Shell::Emacs => "emacs",
        }
    }

    /// The marker that starts a comment line (for tcsh the null command
    /// `:`, see the module docs).
    pub fn comment(self) -> &'static str {
        match self {
            Shell::Posix | Shell::Fish | Shell::PowerShell => "#",
            Shell::Cmd => "REM",
            Shell::Tcsh => ":",
            Shell::Emacs => ";;",
        }
    }

    /// Quotes `value` as one word (one Lisp string for Emacs) that this
    /// shell reads back as `value`; see the module docs for each shell's
    /// rules and limits.
    pub fn quote(self, value: &str) -> String {
        match self {
            Shell::Posix => quote_posix(value),
            Shell::Fish => quote_fish(value),
            Shell::PowerShell => quote_powershell(value),
            Shell::Cmd => value.chars().map(unbreak).collect(),
            Shell::Tcsh => quote_tcsh(value),
            Shell::Emacs => quote_emacs(value),
        }
    }
}

impl fmt::Display for Shell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Shell {
    type Err = ShellError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Shell::parse(s)
    }
}

/// The lower-cased base name of a program, without a `.exe` suffix or the
/// `-` that marks a login shell.
fn program_name(path: &str) -> String {
    let path = path.trim();
    let base = path.rsplit(['/', '\\']).next().unwrap_or(path);
    let base = base.strip_prefix('-').unwrap_or(base).to_ascii_lowercase();
    match base.strip_suffix(".exe") {
        Some(stem) => stem.to_owned(),
        None => base,
    }
}

#[cfg(target_os = "linux")]
fn parent_process_name() -> Option<String> {
    let ppid = std::os::unix::process::parent_id();
    let comm = std::fs::read_to_string(format!("/proc/{ppid}/comm")).ok()?;
    let name = comm.trim_end_matches('\n');
    (!name.is_empty()).then(|| name.to_owned())
}

#[cfg(not(target_os = "linux"))]
fn parent_process_name() -> Option<String> {
    None
}

/// Whether `name` is a plain environment variable name,
/// `[A-Za-z_][A-Za-z0-9_]*`: the only names the render functions accept.
pub fn is_valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Variables for `machine env` to set, in output order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvVars {
    /// `(name, value)` pairs; names must satisfy [`is_valid_env_name`].
    pub vars: Vec<(String, String)>,
}

impl EnvVars {
    /// Docker Machine's four variables: `DOCKER_TLS_VERIFY=1`,
    /// `DOCKER_HOST`, `DOCKER_CERT_PATH` and `DOCKER_MACHINE_NAME`.
    pub fn docker(docker_host: &str, cert_path: &str, machine_name: &str) -> EnvVars {
        let values = ["1", docker_host, cert_path, machine_name];
        EnvVars {
            vars: DOCKER_ENV_NAMES
                .iter()
                .zip(values)
                .map(|(name, value)| ((*name).to_owned(), value.to_owned()))
                .collect(),
        }
    }

    /// Appends a variable (e.g. the pair from [`no_proxy_var`] and
    /// [`no_proxy_value`]).
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.vars.push((name.into(), value.into()));
        self
    }

    /// The variable names, in order (what `machine env -u` unsets).
    pub fn names(&self) -> Vec<String> {
        self.vars.iter().map(|(name, _)| name.clone()).collect()
    }

    /// [`render_set`] for these variables.
    pub fn render_set(&self, shell: Shell, hint_command: &str) -> String {
        render_set(shell, &self.vars, hint_command)
    }
}

/// Renders the commands that set `vars` in `shell`, one per line, followed
/// by the [`usage_hint`] for `hint_command` (the full command line to show,
/// such as `machine env dev` or `machine env --shell fish dev`).
///
/// Names must satisfy [`is_valid_env_name`] (checked in debug builds).
pub fn render_set<K, V>(shell: Shell, vars: &[(K, V)], hint_command: &str) -> String
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut out = String::new();
    for (name, value) in vars {
        let name = name.as_ref();
        debug_assert!(is_valid_env_name(name), "invalid variable name {name:?}");
        let value = shell.quote(value.as_ref());
        let line = match shell {
            Shell::Posix => format!("export {name}={value}\n"),
            Shell::Fish => format!("set -gx {name} {value};\n"),
            Shell::PowerShell => format!("$Env:{name} = {value}\n"),
            Shell::Cmd => format!("SET {name}={value}\n"),
            Shell::Tcsh => format!("setenv {name} {value};\n"),
            Shell::Emacs => format!("(setenv \"{name}\" {value})\n"),
        };
        out.push_str(&line);
    }
    out.push_str(&usage_hint(shell, hint_command));
    out
}

/// Renders the commands that remove `names` in `shell` (`machine env -u`),
/// followed by the [`usage_hint`] for `hint_command` (e.g. `machine env -u`).
///
/// Names must satisfy [`is_valid_env_name`] (checked in debug builds).
pub fn render_unset<S: AsRef<str>>(shell: Shell, names: &[S], hint_command: &str) -> String {
    let mut out = String::new();
    for name in names {
        let name = name.as_ref();
        debug_assert!(is_valid_env_name(name), "invalid variable name {name:?}");
        let line = match shell {
            Shell::Posix => format!("unset {name}\n"),
            Shell::Fish => format!("set -e {name};\n"),
            Shell::PowerShell => format!("Remove-Item Env:\\\\{name}\n"),
            Shell::Cmd => format!("SET {name}=\n"),
            Shell::Tcsh => format!("unsetenv {name};\n"),
            Shell::Emacs => format!("(setenv \"{name}\" nil)\n"),
        };
        out.push_str(&line);
    }
    out.push_str(&usage_hint(shell, hint_command));
    out
}

/// The two comment lines that end `machine env`'s output: how to evaluate
/// `hint_command` in `shell`, e.g. `# eval $(machine env dev)`.
///
/// The command is shown as given (line breaks become spaces so that it stays
/// inside the comment), except that it is escaped where it sits inside a
/// Lisp string (Emacs) or a quoted word (tcsh, whose "comment" is the null
/// command `:`).
pub fn usage_hint(shell: Shell, hint_command: &str) -> String {
    let cmd: String = hint_command.chars().map(unbreak).collect();
    let eval = match shell {
        Shell::Posix => format!("eval $({cmd})"),
        Shell::Fish => format!("eval ({cmd})"),
        Shell::PowerShell => format!("& {cmd} | Invoke-Expression"),
        Shell::Cmd => format!("\t@FOR /f \"tokens=*\" %i IN ('{cmd}') DO @%i"),
        Shell::Tcsh => quote_tcsh_hint(&format!("eval `{cmd}`")),
        Shell::Emacs => format!(
            "(with-temp-buffer (shell-command {} (current-buffer)) (eval-buffer))",
            quote_emacs(&cmd)
        ),
    };
    let comment = shell.comment();
    format!("{comment} {HINT_INTRO}\n{comment} {eval}\n")
}

/// The `NO_PROXY` value that also bypasses proxies for `ip`: `existing`
/// (a comma-separated list, e.g. the current `NO_PROXY`) with `ip`
/// appended, unless an entry already equals `ip` (ignoring surrounding
/// whitespace and ASCII case), in which case `existing` is returned as it
/// is. With no or an empty `existing`, just `ip`.
pub fn no_proxy_value(existing: Option<&str>, ip: &str) -> String {
    let ip = ip.trim();
    let existing = existing.unwrap_or("").trim();
    if existing
        .split(',')
        .any(|entry| entry.trim().eq_ignore_ascii_case(ip))
    {
        return existing.to_owned();
    }
    let base = existing.trim_end_matches(',').trim_end();
    if base.is_empty() {
        ip.to_owned()
    } else {
        format!("{base},{ip}")
    }
}

/// Which proxy-exemption variable to set, and its current value, given a
/// way to read the environment (e.g. `|k| std::env::var(k).ok()`):
/// `NO_PROXY` if it is set, else `no_proxy` if that is, else `NO_PROXY`
/// with no value. An empty value counts as unset.
pub fn no_proxy_var(env: impl Fn(&str) -> Option<String>) -> (String, Option<String>) {
    for name in ["NO_PROXY", "no_proxy"] {
        if let Some(value) = env(name).filter(|v| !v.trim().is_empty()) {
            return (name.to_owned(), Some(value));
        }
    }
    ("NO_PROXY".to_owned(), None)
}

/// Line breaks as spaces, for places where they cannot be represented.
fn unbreak(c: char) -> char {
    if matches!(c, '\n' | '\r') { ' ' } else { c }
}

/// Double quotes with `\`, `"`, `$` and `` ` `` escaped. ksh93
/// brace-expands the words of an unquoted `eval $(…)` before `eval` sees
/// the quotes, so `{` is produced by a command substitution instead.
fn quote_posix(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' | '"' | '$' | '`' => {
                out.push('\\');
                out.push(c);
            }
            '{' => out.push_str("$(printf '\\173')"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

fn quote_fish(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' | '"' | '$' => {
                out.push('\\');
                out.push(c);
            }
            // Outside the quotes, as escapes: `eval (…)` joins lines.
            '\n' => out.push_str("\"\\n\""),
            '\r' => out.push_str("\"\\r\""),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

fn quote_powershell(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '`' | '"' | '$' | '\u{201C}' | '\u{201D}' | '\u{201E}' => {
                out.push('`');
                out.push(c);
            }
            '\n' => out.push_str("`n"),
            '\r' => out.push_str("`r"),
            '\0' => out.push_str("`0"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

fn quote_emacs(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' | '"' => {
                out.push('\\');
                out.push(c);
            }
            // Escaped so that each form stays on one line and no reader
            // converts line endings.
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Double quotes for ordinary text; special characters escaped outside
/// them. Must survive both ``eval `…` `` (whose words are brace-, tilde- and
/// `=N`-expanded before `eval` parses them) and ``eval "`…`"``.
fn quote_tcsh(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    let mut open = false;
    let mut after_space = false;
    for c in value.chars().map(unbreak) {
        let escape = match c {
            '"' | '$' | '`' | '!' | '\\' => true,
            // Special only where a word starts; in a value that is after
            // whitespace, which ``eval `…` `` splits at.
            '~' | '=' => after_space,
            _ => false,
        };
        after_space = matches!(c, ' ' | '\t');
        if escape {
            if open {
                out.push('"');
                open = false;
            }
            out.push('\\');
            out.push(c);
            continue;
        }
        if !open {
            out.push('"');
            open = true;
        }
        if c == '{' {
            out.push_str("`printf '\\173'`");
        } else {
            out.push(c);
        }
    }
    if open {
        out.push('"');
    }
    if out.is_empty() {
        out.push_str("\"\"");
    }
    out
}

/// Single quotes, with the characters that single quotes do not protect
/// in tcsh (or that would be expanded before `eval`) written outside them.
fn quote_tcsh_hint(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        match c {
            '\'' | '!' | '\\' | '~' => {
                out.push_str("'\\");
                out.push(c);
                out.push('\'');
            }
            '{' => out.push_str("'\"`printf '\\173'`\"'"),
            _ => out.push(c),
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Write as _;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use super::*;

    const ALL: [Shell; 6] = [
        Shell::Posix,
        Shell::Fish,
        Shell::PowerShell,
        Shell::Cmd,
        Shell::Tcsh,
        Shell::Emacs,
    ];

    fn dev_vars() -> EnvVars {
        let mut vars = EnvVars::docker(
            "tcp://192.168.99.101:2376",
            "/Users/nathan/.docker/machine/machines/dev",
            "dev",
        );
        vars.push("NO_PROXY", "192.168.99.101");
        vars
    }

    // ---- parsing and detection ----

    #[test]
    fn parses_every_documented_name() {
        let expected = [
            Shell::Posix,
            Shell::Posix,
            Shell::Posix,
            Shell::Posix,
            Shell::Posix,
            Shell::Fish,
            Shell::PowerShell,
            Shell::PowerShell,
            Shell::Cmd,
            Shell::Tcsh,
            Shell::Tcsh,
            Shell::Emacs,
        ];
        for (name, shell) in SHELL_NAMES.iter().zip(expected) {
            assert_eq!(Shell::parse(name), Ok(shell), "{name}");
        }
        assert_eq!(Shell::parse(" Bash "), Ok(Shell::Posix));
        assert_eq!("PWSH".parse::<Shell>(), Ok(Shell::PowerShell));
        for shell in ALL {
            assert_eq!(Shell::parse(shell.name()), Ok(shell));
            assert_eq!(shell.to_string(), shell.name());
        }
    }

    #[test]
    fn unknown_shell_lists_valid_names() {
        let err = Shell::parse("nushell").unwrap_err();
        assert_eq!(err, ShellError::Unknown("nushell".into()));
        let msg = err.to_string();
        assert!(msg.contains("`nushell`"), "{msg}");
        for name in SHELL_NAMES {
            assert!(msg.contains(name), "{msg} lacks {name}");
        }
        assert!(Shell::parse("").is_err());
        assert!(Shell::parse("/bin/bash").is_err());
    }

    #[test]
    fn detects_from_shell_variable() {
        let cases = [
            ("/bin/bash", Shell::Posix),
            ("/usr/bin/zsh", Shell::Posix),
            ("/usr/local/bin/fish", Shell::Fish),
            ("/bin/tcsh", Shell::Tcsh),
            ("/bin/csh", Shell::Tcsh),
            ("/usr/bin/pwsh", Shell::PowerShell),
            ("fish", Shell::Fish),
            ("/usr/bin/nu", Shell::Posix),
            ("", Shell::Posix),
        ];
        for (var, shell) in cases {
            assert_eq!(Shell::detect(Some(var), None), shell, "{var}");
            assert_eq!(Shell::detect(Some(var), Some("bash")), shell, "{var}");
        }
        assert_eq!(Shell::detect(None, None), Shell::Posix);
        assert_eq!(Shell::detect(None, Some("sshd")), Shell::Posix);
    }

    #[test]
    fn powershell_or_cmd_parent_wins() {
        for parent in [
            "pwsh",
            "powershell",
            "PowerShell.exe",
            "/opt/microsoft/powershell/7/pwsh",
        ] {
            assert_eq!(
                Shell::detect(Some("/bin/bash"), Some(parent)),
                Shell::PowerShell,
                "{parent}"
            );
        }
        for parent in ["cmd", "cmd.exe", "CMD.EXE", r"C:\Windows\System32\cmd.exe"] {
            assert_eq!(Shell::detect(None, Some(parent)), Shell::Cmd, "{parent}");
        }
        // Other parents do not override $SHELL.
        assert_eq!(
            Shell::detect(Some("/usr/bin/fish"), Some("-bash")),
            Shell::Fish
        );
        assert_eq!(Shell::detect(Some("/bin/zsh"), Some("fish")), Shell::Posix);
    }

    #[test]
    fn detect_from_environment_does_not_panic() {
        let _ = Shell::detect_from_environment();
    }

    // ---- exact output, as docker-machine 0.16 prints it ----

    #[test]
    fn set_output_matches_docker_machine() {
        let vars = dev_vars();
        let cases = [
            (
                Shell::Posix,
                "machine env dev",
                "export DOCKER_TLS_VERIFY=\"1\"\n\
                 export DOCKER_HOST=\"tcp://192.168.99.101:2376\"\n\
                 export DOCKER_CERT_PATH=\"/Users/nathan/.docker/machine/machines/dev\"\n\
                 export DOCKER_MACHINE_NAME=\"dev\"\n\
                 export NO_PROXY=\"192.168.99.101\"\n\
                 # Run this command to configure your shell: \n\
                 # eval $(machine env dev)\n",
            ),
            (
                Shell::Fish,
                "machine env --shell fish dev",
                "set -gx DOCKER_TLS_VERIFY \"1\";\n\
                 set -gx DOCKER_HOST \"tcp://192.168.99.101:2376\";\n\
                 set -gx DOCKER_CERT_PATH \"/Users/nathan/.docker/machine/machines/dev\";\n\
                 set -gx DOCKER_MACHINE_NAME \"dev\";\n\
                 set -gx NO_PROXY \"192.168.99.101\";\n\
                 # Run this command to configure your shell: \n\
                 # eval (machine env --shell fish dev)\n",
            ),
            (
                Shell::PowerShell,
                "machine env --shell powershell dev",
                "$Env:DOCKER_TLS_VERIFY = \"1\"\n\
                 $Env:DOCKER_HOST = \"tcp://192.168.99.101:2376\"\n\
                 $Env:DOCKER_CERT_PATH = \"/Users/nathan/.docker/machine/machines/dev\"\n\
                 $Env:DOCKER_MACHINE_NAME = \"dev\"\n\
                 $Env:NO_PROXY = \"192.168.99.101\"\n\
                 # Run this command to configure your shell: \n\
                 # & machine env --shell powershell dev | Invoke-Expression\n",
            ),
            (
                Shell::Cmd,
                "machine env --shell cmd dev",
                "SET DOCKER_TLS_VERIFY=1\n\
                 SET DOCKER_HOST=tcp://192.168.99.101:2376\n\
                 SET DOCKER_CERT_PATH=/Users/nathan/.docker/machine/machines/dev\n\
                 SET DOCKER_MACHINE_NAME=dev\n\
                 SET NO_PROXY=192.168.99.101\n\
                 REM Run this command to configure your shell: \n\
                 REM \t@FOR /f \"tokens=*\" %i IN ('machine env --shell cmd dev') DO @%i\n",
            ),
            (
                Shell::Tcsh,
                "machine env --shell tcsh dev",
                "setenv DOCKER_TLS_VERIFY \"1\";\n\
                 setenv DOCKER_HOST \"tcp://192.168.99.101:2376\";\n\
                 setenv DOCKER_CERT_PATH \"/Users/nathan/.docker/machine/machines/dev\";\n\
                 setenv DOCKER_MACHINE_NAME \"dev\";\n\
                 setenv NO_PROXY \"192.168.99.101\";\n\
                 : Run this command to configure your shell: \n\
                 : 'eval `machine env --shell tcsh dev`'\n",
            ),
            (
                Shell::Emacs,
                "machine env --shell emacs dev",
                "(setenv \"DOCKER_TLS_VERIFY\" \"1\")\n\
                 (setenv \"DOCKER_HOST\" \"tcp://192.168.99.101:2376\")\n\
                 (setenv \"DOCKER_CERT_PATH\" \"/Users/nathan/.docker/machine/machines/dev\")\n\
                 (setenv \"DOCKER_MACHINE_NAME\" \"dev\")\n\
                 (setenv \"NO_PROXY\" \"192.168.99.101\")\n\
                 ;; Run this command to configure your shell: \n\
                 ;; (with-temp-buffer (shell-command \"machine env --shell emacs dev\" \
                 (current-buffer)) (eval-buffer))\n",
            ),
        ];
        for (shell, hint, expected) in cases {
            assert_eq!(vars.render_set(shell, hint), expected, "{shell}");
            assert_eq!(render_set(shell, &vars.vars, hint), expected, "{shell}");
        }
    }

    #[test]
    fn unset_output_matches_docker_machine() {
        let mut names = DOCKER_ENV_NAMES.to_vec();
        names.push("NO_PROXY");
        let cases = [
            (
                Shell::Posix,
                "unset ",
                "",
                "# Run this command to configure your shell: \n# eval $(machine env -u)\n",
            ),
            (
                Shell::Fish,
                "set -e ",
                ";",
                "# Run this command to configure your shell: \n# eval (machine env -u)\n",
            ),
            (
                Shell::PowerShell,
                "Remove-Item Env:\\\\",
                "",
                "# Run this command to configure your shell: \n# & machine env -u | Invoke-Expression\n",
            ),
            (
                Shell::Cmd,
                "SET ",
                "=",
                "REM Run this command to configure your shell: \n\
                 REM \t@FOR /f \"tokens=*\" %i IN ('machine env -u') DO @%i\n",
            ),
            (
                Shell::Tcsh,
                "unsetenv ",
                ";",
                ": Run this command to configure your shell: \n: 'eval `machine env -u`'\n",
            ),
            (
                Shell::Emacs,
                "(setenv \"",
                "\" nil)",
                ";; Run this command to configure your shell: \n\
                 ;; (with-temp-buffer (shell-command \"machine env -u\" (current-buffer)) (eval-buffer))\n",
            ),
        ];
        for (shell, prefix, suffix, hint) in cases {
            let mut expected: String = names
                .iter()
                .map(|n| format!("{prefix}{n}{suffix}\n"))
                .collect();
            expected.push_str(hint);
            assert_eq!(
                render_unset(shell, &names, "machine env -u"),
                expected,
                "{shell}"
            );
        }
        let owned: Vec<String> = dev_vars().names();
        assert_eq!(
            render_unset(Shell::Posix, &owned, "machine env -u"),
            render_unset(Shell::Posix, &names, "machine env -u")
        );
        assert_eq!(
            render_unset(Shell::PowerShell, &["DOCKER_HOST"], "x")
                .lines()
                .next(),
            Some(r"Remove-Item Env:\\DOCKER_HOST")
        );
    }

    #[test]
    fn empty_variable_list_prints_only_the_hint() {
        let none: [(&str, &str); 0] = [];
        for shell in ALL {
            assert_eq!(
                render_set(shell, &none, "m env"),
                usage_hint(shell, "m env")
            );
            assert_eq!(
                render_unset::<&str>(shell, &[], "m env"),
                usage_hint(shell, "m env")
            );
        }
    }

    #[test]
    fn hint_keeps_a_quoted_program_path() {
        let cmd = "\"/Applications/My Tools/machine\" env dev";
        assert_eq!(
            usage_hint(Shell::Posix, cmd),
            "# Run this command to configure your shell: \n\
             # eval $(\"/Applications/My Tools/machine\" env dev)\n"
        );
        assert!(
            usage_hint(Shell::PowerShell, cmd)
                .ends_with("# & \"/Applications/My Tools/machine\" env dev | Invoke-Expression\n")
        );
        // Inside the Lisp string the quotes are escaped.
        assert!(usage_hint(Shell::Emacs, cmd).contains(
            "(shell-command \"\\\"/Applications/My Tools/machine\\\" env dev\" (current-buffer))"
        ));
        assert!(
            usage_hint(Shell::Tcsh, cmd)
                .ends_with(": 'eval `\"/Applications/My Tools/machine\" env dev`'\n")
        );
    }

    #[test]
    fn hint_never_leaves_the_comment() {
        let cmd = "machine env dev\nrm -rf ~\r\nexit";
        for shell in ALL {
            let hint = usage_hint(shell, cmd);
            assert_eq!(hint.lines().count(), 2, "{shell}: {hint:?}");
            for line in hint.lines() {
                assert!(
                    line.starts_with(&format!("{} ", shell.comment())),
                    "{shell}: {line:?}"
                );
            }
        }
        assert_eq!(
            quote_tcsh_hint("it's ~/x! {a,b} c:\\d"),
            r#"'it'\''s '\~'/x'\!' '"`printf '\173'`"'a,b} c:'\\'d'"#
        );
    }

    // ---- quoting, per shell ----

    #[test]
    fn posix_quoting() {
        let q = |v| Shell::Posix.quote(v);
        assert_eq!(q("plain"), r#""plain""#);
        assert_eq!(q(""), r#""""#);
        assert_eq!(q("a b"), r#""a b""#);
        assert_eq!(q(r#"a"b"#), r#""a\"b""#);
        assert_eq!(q("$HOME"), r#""\$HOME""#);
        assert_eq!(q("`id`"), r#""\`id\`""#);
        assert_eq!(q(r"C:\x\"), r#""C:\\x\\""#);
        assert_eq!(q("it's; a & b | c"), r#""it's; a & b | c""#);
        assert_eq!(q("{a,b}"), r#""$(printf '\173')a,b}""#);
        assert_eq!(q("a\nb"), "\"a\nb\"");
    }

    #[test]
    fn fish_quoting() {
        let q = |v| Shell::Fish.quote(v);
        assert_eq!(q("plain"), r#""plain""#);
        assert_eq!(q(""), r#""""#);
        assert_eq!(q(r#"a"b"#), r#""a\"b""#);
        assert_eq!(q("$HOME (id)"), r#""\$HOME (id)""#);
        assert_eq!(q(r"C:\x\"), r#""C:\\x\\""#);
        assert_eq!(q("`id` 'x'"), r#""`id` 'x'""#);
        assert_eq!(q("a\nb\r"), r#""a"\n"b"\r"""#);
    }

    #[test]
    fn powershell_quoting() {
        let q = |v| Shell::PowerShell.quote(v);
        assert_eq!(q("plain"), r#""plain""#);
        assert_eq!(q(""), r#""""#);
        assert_eq!(q(r"C:\Program Files\x\"), r#""C:\Program Files\x\""#);
        assert_eq!(q(r#"a"b"#), r#""a`"b""#);
        assert_eq!(q("$env:PATH $(id)"), r#""`$env:PATH `$(id)""#);
        assert_eq!(q("`n"), r#""``n""#);
        assert_eq!(
            q("\u{201C}x\u{201D}\u{201E}"),
            "\"`\u{201C}x`\u{201D}`\u{201E}\""
        );
        assert_eq!(q("a\r\nb"), r#""a`r`nb""#);
        assert_eq!(q("'single'"), r#""'single'""#);
    }

    #[test]
    fn cmd_is_unquoted_but_single_line() {
        let q = |v| Shell::Cmd.quote(v);
        assert_eq!(
            q(r"C:\Users\John Doe\.docker"),
            r"C:\Users\John Doe\.docker"
        );
        assert_eq!(q("a\r\nformat c:"), "a  format c:");
        let out = render_set(Shell::Cmd, &[("X", "1\nDEL *")], "machine env dev");
        assert!(out.starts_with("SET X=1 DEL *\nREM "), "{out}");
    }

    #[test]
    fn tcsh_quoting() {
        let q = |v| Shell::Tcsh.quote(v);
        assert_eq!(q("plain"), r#""plain""#);
        assert_eq!(q(""), r#""""#);
        assert_eq!(q("a b'c"), r#""a b'c""#);
        assert_eq!(q("$HOME"), r#"\$"HOME""#);
        assert_eq!(q(r#"a"b"#), r#""a"\""b""#);
        assert_eq!(q(r"a\b!c`d~"), r#""a"\\"b"\!"c"\`"d~""#);
        assert_eq!(q("~/x a ~b =c\t=d e=f"), r#""~/x a "\~"b "\="c	"\="d e=f""#);
        assert_eq!(q("{a,b}"), r#""`printf '\173'`a,b}""#);
        assert_eq!(q("a\nb"), r#""a b""#);
        assert_eq!(q("$"), r"\$");
    }

    #[test]
    fn emacs_quoting() {
        let q = |v| Shell::Emacs.quote(v);
        assert_eq!(q("plain"), r#""plain""#);
        assert_eq!(q(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(q("$x `y` 'z'"), "\"$x `y` 'z'\"");
        assert_eq!(q("a\nb\r"), r#""a\nb\r""#);
    }

    #[test]
    fn names() {
        for ok in ["DOCKER_HOST", "no_proxy", "_X1"] {
            assert!(is_valid_env_name(ok), "{ok}");
        }
        for bad in ["", "1X", "A-B", "A B", "A=B", "A;rm", "É"] {
            assert!(!is_valid_env_name(bad), "{bad}");
        }
        assert_eq!(
            dev_vars().names(),
            [
                "DOCKER_TLS_VERIFY",
                "DOCKER_HOST",
                "DOCKER_CERT_PATH",
                "DOCKER_MACHINE_NAME",
                "NO_PROXY"
            ]
        );
    }

    // ---- NO_PROXY ----

    #[test]
    fn no_proxy_appends_without_duplicates() {
        let ip = "192.168.99.100";
        assert_eq!(no_proxy_value(None, ip), ip);
        assert_eq!(no_proxy_value(Some(""), ip), ip);
        assert_eq!(no_proxy_value(Some("  "), ip), ip);
        assert_eq!(
            no_proxy_value(Some("localhost"), ip),
            "localhost,192.168.99.100"
        );
        assert_eq!(
            no_proxy_value(Some("localhost,.corp"), ip),
            "localhost,.corp,192.168.99.100"
        );
        assert_eq!(
            no_proxy_value(Some("localhost,"), ip),
            "localhost,192.168.99.100"
        );
        assert_eq!(no_proxy_value(Some(ip), ip), ip);
        assert_eq!(
            no_proxy_value(Some("localhost, 192.168.99.100 ,.corp"), ip),
            "localhost, 192.168.99.100 ,.corp"
        );
        // A prefix of another entry is not a match (docker-machine's
        // substring check got this wrong).
        assert_eq!(
            no_proxy_value(Some("192.168.99.1000"), ip),
            "192.168.99.1000,192.168.99.100"
        );
        assert_eq!(
            no_proxy_value(Some("192.168.99.10"), ip),
            "192.168.99.10,192.168.99.100"
        );
    }

    #[test]
    fn no_proxy_var_prefers_upper_case() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert_eq!(no_proxy_var(env(&[])), ("NO_PROXY".into(), None));
        assert_eq!(
            no_proxy_var(env(&[("no_proxy", "a"), ("NO_PROXY", "b")])),
            ("NO_PROXY".into(), Some("b".into()))
        );
        assert_eq!(
            no_proxy_var(env(&[("no_proxy", "a")])),
            ("no_proxy".into(), Some("a".into()))
        );
        assert_eq!(
            no_proxy_var(env(&[("NO_PROXY", ""), ("no_proxy", "a")])),
            ("no_proxy".into(), Some("a".into()))
        );
        assert_eq!(
            no_proxy_var(env(&[("NO_PROXY", "")])),
            ("NO_PROXY".into(), None)
        );
    }

    // ---- round trips through real shells ----

    /// Values that break naive quoting. Names are prefixed so that they
    /// cannot clash with the test environment.
    const NASTY: &[(&str, &str)] = &[
        ("MT_PLAIN", "tcp://192.168.99.101:2376"),
        ("MT_SPACES", "/Users/John Doe/.docker/machine/machines/dev"),
        ("MT_QUOTES", r#"say "hi" and 'bye' ""#),
        (
            "MT_DOLLAR",
            "$HOME ${HOME} $(echo pwned) $1 $ $$ %PATH% $env:PATH",
        ),
        ("MT_BACKTICK", "`echo pwned` ` ``"),
        ("MT_BACKSLASH", r"C:\Users\x\ \\server\share\ \n \"),
        ("MT_MIXED", r#"a"b\"c$d`e\\f!g'h\'i"#),
        ("MT_GLOB", "*.local,{a,b},?[x] {c} { ~ ~root =1 -n !! !$"),
        ("MT_META", "a;b&c|d<e>f (g) #h ^j && exit 3 || exit 4"),
        (
            "MT_INJECT",
            "\"; touch canary; echo \"$(touch canary)`touch canary`",
        ),
        (
            "MT_UNICODE",
            "héllo wörld ✓ \u{201C}smart\u{201D} \u{2018}single\u{2019} \u{201E}",
        ),
        ("MT_EMPTY", ""),
        ("MT_WHITESPACE", "  a  b\t\tc  "),
        ("MT_NEWLINE", "line1\nline2\r\nline3\n"),
    ];

    /// How a value arrives after a given way of evaluating the output.
    #[derive(Debug, Clone, Copy)]
    enum Arrival {
        Exact,
        /// Line breaks became spaces (tcsh).
        Unbroken,
        /// Unquoted command substitution: runs of whitespace became one
        /// space; `breaks` says whether CR counts as a line break first.
        Collapsed {
            breaks: bool,
        },
    }

    fn expected(value: &str, arrival: Arrival) -> String {
        match arrival {
            Arrival::Exact => value.to_owned(),
            Arrival::Unbroken => value.chars().map(unbreak).collect(),
            Arrival::Collapsed { breaks } => {
                let mut out = String::new();
                let mut in_space = false;
                for c in value.chars() {
                    let c = if breaks { unbreak(c) } else { c };
                    if matches!(c, ' ' | '\t' | '\n') {
                        if !in_space {
                            out.push(' ');
                        }
                        in_space = true;
                    } else {
                        out.push(c);
                        in_space = false;
                    }
                }
                out
            }
        }
    }

    fn find_program(name: &str) -> Option<PathBuf> {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    }

    /// The program, or `None` after saying loudly that its test is skipped.
    /// `MACHINE_TEST_REQUIRE_SHELLS=fish,tcsh` (or `all`) turns a missing
    /// program into a failure.
    fn program_or_skip(name: &str) -> Option<PathBuf> {
        if let Some(path) = find_program(name) {
            return Some(path);
        }
        let required = std::env::var("MACHINE_TEST_REQUIRE_SHELLS").unwrap_or_default();
        if required
            .split(',')
            .any(|s| s.trim() == name || s.trim() == "all")
        {
            panic!("`{name}` is required by MACHINE_TEST_REQUIRE_SHELLS but is not on PATH");
        }
        // Straight to stderr, past the test harness's output capture.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: `{name}` is not on PATH, so its `machine env` output was not run \
             through a real {name} (set MACHINE_TEST_REQUIRE_SHELLS={name} to fail instead)"
        );
        None
    }

    struct Run<'a> {
        program: &'a Path,
        args: Vec<String>,
        output_file: &'a Path,
        preset: &'a [(&'a str, &'a str)],
    }

    /// Runs `program args…` in an empty directory with `$MT_FILE` naming the
    /// rendered output and `$MT_NAMES` the variables, and returns the
    /// variables the script reports (each `NAME=value` or `NAME<unset>`,
    /// NUL-terminated; `env -0` output is accepted too).
    fn run(r: &Run<'_>, dir: &Path) -> BTreeMap<String, String> {
        let names: Vec<&str> = NASTY.iter().map(|(n, _)| *n).collect();
        let mut cmd = Command::new(r.program);
        cmd.args(&r.args)
            .current_dir(dir)
            .env("MT_FILE", r.output_file)
            .env("MT_NAMES", names.join(","))
            .env("LC_ALL", "C.UTF-8")
            .env("LANG", "C.UTF-8");
        for (name, _) in NASTY {
            cmd.env_remove(name);
        }
        for (name, value) in r.preset {
            cmd.env(name, value);
        }
        let out = cmd.output().expect("run shell");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "{} {:?} failed ({}): {stderr}",
            r.program.display(),
            r.args,
            out.status
        );
        let stdout = String::from_utf8(out.stdout).expect("utf-8 output");
        let mut vars = BTreeMap::new();
        for record in stdout.split('\0') {
            if let Some((name, value)) = record.split_once('=')
                && names.contains(&name)
            {
                vars.insert(name.to_owned(), value.to_owned());
            }
        }
        assert!(
            !dir.join("canary").exists(),
            "{}: a value ran a command",
            r.program.display()
        );
        vars
    }

    /// Renders the set and unset output for `shell`, evaluates each with
    /// every `(script, arrival)` in `forms` (scripts get `{EVAL}` replaced
    /// by the command to evaluate `$MT_FILE`'s content, which is the usage
    /// hint itself where `hint_eval` finds it), and checks the variables.
    fn round_trip(
        shell: Shell,
        program: &Path,
        args: &[&str],
        forms: &[(&str, Arrival)],
        hint_command: &str,
        hint_eval: fn(&str) -> String,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("env.out");
        let work = dir.path().join("work");
        std::fs::create_dir(&work).expect("mkdir");

        let set = render_set(shell, NASTY, hint_command);
        let hint = set.lines().last().expect("hint line");
        let eval_from_hint = hint_eval(hint);
        std::fs::write(&file, &set).expect("write output");

        for (form, arrival) in forms {
            let script = form.replace("{HINT}", &eval_from_hint);
            let mut full: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
            full.push(script.clone());
            let got = run(
                &Run {
                    program,
                    args: full,
                    output_file: &file,
                    preset: &[],
                },
                &work,
            );
            for (name, value) in NASTY {
                let want = expected(value, *arrival);
                let tolerate_unset = want.is_empty() && shell == Shell::PowerShell;
                match got.get(*name) {
                    Some(v) => assert_eq!(v, &want, "{shell} via `{script}`: {name}"),
                    None if tolerate_unset => {}
                    None => panic!("{shell} via `{script}`: {name} not set; output:\n{set}"),
                }
            }
        }

        let names: Vec<&str> = NASTY.iter().map(|(n, _)| *n).collect();
        let unset = render_unset(shell, &names, hint_command);
        std::fs::write(&file, &unset).expect("write output");
        let preset: Vec<(&str, &str)> = names.iter().map(|n| (*n, "preset")).collect();
        for (form, _) in forms {
            let script = form.replace("{HINT}", &eval_from_hint);
            let mut full: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
            full.push(script.clone());
            let got = run(
                &Run {
                    program,
                    args: full,
                    output_file: &file,
                    preset: &preset,
                },
                &work,
            );
            assert!(got.is_empty(), "{shell} via `{script}` left {got:?}");
        }
    }

    fn strip_comment(shell: Shell) -> impl Fn(&str) -> String {
        move |line: &str| {
            line.strip_prefix(&format!("{} ", shell.comment()))
                .expect("hint starts with the comment marker")
                .to_owned()
        }
    }

    fn posix_round_trip(name: &str, args: &[&str]) {
        let Some(program) = program_or_skip(name) else {
            return;
        };
        round_trip(
            Shell::Posix,
            &program,
            args,
            &[
                // The hint as printed: unquoted, so whitespace collapses.
                ("{HINT}; env -0", Arrival::Collapsed { breaks: false }),
                ("eval \"$(cat \"$MT_FILE\")\"; env -0", Arrival::Exact),
                (". \"$MT_FILE\"; env -0", Arrival::Exact),
            ],
            "cat $MT_FILE",
            |hint| {
                let eval = strip_comment(Shell::Posix)(hint);
                assert_eq!(eval, "eval $(cat $MT_FILE)");
                eval
            },
        );
    }

    #[test]
    fn round_trip_sh() {
        posix_round_trip("sh", &["-c"]);
    }

    #[test]
    fn round_trip_bash() {
        posix_round_trip("bash", &["--norc", "--noprofile", "-c"]);
    }

    #[test]
    fn round_trip_dash() {
        posix_round_trip("dash", &["-c"]);
    }

    #[test]
    fn round_trip_zsh() {
        posix_round_trip("zsh", &["-f", "-c"]);
    }

    #[test]
    fn round_trip_ksh() {
        posix_round_trip("ksh", &["-c"]);
    }

    #[test]
    fn round_trip_fish() {
        let Some(program) = program_or_skip("fish") else {
            return;
        };
        round_trip(
            Shell::Fish,
            &program,
            &["--no-config", "-c"],
            &[
                ("{HINT}; env -0", Arrival::Exact),
                ("cat $MT_FILE | source; env -0", Arrival::Exact),
            ],
            "cat $MT_FILE",
            |hint| {
                let eval = strip_comment(Shell::Fish)(hint);
                assert_eq!(eval, "eval (cat $MT_FILE)");
                eval
            },
        );
    }

    fn tcsh_round_trip(name: &str) {
        let Some(program) = program_or_skip(name) else {
            return;
        };
        round_trip(
            Shell::Tcsh,
            &program,
            &["-f", "-c"],
            &[
                ("{HINT}; env -0", Arrival::Collapsed { breaks: true }),
                ("eval \"`cat $MT_FILE`\"; env -0", Arrival::Unbroken),
                (
                    "set backslash_quote; eval \"`cat $MT_FILE`\"; env -0",
                    Arrival::Unbroken,
                ),
                ("source $MT_FILE; env -0", Arrival::Unbroken),
            ],
            "cat $MT_FILE",
            |hint| {
                let quoted = strip_comment(Shell::Tcsh)(hint);
                assert_eq!(quoted, "'eval `cat $MT_FILE`'");
                quoted.trim_matches('\'').to_owned()
            },
        );
    }

    #[test]
    fn round_trip_tcsh() {
        tcsh_round_trip("tcsh");
    }

    #[test]
    fn round_trip_csh() {
        tcsh_round_trip("csh");
    }

    #[test]
    fn tcsh_hint_is_inert() {
        let Some(program) = program_or_skip("tcsh") else {
            return;
        };
        // The `:` lines must run no command, even with awkward characters.
        let dir = tempfile::tempdir().expect("tempdir");
        let hint = usage_hint(
            Shell::Tcsh,
            "touch canary; it's ~/x! {a,b} $HOME `touch canary`",
        );
        std::fs::write(dir.path().join("out"), &hint).expect("write");
        for script in ["eval `cat out`", "eval \"`cat out`\"", "source out"] {
            let out = Command::new(&program)
                .args(["-f", "-c", script])
                .current_dir(dir.path())
                .output()
                .expect("run tcsh");
            assert!(
                out.status.success() && out.stderr.is_empty() && out.stdout.is_empty(),
                "{script}: {out:?}"
            );
            assert!(
                !dir.path().join("canary").exists(),
                "{script} ran a command"
            );
        }
    }

    const PWSH_REPORT: &str = "foreach ($n in $env:MT_NAMES.Split(',')) { \
         $v = [Environment]::GetEnvironmentVariable($n); \
         if ($null -ne $v) { [Console]::Out.Write($n + '=' + $v + [char]0) } }";

    #[test]
    fn round_trip_pwsh() {
        let Some(program) = program_or_skip("pwsh") else {
            return;
        };
        let report = format!("{{HINT}}; {PWSH_REPORT}");
        let source = format!(
            "Get-Content -Raw -LiteralPath $env:MT_FILE | Invoke-Expression; {PWSH_REPORT}"
        );
        round_trip(
            Shell::PowerShell,
            &program,
            &["-NoProfile", "-NonInteractive", "-Command"],
            &[
                (report.as_str(), Arrival::Exact),
                (source.as_str(), Arrival::Exact),
            ],
            "cat $env:MT_FILE",
            |hint| {
                let eval = strip_comment(Shell::PowerShell)(hint);
                assert_eq!(eval, "& cat $env:MT_FILE | Invoke-Expression");
                eval
            },
        );
    }

    const EMACS_REPORT: &str = "(dolist (n (split-string (getenv \"MT_NAMES\") \",\")) \
         (let ((v (getenv n))) (when v (princ (concat n \"=\" v \"\\0\")))))";

    #[test]
    fn round_trip_emacs() {
        let Some(program) = program_or_skip("emacs") else {
            return;
        };
        let report = format!("(progn {{HINT}} {EMACS_REPORT})");
        let load = format!("(progn (load (getenv \"MT_FILE\") nil t t) {EMACS_REPORT})");
        round_trip(
            Shell::Emacs,
            &program,
            &["-Q", "--batch", "--eval"],
            &[
                (report.as_str(), Arrival::Exact),
                (load.as_str(), Arrival::Exact),
            ],
            "cat \"$MT_FILE\"",
            |hint| {
                let eval = strip_comment(Shell::Emacs)(hint);
                assert_eq!(
                    eval,
                    "(with-temp-buffer (shell-command \"cat \\\"$MT_FILE\\\"\" \
                     (current-buffer)) (eval-buffer))"
                );
                eval
            },
        );
    }

    #[test]
    fn hints_for_every_shell_name_the_command() {
        for shell in ALL {
            let hint = usage_hint(shell, "machine env dev");
            assert!(hint.contains("machine env dev"), "{shell}: {hint}");
            assert!(hint.starts_with(&format!("{} {HINT_INTRO}\n", shell.comment())));
        }
    }
}
