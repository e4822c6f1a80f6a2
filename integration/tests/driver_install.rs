//! `machine driver install/upgrade/remove` and `create -d github.com/...`
//! against a release server on 127.0.0.1 (real HTTP, real `.tar.gz`
//! archives holding the workspace's real `none` driver binary).
//!
//! Every failure case checks the error text, that the version installed
//! before still loads, that no temporary directory is left in the drivers
//! directory, and that no driver process is left running.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use machine_integration::release_server::{
    Entry, Gate, ReleaseServer, ReleaseSpec, Route, asset_name, driver_archive, sha256_hex,
    sha256sums, tar_gz,
};
use machine_integration::terminal::Terminal;
use machine_integration::{Run, TestContext};

const LEFT: Duration = Duration::from_secs(5);
const SOURCE: &str = "github.com/acme/none";

/// The archive of the real `none` driver and its SHA-256, made once per
/// test process: building and hashing 13 MB in an unoptimised test build
/// takes about two seconds. Every release's archive is this one.
fn none_archive(binary: &[u8]) -> &'static (Vec<u8>, String) {
    static ARCHIVE: OnceLock<(Vec<u8>, String)> = OnceLock::new();
    ARCHIVE.get_or_init(|| {
        let archive = driver_archive("none", binary);
        let digest = sha256_hex(&archive);
        (archive, digest)
    })
}

/// Stands in for the driver in archives that are refused before the
/// binary is looked at.
const NOT_A_BINARY: &[u8] = b"#!/bin/sh\nexit 1\n";

/// A test's store, its release server, and the driver binary to publish.
struct World {
    t: TestContext,
    server: ReleaseServer,
    binary: Vec<u8>,
}

impl World {
    fn new() -> Self {
        let server = ReleaseServer::start();
        let mut t = TestContext::new();
        t.env("MACHINE_GITHUB_API_URL", &server.api_url())
            // Empty is unset; a developer's own token must not change the
            // messages tested here.
            .env("MACHINE_GITHUB_TOKEN", "")
            .env("NO_PROXY", "127.0.0.1")
            .env("no_proxy", "127.0.0.1");
        let binary = std::fs::read(t.bin.join("machine-driver-none")).expect("none driver built");
        Self { t, server, binary }
    }

    fn run(&self, args: &[&str]) -> Run {
        self.t.run(args)
    }

    fn drivers_dir(&self) -> PathBuf {
        self.t.store_path().join("drivers")
    }

    fn installed_binary(&self) -> PathBuf {
        self.drivers_dir().join("machine-driver-none")
    }

    /// A release of the `none` driver with its archive and SHA256SUMS.
    fn release(&self, version: &str) -> ReleaseSpec {
        let (archive, digest) = none_archive(&self.binary);
        let name = asset_name("none", version, 1);
        let sums = format!("{digest}  {name}\n");
        ReleaseSpec::new(&format!("v{version}"))
            .asset(&name, archive.clone())
            .asset("SHA256SUMS", sums)
    }

    fn publish(&self, releases: &[ReleaseSpec]) {
        self.server.publish("acme", "none", releases);
    }

    fn lock(&self) -> serde_json::Value {
        let text =
            std::fs::read_to_string(self.drivers_dir().join("lock.json")).expect("lock.json");
        serde_json::from_str(&text).expect("lock.json is JSON")
    }

    fn installed_version(&self) -> String {
        self.lock()["drivers"]["none"]["version"]
            .as_str()
            .expect("none in the lock")
            .to_owned()
    }

    /// Installing must succeed.
    #[track_caller]
    fn install(&self, args: &[&str]) -> Run {
        let mut all = vec!["driver", "install"];
        all.extend_from_slice(args);
        let run = self.run(&all);
        run.ok();
        run
    }

    /// Installing must fail; returns stderr.
    #[track_caller]
    fn install_fails(&self, args: &[&str]) -> String {
        let mut all = vec!["driver", "install"];
        all.extend_from_slice(args);
        let run = self.run(&all);
        run.fails_with(1).to_owned()
    }

    /// The installed driver loads (digest check, handshake, GetInfo) and
    /// is the version `want`; nothing is left behind.
    #[track_caller]
    fn assert_installed(&self, want: &str) {
        assert_eq!(self.installed_version(), want, "{}", self.lock());
        let info = self.run(&["driver", "info", "none", "--format", "json"]);
        let v: serde_json::Value = serde_json::from_str(info.ok()).expect("info JSON");
        assert_eq!(v["name"], "none");
        assert_eq!(v["installed"]["source"], SOURCE);
        assert_eq!(v["installed"]["version"], want);
        assert_eq!(
            Path::new(v["path"].as_str().unwrap()),
            self.installed_binary()
        );
        self.assert_clean();
    }

    /// No temporary directory in the drivers directory, no driver running.
    #[track_caller]
    fn assert_clean(&self) {
        if let Ok(entries) = std::fs::read_dir(self.drivers_dir()) {
            let temps: Vec<String> = entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".install-") || n.contains(".tmp"))
                .collect();
            assert!(temps.is_empty(), "left in the drivers directory: {temps:?}");
        }
        self.t.assert_no_driver_left(LEFT);
    }

    fn archive_path(&self, version: &str) -> String {
        ReleaseServer::download_path(
            "acme",
            "none",
            &format!("v{version}"),
            &asset_name("none", version, 1),
        )
    }
}

