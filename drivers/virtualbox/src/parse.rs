//! Readers for VBoxManage's output formats (as of VirtualBox 6.1 to 7.1):
//! `showvminfo --machinereadable`, the `Key:   value` blocks of
//! `list hostonlyifs` and `list dhcpservers`, `dhcpserver findlease`,
//! `showmediuminfo` and `hostonlyif create`.

use std::collections::HashMap;
use std::net::Ipv4Addr;

/// `showvminfo --machinereadable`: `key="value"` or `key=value` lines, the
/// key itself quoted when it has dashes (`"SATA-0-0"="/path/disk.vdi"`).
pub fn machine_readable(text: &str) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for line in text.lines() {
        let (key, value) = if let Some(rest) = line.strip_prefix('"') {
            match rest.split_once("\"=") {
                Some((k, v)) => (k, v),
                None => continue,
            }
        } else {
            match line.split_once('=') {
                Some((k, v)) => (k, v),
                None => continue,
            }
        };
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        map.insert(key.to_owned(), value.to_owned());
    }
    map
}

/// Splits `Key:   value` output into blocks separated by blank lines.
/// Indented lines (the nested configuration of `list dhcpservers`) are
/// skipped, so their keys cannot shadow the top-level ones.
fn blocks(text: &str) -> Vec<HashMap<String, String>> {
    let mut all = Vec::new();
    let mut current = HashMap::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                all.push(std::mem::take(&mut current));
            }
            continue;
        }
        if line.starts_with(char::is_whitespace) {
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            current.insert(k.trim().to_owned(), v.trim().to_owned());
        }
    }
    if !current.is_empty() {
        all.push(current);
    }
    all
}

/// One entry of `list hostonlyifs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostOnlyIf {
    pub name: String,
    pub ip: Option<Ipv4Addr>,
    pub mask: Option<Ipv4Addr>,
    /// The internal network name the DHCP servers are keyed by
    /// (`HostInterfaceNetworking-vboxnet0`).
    pub network_name: String,
}

pub fn host_only_ifs(text: &str) -> Vec<HostOnlyIf> {
    blocks(text)
        .into_iter()
        .filter_map(|b| {
            let name = b.get("Name")?.clone();
            Some(HostOnlyIf {
                ip: b.get("IPAddress").and_then(|v| v.parse().ok()),
                mask: b.get("NetworkMask").and_then(|v| v.parse().ok()),
                network_name: b
                    .get("VBoxNetworkName")
                    .cloned()
                    .unwrap_or_else(|| format!("HostInterfaceNetworking-{name}")),
                name,
            })
        })
        .collect()
}

/// One entry of `list dhcpservers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpServer {
    pub network_name: String,
    pub ip: Option<Ipv4Addr>,
    pub lower: Option<Ipv4Addr>,
    pub upper: Option<Ipv4Addr>,
    pub mask: Option<Ipv4Addr>,
    pub enabled: bool,
}

pub fn dhcp_servers(text: &str) -> Vec<DhcpServer> {
    let ip = |b: &HashMap<String, String>, keys: &[&str]| {
        keys.iter()
            .find_map(|k| b.get(*k))
            .and_then(|v| v.parse().ok())
    };
    blocks(text)
        .into_iter()
        .filter_map(|b| {
            Some(DhcpServer {
                network_name: b.get("NetworkName")?.clone(),
                // 6.1+ says `Dhcpd IP`; older releases said `IP`.
                ip: ip(&b, &["Dhcpd IP", "IP"]),
                lower: ip(&b, &["LowerIPAddress", "lowerIPAddress"]),
                upper: ip(&b, &["UpperIPAddress", "upperIPAddress"]),
                mask: ip(&b, &["NetworkMask"]),
                enabled: b.get("Enabled").is_some_and(|v| v == "Yes"),
            })
        })
        .collect()
}

/// A lease from `dhcpserver findlease`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub ip: Ipv4Addr,
    /// `acked`, `offered`, `released`, `expired`, …
    pub state: String,
}

pub fn lease(text: &str) -> Option<Lease> {
    let b = blocks(text).into_iter().next()?;
    Some(Lease {
        ip: b.get("IP Address")?.parse().ok()?,
        state: b.get("State").cloned().unwrap_or_default(),
    })
}

/// The capacity of a medium, in MB, from `showmediuminfo`
/// (`Capacity:       3584 MBytes`).
pub fn capacity_mb(text: &str) -> Option<u64> {
    let b = blocks(text).into_iter().next()?;
    let value = b.get("Capacity")?;
    let mut words = value.split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    match words.next()? {
        "MBytes" => Some(n),
        "GBytes" => Some(n * 1024),
        "TBytes" => Some(n * 1024 * 1024),
        "KBytes" => Some(n.div_ceil(1024)),
        "bytes" => Some(n.div_ceil(1024 * 1024)),
        _ => None,
    }
}

