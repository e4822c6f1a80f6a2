//! What the VM drivers (`qemu`, `virtualbox`) share: the cloud-init NoCloud
//! seed that gives a fresh cloud image its user, SSH key and hostname
//! ([`seed`]), boot images fetched once, verified against their published
//! checksums and cached ([`image`]), and free ports on 127.0.0.1 for port
//! forwards ([`ports`]), and the store's shared cache ([`store`]).

pub mod checksum;
pub mod image;
pub mod ports;
pub mod seed;
pub mod store;