#[test]
fn installs_the_newest_release_records_it_and_loads_it() {
    let w = World::new();
    let mut draft = w.release("3.0.0");
    draft.draft = true;
    let mut pre = w.release("2.0.0-rc.1");
    pre.prerelease = true;
    let newest = w.release("1.2.0");
    let archive = newest
        .data(&asset_name("none", "1.2.0", 1))
        .unwrap()
        .to_vec();
    w.publish(&[draft, pre, newest, w.release("1.0.0")]);

    let run = w.install(&[SOURCE]);
    assert!(
        run.stderr
            .contains("Installed driver `none` 1.2.0 from github.com/acme/none"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty(), "stdout is for data: {}", run.stdout);
    // The first-party `none` next to `machine` is now hidden; it says so.
    assert!(
        run.stderr
            .contains("`-d none` now uses the installed driver, not"),
        "{}",
        run.stderr
    );
    w.assert_installed("1.2.0");

    // One API call, and only the chosen release's files were fetched.
    assert_eq!(
        w.server
            .requests_to(&ReleaseServer::releases_path("acme", "none"))
            .len(),
        1
    );
    let fetched: Vec<String> = w.server.requests().iter().map(|r| r.path.clone()).collect();
    assert!(
        fetched
            .iter()
            .all(|p| !p.contains("v1.0.0") && !p.contains("v3.0.0")),
        "{fetched:?}"
    );
    // GitHub requires a User-Agent; no token was set, so none is sent.
    for r in w.server.requests() {
        assert!(
            r.header("user-agent")
                .is_some_and(|u| u.starts_with("machine/"))
        );
        assert_eq!(r.header("authorization"), None);
    }

    let lock = w.lock();
    let e = &lock["drivers"]["none"];
    assert_eq!(lock["schema_version"], 1);
    assert_eq!(e["source"], SOURCE);
    assert_eq!(e["version"], "1.2.0");
    assert_eq!(e["tag"], "v1.2.0");
    assert_eq!(e["asset"], asset_name("none", "1.2.0", 1));
    assert_eq!(e["sha256"], sha256_hex(&w.binary));
    assert_eq!(e["archive_sha256"], sha256_hex(&archive));
    assert_eq!(e["protocol"], 1);
    assert!(e["installed_at"].as_u64().unwrap() > 1_700_000_000);
    assert!(e.get("requested").is_none());
    assert_eq!(std::fs::read(w.installed_binary()).unwrap(), w.binary);

    // `driver ls` shows where it came from. (Its exit status also covers
    // every other driver built in this target directory: not checked.)
    let ls = w.run(&["driver", "ls"]);
    let line = ls
        .stdout
        .lines()
        .find(|l| l.starts_with("none "))
        .unwrap_or_else(|| panic!("no none driver in:\n{}", ls.stdout))
        .to_owned();
    assert!(line.contains("github.com/acme/none@1.2.0"), "{line}");
    let json = w.run(&["driver", "ls", "--format", "json"]);
    let rows: serde_json::Value = serde_json::from_str(&json.stdout).expect("ls JSON");
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "none")
        .unwrap();
    assert_eq!(row["installed"]["source"], SOURCE);
    assert_eq!(row["installed"]["version"], "1.2.0");
    assert_eq!(row["error"], serde_json::Value::Null);
    w.assert_clean();

    // Again: nothing to do, nothing downloaded.
    let before = w.server.requests().len();
    let again = w.install(&[SOURCE]);
    assert!(
        again.stderr.contains("is already installed"),
        "{}",
        again.stderr
    );
    assert_eq!(w.server.requests().len(), before + 1, "only the API call");
}

