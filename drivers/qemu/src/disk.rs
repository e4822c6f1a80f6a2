//! The machine's disk: a qcow2 overlay on the (cached, shared, read-only)
//! boot image, made with `qemu-img`, so a machine costs only the blocks it
//! writes and the image is downloaded once for all machines.

use std::path::Path;

use serde::Deserialize;

/// A `qemu-img` failure, with the command that failed.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed: {stderr}")]
    Failed { command: String, stderr: String },
    #[error("`{command}` printed what it should not: {message}")]
    Output { command: String, message: String },
}

/// What `qemu-img info` says of an image.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Info {
    pub format: String,
    #[serde(rename = "virtual-size")]
    pub virtual_size: u64,
}

async fn run(qemu_img: &Path, args: &[&str]) -> Result<String, DiskError> {
    let command = format!("{} {}", qemu_img.display(), args.join(" "));
    let out = tokio::process::Command::new(qemu_img)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| DiskError::Spawn {
            program: qemu_img.display().to_string(),
            source,
        })?;
    if !out.status.success() {
        return Err(DiskError::Failed {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    String::from_utf8(out.stdout).map_err(|e| DiskError::Output {
        command,
        message: e.to_string(),
    })
}

/// The image's format and virtual size.
pub async fn info(qemu_img: &Path, image: &Path) -> Result<Info, DiskError> {
    let path = image.display().to_string();
    let text = run(qemu_img, &["info", "--output=json", &path]).await?;
    serde_json::from_str(&text).map_err(|e| DiskError::Output {
        command: format!("{} info --output=json {path}", qemu_img.display()),
        message: e.to_string(),
    })
}

/// Makes `target`, a qcow2 overlay of `base` with `size` bytes.
pub async fn overlay(
    qemu_img: &Path,
    base: &Path,
    base_format: &str,
    target: &Path,
    size: u64,
) -> Result<(), DiskError> {
    let base = base.display().to_string();
    let target = target.display().to_string();
    let size = size.to_string();
    run(
        qemu_img,
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            base_format,
            "-b",
            &base,
            &target,
            &size,
        ],
    )
    .await
    .map(|_| ())
}
