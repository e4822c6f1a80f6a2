//! Free TCP ports on 127.0.0.1, for the SSH and Docker port forwards.

use std::net::{Ipv4Addr, TcpListener};

/// A port nobody listens on now. The caller binds it soon after (qemu's
/// `hostfwd`, a VirtualBox NAT rule); the window between is the same one
/// every VM tool lives with, and a lost race fails loudly at VM start.
pub fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// `n` distinct free ports, all held open until every one is chosen so
/// that the system does not hand out the same port twice.
pub fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_bindable() {
        let ports = free_ports(3).unwrap();
        assert_eq!(ports.len(), 3);
        assert!(ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2]);
        for p in ports {
            TcpListener::bind((Ipv4Addr::LOCALHOST, p)).unwrap();
        }
    }
}