#[test]
fn version_ranges_pick_the_matching_release() {
    let w = World::new();
    let mut rc = w.release("2.1.0-rc.1");
    rc.prerelease = true;
    w.publish(&[
        w.release("1.0.0"),
        w.release("1.1.0"),
        w.release("1.2.0"),
        w.release("2.0.0"),
        rc,
    ]);
    for (spec, want) in [
        ("^1", "1.2.0"),
        ("~1.1", "1.1.0"),
        (">=1.0.0, <1.1.0", "1.0.0"),
        // As the hint for a broken release suggests.
        ("<1.2.0", "1.1.0"),
        ("v2.0.0", "2.0.0"),
        ("1.1.0", "1.1.0"),
        ("2.1.0-rc.1", "2.1.0-rc.1"),
        ("*", "2.0.0"),
    ] {
        w.install(&[&format!("{SOURCE}@{spec}")]);
        w.assert_installed(want);
        let requested = w.lock()["drivers"]["none"]["requested"].clone();
        assert_eq!(requested, spec, "the range is recorded for upgrades");
    }
    let err = w.install_fails(&[&format!("{SOURCE}@^3")]);
    assert!(
        err.contains("no release of github.com/acme/none fits range ^3"),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
    w.assert_installed("2.0.0");

    let err = w.install_fails(&[&format!("{SOURCE}@not-a-range")]);
    assert!(err.contains("is not a GitHub driver source"), "{err}");
}

#[test]
fn older_pages_of_the_releases_list_are_read_only_when_needed() {
    let w = World::new();
    let path = ReleaseServer::releases_path("acme", "none");
    // Newest first, as GitHub lists them; two to a page, so 1.0.0 is on
    // the third page.
    let releases = [
        w.release("3.0.0"),
        ReleaseSpec::new("nightly-2"),
        ReleaseSpec::new("nightly-1"),
        w.release("2.0.0"),
        w.release("1.0.0"),
    ];
    w.server.publish_paged("acme", "none", &releases, 2);

    w.install(&[SOURCE]);
    w.assert_installed("3.0.0");
    assert_eq!(
        w.server.requests_to(&path).len(),
        1,
        "the newest is on page 1"
    );

    w.install(&[&format!("{SOURCE}@1.0.0")]);
    w.assert_installed("1.0.0");
    let pages: Vec<String> = w
        .server
        .requests_to(&path)
        .into_iter()
        .skip(1)
        .map(|r| r.path)
        .collect();
    assert_eq!(pages.len(), 3, "{pages:?}");
    assert!(pages[2].ends_with("page=3"), "{pages:?}");

    let before = w.server.requests_to(&path).len();
    let err = w.install_fails(&[&format!("{SOURCE}@^9")]);
    assert!(
        err.contains("no release of github.com/acme/none fits range ^9"),
        "{err}"
    );
    assert_eq!(
        w.server.requests_to(&path).len() - before,
        3,
        "every page was read before giving up"
    );
    w.assert_installed("1.0.0");
}

#[test]
fn upgrade_installs_the_newest_release_within_the_recorded_range() {
    let w = World::new();
    w.publish(&[w.release("1.0.0")]);
    w.install(&[&format!("{SOURCE}@^1")]);
    w.assert_installed("1.0.0");

    let up = w.run(&["driver", "upgrade", "none"]);
    up.ok();
    assert!(up.stderr.contains("is up to date"), "{}", up.stderr);

    w.publish(&[w.release("1.0.0"), w.release("1.1.0"), w.release("2.0.0")]);
    let up = w.run(&["driver", "upgrade", "--all"]);
    up.ok();
    assert!(
        up.stderr
            .contains("Upgraded driver `none` from 1.0.0 to 1.1.0"),
        "{}",
        up.stderr
    );
    w.assert_installed("1.1.0");
    assert_eq!(w.lock()["drivers"]["none"]["requested"], "^1");

    // Nothing to upgrade by that name.
    let err = w.run(&["driver", "upgrade", "nosuch"]);
    let err = err.fails_with(1);
    assert!(err.contains("driver `nosuch` is not installed"), "{err}");
    // upgrade needs names or --all.
    w.run(&["driver", "upgrade"]).fails_with(2);
}

#[test]
fn a_checksum_mismatch_is_refused_and_the_old_version_kept() {
    let w = World::new();
    w.publish(&[w.release("1.0.0")]);
    w.install(&[SOURCE]);

    let name = asset_name("none", "1.1.0", 1);
    let bad = ReleaseSpec::new("v1.1.0")
        .asset(&name, none_archive(&w.binary).0.clone())
        .asset(
            "SHA256SUMS",
            sha256sums(&[(name.as_str(), b"something else")]),
        );
    w.publish(&[w.release("1.0.0"), bad]);
    let err = w.install_fails(&[SOURCE]);
    assert!(
        err.contains(&format!("{name} (from {}", w.server.api_url())),
        "{err}"
    );
    assert!(
        err.contains("does not match release v1.1.0's SHA256SUMS"),
        "{err}"
    );
    assert!(err.contains("nothing was installed"), "{err}");
    w.assert_installed("1.0.0");

    // A SHA256SUMS without a line for the archive is refused too.
    let partial = ReleaseSpec::new("v1.1.0")
        .asset(&name, none_archive(&w.binary).0.clone())
        .asset("SHA256SUMS", sha256sums(&[("other.tar.gz", b"x")]));
    w.publish(&[partial]);
    let err = w.install_fails(&[SOURCE]);
    assert!(
        err.contains(&format!(
            "SHA256SUMS of release v1.1.0 of github.com/acme/none has no line for {name}"
        )),
        "{err}"
    );
    w.assert_installed("1.0.0");
}

#[test]
fn a_release_without_sha256sums_is_refused_before_download() {
    let w = World::new();
    w.publish(&[w.release("1.0.0")]);
    w.install(&[SOURCE]);
    let name = asset_name("none", "1.1.0", 1);
    w.publish(&[ReleaseSpec::new("v1.1.0").asset(&name, none_archive(&w.binary).0.clone())]);
    let err = w.install_fails(&[SOURCE]);
    assert!(
        err.contains("release v1.1.0 of github.com/acme/none has no SHA256SUMS file"),
        "{err}"
    );
    assert!(err.contains("ask the author to attach SHA256SUMS"), "{err}");
    assert!(w.server.requests_to(&w.archive_path("1.1.0")).is_empty());
    w.assert_installed("1.0.0");
}

#[test]
fn releases_without_an_archive_for_this_platform_are_skipped() {
    let w = World::new();
    let elsewhere = |v: &str| {
        ReleaseSpec::new(&format!("v{v}"))
            .asset(
                &format!("machine-driver-none_{v}_p1_plan9_mips.tar.gz"),
                driver_archive("none", NOT_A_BINARY),
            )
            .with_sums()
    };
    // Nothing fits: refused before any download, with nothing installed...
    w.publish(&[elsewhere("2.0.0")]);
    let err = w.install_fails(&[SOURCE]);
    assert!(
        err.contains("no release of github.com/acme/none fits"),
        "{err}"
    );
    assert!(!w.drivers_dir().join("lock.json").exists());
    w.assert_clean();
    // ... and with a version installed, which stays.
    w.publish(&[w.release("0.9.0")]);
    w.install(&[SOURCE]);
    w.publish(&[elsewhere("2.0.0")]);
    let err = w.install_fails(&[SOURCE, "--force"]);
    assert!(
        err.contains("no release of github.com/acme/none fits"),
        "{err}"
    );
    w.assert_installed("0.9.0");
    assert!(
        err.contains("release v2.0.0: no archive for linux/amd64 (it has plan9/mips)")
            || !cfg!(all(target_os = "linux", target_arch = "x86_64")),
        "{err}"
    );
    assert!(err.contains("ask the author to publish"), "{err}");

    // An older release that has one is chosen, and the skip is mentioned.
    w.publish(&[elsewhere("2.0.0"), w.release("1.0.0")]);
    let run = w.install(&[SOURCE]);
    assert!(
        run.stderr.contains("skipping release v2.0.0"),
        "{}",
        run.stderr
    );
    w.assert_installed("1.0.0");
}

#[test]
fn archives_for_protocols_this_machine_does_not_speak_are_never_downloaded() {
    let w = World::new();
    w.publish(&[w.release("1.0.0")]);
    w.install(&[SOURCE]);
    let future = ReleaseSpec::new("v2.0.0")
        .asset(
            &asset_name("none", "2.0.0", 2),
            driver_archive("none", NOT_A_BINARY),
        )
        .asset(
            &asset_name("none", "2.0.0", 9),
            driver_archive("none", NOT_A_BINARY),
        )
        .with_sums();
    w.publish(&[future]);
    let err = w.install_fails(&[SOURCE]);
    assert!(
        err.contains("are for protocol 2, 9, and this machine speaks 1"),
        "{err}"
    );
    assert!(err.contains("need a newer machine"), "{err}");
    let downloads: Vec<String> = w
        .server
        .requests()
        .iter()
        .map(|r| r.path.clone())
        .filter(|p| p.contains("/download/"))
        .collect();
    assert!(
        downloads.iter().all(|p| !p.contains("v2.0.0")),
        "{downloads:?}"
    );
    w.assert_installed("1.0.0");
}

/// Release v1.1.0 whose archive holds `entries` besides a binary.
fn unsafe_release(entries: &[Entry]) -> ReleaseSpec {
    let mut all = vec![Entry::File {
        path: "machine-driver-none".into(),
        data: NOT_A_BINARY.to_vec(),
        mode: 0o755,
    }];
    all.extend_from_slice(entries);
    ReleaseSpec::new("v1.1.0")
        .asset(&asset_name("none", "1.1.0", 1), tar_gz(&all))
        .with_sums()
}

#[test]
fn archives_that_escape_their_directory_are_refused() {
    let w = World::new();
    w.publish(&[w.release("1.0.0")]);
    w.install(&[SOURCE]);
    let outside = w.t.store_path().join("escaped");
    let absolute = format!("{}/absolute", w.t.store_path().display());
    let cases = [
        (
            Entry::Raw {
                name: b"../../../escaped".to_vec(),
                kind: tar::EntryType::Regular,
                size: 2,
                data: b"x\n".to_vec(),
                link: Vec::new(),
            },
            "entry `../../../escaped` has `..` in its path".to_owned(),
        ),
        (
            Entry::Raw {
                name: absolute.as_bytes().to_vec(),
                kind: tar::EntryType::Regular,
                size: 2,
                data: b"x\n".to_vec(),
                link: Vec::new(),
            },
            format!("entry `{absolute}` has an absolute path"),
        ),
        (
            Entry::Symlink {
                path: "lib/evil".into(),
                target: "../../../..".into(),
            },
            "entry `lib/evil` is a symbolic link to `../../../..`, which is outside the archive"
                .to_owned(),
        ),
        (
            Entry::Symlink {
                path: "passwd".into(),
                target: "/etc/passwd".into(),
            },
            "is a symbolic link to `/etc/passwd`".to_owned(),
        ),
        (
            Entry::Raw {
                name: b"dev".to_vec(),
                kind: tar::EntryType::Block,
                size: 0,
                data: Vec::new(),
                link: Vec::new(),
            },
            "entry `dev` is a block device".to_owned(),
        ),
    ];
    for (entry, want) in cases {
        w.publish(&[unsafe_release(&[entry])]);
        let err = w.install_fails(&[SOURCE]);
        let asset = asset_name("none", "1.1.0", 1);
        assert!(
            err.contains(&format!("{asset} from release v1.1.0 was refused")),
            "{err}"
        );
        assert!(err.contains(&want), "{err}\nwanted: {want}");
        assert!(!outside.exists());
        assert!(!Path::new(&absolute).exists());
        w.assert_installed("1.0.0");
    }
}

#[test]
fn oversized_archives_are_refused() {
    let w = World::new();
    w.publish(&[w.release("1.0.0")]);
    w.install(&[SOURCE]);

    // A gzip bomb: a header that claims 2 GiB of content.
    w.publish(&[unsafe_release(&[Entry::Raw {
        name: b"bomb".to_vec(),
        kind: tar::EntryType::Regular,
        size: 2 << 30,
        data: vec![0; 4096],
        link: Vec::new(),
    }])]);
    let err = w.install_fails(&[SOURCE]);
    assert!(
        err.contains("entry `bomb` is 2147483648 bytes, more than the 268435456-byte limit"),
        "{err}"
    );
    w.assert_installed("1.0.0");

    // An archive the release lists as larger than the download cap is not
    // even fetched.
    let mut huge = w.release("1.2.0");
    huge.announced_sizes
        .insert(asset_name("none", "1.2.0", 1), 300 << 20);
    w.publish(&[huge]);
    let err = w.install_fails(&[SOURCE]);
    assert!(err.contains("is larger than the 256.0 MiB limit"), "{err}");
    assert!(w.server.requests_to(&w.archive_path("1.2.0")).is_empty());
    w.assert_installed("1.0.0");
}

#[test]
fn the_rate_limit_says_to_set_a_token_and_the_token_is_sent() {
    let w = World::new();
    w.publish(&[w.release("1.0.0")]);
    w.install(&[SOURCE]);
    let releases = ReleaseServer::releases_path("acme", "none");
    let reset = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    w.server.route(
        &releases,
        Route::Reply {
            status: 403,
            headers: vec![
                ("x-ratelimit-limit".into(), "60".into()),
                ("x-ratelimit-remaining".into(), "0".into()),
                ("x-ratelimit-reset".into(), reset.to_string()),
            ],
            body: br#"{"message":"API rate limit exceeded for 127.0.0.1."}"#.to_vec(),
        },
    );
    let err = w.install_fails(&[SOURCE]);
    assert!(
        err.contains("the GitHub API rate limit was hit at"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{}{releases}", w.server.api_url())),
        "{err}"
    );
    assert!(err.contains("it resets in 10 min"), "{err}");
    assert!(err.contains("set MACHINE_GITHUB_TOKEN"), "{err}");
    w.assert_installed("1.0.0");

    // With a token: sent as a bearer token, and the advice changes.
    let run = w.t.run_env(
        &["driver", "install", SOURCE],
        &[("MACHINE_GITHUB_TOKEN", "tok-123")],
    );
    let err = run.fails_with(1);
    assert!(err.contains("has used up its requests too"), "{err}");
    let last = w.server.requests_to(&releases).pop().unwrap();
    assert_eq!(last.header("authorization"), Some("Bearer tok-123"));

    // A 429 with retry-after is a rate limit too.
    w.server.route(
        &releases,
        Route::Reply {
            status: 429,
            headers: vec![("retry-after".into(), "30".into())],
            body: b"slow down".to_vec(),
        },
    );
    let err = w.install_fails(&[SOURCE]);
    assert!(
        err.contains("rate limit was hit") && err.contains("retry after 30 s"),
        "{err}"
    );

    // Once the limit is lifted the token goes to every request on the API's
    // host (here the downloads too).
    w.publish(&[w.release("1.0.0")]);
    let before = w.server.requests().len();
    w.t.run_env(
        &["driver", "install", SOURCE, "--force"],
        &[("MACHINE_GITHUB_TOKEN", "tok-123")],
    )
    .ok();
    let sent = &w.server.requests()[before..];
    assert!(sent.len() >= 3, "{sent:?}");
    assert!(
        sent.iter()
            .all(|r| r.header("authorization") == Some("Bearer tok-123")),
        "{sent:?}"
    );
    w.assert_installed("1.0.0");
}

#[test]
fn unknown_repositories_and_empty_ones_say_so() {
    let w = World::new();
    let err = w.install_fails(&["github.com/acme/nope"]);
    assert!(
        err.contains("repository github.com/acme/nope was not found"),
        "{err}"
    );
    assert!(err.contains("answered HTTP 404"), "{err}");
    w.server.publish("acme", "empty", &[]);
    let err = w.install_fails(&["github.com/acme/empty"]);
    assert!(
        err.contains("github.com/acme/empty has no published releases"),
        "{err}"
    );

    // Nothing listening at all.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let run = w.t.run_env(
        &["driver", "install", SOURCE],
        &[("MACHINE_GITHUB_API_URL", &url)],
    );
    let err = run.fails_with(1);
    assert!(
        err.contains(&format!(
            "cannot fetch the releases of github.com/acme/none from {url}"
        )),
        "{err}"
    );
    w.assert_clean();
}

#[test]
fn a_download_cut_midway_leaves_the_old_version_and_no_files() {
    let w = World::new();
    w.publish(&[w.release("1.0.0")]);
    w.install(&[SOURCE]);
    let next = w.release("1.1.0");
    let archive = next.data(&asset_name("none", "1.1.0", 1)).unwrap().to_vec();
    w.publish(&[next]);
    let half = archive.len() / 2;
    w.server.route(
        &w.archive_path("1.1.0"),
        Route::Cut {
            body: archive,
            send: half,
        },
    );
    let err = w.install_fails(&[SOURCE]);
    assert!(
        err.contains(&format!(
            "the download of {} from {}{} broke off",
            asset_name("none", "1.1.0", 1),
            w.server.api_url(),
            w.archive_path("1.1.0")
        )),
        "{err}"
    );
    assert!(err.contains("try again"), "{err}");
    w.assert_installed("1.0.0");

    // A file the release lists but the server no longer has.
    w.server.route(
        &w.archive_path("1.1.0"),
        Route::Reply {
            status: 404,
            headers: Vec::new(),
            body: br#"{"message":"Not Found"}"#.to_vec(),
        },
    );
    let err = w.install_fails(&[SOURCE]);
    assert!(
        err.contains(&format!(
            "fetching {} failed: {}{} answered HTTP 404 (Not Found)",
            asset_name("none", "1.1.0", 1),
            w.server.api_url(),
            w.archive_path("1.1.0")
        )),
        "{err}"
    );
    assert!(err.contains("changed or deleted"), "{err}");
    w.assert_installed("1.0.0");
}

/// The progress bar's line for `asset` on a terminal: `\r`, the name,
/// `[###   ]`, and the percentage, which it returns.
fn bar_percentages(shown: &str, asset: &str) -> Vec<u32> {
    shown
        .split('\r')
        .filter_map(|line| {
            let rest = line.strip_prefix(asset)?.strip_prefix(" [")?;
            let (bar, after) = rest.split_once("] ")?;
            if !bar.chars().all(|c| c == '#' || c == ' ') {
                return None;
            }
            after.trim_start().split_once('%')?.0.parse().ok()
        })
        .collect()
}

#[test]
fn a_terminal_shows_the_download_as_a_progress_bar() {
    let w = World::new();
    let release = w.release("1.0.0");
    let asset = asset_name("none", "1.0.0", 1);
    let archive = release.data(&asset).unwrap().to_vec();
    w.publish(&[release]);
    // Half the archive, then nothing until the test has seen the bar.
    let gate = Gate::new();
    w.server.route(
        &w.archive_path("1.0.0"),
        Route::Held {
            body: archive.clone(),
            send: archive.len() / 2,
            gate: gate.clone(),
        },
    );
    let mut cmd = w.t.command(&["driver", "install", SOURCE]);
    cmd.env("TERM", "xterm");
    let mut term = Terminal::spawn(cmd);
    let limit = Duration::from_secs(60);
    // While the rest is held back the bar shows the half that came (a
    // stalled download is redrawn too, not left at its first figure).
    let shown = term.wait_for("the bar at half", limit, |s| {
        bar_percentages(s, &asset)
            .iter()
            .any(|p| (45..100).contains(p))
    });
    let total = format!("/ {:.1} MiB", archive.len() as f64 / (1 << 20) as f64);
    assert!(shown.contains(&total), "the bar names the total: {shown:?}");
    gate.open();
    let (status, shown) = term.finish(limit);
    assert!(status.success(), "{status}: {shown}");
    let drawn = bar_percentages(&shown, &asset);
    assert_eq!(drawn.last(), Some(&100), "{shown:?}");
    assert!(
        shown.contains(&format!("{asset} [{}] 100%", "#".repeat(24))),
        "{shown:?}"
    );
    // The line that stands in for the bar off a terminal is not printed.
    assert!(!shown.contains("Downloading "), "{shown:?}");
    w.assert_installed("1.0.0");

    // Off a terminal: one line saying what is fetched, and no redraws.
    w.publish(&[w.release("1.0.0")]);
    let run = w.install(&[SOURCE, "--force"]);
    assert!(
        run.stderr
            .contains(&format!("Downloading {asset} ({}", &total[2..])),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains('\r'), "{:?}", run.stderr);
    assert!(bar_percentages(&run.stderr, &asset).is_empty());
    w.assert_installed("1.0.0");
}

#[test]
fn a_release_whose_binary_is_not_a_working_driver_is_refused() {
    let w = World::new();
    w.publish(&[w.release("1.0.0")]);
    w.install(&[SOURCE]);
    let fault = std::fs::read(w.t.bin.join("machine-driver-fault")).expect("fault driver built");
    let asset = asset_name("none", "1.1.0", 1);
    let release = |archive: Vec<u8>| {
        ReleaseSpec::new("v1.1.0")
            .asset(&asset, archive)
            .with_sums()
    };
    let cases = [
        (
            // Verified and safe to unpack, but it does not start as a driver.
            driver_archive("none", NOT_A_BINARY),
            vec![
                format!(
                    "the binary in {asset} (release v1.1.0) does not work as a driver, so it was not installed"
                ),
                "exited with status 1 before it finished the plugin handshake".to_owned(),
                "tell the driver's author; an earlier release may work: machine driver install 'github.com/acme/none@<1.1.0'".to_owned(),
            ],
        ),
        (
            // A working driver, but another one.
            driver_archive("none", &fault),
            vec![format!(
                "the binary in {asset} (release v1.1.0) does not work as a driver, so it was not installed: it calls itself `fault`, but the file is for driver `none`"
            )],
        ),
        (
            tar_gz(&[Entry::File {
                path: "README.md".into(),
                data: b"no binary here\n".to_vec(),
                mode: 0o644,
            }]),
            vec![
                format!("{asset} from release v1.1.0 was refused"),
                "it has no file named `machine-driver-none`".to_owned(),
                "README.md".to_owned(),
                "the archive must hold the binary machine-driver-none".to_owned(),
            ],
        ),
        (
            b"this is not gzip".to_vec(),
            vec![
                format!("{asset} from release v1.1.0 was refused"),
                "it is not a valid .tar.gz".to_owned(),
            ],
        ),
    ];
    for (archive, wants) in cases {
        w.publish(&[release(archive)]);
        let err = w.install_fails(&[SOURCE]);
        for want in &wants {
            assert!(err.contains(want.as_str()), "{err}\nwanted: {want}");
        }
        // The previous version is still the one in place, and it works.
        w.assert_installed("1.0.0");
        assert_eq!(std::fs::read(w.installed_binary()).unwrap(), w.binary);
    }
}

/// A minisign key pair, its public key as base64 and as minisign.pub.
struct Key {
    pair: minisign::KeyPair,
}

impl Key {
    fn new() -> Self {
        Self {
            pair: minisign::KeyPair::generate_unencrypted_keypair().unwrap(),
        }
    }

    fn base64(&self) -> String {
        self.pair.pk.to_base64()
    }

    fn pub_file(&self) -> String {
        format!(
            "untrusted comment: minisign public key\n{}\n",
            self.base64()
        )
    }

    fn sign(&self, data: &[u8]) -> String {
        minisign::sign(
            Some(&self.pair.pk),
            &self.pair.sk,
            std::io::Cursor::new(data),
            Some("timestamp:1800000000\tfile:SHA256SUMS"),
            None,
        )
        .unwrap()
        .to_string()
    }
}

/// A release whose SHA256SUMS is signed by `key`.
fn signed(w: &World, version: &str, key: &Key) -> ReleaseSpec {
    let r = w.release(version);
    let sig = key.sign(r.data("SHA256SUMS").unwrap());
    r.asset("SHA256SUMS.minisig", sig)
}

#[test]
fn a_valid_signature_is_verified_and_its_key_pinned() {
    let w = World::new();
    let key = Key::new();
    w.publish(&[signed(&w, "1.0.0", &key)]);
    let run = w.install(&[SOURCE, "--public-key", &key.base64(), "--require-signature"]);
    assert!(
        run.stderr.contains("SHA256SUMS is signed with key"),
        "{}",
        run.stderr
    );
    w.assert_installed("1.0.0");
    let e = &w.lock()["drivers"]["none"];
    assert_eq!(e["public_key"], key.base64());
    assert_eq!(e["key_source"], "--public-key");

    // The next release must be signed with the same key: unsigned fails...
    w.publish(&[signed(&w, "1.0.0", &key), w.release("1.1.0")]);
    let up = w.run(&["driver", "upgrade", "none"]);
    let err = up.fails_with(1);
    assert!(
        err.contains("release v1.1.0 of github.com/acme/none is not signed"),
        "{err}"
    );
    assert!(
        err.contains("every later release must be signed with it"),
        "{err}"
    );
    w.assert_installed("1.0.0");

    // ... and so does another key, even with its own minisign.pub.
    let other = Key::new();
    let impostor = signed(&w, "1.1.0", &other).asset("minisign.pub", other.pub_file());
    w.publish(&[impostor]);
    let err = w.run(&["driver", "upgrade", "none"]);
    let err = err.fails_with(1);
    assert!(err.contains("the signature of release v1.1.0"), "{err}");
    assert!(err.contains("not with the trusted key"), "{err}");
    w.assert_installed("1.0.0");

    // Signed with the pinned key: upgraded.
    w.publish(&[signed(&w, "1.1.0", &key)]);
    w.run(&["driver", "upgrade", "none"]).ok();
    w.assert_installed("1.1.0");

    // A key file works as --public-key too.
    let file = w.t.store_path().join("author.pub");
    std::fs::write(&file, key.pub_file()).unwrap();
    w.install(&[SOURCE, "--force", "--public-key", file.to_str().unwrap()]);
    w.assert_installed("1.1.0");
}

#[test]
fn the_release_key_is_trusted_on_first_use() {
    let w = World::new();
    let key = Key::new();
    w.publish(&[signed(&w, "1.0.0", &key).asset("minisign.pub", key.pub_file())]);
    let run = w.install(&[SOURCE]);
    assert!(
        run.stderr.contains("trusting key") && run.stderr.contains("on first use"),
        "{}",
        run.stderr
    );
    w.assert_installed("1.0.0");
    let e = &w.lock()["drivers"]["none"];
    assert_eq!(e["public_key"], key.base64());
    assert!(
        e["key_source"].as_str().unwrap().contains("minisign.pub"),
        "{e}"
    );
}

#[test]
fn an_invalid_signature_is_refused() {
    let w = World::new();
    w.publish(&[w.release("1.0.0")]);
    w.install(&[SOURCE]);
    let key = Key::new();
    let r = w.release("1.1.0");
    let forged = key.sign(b"another SHA256SUMS");
    w.publish(&[r.asset("SHA256SUMS.minisig", forged)]);
    let err = w.install_fails(&[SOURCE, "--public-key", &key.base64()]);
    assert!(
        err.contains("the signature of release v1.1.0 of github.com/acme/none is not valid"),
        "{err}"
    );
    assert!(err.contains("does not verify with key"), "{err}");
    assert!(err.contains("nothing was installed"), "{err}");
    w.assert_installed("1.0.0");

    let err = w.install_fails(&[SOURCE, "--public-key", "RWnotakey"]);
    assert!(
        err.contains("`RWnotakey` is not a minisign public key"),
        "{err}"
    );
}

#[test]
fn require_signature_refuses_unsigned_and_unverifiable_releases() {
    let w = World::new();
    w.publish(&[w.release("1.0.0")]);
    let err = w.install_fails(&[SOURCE, "--require-signature"]);
    assert!(
        err.contains("release v1.0.0 of github.com/acme/none is not signed"),
        "{err}"
    );
    assert!(err.contains("--require-signature was given"), "{err}");
    assert!(!w.installed_binary().exists());

    // Signed, but no key to check it with.
    let key = Key::new();
    w.publish(&[signed(&w, "1.0.0", &key)]);
    let err = w.install_fails(&[SOURCE, "--require-signature"]);
    assert!(err.contains("no public key is known"), "{err}");
    assert!(!w.installed_binary().exists());
    w.assert_clean();

    // Without --require-signature that is a warning.
    let run = w.install(&[SOURCE]);
    assert!(
        run.stderr.contains("no public key is known"),
        "{}",
        run.stderr
    );
    w.assert_installed("1.0.0");
}

#[test]
fn a_binary_changed_after_install_is_refused_at_load() {
    let w = World::new();
    w.publish(&[w.release("1.0.0")]);
    w.install(&[&format!("{SOURCE}@^1")]);
    let bin = w.installed_binary();

    // Same content, new times: hashed, and still fine.
    // (Read-only handles: a driver that is still exiting keeps the file
    // busy for writing.)
    std::fs::File::open(&bin)
        .unwrap()
        .set_modified(std::time::SystemTime::now())
        .unwrap();
    w.assert_installed("1.0.0");

    // Different content, put in place as a copy over it would be.
    let mut changed = std::fs::read(&bin).unwrap();
    changed.extend_from_slice(b"\0tampered");
    let tmp = w.drivers_dir().join("replacement");
    std::fs::write(&tmp, &changed).unwrap();
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, &bin).unwrap();
    let run = w.run(&["driver", "info", "none"]);
    let err = run.fails_with(1);
    assert!(
        err.contains("is not the binary that `machine driver install` installed"),
        "{err}"
    );
    assert!(
        err.contains("machine driver install github.com/acme/none@^1 --force"),
        "{err}"
    );
    assert!(err.contains("machine driver remove none"), "{err}");
    let ls = w.run(&["driver", "ls"]);
    assert_eq!(ls.status.code(), Some(1));
    assert!(
        ls.stdout
            .lines()
            .any(|l| l.starts_with("none ") && l.contains("is not the binary")),
        "{}",
        ls.stdout
    );
    // Machines are refused the driver as well.
    let create = w.run(&["create", "-d", "none", "--url", "tcp://127.0.0.1:1", "m"]);
    assert!(
        create.fails_with(1).contains("is not the binary"),
        "{}",
        create.stderr
    );
    w.t.assert_no_driver_left(LEFT);

    // The advice works.
    w.install(&[&format!("{SOURCE}@^1"), "--force"]);
    w.assert_installed("1.0.0");
}

