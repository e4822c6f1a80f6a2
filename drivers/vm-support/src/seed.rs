//! The cloud-init NoCloud seed: a small FAT filesystem labelled `CIDATA`
//! holding `user-data` and `meta-data`, attached to a VM as a second disk.
//! cloud-init in the image reads it at first boot and makes the machine's
//! user with its SSH key and passwordless sudo, and sets the hostname.
//!
//! The filesystem is written in-process (the `fatfs` crate), so creating a
//! VM needs no `genisoimage`, `mkfs.vfat` or loop device on the host.
//! NoCloud accepts vfat as well as iso9660 for its seed.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;

/// A seed image is this big: FAT12, far more than two small files need.
const SEED_BYTES: u64 = 1024 * 1024;

/// Failed to write a seed.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the cloud-init seed {path}: {source}")]
pub struct SeedError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// What the seed tells cloud-init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoCloud {
    /// Changes whenever the machine is re-created: cloud-init runs its
    /// first-boot modules once per instance id.
    pub instance_id: String,
    pub hostname: String,
    /// The login user made for `machine`, with passwordless sudo.
    pub user: String,
    /// authorized_keys lines.
    pub authorized_keys: Vec<String>,
    /// A `network-config` document; `None` keeps cloud-init's fallback
    /// (DHCP on the first NIC only).
    pub network_config: Option<String>,
}

/// A `network-config` (version 2) that runs DHCP on every ethernet NIC:
/// what a VM with a second, host-only NIC needs, since cloud-init's
/// fallback configures only the first.
pub fn dhcp_on_every_nic() -> String {
    let config = json!({
        "version": 2,
        "ethernets": {
            "all": {
                "match": { "name": "e*" },
                "dhcp4": true,
            },
        },
    });
    format!("{config:#}\n")
}

impl NoCloud {
    /// The `#cloud-config` document. Its body is JSON, which is YAML too:
    /// no value (a key comment, a hostname) can break out of its string.
    pub fn user_data(&self) -> String {
        let config = json!({
            "hostname": self.hostname,
            "preserve_hostname": false,
            "manage_etc_hosts": true,
            "ssh_pwauth": false,
            "disable_root": true,
            "users": [{
                "name": self.user,
                "shell": "/bin/bash",
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "lock_passwd": true,
                "ssh_authorized_keys": self.authorized_keys,
            }],
        });
        format!("#cloud-config\n{config:#}\n")
    }

    /// The `meta-data` document.
    pub fn meta_data(&self) -> String {
        let meta = json!({
            "instance-id": self.instance_id,
            "local-hostname": self.hostname,
        });
        format!("{meta:#}\n")
    }

    /// Writes the seed as a FAT image at `path`, atomically: a crash leaves
    /// either no seed or a whole one.
    pub fn write_fat(&self, path: &Path) -> Result<(), SeedError> {
        let err = |source| SeedError {
            path: path.to_owned(),
            source,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile_in(dir).map_err(err)?;
        self.fill(tmp.file_mut()).map_err(err)?;
        tmp.persist(path).map_err(err)
    }

    fn fill(&self, file: &mut std::fs::File) -> std::io::Result<()> {
        file.set_len(SEED_BYTES)?;
        fatfs::format_volume(
            &mut *file,
            fatfs::FormatVolumeOptions::new()
                .volume_label(*b"CIDATA     ")
                .fat_type(fatfs::FatType::Fat12),
        )?;
        {
            let fs = fatfs::FileSystem::new(&mut *file, fatfs::FsOptions::new())?;
            let mut files = vec![
                ("user-data", self.user_data()),
                ("meta-data", self.meta_data()),
            ];
            if let Some(network) = &self.network_config {
                files.push(("network-config", network.clone()));
            }
            for (name, body) in files {
                let mut f = fs.root_dir().create_file(name)?;
                f.truncate()?;
                f.write_all(body.as_bytes())?;
                f.flush()?;
            }
            fs.unmount()?;
        }
        file.sync_all()
    }
}

/// A temporary file next to the target, removed unless persisted.
struct TempFile {
    path: PathBuf,
    file: Option<std::fs::File>,
}

fn tempfile_in(dir: &Path) -> std::io::Result<TempFile> {
    for attempt in 0..100u32 {
        let path = dir.join(format!(".seed-{}-{attempt}.tmp", std::process::id()));
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(file) => {
                return Ok(TempFile {
                    path,
                    file: Some(file),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free temporary file name"))
}

impl TempFile {
    fn file_mut(&mut self) -> &mut std::fs::File {
        self.file.as_mut().expect("open until persisted")
    }

    fn persist(mut self, to: &Path) -> std::io::Result<()> {
        drop(self.file.take());
        std::fs::rename(&self.path, to)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn seed() -> NoCloud {
        NoCloud {
            instance_id: "machine-dev-1".into(),
            hostname: "dev".into(),
            user: "machine".into(),
            authorized_keys: vec!["ssh-ed25519 AAAAC3Nz key \"quoted\": yes".into()],
            network_config: Some(dhcp_on_every_nic()),
        }
    }

    #[test]
    fn user_data_is_cloud_config_with_the_key_intact() {
        let text = seed().user_data();
        let (first, body) = text.split_once('\n').unwrap();
        assert_eq!(first, "#cloud-config");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["hostname"], "dev");
        assert_eq!(v["users"][0]["name"], "machine");
        assert_eq!(
            v["users"][0]["ssh_authorized_keys"][0],
            "ssh-ed25519 AAAAC3Nz key \"quoted\": yes"
        );
    }

    #[test]
    fn fat_image_has_label_and_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed.img");
        seed().write_fat(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), SEED_BYTES);
        // Only the seed is left: no temporary file.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        let file = std::fs::File::open(&path).unwrap();
        let fs = fatfs::FileSystem::new(file, fatfs::FsOptions::new()).unwrap();
        assert_eq!(fs.volume_label(), "CIDATA");
        let mut text = String::new();
        fs.root_dir()
            .open_file("user-data")
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, seed().user_data());
        text.clear();
        fs.root_dir()
            .open_file("meta-data")
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert!(
            text.contains("\"instance-id\": \"machine-dev-1\""),
            "{text}"
        );
        text.clear();
        fs.root_dir()
            .open_file("network-config")
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, dhcp_on_every_nic());
    }

    #[test]
    fn unwritable_directory_names_the_path() {
        let err = seed()
            .write_fat(Path::new("/nonexistent-dir/seed.img"))
            .unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent-dir/seed.img"),
            "{err}"
        );
    }
}
