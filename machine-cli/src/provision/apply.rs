//! The root script that applies a machine's configuration to its host in
//! one SSH round trip: the hostname, the files (TLS certificates, Docker's
//! configuration), then the service manager's commands.
//!
//! The script travels on the stdin of `sh -s`, never on a command line, so
//! the server key is not visible in the host's process list. It is one
//! `{ ... }` group: the shell parses a group to its end before running any
//! of it, so a connection cut mid-script runs nothing, instead of a
//! half-written certificate. Each file is written next to its place and
//! renamed over it, with its mode from the umask it was created under.

use super::engine::sh_quote;

/// The exit status the script ends with when the final service command
/// (restarting Docker) fails, to tell that apart from the steps before.
pub const RESTART_FAILED: u32 = 90;

/// A text file to write.
#[derive(Debug, Clone)]
pub struct TextFile {
    pub path: String,
    /// Permission bits, without execute bits (0644, 0600).
    pub mode: u32,
    pub content: String,
}

/// What to apply.
#[derive(Debug, Default, Clone)]
pub struct Apply {
    /// Set `hostname`, `/etc/hostname` and a `127.0.1.1` line in
    /// `/etc/hosts` to this, if any.
    pub hostname: Option<String>,
    /// Directories to create first.
    pub dirs: Vec<String>,
    pub files: Vec<TextFile>,
    /// Files to delete (left by an earlier configuration).
    pub remove: Vec<String>,
    /// Shell commands run after the files are in place.
    pub then: Vec<String>,
    /// The last command (the restart); its failure exits with
    /// [`RESTART_FAILED`].
    pub finally: Option<String>,
}

impl Apply {
    /// The script, for `sh -s` run as root.
    pub fn script(&self) -> String {
        let mut s = String::from("{\nset -e\n");
        if let Some(name) = &self.hostname {
            let q = sh_quote(name);
            s.push_str(&format!(
                "hostname {q}\nprintf '%s\\n' {q} > /etc/hostname\n\
                 grep -q {pattern} /etc/hosts || printf '127.0.1.1 %s\\n' {q} >> /etc/hosts\n",
                pattern = sh_quote(&format!("[[:space:]]{}$", regex_escape(name)))
            ));
        }
        if !self.dirs.is_empty() {
            s.push_str(&format!("mkdir -p {}\n", words(&self.dirs)));
        }
        let temp = |f: &TextFile| format!("{}.machine-new", f.path);
        if !self.files.is_empty() {
            // A temporary file left by a cut run would keep its old mode.
            let temps: Vec<String> = self.files.iter().map(temp).collect();
            s.push_str(&format!("rm -f {}\n", words(&temps)));
        }
        for f in &self.files {
            // Created 0666 & !umask: the umask gives the exact mode for
            // files without execute bits, with no chmod to run.
            let umask = !f.mode & 0o777;
            s.push_str(&format!(
                "umask {umask:03o}\nprintf '%s' {content} > {tmp}\nmv -f {tmp} {path}\n",
                content = sh_quote(&f.content),
                tmp = sh_quote(&temp(f)),
                path = sh_quote(&f.path),
            ));
        }
        if !self.remove.is_empty() {
            s.push_str(&format!("rm -f {}\n", words(&self.remove)));
        }
        for c in &self.then {
            s.push_str(c);
            s.push('\n');
        }
        if let Some(last) = &self.finally {
            s.push_str(&format!("{{ {last}; }} || exit {RESTART_FAILED}\n"));
        }
        s.push_str("}\n");
        s
    }
}

fn words(items: &[String]) -> String {
    items
        .iter()
        .map(|i| sh_quote(i))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Escapes a hostname for a basic regular expression (grep).
fn regex_escape(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if ".[]*^$\\".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(script: &str) -> std::process::Output {
        use std::io::Write;
        let mut child = std::process::Command::new("sh")
            .arg("-s")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    fn mode(path: &std::path::Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn writes_files_with_their_modes_and_exact_content() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("sub/key.pem");
        let conf = dir.path().join("sub/conf");
        let tricky = "-----BEGIN-----\nit's \"quoted\" $HOME `x` \\n\n}\n";
        let apply = Apply {
            dirs: vec![dir.path().join("sub").display().to_string()],
            files: vec![
                TextFile {
                    path: key.display().to_string(),
                    mode: 0o600,
                    content: tricky.into(),
                },
                TextFile {
                    path: conf.display().to_string(),
                    mode: 0o644,
                    content: "a=1\n".into(),
                },
            ],
            then: vec![format!("cat {}", sh_quote(&conf.display().to_string()))],
            ..Apply::default()
        };
        let out = run(&apply.script());
        assert!(out.status.success(), "{out:?}");
        assert_eq!(std::fs::read_to_string(&key).unwrap(), tricky);
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&conf), 0o644);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "a=1\n");
        let left: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 2, "temporary files left: {left:?}");
    }

    #[test]
    fn a_cut_script_runs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let apply = Apply {
            then: vec![
                format!("touch {}", sh_quote(&marker.display().to_string())),
                "true".into(),
            ],
            ..Apply::default()
        };
        let script = apply.script();
        let cut = &script[..script.len() - 3];
        let out = run(cut);
        assert!(!out.status.success());
        assert!(!marker.exists(), "part of a cut script ran");
    }

    #[test]
    fn a_failing_last_command_has_its_own_status() {
        let apply = Apply {
            then: vec!["true".into()],
            finally: Some("echo restarting >&2; false".into()),
            ..Apply::default()
        };
        let out = run(&apply.script());
        assert_eq!(out.status.code(), Some(RESTART_FAILED as i32));
        let failing_step = Apply {
            then: vec!["false".into()],
            finally: Some("true".into()),
            ..Apply::default()
        };
        let out = run(&failing_step.script());
        assert_eq!(out.status.code(), Some(1));
    }

    #[test]
    fn hostname_pattern_is_escaped() {
        assert_eq!(regex_escape("a.b"), "a\\.b");
    }
}