#[test]
fn install_path_checks_and_records_a_local_binary() {
    let w = World::new();
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("machine-driver-none");
    std::fs::copy(w.t.bin.join("machine-driver-none"), &file).unwrap();
    let run = w.install(&["--path", file.to_str().unwrap()]);
    assert!(
        run.stderr.contains("Installed driver `none` from"),
        "{}",
        run.stderr
    );
    let e = &w.lock()["drivers"]["none"];
    assert_eq!(e["source"], format!("path:{}", file.display()));
    assert_eq!(e["version"], "0.1.0");
    assert_eq!(e["sha256"], sha256_hex(&w.binary));
    let ls = w.run(&["driver", "ls"]);
    assert!(
        ls.stdout
            .lines()
            .any(|l| l.starts_with("none ") && l.contains(&format!("path:{}", file.display()))),
        "{}",
        ls.stdout
    );
    // Reinstalling from the same path needs no --force.
    w.install(&["--path", file.to_str().unwrap()]);

    // A binary that calls itself something else is refused.
    let err = w.install_fails(&[
        "--path",
        w.t.bin.join("machine-driver-fault").to_str().unwrap(),
        "--name",
        "none",
    ]);
    assert!(err.contains("already installed from path:"), "{err}");
    let err = w.install_fails(&[
        "--path",
        w.t.bin.join("machine-driver-fault").to_str().unwrap(),
        "--name",
        "none",
        "--force",
    ]);
    assert!(
        err.contains("it calls itself `fault`, but the file is for driver `none`"),
        "{err}"
    );
    // So is a program that is not a driver at all.
    let script = scratch.path().join("machine-driver-script");
    std::fs::write(&script, "#!/bin/sh\necho hello\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let err = w.install_fails(&["--path", script.to_str().unwrap()]);
    assert!(
        err.contains("does not work as a driver, so it was not installed"),
        "{err}"
    );
    assert!(err.contains("instead of a plugin handshake"), "{err}");
    assert!(!w.drivers_dir().join("machine-driver-script").exists());

    let info = w.run(&["driver", "info", "none", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(info.ok()).unwrap();
    assert_eq!(v["installed"]["source"], format!("path:{}", file.display()));
    w.assert_clean();

    // A GitHub install does not silently replace it.
    w.publish(&[w.release("1.0.0")]);
    let err = w.install_fails(&[SOURCE]);
    assert!(
        err.contains("driver `none` is already installed from path:"),
        "{err}"
    );
    assert!(err.contains("--force"), "{err}");
}

#[test]
fn remove_refuses_while_machines_use_the_driver() {
    let w = World::new();
    w.publish(&[w.release("1.0.0")]);
    w.install(&[SOURCE]);
    w.run(&["create", "-d", "none", "--url", "tcp://127.0.0.1:1", "m1"])
        .ok();
    let err = w.run(&["driver", "remove", "none"]);
    let err = err.fails_with(1);
    assert!(err.contains("driver `none` is used by m1"), "{err}");
    assert!(err.contains("machine rm m1"), "{err}");
    w.assert_installed("1.0.0");

    let run = w.run(&["driver", "remove", "--force", "none"]);
    run.ok();
    assert!(
        run.stderr
            .contains("Removed driver `none` (installed from github.com/acme/none@1.0.0)"),
        "{}",
        run.stderr
    );
    assert!(!w.installed_binary().exists());
    assert!(w.lock()["drivers"].get("none").is_none());

    // A driver machine did not install is not removed.
    let err = w.run(&["driver", "remove", "fault"]);
    let err = err.fails_with(1);
    assert!(err.contains("driver `fault` is not installed in"), "{err}");
    assert!(err.contains("was not installed by machine"), "{err}");
    w.assert_clean();
}

#[test]
fn create_with_a_github_source_installs_the_driver_then_uses_it() {
    let w = World::new();
    w.publish(&[w.release("1.0.0"), w.release("1.1.0")]);
    let run = w.run(&[
        "create",
        "-d",
        &format!("{SOURCE}@~1.0"),
        "--url",
        "tcp://127.0.0.1:1",
        "m",
    ]);
    run.ok();
    assert!(
        run.stderr
            .contains("Driver github.com/acme/none@~1.0 is not installed; installing it first"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("Machine `m` created"), "{}", run.stderr);
    w.assert_installed("1.0.0");
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(w.t.store_path().join("machines/m/config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["driver"], "none");
    assert_eq!(w.run(&["url", "m"]).ok().trim(), "tcp://127.0.0.1:1");

    // Installed already: no second API call.
    let calls = w.server.requests().len();
    w.run(&["create", "-d", SOURCE, "--url", "tcp://127.0.0.1:2", "m2"])
        .ok();
    assert_eq!(w.server.requests().len(), calls);
    // `driver info` takes the source too.
    let info = w.run(&["driver", "info", SOURCE, "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(info.ok()).unwrap();
    assert_eq!(v["name"], "none");
    w.assert_clean();

    // A source that cannot be installed fails the create, which leaves
    // nothing behind.
    let run = w.run(&["create", "-d", "github.com/acme/nope", "m3"]);
    let err = run.fails_with(1);
    assert!(
        err.contains("repository github.com/acme/nope was not found"),
        "{err}"
    );
    assert!(!w.t.store_path().join("machines/m3").exists());
    w.assert_clean();
}
