//! Commands that work on a machine over SSH: `ssh`, `scp`, `provision`,
//! `regenerate-certs` and `upgrade`. All use the CLI's own SSH client; no
//! ssh or scp binary is needed.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use crate::context::Context;
use crate::machine::{self, Target, names_or_default};
use crate::provision::{self, engine::sh_quote};
use crate::ssh::Session;
use crate::ui;

/// Opens an SSH session to a running machine.
async fn session(ctx: &Context, name: &str) -> anyhow::Result<(Target, Session)> {
    let t = machine::load(ctx, name)?;
    let conn = t.running_connection(ctx).await?;
    let target = provision::ssh_target(&t, &conn)?;
    let s = Session::connect(&target, std::time::Duration::from_secs(30)).await?;
    Ok((t, s))
}

pub async fn ssh(ctx: &Context, name: &str, command: Vec<String>) -> anyhow::Result<ExitCode> {
    let (_t, s) = session(ctx, name).await?;
    let command = command
        .iter()
        .skip_while(|a| a.as_str() == "--")
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    // A login shell can last for hours; the driver is not needed for it.
    let (status, ()) = tokio::join!(
        s.interactive((!command.is_empty()).then_some(command.as_str())),
        ctx.host.shutdown()
    );
    s.close().await;
    let status = status?;
    Ok(ExitCode::from(u8::try_from(status).unwrap_or(255)))
}

/// One side of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    Local(PathBuf),
    Remote { machine: String, path: String },
}

fn place(ctx: &Context, arg: &str) -> Place {
    // `NAME:PATH` when NAME is a machine; anything else is a local path,
    // so `./a:b` stays local.
    if let Some((machine, path)) = arg.split_once(':')
        && ctx.store.exists(machine)
    {
        return Place::Remote {
            machine: machine.to_owned(),
            path: if path.is_empty() {
                ".".into()
            } else {
                path.to_owned()
            },
        };
    }
    Place::Local(PathBuf::from(arg))
}

/// What a copy carries: one file, or a directory as a tar archive.
enum Payload {
    File { name: String, bytes: Vec<u8> },
    Tree { name: String, tar: Vec<u8> },
}

fn base_name(path: &str) -> String {
    Path::new(path.trim_end_matches('/'))
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_owned())
}

async fn read_source(ctx: &Context, from: &Place, recursive: bool) -> anyhow::Result<Payload> {
    match from {
        Place::Local(p) => {
            let name = base_name(&p.to_string_lossy());
            if p.is_dir() {
                if !recursive {
                    anyhow::bail!(
                        "{} is a directory\n  hint: use -r to copy directories",
                        p.display()
                    );
                }
                let mut builder = tar::Builder::new(Vec::new());
                builder.follow_symlinks(false);
                builder
                    .append_dir_all(&name, p)
                    .with_context(|| format!("cannot read {}", p.display()))?;
                Ok(Payload::Tree {
                    name,
                    tar: builder.into_inner()?,
                })
            } else {
                let bytes =
                    std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
                Ok(Payload::File { name, bytes })
            }
        }
        Place::Remote { machine, path } => {
            let (_t, s) = session(ctx, machine).await?;
            let result = async {
                let q = sh_quote(path);
                let kind = s.run(&format!("if [ -d {q} ]; then echo dir; elif [ -e {q} ]; then echo file; else echo none; fi")).await?;
                let name = base_name(path);
                match kind.trim() {
                    "dir" if !recursive => anyhow::bail!("{machine}:{path} is a directory\n  hint: use -r to copy directories"),
                    "dir" => {
                        let parent = Path::new(path.trim_end_matches('/')).parent().map(|p| p.to_string_lossy().into_owned()).filter(|p| !p.is_empty()).unwrap_or_else(|| ".".into());
                        let out = s.exec(&format!("tar cf - -C {} {}", sh_quote(&parent), sh_quote(&name))).await?;
                        if out.status != 0 {
                            anyhow::bail!("cannot archive {machine}:{path}: {}", String::from_utf8_lossy(&out.stderr).trim());
                        }
                        Ok(Payload::Tree { name, tar: out.stdout })
                    }
                    "file" => Ok(Payload::File { name, bytes: s.download(path).await? }),
                    _ => anyhow::bail!("{machine}:{path}: no such file or directory"),
                }
            }
            .await;
            s.close().await;
            result
        }
    }
}

