//! The host-only network: the `--virtualbox-hostonly-cidr` address, the
//! rule VirtualBox ≥ 6.1.28 applies to host-only addresses, the DHCP
//! server's address range, and finding or making the `vboxnetN` adapter
//! and its DHCP server.
//!
//! **The range rule.** Since 6.1.28, VirtualBox on Linux and macOS accepts
//! a host-only adapter address only inside the ranges listed on `*` lines
//! of `/etc/vbox/networks.conf` (`* 10.0.0.0/8 192.168.0.0/16`). Without
//! that file only `192.168.56.0/21` is allowed. Outside, `hostonlyif
//! ipconfig` fails with a bare `E_ACCESSDENIED`; the driver checks first
//! and names the file and the line to add. Windows hosts have no such rule.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::Path;

use machine_driver_sdk::Error;

use crate::parse;
use crate::vbox::{RANGE_RULE_VERSION, VBoxManage, Version};

/// Where VirtualBox reads the allowed host-only ranges.
pub const NETWORKS_CONF: &str = "/etc/vbox/networks.conf";
/// Environment variable naming another file, for tests.
pub const ENV_NETWORKS_CONF: &str = "MACHINE_VIRTUALBOX_NETWORKS_CONF";
/// The range allowed when `networks.conf` does not exist.
pub const DEFAULT_RANGE: Cidr = Cidr {
    addr: Ipv4Addr::new(192, 168, 56, 0),
    prefix: 21,
};

/// An IPv4 address with a prefix length: `192.168.56.1/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    pub fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = text.trim().split_once('/')?;
        let prefix: u8 = prefix.parse().ok()?;
        (prefix <= 32).then_some(Cidr {
            addr: addr.parse().ok()?,
            prefix,
        })
    }

    fn mask_bits(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    pub fn mask(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.mask_bits())
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask_bits())
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network()) | !self.mask_bits())
    }

    /// The network itself, as a CIDR (`192.168.56.0/24`).
    pub fn network_cidr(&self) -> Cidr {
        Cidr {
            addr: self.network(),
            prefix: self.prefix,
        }
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask_bits() == u32::from(self.network())
    }

    /// Whether all of `other`'s network lies inside this one.
    pub fn covers(&self, other: &Cidr) -> bool {
        other.prefix >= self.prefix && self.contains(other.network())
    }

    /// Whether the two networks share any address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.covers(other) || other.covers(self)
    }

    /// The CIDR of an address and a dotted mask (`255.255.255.0`).
    pub fn from_mask(addr: Ipv4Addr, mask: Ipv4Addr) -> Option<Cidr> {
        let bits = u32::from(mask);
        let prefix = bits.leading_ones();
        (bits.count_ones() == prefix).then_some(Cidr {
            addr,
            prefix: prefix as u8,
        })
    }
}

/// Parses and checks `--virtualbox-hostonly-cidr`: the host's address on
/// the network, not the network's own address.
pub fn parse_host_cidr(text: &str) -> Result<Cidr, Error> {
    let flag = "--virtualbox-hostonly-cidr";
    let cidr = Cidr::parse(text).ok_or_else(|| {
        Error::invalid_argument(format!(
            "{flag} {text:?} is not an IPv4 address with a prefix length, such as 192.168.56.1/24"
        ))
    })?;
    if !(8..=29).contains(&cidr.prefix) {
        return Err(Error::invalid_argument(format!(
            "{flag} {cidr}: the prefix length must be between 8 and 29"
        )));
    }
    if cidr.addr == cidr.network() || cidr.addr == cidr.broadcast() {
        return Err(Error::invalid_argument(format!(
            "{flag} {cidr} names the network, not the host's address on it"
        ))
        .with_hint(format!(
            "give the host's address, such as {}/{}",
            Ipv4Addr::from(u32::from(cidr.network()) + 1),
            cidr.prefix
        )));
    }
    Ok(cidr)
}

/// The host-only ranges VirtualBox allows, and where they come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    pub ranges: Vec<Cidr>,
    /// Whether they come from the file (else: the built-in default).
    pub from_file: bool,
}

/// Reads the allowed ranges from `networks.conf` at `path`: the IPv4
/// ranges on lines that start with `*`; the default range when the file
/// does not exist.
pub fn allowed_ranges(path: &Path) -> Result<Allowed, Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Allowed {
                ranges: vec![DEFAULT_RANGE],
                from_file: false,
            });
        }
        Err(e) => {
            return Err(Error::failed_precondition(format!(
                "cannot read {}, which lists the host-only ranges VirtualBox allows: {e}",
                path.display()
            ))
            .with_hint("make it readable for your user (VirtualBox reads it too)"));
        }
    };
    let ranges = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix('*'))
        .flat_map(str::split_whitespace)
        .filter_map(Cidr::parse)
        .collect();
    Ok(Allowed {
        ranges,
        from_file: true,
    })
}