/// The interface `hostonlyif create` made
/// (`Interface 'vboxnet1' was successfully created`).
pub fn created_interface(text: &str) -> Option<String> {
    let rest = text.split("Interface '").nth(1)?;
    let (name, tail) = rest.split_once('\'')?;
    tail.trim_start()
        .starts_with("was successfully created")
        .then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTONLYIFS: &str = "Name:            vboxnet0
GUID:            786f6276-656e-4074-8000-0a0027000000
DHCP:            Disabled
IPAddress:       192.168.56.1
NetworkMask:     255.255.255.0
IPV6Address:     fe80::800:27ff:fe00:0
IPV6NetworkMaskPrefixLength: 64
HardwareAddress: 0a:00:27:00:00:00
MediumType:      Ethernet
Wireless:        No
Status:          Up
VBoxNetworkName: HostInterfaceNetworking-vboxnet0

Name:            vboxnet1
GUID:            786f6276-656e-4174-8000-0a0027000001
DHCP:            Disabled
IPAddress:       192.168.57.1
NetworkMask:     255.255.255.0
IPV6Address:
IPV6NetworkMaskPrefixLength: 0
HardwareAddress: 0a:00:27:00:00:01
MediumType:      Ethernet
Wireless:        No
Status:          Down
VBoxNetworkName: HostInterfaceNetworking-vboxnet1

";

    const DHCPSERVERS: &str = "NetworkName:    HostInterfaceNetworking-vboxnet0
Dhcpd IP:       192.168.56.100
LowerIPAddress: 192.168.56.101
UpperIPAddress: 192.168.56.254
NetworkMask:    255.255.255.0
Enabled:        Yes
Global Configuration:
    minLeaseTime:     default
    defaultLeaseTime: default
    maxLeaseTime:     default
    Forced options:   None
    Suppressed opts.: None
        1/legacy: 255.255.255.0
Groups:               None
Individual Configs:   None

NetworkName:    NatNetwork
Dhcpd IP:       10.0.2.3
LowerIPAddress: 10.0.2.4
UpperIPAddress: 10.0.2.254
NetworkMask:    255.255.255.0
Enabled:        No
Global Configuration:
    minLeaseTime:     default
    defaultLeaseTime: default
    maxLeaseTime:     default
    Forced options:   None
    Suppressed opts.: None
        1/legacy: 255.255.255.0
Groups:               None
Individual Configs:   None
";

    #[test]
    fn reads_machine_readable_output() {
        let text = "name=\"machine-dev-1a2b3c4d\"\nEncryption:     disabled\nmemory=1024\n\
                    VMState=\"poweroff\"\n\"SATA-0-0\"=\"/s/machines/dev/disk.vdi\"\n\
                    Forwarding(0)=\"ssh,tcp,127.0.0.1,40022,,22\"\n";
        let m = machine_readable(text);
        assert_eq!(m["VMState"], "poweroff");
        assert_eq!(m["memory"], "1024");
        assert_eq!(m["SATA-0-0"], "/s/machines/dev/disk.vdi");
        assert_eq!(m["Forwarding(0)"], "ssh,tcp,127.0.0.1,40022,,22");
    }

    #[test]
    fn reads_host_only_interfaces() {
        let ifs = host_only_ifs(HOSTONLYIFS);
        assert_eq!(ifs.len(), 2);
        assert_eq!(ifs[0].name, "vboxnet0");
        assert_eq!(ifs[0].ip, Some(Ipv4Addr::new(192, 168, 56, 1)));
        assert_eq!(ifs[0].mask, Some(Ipv4Addr::new(255, 255, 255, 0)));
        assert_eq!(ifs[1].network_name, "HostInterfaceNetworking-vboxnet1");
        assert!(host_only_ifs("").is_empty());
    }

    #[test]
    fn reads_dhcp_servers_without_the_nested_lines() {
        let s = dhcp_servers(DHCPSERVERS);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].network_name, "HostInterfaceNetworking-vboxnet0");
        assert_eq!(s[0].ip, Some(Ipv4Addr::new(192, 168, 56, 100)));
        assert_eq!(s[0].lower, Some(Ipv4Addr::new(192, 168, 56, 101)));
        assert_eq!(s[0].upper, Some(Ipv4Addr::new(192, 168, 56, 254)));
        assert!(s[0].enabled);
        assert!(!s[1].enabled);
    }

    #[test]
    fn reads_leases_media_and_new_interfaces() {
        let text = "IP Address:  192.168.56.101\nMAC Address: 08:00:27:1a:2b:3c\nState:       acked\n\
                    Issued:      2024-05-14T09:12:31.000000000Z (1715677951)\n\
                    Expire:      2024-05-14T09:22:31.000000000Z (1715678551)\n\
                    TTL:         600 sec, currently 594 sec left\n";
        assert_eq!(
            lease(text),
            Some(Lease {
                ip: Ipv4Addr::new(192, 168, 56, 101),
                state: "acked".into()
            })
        );
        let info = "UUID:           0b7c1d7e-3f4a-4e55-9d0e-5f1d2c3b4a59\nParent UUID:    base\n\
                    State:          created\nType:           normal (base)\n\
                    Location:       /s/machines/dev/disk.vdi\nStorage format: VDI\n\
                    Format variant: dynamic default\nCapacity:       3584 MBytes\n\
                    Size on disk:   587 MBytes\nEncryption:     disabled\n";
        assert_eq!(capacity_mb(info), Some(3584));
        assert_eq!(
            created_interface(
                "0%...10%...20%...30%...40%...50%...60%...70%...80%...90%...100%\nInterface 'vboxnet2' was successfully created\n"
            ),
            Some("vboxnet2".into())
        );
        assert_eq!(created_interface("0%...100%\n"), None);
    }
}
