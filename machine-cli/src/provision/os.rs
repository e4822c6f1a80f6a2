//! Which operating system a host runs, from its `/etc/os-release`, and the
//! provisioner family that follows from it. Families are tried in a fixed
//! order, by `ID` first and then by each `ID_LIKE` entry.

use std::fmt;

/// The provisioners, in the order they are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Debian,
    Ubuntu,
    Fedora,
    RedHat,
    Suse,
    Arch,
    Alpine,
    Flatcar,
}

impl Family {
    const ORDER: [Family; 8] = [
        Family::Debian,
        Family::Ubuntu,
        Family::Fedora,
        Family::RedHat,
        Family::Suse,
        Family::Arch,
        Family::Alpine,
        Family::Flatcar,
    ];

    fn ids(self) -> &'static [&'static str] {
        match self {
            Family::Debian => &["debian", "raspbian"],
            Family::Ubuntu => &["ubuntu"],
            Family::Fedora => &["fedora"],
            Family::RedHat => &["centos", "rhel", "rocky", "almalinux", "ol"],
            Family::Suse => &[
                "opensuse",
                "opensuse-leap",
                "opensuse-tumbleweed",
                "sles",
                "suse",
            ],
            Family::Arch => &["arch", "archarm", "manjaro"],
            Family::Alpine => &["alpine"],
            Family::Flatcar => &["flatcar", "coreos", "fedora-coreos"],
        }
    }

    /// Whether the host's init is OpenRC (Alpine) rather than systemd.
    pub fn openrc(self) -> bool {
        self == Family::Alpine
    }

    /// The command that installs the distribution's Docker package.
    pub fn package_install(self) -> Option<&'static str> {
        Some(match self {
            Family::Debian | Family::Ubuntu => {
                "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io"
            }
            Family::Fedora => "dnf install -y moby-engine",
            Family::RedHat => "yum install -y docker",
            Family::Suse => "zypper -n install docker",
            Family::Arch => "pacman -Sy --noconfirm docker",
            Family::Alpine => "apk add --no-cache docker",
            // Docker ships with the image; there is no package manager.
            Family::Flatcar => return None,
        })
    }

    /// The command that upgrades an installed package to its newest version.
    pub fn package_upgrade(self, package: &str) -> Option<String> {
        Some(match self {
            Family::Debian | Family::Ubuntu => format!(
                "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --only-upgrade {package}"
            ),
            Family::Fedora => format!("dnf upgrade -y {package}"),
            Family::RedHat => format!("yum update -y {package}"),
            Family::Suse => format!("zypper -n update {package}"),
            Family::Arch => format!("pacman -Sy --noconfirm {package}"),
            Family::Alpine => format!("apk upgrade --no-cache {package}"),
            Family::Flatcar => return None,
        })
    }

    /// The command that names the package owning a file.
    pub fn package_owner(self, path: &str) -> Option<String> {
        Some(match self {
            Family::Debian | Family::Ubuntu => format!("dpkg-query -S {path} | cut -d: -f1"),
            Family::Fedora | Family::RedHat | Family::Suse => {
                format!("rpm -qf --qf '%{{NAME}}' {path}")
            }
            Family::Arch => format!("pacman -Qqo {path}"),
            Family::Alpine => format!("apk info -Wq {path} | head -n1 | sed 's/-[0-9].*//'"),
            Family::Flatcar => return None,
        })
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Debian => "Debian",
            Family::Ubuntu => "Ubuntu",
            Family::Fedora => "Fedora",
            Family::RedHat => "Red Hat family",
            Family::Suse => "openSUSE/SLES",
            Family::Arch => "Arch",
            Family::Alpine => "Alpine",
            Family::Flatcar => "Flatcar/CoreOS",
        })
    }
}

/// The fields of `/etc/os-release` that matter here.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OsRelease {
    pub id: String,
    pub id_like: Vec<String>,
    pub version_id: String,
    pub pretty_name: String,
}

impl OsRelease {
    pub fn parse(text: &str) -> Self {
        let mut os = OsRelease::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value
                .trim()
                .trim_matches(|c| c == '"' || c == '\'')
                .to_owned();
            match key.trim() {
                "ID" => os.id = value.to_lowercase(),
                "ID_LIKE" => {
                    os.id_like = value.split_whitespace().map(str::to_lowercase).collect();
                }
                "VERSION_ID" => os.version_id = value,
                "PRETTY_NAME" => os.pretty_name = value,
                _ => {}
            }
        }
        os
    }

    /// The provisioner for this system: `ID` first, then each `ID_LIKE`.
    pub fn family(&self) -> Option<Family> {
        std::iter::once(&self.id)
            .chain(self.id_like.iter())
            .find_map(|id| {
                Family::ORDER
                    .into_iter()
                    .find(|f| f.ids().contains(&id.as_str()))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_by_id_then_id_like() {
        let debian = OsRelease::parse(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
        );
        assert_eq!(debian.family(), Some(Family::Debian));
        assert_eq!(debian.pretty_name, "Debian GNU/Linux 12 (bookworm)");
        let mint = OsRelease::parse("ID=linuxmint\nID_LIKE=\"ubuntu debian\"\n");
        assert_eq!(mint.family(), Some(Family::Ubuntu));
        let rocky = OsRelease::parse("ID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\n");
        assert_eq!(rocky.family(), Some(Family::RedHat));
        let alma = OsRelease::parse("ID=weird\nID_LIKE=\"rhel centos fedora\"\n");
        assert_eq!(alma.family(), Some(Family::RedHat));
        assert_eq!(
            OsRelease::parse("ID=alpine\n").family(),
            Some(Family::Alpine)
        );
        assert!(Family::Alpine.openrc());
        assert_eq!(OsRelease::parse("ID=plan9\n").family(), None);
    }
}