/// Applies the 6.1.28 rule to the host-only network of `host`.
pub fn check_range(host: &Cidr, version: Version, conf: &Path) -> Result<(), Error> {
    if version < RANGE_RULE_VERSION || cfg!(windows) {
        return Ok(());
    }
    let allowed = allowed_ranges(conf)?;
    let net = host.network_cidr();
    if allowed.ranges.iter().any(|r| r.covers(&net)) {
        return Ok(());
    }
    let list = if allowed.ranges.is_empty() {
        "none".to_owned()
    } else {
        allowed
            .ranges
            .iter()
            .map(Cidr::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let whence = if allowed.from_file {
        format!("as listed in {}", conf.display())
    } else {
        format!(
            "its default, as {} does not exist; Docker Machine's old default 192.168.99.1/24 is outside it",
            conf.display()
        )
    };
    Err(Error::failed_precondition(format!(
        "--virtualbox-hostonly-cidr {host}: VirtualBox {version} allows host-only networks only in {list} ({whence})"
    ))
    .with_hint(format!(
        "add the line `* {net}` to {} (as root; create it if needed), or use an address inside {list}, such as the default 192.168.56.1/24",
        conf.display()
    )))
}

/// The DHCP server's address and pool for a host-only network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DhcpLayout {
    pub server: Ipv4Addr,
    pub mask: Ipv4Addr,
    pub lower: Ipv4Addr,
    pub upper: Ipv4Addr,
}

impl DhcpLayout {
    /// On a /24 or larger: the server at .100 and the pool from .101 to
    /// the last address, as VirtualBox sets up its own `vboxnet0`, so that
    /// its DHCP server is reused as it is. On smaller networks: the upper
    /// half.
    pub fn of(host: &Cidr) -> Result<DhcpLayout, Error> {
        let net = u32::from(host.network());
        let last = u32::from(host.broadcast()) - 1;
        let server = if host.prefix <= 24 {
            net + 100
        } else {
            net + (1u32 << (32 - u32::from(host.prefix))) / 2
        };
        let layout = DhcpLayout {
            server: server.into(),
            mask: host.mask(),
            lower: (server + 1).into(),
            upper: last.into(),
        };
        if u32::from(host.addr) >= server {
            return Err(Error::invalid_argument(format!(
                "--virtualbox-hostonly-cidr {host}: the host's address falls in the DHCP server's range ({} to {})",
                layout.server, layout.upper
            ))
            .with_hint(format!(
                "use a lower host address, such as {}/{}",
                Ipv4Addr::from(net + 1),
                host.prefix
            )));
        }
        Ok(layout)
    }

    /// Whether an existing server hands out addresses on `host`'s network
    /// without clashing with the host's address.
    fn accepts(server: &parse::DhcpServer, host: &Cidr) -> bool {
        let (Some(ip), Some(lower), Some(upper)) = (server.ip, server.lower, server.upper) else {
            return false;
        };
        let host_ip = u32::from(host.addr);
        server.enabled
            && server.mask == Some(host.mask())
            && [ip, lower, upper].iter().all(|a| host.contains(*a))
            && lower <= upper
            && !(u32::from(lower)..=u32::from(upper)).contains(&host_ip)
            && ip != host.addr
    }
}

/// The host-only adapter a machine's second NIC is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostOnly {
    /// `vboxnet0`.
    pub adapter: String,
    /// `HostInterfaceNetworking-vboxnet0`, the DHCP server's key.
    pub network_name: String,
}

async fn list_ifs(vbox: &VBoxManage) -> Result<Vec<parse::HostOnlyIf>, Error> {
    let out = vbox
        .run(&["list", "hostonlyifs"])
        .await
        .map_err(|e| e.to_error("listing the host-only adapters"))?;
    Ok(parse::host_only_ifs(&out))
}

/// An adapter whose network overlaps `host`'s under another address: using
/// `host` would give the host two routes into one network.
pub async fn check_conflicts(vbox: &VBoxManage, host: &Cidr) -> Result<(), Error> {
    conflict(&list_ifs(vbox).await?, host)
}

