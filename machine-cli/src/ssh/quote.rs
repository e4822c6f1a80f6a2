//! Building the remote shell commands: POSIX single-quote quoting, the
//! `sudo` wrapper, and the scripts behind `upload` and `download`. SSH
//! hands the server one command string that the user's login shell parses,
//! so every value we interpolate has to be quoted for `sh`.

/// Quotes `s` as one word for a POSIX shell: inside single quotes nothing
/// is special except the single quote itself, which becomes `'\''` (close,
/// escaped quote, reopen).
pub fn shell_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// `command` run as root by a non-root user: `sudo -n` so that a missing
/// NOPASSWD rule fails at once instead of waiting for a password nobody
/// will type, and `sh -c` so pipes, redirections and `&&` in `command`
/// run as root too, not only its first word.
pub fn sudo_command(command: &str) -> String {
    format!("sudo -n sh -c {}", shell_quote(command))
}

/// The directory and file name parts of a remote path.
fn split_remote_path(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(0) => ("/", &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (".", path),
    }
}

/// The script that writes stdin to `path` atomically: into a temporary file
/// made by `mktemp` in the same directory (so the final `mv` is a rename
/// on one file system, and the bytes are never readable by others: mktemp
/// creates the file 0600), checked for the expected size (a dropped
/// connection ends `cat` with a short file and status 0, which must not
/// replace the old file), then given its mode and renamed into place.
/// The parent directory is created if missing.
pub(crate) fn upload_script(path: &str, len: usize, mode: u32) -> String {
    let (dir, name) = split_remote_path(path);
    let template = format!("{dir}/.{name}.machine-XXXXXXXX");
    format!(
        "set -e; mkdir -p {dir}; tmp=$(mktemp {template}); trap 'rm -f \"$tmp\"' EXIT; \
         cat > \"$tmp\"; n=$(wc -c < \"$tmp\"); \
         if [ $n -ne {len} ]; then echo \"received $n of {len} bytes\" >&2; exit 1; fi; \
         chmod {mode:04o} \"$tmp\"; mv -f \"$tmp\" {path}",
        dir = shell_quote(dir),
        template = shell_quote(&template),
        path = shell_quote(path),
        mode = mode & 0o7777,
    )
}

/// The command that prints a remote file.
pub(crate) fn download_command(path: &str) -> String {
    format!("cat -- {}", shell_quote(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `sh -c <script>` locally and returns its stdout: the quoting
    /// is checked by a real shell, not by string comparison alone.
    fn sh(script: &str) -> String {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .output()
            .expect("run sh");
        assert!(out.status.success(), "sh -c {script:?} failed: {out:?}");
        String::from_utf8(out.stdout).expect("utf-8")
    }

    #[test]
    fn quotes_plain_words_and_specials() {
        assert_eq!(shell_quote("abc"), "'abc'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote("$HOME `x` \"y\""), "'$HOME `x` \"y\"'");
    }

    #[test]
    fn quoted_strings_survive_a_real_shell() {
        for s in [
            "plain",
            "it's",
            "'",
            "''",
            "a'b'c",
            "$(echo pwned)",
            "`echo pwned`",
            "back\\slash",
            "new\nline",
            "semi; colon && pipe | star * ?",
            "tab\there",
            "ünïcödé",
        ] {
            let printed = sh(&format!("printf %s {}", shell_quote(s)));
            assert_eq!(printed, s, "quoting {s:?}");
        }
    }

    #[test]
    fn sudo_wraps_the_whole_command() {
        assert_eq!(
            sudo_command("echo 'a b' > /etc/x && id"),
            "sudo -n sh -c 'echo '\\''a b'\\'' > /etc/x && id'"
        );
        // Replacing `sudo -n` by a shell that only prints its arguments
        // shows what sudo would receive: `sh`, `-c` and the command intact.
        let cmd = "echo 'a b' > /etc/x && id; printf \"%s\" \"$HOME\"";
        let wrapped = sudo_command(cmd);
        let rest = wrapped.strip_prefix("sudo -n ").expect("sudo prefix");
        let printed = sh(&format!("printf '%s\\n' {rest}"));
        assert_eq!(printed, format!("sh\n-c\n{cmd}\n"));
    }

    #[test]
    fn sudo_runs_the_command_in_sh() {
        // With a stand-in `sudo` on PATH that drops `-n` and executes the
        // rest, the wrapped command behaves as the original does.
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = dir.path().join("sudo");
        std::fs::write(&fake, "#!/bin/sh\nshift\nexec \"$@\"\n").expect("write fake sudo");
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let cmd = "x='it'\\''s'; echo \"$x\" | tr a-z A-Z";
        let out = sh(&format!(
            "PATH={}:$PATH; {}",
            shell_quote(&dir.path().to_string_lossy()),
            sudo_command(cmd)
        ));
        assert_eq!(out, "IT'S\n");
    }

    #[test]
    fn splits_remote_paths() {
        assert_eq!(
            split_remote_path("/etc/docker/ca.pem"),
            ("/etc/docker", "ca.pem")
        );
        assert_eq!(split_remote_path("/x"), ("/", "x"));
        assert_eq!(split_remote_path("file"), (".", "file"));
        assert_eq!(split_remote_path("a/b"), ("a", "b"));
    }

    #[test]
    fn upload_script_writes_atomically_with_mode_and_checks_size() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("sub dir/it's.pem");
        let path = target.to_string_lossy().into_owned();
        let data = "hello\n";
        let script = upload_script(&path, data.len(), 0o640);
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("spawn sh");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(data.as_bytes())
            .expect("write");
        assert!(child.wait().expect("wait").success(), "{script}");
        assert_eq!(std::fs::read_to_string(&target).expect("read"), data);
        let mode = std::fs::metadata(&target)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o640);
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(target.parent().expect("parent"))
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");

        // A short stream (a dropped connection) leaves the old file alone.
        let script = upload_script(&path, 100, 0o600);
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run sh");
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("received 0 of 100 bytes"),
            "{out:?}"
        );
        assert_eq!(std::fs::read_to_string(&target).expect("read"), data);
        let names = std::fs::read_dir(target.parent().expect("parent"))
            .expect("read_dir")
            .count();
        assert_eq!(names, 1);
    }

    #[test]
    fn upload_script_survives_the_sudo_wrapper() {
        // The script is full of quotes; wrapped for sudo (here a stand-in
        // that drops `-n` and runs the rest) it must still work.
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = dir.path().join("sudo");
        std::fs::write(&fake, "#!/bin/sh\nshift\nexec \"$@\"\n").expect("write fake sudo");
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let target = dir.path().join("a 'b'/c.txt");
        let data = b"bytes\x00\xff";
        let script = format!(
            "PATH={}:$PATH; {}",
            shell_quote(&dir.path().to_string_lossy()),
            sudo_command(&upload_script(&target.to_string_lossy(), data.len(), 0o600))
        );
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("spawn sh");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(data)
            .expect("write");
        assert!(child.wait().expect("wait").success(), "{script}");
        assert_eq!(std::fs::read(&target).expect("read"), data);
    }

    #[test]
    fn download_command_quotes_the_path() {
        assert_eq!(download_command("/tmp/a b"), "cat -- '/tmp/a b'");
    }
}