async fn write_destination(ctx: &Context, to: &Place, payload: Payload) -> anyhow::Result<()> {
    match to {
        Place::Local(p) => match payload {
            Payload::File { name, bytes } => {
                let dest = if p.is_dir() { p.join(&name) } else { p.clone() };
                std::fs::write(&dest, bytes)
                    .with_context(|| format!("cannot write {}", dest.display()))?;
                Ok(())
            }
            Payload::Tree { name, tar } => {
                // As scp -r: into an existing directory, or as the new name.
                let unpack_into = tempfile::tempdir_in(
                    p.parent()
                        .filter(|d| !d.as_os_str().is_empty())
                        .unwrap_or(Path::new(".")),
                )?;
                tar::Archive::new(tar.as_slice())
                    .unpack(unpack_into.path())
                    .context("cannot unpack the copied directory")?;
                let unpacked = unpack_into.path().join(&name);
                let dest = if p.is_dir() { p.join(&name) } else { p.clone() };
                std::fs::rename(&unpacked, &dest)
                    .with_context(|| format!("cannot create {}", dest.display()))?;
                Ok(())
            }
        },
        Place::Remote { machine, path } => {
            let (_t, s) = session(ctx, machine).await?;
            let result = async {
                let q = sh_quote(path);
                let is_dir = s.run(&format!("[ -d {q} ] && echo yes || true")).await?.trim() == "yes";
                match payload {
                    Payload::File { name, bytes } => {
                        let dest = if is_dir { format!("{}/{name}", path.trim_end_matches('/')) } else { path.clone() };
                        upload_as_user(&s, &dest, &bytes, 0o644).await?;
                    }
                    Payload::Tree { name, tar } => {
                        let tmp = format!("/tmp/.machine-scp-{}.tar", std::process::id());
                        upload_as_user(&s, &tmp, &tar, 0o600).await?;
                        let script = if is_dir {
                            format!("tar xf {t} -C {q}; rc=$?; rm -f {t}; exit $rc", t = sh_quote(&tmp))
                        } else {
                            // Unpack next to the destination, then take its name.
                            format!(
                                "d=$(mktemp -d \"$(dirname {q})/.machine-scp-XXXXXX\") && tar xf {t} -C \"$d\" && mv \"$d\"/{n} {q}; rc=$?; rm -rf \"$d\" {t}; exit $rc",
                                t = sh_quote(&tmp),
                                n = sh_quote(&name)
                            )
                        };
                        s.run(&script).await?;
                    }
                }
                anyhow::Ok(())
            }
            .await;
            s.close().await;
            result
        }
    }
}

/// Writes a file as the SSH user (scp semantics: no sudo), through a
/// temporary file renamed into place.
async fn upload_as_user(s: &Session, path: &str, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let q = sh_quote(path);
    let tmp = sh_quote(&format!("{path}.machine-tmp"));
    let script = format!("cat > {tmp} && chmod {mode:o} {tmp} && mv -f {tmp} {q}");
    let out = s.exec_with_input(&script, bytes).await?;
    if out.status != 0 {
        anyhow::bail!(
            "cannot write {path} on machine `{}`: {}",
            s.target().machine,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

pub async fn scp(
    ctx: &Context,
    recursive: bool,
    source: &str,
    destination: &str,
) -> anyhow::Result<ExitCode> {
    let from = place(ctx, source);
    let to = place(ctx, destination);
    if matches!((&from, &to), (Place::Local(_), Place::Local(_))) {
        anyhow::bail!(
            "neither {source} nor {destination} names a machine\n  hint: write remote paths as NAME:PATH, e.g. `machine scp ./file dev:/tmp/`"
        );
    }
    let payload = read_source(ctx, &from, recursive).await?;
    write_destination(ctx, &to, payload).await?;
    Ok(ExitCode::SUCCESS)
}

pub async fn provision_cmd(ctx: &Context, names: Vec<String>) -> anyhow::Result<ExitCode> {
    for name in names_or_default(names) {
        let _lock = ctx.store.lock(&name).await?;
        let mut t = machine::load(ctx, &name)?;
        let conn = t.running_connection(ctx).await?;
        match provision::provision(ctx, &mut t, &conn).await {
            Ok(()) => {
                t.record.phase = crate::store::Phase::Ready;
                t.record.error = None;
                ctx.store.save(&t.record)?;
            }
            Err(e) => {
                t.record.phase = crate::store::Phase::Failed;
                t.record.error = Some(format!(
                    "provisioning failed: {}",
                    format!("{e:#}").lines().next().unwrap_or_default()
                ));
                ctx.store.save(&t.record)?;
                return Err(e.context(format!("provisioning machine `{name}` failed")));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn confirm(question: &str) -> anyhow::Result<bool> {
    eprint!("{question} (y/n): ");
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

pub async fn regenerate_certs(
    ctx: &Context,
    force: bool,
    client_certs: bool,
    names: Vec<String>,
) -> anyhow::Result<ExitCode> {
    let names = names_or_default(names);
    if !force && !confirm("Regenerate TLS machine certs? Warning: this is irreversible.")? {
        anyhow::bail!("cancelled");
    }
    if client_certs {
        crate::certs::regenerate_client(&ctx.store.certs_dir(), provision::CERT_ORG)?;
        ui::info("Made a new client certificate");
    }
    for name in names {
        let _lock = ctx.store.lock(&name).await?;
        let t = machine::load(ctx, &name)?;
        let conn = t.running_connection(ctx).await?;
        ui::step(&format!("Regenerating TLS certificates for `{name}`"));
        provision::regenerate_certs(ctx, &t, &conn).await?;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn upgrade(ctx: &Context, names: Vec<String>) -> anyhow::Result<ExitCode> {
    for name in names_or_default(names) {
        let _lock = ctx.store.lock(&name).await?;
        let t = machine::load(ctx, &name)?;
        let conn = t.running_connection(ctx).await?;
        provision::upgrade(&t, &conn).await?;
    }
    Ok(ExitCode::SUCCESS)
}