fn conflict(ifs: &[parse::HostOnlyIf], host: &Cidr) -> Result<(), Error> {
    for i in ifs {
        let (Some(ip), Some(mask)) = (i.ip, i.mask) else {
            continue;
        };
        let Some(theirs) = Cidr::from_mask(ip, mask) else {
            continue;
        };
        if theirs == *host {
            return Ok(());
        }
        if theirs.overlaps(host) {
            return Err(Error::failed_precondition(format!(
                "--virtualbox-hostonly-cidr {host} overlaps host-only adapter {} ({theirs})",
                i.name
            ))
            .with_hint(format!(
                "use --virtualbox-hostonly-cidr {theirs} to share that adapter, or a network no adapter uses"
            )));
        }
    }
    Ok(())
}

/// Finds the host-only adapter with the host's address, or makes one, and
/// makes sure a DHCP server serves it (unless `no_dhcp`, when one must
/// already exist: the driver learns the VM's address from its leases).
///
/// Adapters and DHCP servers are shared by every VM on the network, so
/// nothing here is undone when a create fails, as with Docker Machine.
pub async fn ensure(vbox: &VBoxManage, host: &Cidr, no_dhcp: bool) -> Result<HostOnly, Error> {
    let ifs = list_ifs(vbox).await?;
    conflict(&ifs, host)?;
    let existing = ifs
        .iter()
        .find(|i| i.ip == Some(host.addr) && i.mask == Some(host.mask()));
    let adapter = match existing {
        Some(i) => HostOnly {
            adapter: i.name.clone(),
            network_name: i.network_name.clone(),
        },
        None => create_adapter(vbox, host).await?,
    };
    ensure_dhcp(vbox, host, &adapter, no_dhcp).await?;
    Ok(adapter)
}

async fn create_adapter(vbox: &VBoxManage, host: &Cidr) -> Result<HostOnly, Error> {
    let out = vbox
        .run(&["hostonlyif", "create"])
        .await
        .map_err(|e| e.to_error("creating a host-only adapter"))?;
    let name = parse::created_interface(&out).ok_or_else(|| {
        Error::internal(format!(
            "`VBoxManage hostonlyif create` did not name the adapter it made: {:?}",
            out.trim()
        ))
    })?;
    let ip = host.addr.to_string();
    let mask = host.mask().to_string();
    if let Err(e) = vbox
        .run(&[
            "hostonlyif",
            "ipconfig",
            &name,
            "--ip",
            &ip,
            "--netmask",
            &mask,
        ])
        .await
    {
        // An adapter without the address is of no use to anyone.
        let _ = vbox.run(&["hostonlyif", "remove", &name]).await;
        let denied = e.message().contains("E_ACCESSDENIED");
        let mut err = e.to_error(&format!(
            "giving host-only adapter {name} the address {host}"
        ));
        if denied {
            err = err.with_hint(format!(
                "VirtualBox refuses this range: add the line `* {}` to {NETWORKS_CONF} (as root), or use an address in 192.168.56.0/21",
                host.network_cidr()
            ));
        }
        return Err(err);
    }
    Ok(HostOnly {
        network_name: format!("HostInterfaceNetworking-{name}"),
        adapter: name,
    })
}

