//! dist.sh makes release assets that `machine driver install` accepts: the
//! archive's name carries the version, protocol and platform, the archive
//! holds exactly the binary at its root, SHA256SUMS checks out with
//! `sha256sum -c`, and the binary unpacked from the archive still passes
//! the conformance kit.

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use machine_driver_sdk::conformance::Kit;

const BINARY: &str = env!("CARGO_BIN_EXE_machine-driver-hello");
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn dist(out: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("dist.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(script)
        .args(args)
        .env("DIST_DIR", out)
        .env_remove("PROTOCOL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run bash dist.sh")
}

#[track_caller]
fn dist_ok(out: &Path, args: &[&str]) -> PathBuf {
    let run = dist(out, args, &[]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "dist.sh {args:?} failed:\n{stderr}");
    PathBuf::from(String::from_utf8(run.stdout).unwrap().trim())
}

/// Every entry of a .tar.gz: (path, mode, is a regular file, content).
fn entries(archive: &Path) -> Vec<(String, u32, bool, Vec<u8>)> {
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(archive).unwrap());
    let mut tar = tar::Archive::new(gz);
    tar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let mode = e.header().mode().unwrap();
            let regular = e.header().entry_type().is_file();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (path, mode, regular, data)
        })
        .collect()
}

fn sha256sum_check(dir: &Path) -> Output {
    Command::new("sha256sum")
        .args(["-c", "--strict", "SHA256SUMS"])
        .current_dir(dir)
        .output()
        .expect("run sha256sum")
}

#[tokio::test]
async fn assets_install_and_pass_conformance() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("dist");

    // A tag's leading v is dropped; the protocol comes from the binary.
    let linux = dist_ok(&out, &[BINARY, &format!("v{VERSION}"), "linux", "amd64"]);
    let protocol = machine_driver_sdk::PROTOCOL_VERSIONS.iter().max().unwrap();
    let name = format!("machine-driver-hello_{VERSION}_p{protocol}_linux_amd64.tar.gz");
    assert_eq!(linux, out.join(&name));
    // A second platform: SHA256SUMS is rewritten to cover both.
    let darwin = dist_ok(&out, &[BINARY, VERSION, "darwin", "arm64"]);
    assert!(darwin.ends_with(format!(
        "machine-driver-hello_{VERSION}_p{protocol}_darwin_arm64.tar.gz"
    )));

    let files = entries(&linux);
    assert_eq!(files.len(), 1, "the archive holds exactly the binary");
    let (path, mode, regular, data) = &files[0];
    assert_eq!(path, "machine-driver-hello");
    assert!(regular);
    assert_eq!(mode & 0o7777, 0o755);
    assert_eq!(data, &std::fs::read(BINARY).unwrap());

    let sums = std::fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    assert_eq!(sums.lines().count(), 2, "{sums}");
    for line in sums.lines() {
        let (hex, file) = line.split_once("  ").expect("`<hex>  <file>` lines");
        assert_eq!(hex.len(), 64, "{line}");
        assert!(!file.contains('/'), "{line}");
    }
    let check = sha256sum_check(&out);
    assert!(
        check.status.success(),
        "sha256sum -c: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // The check can fail: a changed archive no longer matches.
    let spoilt = work.path().join("spoilt");
    std::fs::create_dir(&spoilt).unwrap();
    std::fs::copy(out.join("SHA256SUMS"), spoilt.join("SHA256SUMS")).unwrap();
    std::fs::copy(&darwin, spoilt.join(darwin.file_name().unwrap())).unwrap();
    let mut bytes = std::fs::read(&linux).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    std::fs::write(spoilt.join(&name), bytes).unwrap();
    assert!(!sha256sum_check(&spoilt).status.success());

    // What the installer unpacks still works as a driver.
    let unpacked = work.path().join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    let bin = unpacked.join(path);
    std::fs::write(&bin, data).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(*mode)).unwrap();
    let report = Kit::new(&bin)
        .flag("hello-command", "exec sleep 3600")
        .run()
        .await;
    println!("{report}");
    report.assert_passed();
}

/// dist.sh's arguments, extra environment, and what its error must say.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[test]
fn refuses_mistakes_that_the_installer_would_refuse_later() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("dist");
    let cases: [Case<'_>; 5] = [
        (
            &[BINARY, "9.9.9", "linux", "amd64"],
            &[],
            &format!("is version {VERSION}, not 9.9.9"),
        ),
        (
            &[BINARY, "1.2", "linux", "amd64"],
            &[],
            "not a semantic version",
        ),
        (
            &[BINARY, VERSION, "linux", "x86_64"],
            &[],
            "not amd64 or arm64",
        ),
        (
            &[BINARY, VERSION, "linux", "amd64"],
            &[("PROTOCOL", "99")],
            "but",
        ),
        (
            &["/no/such/machine-driver-x", VERSION, "linux", "amd64"],
            &[],
            "no such file",
        ),
    ];
    for (args, env, says) in cases {
        let run = dist(&out, args, env);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "dist.sh {args:?} {env:?} succeeded");
        assert!(stderr.contains(says), "dist.sh {args:?}: {stderr}");
    }
    assert!(!out.join("SHA256SUMS").exists());
}
