//! Where a VM driver keeps what the machines of one store share.

use std::path::{Path, PathBuf};

/// The store-wide cache (downloaded images, probe verdicts):
/// `<store>/cache` when the machine lives in a store's `machines/`
/// directory, as the CLI arranges; otherwise (a driver run by hand or by a
/// test harness) the user's cache directory.
pub fn cache_dir(machine_dir: &Path) -> PathBuf {
    if let Some(machines) = machine_dir.parent()
        && machines.file_name().is_some_and(|n| n == "machines")
        && let Some(store) = machines.parent()
    {
        return store.join("cache");
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("machine")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stores_machines_share_its_cache() {
        assert_eq!(
            cache_dir(Path::new("/s/machines/dev")),
            PathBuf::from("/s/cache")
        );
        assert_ne!(
            cache_dir(Path::new("/tmp/x/dev")),
            PathBuf::from("/tmp/cache")
        );
    }
}