async fn ensure_dhcp(
    vbox: &VBoxManage,
    host: &Cidr,
    adapter: &HostOnly,
    no_dhcp: bool,
) -> Result<(), Error> {
    let out = vbox
        .run(&["list", "dhcpservers"])
        .await
        .map_err(|e| e.to_error("listing the DHCP servers"))?;
    let servers = parse::dhcp_servers(&out);
    let existing = servers
        .iter()
        .find(|s| s.network_name == adapter.network_name);
    if existing.is_some_and(|s| DhcpLayout::accepts(s, host)) {
        return Ok(());
    }
    let layout = DhcpLayout::of(host)?;
    let network = format!("--network={}", adapter.network_name);
    if no_dhcp {
        return Err(Error::failed_precondition(format!(
            "--virtualbox-hostonly-no-dhcp: no enabled VirtualBox DHCP server serves {} ({host}); \
             the driver learns the VM's address from that server's leases",
            adapter.adapter
        ))
        .with_hint(format!(
            "drop --virtualbox-hostonly-no-dhcp, or set one up: VBoxManage dhcpserver add {network} --server-ip={} --netmask={} --lower-ip={} --upper-ip={} --enable",
            layout.server, layout.mask, layout.lower, layout.upper
        )));
    }
    let verb = if existing.is_some() { "modify" } else { "add" };
    vbox.run(&[
        "dhcpserver".to_owned(),
        verb.to_owned(),
        network,
        format!("--server-ip={}", layout.server),
        format!("--netmask={}", layout.mask),
        format!("--lower-ip={}", layout.lower),
        format!("--upper-ip={}", layout.upper),
        "--enable".to_owned(),
    ])
    .await
    .map_err(|e| {
        e.to_error(&format!(
            "setting up the DHCP server of {}",
            adapter.adapter
        ))
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        Cidr::parse(s).unwrap()
    }

    #[test]
    fn cidr_arithmetic() {
        let c = cidr("192.168.99.1/24");
        assert_eq!(c.network(), Ipv4Addr::new(192, 168, 99, 0));
        assert_eq!(c.broadcast(), Ipv4Addr::new(192, 168, 99, 255));
        assert_eq!(c.mask(), Ipv4Addr::new(255, 255, 255, 0));
        assert!(DEFAULT_RANGE.covers(&cidr("192.168.56.1/24").network_cidr()));
        assert!(DEFAULT_RANGE.covers(&cidr("192.168.63.1/24").network_cidr()));
        assert!(!DEFAULT_RANGE.covers(&cidr("192.168.64.1/24").network_cidr()));
        assert!(!DEFAULT_RANGE.covers(&cidr("192.168.56.1/16").network_cidr()));
        assert!(!DEFAULT_RANGE.covers(&c.network_cidr()));
        assert_eq!(
            Cidr::from_mask(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(255, 255, 0, 0)),
            Some(cidr("10.0.0.1/16"))
        );
        assert_eq!(
            Cidr::from_mask(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(255, 0, 255, 0)),
            None
        );
    }

    #[test]
    fn host_cidr_must_name_a_host() {
        assert!(parse_host_cidr("192.168.56.1/24").is_ok());
        let e = parse_host_cidr("192.168.56.0/24").unwrap_err();
        assert!(e.message.contains("names the network"), "{}", e.message);
        assert!(e.hint.unwrap().contains("192.168.56.1/24"));
        assert!(parse_host_cidr("192.168.56.1").is_err());
        assert!(parse_host_cidr("192.168.56.1/30").is_err());
        assert!(parse_host_cidr("300.1.1.1/24").is_err());
    }

    #[test]
    fn dhcp_layout_matches_virtualbox_defaults() {
        let l = DhcpLayout::of(&cidr("192.168.56.1/24")).unwrap();
        assert_eq!(l.server, Ipv4Addr::new(192, 168, 56, 100));
        assert_eq!(l.lower, Ipv4Addr::new(192, 168, 56, 101));
        assert_eq!(l.upper, Ipv4Addr::new(192, 168, 56, 254));
        let small = DhcpLayout::of(&cidr("10.1.1.1/28")).unwrap();
        assert_eq!(small.server, Ipv4Addr::new(10, 1, 1, 8));
        assert_eq!(small.upper, Ipv4Addr::new(10, 1, 1, 14));
        assert!(DhcpLayout::of(&cidr("192.168.56.150/24")).is_err());
    }

    #[test]
    fn range_rule_default_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("networks.conf");
        let v7 = Version(7, 0, 14);
        check_range(&cidr("192.168.56.1/24"), v7, &conf).unwrap();
        let e = check_range(&cidr("192.168.99.1/24"), v7, &conf).unwrap_err();
        assert!(e.message.contains("192.168.56.0/21"), "{}", e.message);
        assert!(e.message.contains("does not exist"), "{}", e.message);
        let hint = e.hint.unwrap();
        assert!(hint.contains("* 192.168.99.0/24"), "{hint}");
        assert!(hint.contains(&conf.display().to_string()), "{hint}");
        // Before 6.1.28 there is no rule.
        check_range(&cidr("192.168.99.1/24"), Version(6, 1, 26), &conf).unwrap();

        std::fs::write(
            &conf,
            "# local ranges\n* 10.0.0.0/8 192.168.99.0/24\n* fd00::/8\n",
        )
        .unwrap();
        check_range(&cidr("192.168.99.1/24"), v7, &conf).unwrap();
        check_range(&cidr("10.20.30.1/24"), v7, &conf).unwrap();
        // The file replaces the default.
        let e = check_range(&cidr("192.168.56.1/24"), v7, &conf).unwrap_err();
        assert!(
            e.message.contains("10.0.0.0/8, 192.168.99.0/24"),
            "{}",
            e.message
        );
    }

    #[test]
    fn overlapping_adapters_conflict() {
        let ifs = vec![parse::HostOnlyIf {
            name: "vboxnet0".into(),
            ip: Some(Ipv4Addr::new(192, 168, 56, 1)),
            mask: Some(Ipv4Addr::new(255, 255, 255, 0)),
            network_name: "HostInterfaceNetworking-vboxnet0".into(),
        }];
        conflict(&ifs, &cidr("192.168.56.1/24")).unwrap();
        conflict(&ifs, &cidr("192.168.57.1/24")).unwrap();
        let e = conflict(&ifs, &cidr("192.168.56.5/24")).unwrap_err();
        assert!(e.message.contains("vboxnet0"), "{}", e.message);
    }
}
