//! The driver author's path from docs/driver-authoring.md, end to end: the
//! example third-party driver (`examples/machine-driver-hello`) packaged by
//! its own `dist.sh`, its SHA256SUMS signed with minisign as its release
//! workflow does, published on a GitHub-like release server on 127.0.0.1,
//! installed with `machine driver install github.com/you/machine-driver-hello`,
//! and then used through the real CLI: create, ls, stop, start, rm.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use machine_integration::release_server::{ReleaseServer, ReleaseSpec, platform};
use machine_integration::{KillMarked, TestContext, assert_nothing_marked_left};

const SOURCE: &str = "github.com/you/machine-driver-hello";
const LEFT: Duration = Duration::from_secs(5);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration/ is in the workspace")
        .to_owned()
}

/// The example driver's version, as the binary reports it.
fn hello_version(binary: &Path) -> String {
    let out = Command::new(binary)
        .arg("--version")
        .output()
        .expect("run machine-driver-hello --version");
    let text = String::from_utf8(out.stdout).unwrap();
    // machine-driver-hello 0.1.0 (protocol 1)
    text.split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("--version printed {text:?}"))
        .to_owned()
}

/// Runs the example's dist.sh; returns the archive's path.
fn dist(binary: &Path, version: &str, os: &str, arch: &str, out: &Path) -> PathBuf {
    let run = Command::new("bash")
        .arg(workspace().join("examples/machine-driver-hello/dist.sh"))
        .args([binary.to_str().unwrap(), version, os, arch])
        .env("DIST_DIR", out)
        .env_remove("PROTOCOL")
        .output()
        .expect("run dist.sh");
    assert!(
        run.status.success(),
        "dist.sh failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    PathBuf::from(String::from_utf8(run.stdout).unwrap().trim())
}

#[test]
fn a_release_made_by_the_authoring_kit_installs_and_works() {
    let server = ReleaseServer::start();
    let mut t = TestContext::new();
    t.env("MACHINE_GITHUB_API_URL", &server.api_url())
        .env("MACHINE_GITHUB_TOKEN", "")
        .env("NO_PROXY", "127.0.0.1")
        .env("no_proxy", "127.0.0.1");
    // The hosts (`sleep`) the driver starts carry the marker too.
    let _guard = KillMarked(t.marker.clone());

    // The release, as the workflow makes it: one archive per platform from
    // dist.sh (here the same binary, for this platform and one other, so
    // the installer has to choose), SHA256SUMS, its signature, the key.
    let binary = t.bin.join("machine-driver-hello");
    assert!(
        binary.is_file(),
        "{} is missing: run `cargo build --workspace --bins`",
        binary.display()
    );
    let version = hello_version(&binary);
    let out = tempfile::tempdir().unwrap();
    let (os, arch) = platform();
    let here = dist(&binary, &version, os, arch, out.path());
    let other_arch = if arch == "arm64" { "amd64" } else { "arm64" };
    let other = dist(&binary, &version, os, other_arch, out.path());
    let sums = std::fs::read(out.path().join("SHA256SUMS")).unwrap();
    let key = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
    let signature = minisign::sign(
        Some(&key.pk),
        &key.sk,
        std::io::Cursor::new(&sums),
        Some("machine-driver release"),
        None,
    )
    .unwrap()
    .to_string();
    let public = format!(
        "untrusted comment: minisign public key\n{}\n",
        key.pk.to_base64()
    );
    let mut release = ReleaseSpec::new(&format!("v{version}"));
    for archive in [&here, &other] {
        let name = archive.file_name().unwrap().to_str().unwrap();
        release = release.asset(name, std::fs::read(archive).unwrap());
    }
    let release = release
        .asset("SHA256SUMS", sums)
        .asset("SHA256SUMS.minisig", signature)
        .asset("minisign.pub", public);
    server.publish("you", "machine-driver-hello", &[release]);

    // Installed, with the signature required: the release's own key is
    // trusted on first use.
    let run = t.run(&["driver", "install", SOURCE, "--require-signature"]);
    run.ok();
    let here_name = here.file_name().unwrap().to_str().unwrap();
    let downloads: Vec<String> = server
        .requests()
        .into_iter()
        .map(|r| r.path)
        .filter(|p| p.ends_with(".tar.gz"))
        .collect();
    assert_eq!(
        downloads,
        [ReleaseServer::download_path(
            "you",
            "machine-driver-hello",
            &format!("v{version}"),
            here_name
        )],
        "only this platform's archive is downloaded"
    );
    let info = t.run(&["driver", "info", "hello", "--format", "json"]);
    let info: serde_json::Value = serde_json::from_str(info.ok()).expect("driver info JSON");
    assert_eq!(info["name"], "hello");
    assert_eq!(info["version"], version.as_str());
    assert_eq!(info["installed"]["source"], SOURCE);
    assert_eq!(
        Path::new(info["path"].as_str().unwrap()),
        t.store_path().join("drivers/machine-driver-hello")
    );

    // Used through the CLI.
    let create = t.run(&[
        "create",
        "-d",
        "hello",
        "--hello-command",
        "exec sleep 3600",
        "--hello-engine-port",
        "12376",
        "dev",
    ]);
    create.ok();
    assert!(
        create.stderr.contains("no --hello-ssh-port"),
        "the pre-create warning reaches the user: {}",
        create.stderr
    );
    let ls = |t: &TestContext| {
        t.run(&[
            "ls",
            "--format",
            "{{.Name}} {{.DriverName}} {{.State}} {{.URL}}",
        ])
        .ok()
        .to_owned()
    };
    assert_eq!(ls(&t), "dev hello Running tcp://127.0.0.1:12376\n");
    t.run(&["stop", "dev"]).ok();
    assert_eq!(ls(&t), "dev hello Stopped \n");
    t.run(&["start", "dev"]).ok();
    assert_eq!(t.run(&["status", "dev"]).ok(), "Running\n");
    t.run(&["rm", "-y", "dev"]).ok();
    assert_eq!(t.run(&["ls", "-q"]).ok(), "");
    assert_nothing_marked_left(&t.marker, LEFT);
}
