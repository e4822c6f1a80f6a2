//! `machine mount`: a machine's directory on a local one with sshfs, as
//! Docker Machine's `mount` did, but without the ssh binary and without
//! turning host-key checks off. sshfs runs `machine sftp-relay NAME` as
//! its "ssh"; the relay opens the machine's SFTP subsystem over the CLI's
//! own SSH client (pinned host key, the machine's key) and passes the
//! bytes through. `-u` unmounts with fusermount (umount on macOS).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context as _, bail};

use crate::context::Context;
use crate::machine;
use crate::provision;
use crate::ssh::Session;
use crate::ui;

/// `[USER@]NAME:PATH`, split.
#[derive(Debug, PartialEq, Eq)]
struct Source {
    user: Option<String>,
    name: String,
    path: String,
}

impl Source {
    fn parse(text: &str) -> anyhow::Result<Source> {
        let Some((who, path)) = text.split_once(':') else {
            bail!(
                "`{text}` does not say which machine: write NAME:PATH, e.g. `machine mount dev:/home/docker/src ./src`"
            );
        };
        let (user, name) = match who.split_once('@') {
            Some((user, name)) => (Some(user.to_owned()), name),
            None => (None, who),
        };
        if name.is_empty() || user.as_deref() == Some("") {
            bail!("`{text}` has no machine name before `:`; write [USER@]NAME:PATH");
        }
        Ok(Source {
            user,
            name: name.to_owned(),
            path: path.to_owned(),
        })
    }

    fn shown(&self) -> String {
        match &self.user {
            Some(u) => format!("{u}@{}:{}", self.name, self.path),
            None => format!("{}:{}", self.name, self.path),
        }
    }
}

pub async fn run(
    ctx: &Context,
    source: &str,
    dir: Option<PathBuf>,
    unmount: bool,
) -> anyhow::Result<ExitCode> {
    let src = Source::parse(source)?;
    let dir = match dir {
        Some(d) => d,
        None if src.path.is_empty() => bail!(
            "`{source}` names the home directory, which has no local path of the same name; give a local directory: machine mount {source} DIR"
        ),
        None => PathBuf::from(&src.path),
    };
    if unmount {
        unmount_dir(&dir)?;
        ui::info(&format!("Unmounted {}", dir.display()));
        return Ok(ExitCode::SUCCESS);
    }

    // Said here, with the machine's context, rather than by sshfs after
    // the relay failed.
    let t = machine::load(ctx, &src.name)?;
    t.running_connection(ctx).await?;
    let sshfs = find_program(&["sshfs"]).ok_or_else(|| {
        anyhow::anyhow!(
            "`machine mount` needs sshfs, which is not installed (it is not in PATH)\n  \
             hint: install it: `apt-get install sshfs` (Debian, Ubuntu), `dnf install fuse-sshfs` (Fedora), \
             or macFUSE and sshfs on macOS"
        )
    })?;
    if !dir.exists() {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot make the mount point {}", dir.display()))?;
    } else if !dir.is_dir() {
        bail!(
            "{} is not a directory; give a directory to mount {} on",
            dir.display(),
            src.shown()
        );
    }
    if let Some(what) = mounted_at(&dir) {
        bail!(
            "{} already has {what} mounted on it\n  hint: unmount it first: machine mount -u {} {}",
            dir.display(),
            src.shown(),
            dir.display()
        );
    }

    let status = Command::new(&sshfs)
        .arg("-o")
        .arg(sshfs_options(&relay_command(ctx, &src)?))
        .arg(src.shown())
        .arg(&dir)
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("cannot run {}", sshfs.display()))?;
    if !status.success() {
        bail!(
            "sshfs could not mount {} on {} ({status}; its messages are above)\n  \
             hint: `machine ssh {} ls -ld {}` shows whether the directory exists and can be read",
            src.shown(),
            dir.display(),
            src.name,
            if src.path.is_empty() { "." } else { &src.path },
        );
    }
    ui::info(&format!(
        "Mounted {} on {} (unmount: machine mount -u {} {})",
        src.shown(),
        dir.display(),
        src.shown(),
        dir.display()
    ));
    Ok(ExitCode::SUCCESS)
}

/// The command sshfs runs as `ssh`, in sshfs's `ssh_command` syntax:
/// words split at spaces, `\` escaping the next character.
fn relay_command(ctx: &Context, src: &Source) -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("cannot find the machine binary to give sshfs")?;
    // sshfs runs the relay again from its daemon (to reconnect), whose
    // working directory is `/`: every path must be absolute.
    let store = std::path::absolute(ctx.store.root())
        .with_context(|| format!("storage path {}", ctx.store.root().display()))?;
    let mut words: Vec<OsString> = vec![
        exe.into(),
        "--storage-path".into(),
        store.into(),
        "sftp-relay".into(),
    ];
    if let Some(u) = &src.user {
        words.push("--user".into());
        words.push(u.into());
    }
    words.push(src.name.clone().into());
    // sshfs appends ssh's options, some of which (`-s`) are also ours.
    words.push("--".into());
    let words = words
        .iter()
        .map(|w| {
            w.to_str()
                .map(|w| w.replace('\\', "\\\\").replace(' ', "\\ "))
                .with_context(|| {
                    format!("{} is not UTF-8, which sshfs cannot be given", w.display())
                })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(words.join(" "))
}

/// sshfs's `-o` value: the relay as `ssh_command` (commas and backslashes
/// escaped for FUSE's option parser), reconnecting when the connection
/// drops, and the remote user's files shown as the local user's.
fn sshfs_options(relay: &str) -> String {
    let relay = relay.replace('\\', "\\\\").replace(',', "\\,");
    format!("ssh_command={relay},reconnect,idmap=user")
}

/// What is mounted on `dir`, if anything (from /proc/self/mountinfo).
fn mounted_at(dir: &Path) -> Option<String> {
    let dir = std::fs::canonicalize(dir).ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS ... - FSTYPE SOURCE ...
        let mut fields = line.split(' ');
        let point = fields.nth(4)?;
        if Path::new(&unescape_mountinfo(point)) != dir {
            return None;
        }
        let (_, tail) = line.split_once(" - ")?;
        let mut tail = tail.split(' ');
        let fstype = tail.next()?;
        let source = tail.next().unwrap_or("?");
        Some(format!("{} ({fstype})", unescape_mountinfo(source)))
    })
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(octal) = field.get(i + 1..i + 4)
            && let Ok(b) = u8::from_str_radix(octal, 8)
        {
            out.push(b);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

fn unmount_dir(dir: &Path) -> anyhow::Result<()> {
    let (program, args): (PathBuf, Vec<&str>) = if cfg!(target_os = "linux") {
        let p = find_program(&["fusermount3", "fusermount"]).ok_or_else(|| {
            anyhow::anyhow!(
                "unmounting needs fusermount, which is not installed (it comes with sshfs's fuse3 package)"
            )
        })?;
        (p, vec!["-u"])
    } else {
        (PathBuf::from("umount"), Vec::new())
    };
    let out = Command::new(&program)
        .args(&args)
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", program.display()))?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr);
        let said = said.trim();
        let hint = if mounted_at(dir).is_none() && cfg!(target_os = "linux") {
            "nothing is mounted there; `machine mount -u` takes the local directory the machine's was mounted on"
        } else {
            "a program may still be using it (`fuser -m DIR` shows which); leave the directory and try again"
        };
        bail!(
            "unmounting {} failed: {} {} said: {said}\n  hint: {hint}",
            dir.display(),
            program.display(),
            args.join(" ")
        );
    }
    Ok(())
}

/// `machine sftp-relay NAME`: what sshfs runs as `ssh`. Its stdin and
/// stdout are sshfs's SFTP stream.
pub async fn sftp_relay(
    ctx: &Context,
    name: &str,
    user: Option<String>,
) -> anyhow::Result<ExitCode> {
    let t = machine::load(ctx, name)?;
    let conn = t.running_connection(ctx).await?;
    let mut target = provision::ssh_target(&t, &conn)?;
    if let Some(u) = user {
        target.user = u;
    }
    // The driver is not needed while the mount lasts.
    ctx.host.shutdown().await;
    let s = Session::connect(&target, std::time::Duration::from_secs(30)).await?;
    // Once SFTP runs, nothing more is worth saying, and sshfs's caller must
    // not wait for the end of a stderr this process would keep open for as
    // long as the mount lasts.
    let status = s.subsystem("sftp", silence_stderr).await;
    s.close().await;
    Ok(ExitCode::from(u8::try_from(status?).unwrap_or(255)))
}

fn silence_stderr() {
    #[cfg(unix)]
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 onto stderr of a descriptor this function owns.
        unsafe { libc::dup2(null.as_raw_fd(), libc::STDERR_FILENO) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_name_user_machine_and_path() {
        assert_eq!(
            Source::parse("dev:/srv/x").unwrap(),
            Source {
                user: None,
                name: "dev".into(),
                path: "/srv/x".into()
            }
        );
        assert_eq!(
            Source::parse("root@dev:").unwrap(),
            Source {
                user: Some("root".into()),
                name: "dev".into(),
                path: String::new()
            }
        );
        assert!(Source::parse("/srv/x").is_err());
        assert!(Source::parse(":/srv/x").is_err());
        assert!(Source::parse("@dev:/x").is_err());
    }

    #[test]
    fn the_relay_survives_both_parsers() {
        let relay = "/opt/my\\ tools/machine --storage-path /a,b/c sftp-relay dev";
        assert_eq!(
            sshfs_options(relay),
            "ssh_command=/opt/my\\\\ tools/machine --storage-path /a\\,b/c sftp-relay dev,reconnect,idmap=user"
        );
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo("/tmp/a\\040b"), "/tmp/a b");
        assert_eq!(unescape_mountinfo("/tmp/a\\134b"), "/tmp/a\\b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }
}
