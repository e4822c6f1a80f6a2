//! Installing drivers: from GitHub releases
//! (`machine driver install github.com/OWNER/REPO[@VERSION|@RANGE]`), from a
//! local file (`--path`, for authors), upgrading and removing them.
//!
//! One install, in order; nothing in the drivers directory changes before
//! the last step, so every failure leaves the installed version as it was:
//!
//! 1. take the drivers directory's lock (`drivers/.lock`), so installs do
//!    not race, and remove what an interrupted install left;
//! 2. one API call for the releases ([`github`]); choose the newest release
//!    that matches and has an archive for this OS/arch and a protocol this
//!    CLI speaks (incompatible ones are skipped by name, before download);
//! 3. fetch `SHA256SUMS` (a release without one is refused), and check its
//!    minisign signature `SHA256SUMS.minisig` when there is one ([`verify`]);
//! 4. download the archive into a temporary directory inside the drivers
//!    directory, hashing it on the way, and compare with `SHA256SUMS`
//!    ([`download`]);
//! 5. unpack it there, refusing paths that escape and oversized content
//!    ([`unpack`]);
//! 6. start the binary: handshake, health, `GetInfo`; its name must match;
//! 7. record the new digest in the lock file (keeping the old one
//!    acceptable), rename the binary into place (atomic: same directory),
//!    then record its file identity ([`lock`]).
//!
//! The temporary directory is removed on every path out, and the driver
//! started in step 6 is shut down and waited for.

pub mod download;
pub mod github;
pub mod lock;
pub mod unpack;
pub mod verify;

use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use machine_proto::client::{LaunchOptions, Plugin};
use machine_proto::handshake::APP_PROTOCOL_VERSIONS;
use machine_proto::v1;

use crate::driver_host::{self, BINARY_PREFIX, ENV_START_TIMEOUT};
use crate::store::Store;
use crate::ui;
use github::{Api, Choice, Request, Source};
use lock::{Entry, FileId, LockFile};
use verify::PublicKey;

/// Prefix of the temporary directories installs work in.
const TEMP_PREFIX: &str = ".install-";
/// The drivers directory's lock, held by install, upgrade and remove.
const DIR_LOCK: &str = ".lock";
/// Caps for the small files of a release.
const SUMS_LIMIT: u64 = 1 << 20;
const SIG_LIMIT: u64 = 64 << 10;
/// Cap for a downloaded archive (compressed).
const ARCHIVE_LIMIT: u64 = 256 << 20;

/// Why an install, upgrade or remove failed. Each message says what failed
/// (which URL, release, asset or file) and what to do next.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(
        "`{source_}` is not a GitHub driver source: {reason}\n  hint: write it as github.com/OWNER/REPO, optionally with @VERSION (@1.2.3) or @RANGE (@^1.2, '@>=1, <2')"
    )]
    BadSource { source_: String, reason: String },
    #[error("cannot set up HTTP: {0}")]
    Client(String),
    #[error(
        "cannot fetch {what} from {url}: {reason}\n  hint: check the network connection (and {} if it is set)",
        github::ENV_API_URL
    )]
    Connect {
        what: String,
        url: String,
        reason: String,
    },
    #[error(
        "the download of {what} from {url} broke off after {got} bytes: {reason}; nothing was installed\n  hint: try again"
    )]
    Interrupted {
        what: String,
        url: String,
        got: u64,
        reason: String,
    },
    #[error(
        "fetching {what} failed: {url} answered HTTP {status}{}{}",
        if message.is_empty() { String::new() } else { format!(" ({message})") },
        http_hint(*status)
    )]
    Http {
        status: u16,
        url: String,
        what: String,
        message: String,
    },
    #[error(
        "the GitHub API rate limit was hit at {url}{resets}\n  hint: {}",
        if *token_set {
            "the token in MACHINE_GITHUB_TOKEN has used up its requests too; wait until the limit resets"
        } else {
            "set MACHINE_GITHUB_TOKEN to a GitHub token (one without any permissions does for public repositories) to raise the limit from 60 requests an hour, or wait until it resets"
        }
    )]
    RateLimited {
        url: String,
        resets: String,
        token_set: bool,
    },
    #[error(
        "GitHub refused the token in MACHINE_GITHUB_TOKEN (HTTP 401 from {url}: {message})\n  hint: check the token, or unset MACHINE_GITHUB_TOKEN (public repositories need none)"
    )]
    BadToken { url: String, message: String },
    #[error(
        "repository {source_} was not found: {url} answered HTTP 404\n  hint: check the owner and repository name; private repositories are not supported"
    )]
    RepoNotFound { source_: String, url: String },
    #[error("{url} did not answer as the GitHub API does: {reason}")]
    BadReply { url: String, reason: String },
    #[error(
        "{source_} has no published releases ({url})\n  hint: the author must publish a release with archives named {BINARY_PREFIX}NAME_VERSION_pPROTOCOL_OS_ARCH.tar.gz and a SHA256SUMS file"
    )]
    NoReleases { source_: String, url: String },
    #[error("no release of {source_} fits{details}\n  hint: {hint}")]
    NoMatch {
        source_: String,
        details: String,
        hint: String,
    },
    #[error(
        "release {tag} of {source_} has no SHA256SUMS file, so {asset} cannot be verified; machine installs no unverified driver ({page})\n  hint: ask the author to attach SHA256SUMS (the output of `sha256sum *.tar.gz`) to every release"
    )]
    MissingSums {
        source_: String,
        tag: String,
        asset: String,
        page: String,
    },
    #[error(
        "SHA256SUMS of release {tag} of {source_} {problem}\n  hint: ask the author to regenerate SHA256SUMS over the release's archives"
    )]
    BadSums {
        source_: String,
        tag: String,
        problem: String,
    },
    #[error(
        "{asset} (from {url}) does not match release {tag}'s SHA256SUMS: it has SHA-256 {found}, SHA256SUMS says {expected}; nothing was installed\n  hint: the download was damaged or the release was changed after SHA256SUMS was made; try again, and tell the author if it persists"
    )]
    ChecksumMismatch {
        asset: String,
        url: String,
        tag: String,
        expected: String,
        found: String,
    },
    #[error(
        "{what} at {url} is larger than the {} limit; nothing was installed\n  hint: tell the driver's author; a driver's files are expected to be well under it",
        download::human_bytes(*limit)
    )]
    TooLarge {
        what: String,
        url: String,
        limit: u64,
    },
    #[error(
        "`{given}` is not a minisign public key: {reason}\n  hint: pass the key's base64 line (RW...) or the path of the author's minisign.pub"
    )]
    BadPublicKey { given: String, reason: String },
    #[error(
        "the signature of release {tag} of {source_} is not valid: SHA256SUMS.minisig {reason} (the trusted key is from {key_source}); nothing was installed\n  hint: {hint}"
    )]
    BadSignature {
        source_: String,
        tag: String,
        reason: String,
        key_source: String,
        hint: String,
    },
    #[error(
        "release {tag} of {source_} is not signed (it has no SHA256SUMS.minisig), but {why}; nothing was installed\n  hint: {hint}"
    )]
    Unsigned {
        source_: String,
        tag: String,
        why: String,
        hint: String,
    },
    #[error(
        "release {tag} of {source_} is signed, but no public key is known to check it, and --require-signature was given; nothing was installed\n  hint: pass the author's key with --public-key (the base64 line of their minisign.pub, obtained from them, not from the release)"
    )]
    NoKey { source_: String, tag: String },
    #[error(
        "{asset} from release {tag} was refused: {error}; nothing was installed\n  hint: {hint}"
    )]
    Unpack {
        asset: String,
        tag: String,
        error: Box<unpack::UnpackError>,
        hint: String,
    },
    #[error("{what} does not work as a driver, so it was not installed: {error}\n  hint: {hint}")]
    Check {
        what: String,
        error: String,
        hint: String,
    },
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    #[error(
        "driver `{name}` is already installed from {existing}; installing it from {new} would replace it\n  hint: pass --force to replace it, or `machine driver remove {name}` first"
    )]
    OtherSource {
        name: String,
        existing: String,
        new: String,
    },
    #[error(
        "{} exists and was not installed by `machine driver install`\n  hint: pass --force to replace it",
        path.display()
    )]
    Unmanaged { path: PathBuf },
    #[error("driver `{name}` is not installed in {}{elsewhere}", dir.display())]
    NotInstalled {
        name: String,
        dir: PathBuf,
        elsewhere: String,
    },
    #[error(
        "driver `{name}` is used by {}: without it they cannot be started, stopped or removed at their provider\n  hint: remove them first (`machine rm {}`), or pass --force to remove the driver anyway",
        machines.join(", "),
        machines.join(" ")
    )]
    InUse { name: String, machines: Vec<String> },
    #[error("`{0}` is not a driver name: use letters, digits, '-', '_' or '.'")]
    BadName(String),
    #[error("{} is not an executable file\n  hint: give the path of a driver binary, e.g. ./target/release/machine-driver-NAME", .0.display())]
    NotExecutable(PathBuf),
}

type Result<T, E = InstallError> = std::result::Result<T, E>;

/// What to do about an HTTP status other than the ones with their own
/// error (rate limit, bad token, unknown repository).
fn http_hint(status: u16) -> &'static str {
    match status {
        404 => {
            "\n  hint: the release or the file was changed or deleted since it was listed; try again, and tell the author if it persists"
        }
        500..=599 => "\n  hint: the server has trouble; try again later",
        _ => "",
    }
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> InstallError {
    let path = path.to_owned();
    move |source| InstallError::Io {
        action,
        path,
        source,
    }
}

/// What `install` was asked, besides the source.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Reinstall the same version; replace a driver of another source or
    /// one not installed by machine.
    pub force: bool,
    /// A release without a verifiable signature is an error.
    pub require_signature: bool,
    /// The author's minisign key: base64, minisign.pub text, or its path.
    pub public_key: Option<String>,
    /// Which driver, when a release has archives for several (GitHub), or
    /// the name to install a file under (`--path`).
    pub name: Option<String>,
}

/// What an install did.
#[derive(Debug, Clone)]
pub enum Outcome {
    Installed {
        name: String,
        entry: Entry,
    },
    /// The same version from the same source was there already.
    AlreadyInstalled {
        name: String,
        entry: Entry,
    },
}

/// The drivers directory of a store, with its lock held.
#[derive(Debug)]
struct Dir {
    path: PathBuf,
    _lock: File,
}

impl Dir {
    /// Creates the directory if needed, takes its lock (saying so when
    /// another install holds it), and removes what interrupted installs
    /// left: while the lock is held, no other install is running.
    fn open(store: &Store) -> Result<Self> {
        let path = store.drivers_dir();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&path)
            .map_err(io("create the drivers directory", &path))?;
        let lock_path = path.join(DIR_LOCK);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io("open", &lock_path))?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            ui::info(&format!(
                "Waiting for another driver install in {} to finish...",
                path.display()
            ));
            // SAFETY: as above.
            if unsafe { libc::flock(fd, libc::LOCK_EX) } != 0 {
                return Err(io("lock", &lock_path)(std::io::Error::last_os_error()));
            }
        }
        if let Ok(entries) = std::fs::read_dir(&path) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        Ok(Self { path, _lock: file })
    }

    fn binary(&self, name: &str) -> PathBuf {
        self.path.join(format!("{BINARY_PREFIX}{name}"))
    }

    fn temp(&self) -> Result<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempdir_in(&self.path)
            .map_err(io("create a temporary directory in", &self.path))
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Refuses to replace a driver of another source, or one not installed
/// by machine, unless forced.
fn check_replace(dir: &Dir, lock: &LockFile, name: &str, source: &str, force: bool) -> Result<()> {
    if force {
        return Ok(());
    }
    match lock.drivers.get(name) {
        Some(e) if !e.source.eq_ignore_ascii_case(source) => Err(InstallError::OtherSource {
            name: name.to_owned(),
            existing: e.display_source(),
            new: source.to_owned(),
        }),
        Some(_) => Ok(()),
        None if dir.binary(name).exists() => Err(InstallError::Unmanaged {
            path: dir.binary(name),
        }),
        None => Ok(()),
    }
}

/// Installs from GitHub.
pub async fn install_github(
    store: &Store,
    src: &Source,
    opts: &Options,
    debug: bool,
) -> Result<Outcome> {
    let started = Instant::now();
    let dir = Dir::open(store)?;
    let api = Api::from_env()?;
    ui::step(&format!("Looking up the releases of {}", src.spec()));
    let releases = api.releases(src, fits(src, opts.name.as_deref())).await?;
    let choice = choose(&api, src, &releases, opts.name.as_deref())?;
    let lock = lock::load(&dir.path)?;
    let name = choice.parsed.driver.clone();
    check_replace(&dir, &lock, &name, &src.id(), opts.force)?;
    if let Some(e) = lock.drivers.get(&name)
        && !opts.force
        && e.source.eq_ignore_ascii_case(&src.id())
        && e.version == choice.version.to_string()
        && lock::verify_installed(&dir.path, &name, &dir.binary(&name)).is_ok()
        && dir.binary(&name).exists()
    {
        return Ok(Outcome::AlreadyInstalled {
            name,
            entry: e.clone(),
        });
    }
    let entry = install_choice(&dir, &api, src, &choice, &lock, opts, debug).await?;
    ui::done(
        &format!(
            "Installed driver `{name}` {} from {} at {}",
            entry.version,
            src.id(),
            dir.binary(&name).display()
        ),
        started.elapsed(),
    );
    Ok(Outcome::Installed { name, entry })
}

/// Whether releases read so far hold one to install: then no older page
/// of the list is needed.
fn fits<'a>(src: &'a Source, name: Option<&'a str>) -> impl FnMut(&[github::Release]) -> bool + 'a {
    move |releases| {
        github::select(
            releases,
            &src.request,
            github::platform(),
            APP_PROTOCOL_VERSIONS,
            name,
        )
        .choice
        .is_some()
    }
}

/// The release to install, or why there is none; newer releases passed
/// over are mentioned on stderr.
fn choose(
    api: &Api,
    src: &Source,
    releases: &[github::Release],
    name: Option<&str>,
) -> Result<Choice> {
    if releases.is_empty() {
        return Err(InstallError::NoReleases {
            source_: src.id(),
            url: api.releases_url(src),
        });
    }
    let platform = github::platform();
    let sel = github::select(
        releases,
        &src.request,
        platform,
        APP_PROTOCOL_VERSIONS,
        name,
    );
    if let Some(choice) = sel.choice {
        for s in &sel.skipped {
            ui::warn(&format!("skipping release {}: {}", s.tag, s.reason));
        }
        return Ok(choice);
    }
    let (os, arch) = platform;
    let mut details = format!(
        " {} with an archive for {os}/{arch} and protocol {}",
        src.request,
        APP_PROTOCOL_VERSIONS
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    for s in sel.skipped.iter().take(10) {
        details += &format!("\n  release {}: {}", s.tag, s.reason);
    }
    if sel.skipped.len() > 10 {
        details += &format!("\n  ... and {} more", sel.skipped.len() - 10);
    }
    if sel.not_matching > 0 {
        details += &format!(
            "\n  ({} other release{} did not match {} or have no version tag)",
            sel.not_matching,
            if sel.not_matching == 1 { "" } else { "s" },
            src.request
        );
    }
    if releases.len() >= github::MAX_PAGES * github::PER_PAGE as usize {
        details += &format!(
            "\n  (only the newest {} releases were looked at)",
            releases.len()
        );
    }
    let hint = if sel.skipped.is_empty() {
        match src.request {
            Request::Newest => format!(
                "{} has no release with a version tag (v1.2.3) that is not a draft or prerelease; install a prerelease by its exact version (@1.2.3-rc.1)",
                src.id()
            ),
            _ => format!(
                "ask for another version or range, or for the newest with `machine driver install {}`",
                src.id()
            ),
        }
    } else if sel.newer_protocol_only {
        "the releases above need a newer machine: upgrade machine, or pick an older release of the driver with @VERSION".to_owned()
    } else {
        format!(
            "ask the author to publish {BINARY_PREFIX}NAME_VERSION_p{}_{os}_{arch}.tar.gz, or pick another release with @VERSION",
            APP_PROTOCOL_VERSIONS.iter().max().copied().unwrap_or(1)
        )
    };
    Err(InstallError::NoMatch {
        source_: src.id(),
        details,
        hint,
    })
}

/// Steps 3 to 7 for a chosen release.
async fn install_choice(
    dir: &Dir,
    api: &Api,
    src: &Source,
    choice: &Choice,
    lock: &LockFile,
    opts: &Options,
    debug: bool,
) -> Result<Entry> {
    let name = &choice.parsed.driver;
    let tag = choice.release.tag_name.clone();
    let asset = &choice.asset;
    ui::step(&format!(
        "Installing driver `{name}` {} from {} (release {tag}, protocol {})",
        choice.version,
        src.id(),
        choice.parsed.protocol
    ));
    // 3. SHA256SUMS, always; its signature when there is one.
    let Some(sums_asset) = choice.release.asset(github::SUMS_ASSET) else {
        return Err(InstallError::MissingSums {
            source_: src.id(),
            tag,
            asset: asset.name.clone(),
            page: choice
                .release
                .html_url
                .clone()
                .unwrap_or_else(|| api.releases_url(src)),
        });
    };
    let sums_url = &sums_asset.browser_download_url;
    let sums = api
        .get_small(
            sums_url,
            &format!("SHA256SUMS of release {tag}"),
            SUMS_LIMIT,
        )
        .await?;
    let bad_sums = |problem: String| InstallError::BadSums {
        source_: src.id(),
        tag: tag.clone(),
        problem,
    };
    let table = verify::parse_sums(&String::from_utf8_lossy(&sums)).map_err(&bad_sums)?;
    let Some(expected) = table.get(&asset.name).cloned() else {
        return Err(bad_sums(format!("has no line for {}", asset.name)));
    };
    let pinned = lock
        .drivers
        .get(name)
        .filter(|e| e.source.eq_ignore_ascii_case(&src.id()));
    let key = check_signature(api, src, choice, &sums, pinned, opts).await?;

    // 4. Download and compare.
    let work = dir.temp()?;
    let archive = work.path().join(&asset.name);
    let url = &asset.browser_download_url;
    let found = api
        .http
        .download(
            url,
            api.token_for(url),
            &asset.name,
            &archive,
            ARCHIVE_LIMIT,
            Some(asset.size).filter(|s| *s > 0),
        )
        .await?;
    if found != expected {
        return Err(InstallError::ChecksumMismatch {
            asset: asset.name.clone(),
            url: url.clone(),
            tag,
            expected,
            found,
        });
    }
    ui::step(&format!(
        "{} matches SHA256SUMS (sha256 {})",
        asset.name,
        &found[..16]
    ));

    // 5. Unpack.
    let unpacked = work.path().join("unpacked");
    std::fs::create_dir(&unpacked).map_err(io("create", &unpacked))?;
    let file_name = format!("{BINARY_PREFIX}{name}");
    let (archive2, unpacked2, file_name2) = (archive.clone(), unpacked.clone(), file_name.clone());
    let binary = tokio::task::spawn_blocking(move || {
        let files = unpack::unpack(&archive2, &unpacked2, &unpack::Limits::default())?;
        unpack::find_binary(&unpacked2, &files, &file_name2)
    })
    .await
    .map_err(|e| InstallError::Io {
        action: "unpack",
        path: archive.clone(),
        source: std::io::Error::other(e.to_string()),
    })?
    .map_err(|error| InstallError::Unpack {
        asset: asset.name.clone(),
        tag: tag.clone(),
        hint: match &error {
            unpack::UnpackError::Io { .. } => "check the disk space and permissions of the drivers directory".to_owned(),
            unpack::UnpackError::NoBinary { .. } | unpack::UnpackError::SeveralBinaries { .. } => format!(
                "tell the author: the archive must hold the binary {file_name}, at its top or in one directory"
            ),
            _ => "the archive is unsafe or broken; tell the author, and do not unpack it by hand".to_owned(),
        },
        error: Box::new(error),
    })?;
    let _ = std::fs::remove_file(&archive);

    // 6. Does it work, and is it what the archive says?
    let what = format!("the binary in {} (release {tag})", asset.name);
    let author = format!(
        "tell the driver's author; an earlier release may work: machine driver install '{}@<{}'",
        src.id(),
        choice.version
    );
    let (protocol, reported) = check_binary(
        name,
        &binary,
        &what,
        &author,
        Some(choice.parsed.protocol),
        debug,
    )
    .await?;
    if semver::Version::parse(&reported).ok().as_ref() != Some(&choice.version) {
        ui::warn(&format!(
            "the driver in release {tag} reports version {reported}; the lock records the release's version {}",
            choice.version
        ));
    }

    // 7. Into place.
    let entry = Entry {
        source: src.id(),
        requested: src.requested.clone(),
        version: choice.version.to_string(),
        tag: Some(choice.release.tag_name.clone()),
        asset: Some(asset.name.clone()),
        url: Some(url.clone()),
        archive_sha256: Some(found),
        sha256: String::new(),
        protocol,
        public_key: key.as_ref().map(|(k, _)| k.base64.clone()),
        key_source: key.as_ref().map(|(_, s)| s.clone()),
        installed_at: now(),
        file: None,
        replacing_sha256: None,
    };
    commit(dir, name, &binary, entry).await
}

/// Checks SHA256SUMS' signature as the trust rules say, and returns the key
/// it verified with (and where the key came from), if any.
async fn check_signature(
    api: &Api,
    src: &Source,
    choice: &Choice,
    sums: &[u8],
    pinned: Option<&Entry>,
    opts: &Options,
) -> Result<Option<(PublicKey, String)>> {
    let tag = &choice.release.tag_name;
    let given = match &opts.public_key {
        Some(g) => Some(
            PublicKey::parse(g).map_err(|reason| InstallError::BadPublicKey {
                given: g.clone(),
                reason,
            })?,
        ),
        None => None,
    };
    let pinned_key = match pinned.and_then(|e| e.public_key.as_deref()) {
        Some(k) => Some(PublicKey::parse(k).map_err(|reason| {
            InstallError::Lock(lock::LockError::Corrupt {
                path: PathBuf::from(lock::LOCK_FILE),
                reason: format!("the public key recorded for {}: {reason}", src.id()),
            })
        })?),
        None => None,
    };
    let Some(sig_asset) = choice.release.asset(github::SIG_ASSET) else {
        let unsigned = |why: String, hint: String| InstallError::Unsigned {
            source_: src.id(),
            tag: tag.clone(),
            why,
            hint,
        };
        if let Some(k) = &given {
            return Err(unsigned(
                format!("--public-key {} was given", k.id),
                "ask the author to sign SHA256SUMS with minisign, or install without --public-key"
                    .into(),
            ));
        }
        if let Some(k) = &pinned_key {
            return Err(unsigned(
                format!("the installed version was verified with key {} and every later release must be signed with it", k.id),
                "ask the author; if they stopped signing on purpose, `machine driver remove` the driver and install it again".into(),
            ));
        }
        if opts.require_signature {
            return Err(unsigned(
                "--require-signature was given".into(),
                "ask the author to sign SHA256SUMS with minisign".into(),
            ));
        }
        ui::info(&format!(
            "note: release {tag} is not signed; its files are checked against its SHA256SUMS only"
        ));
        return Ok(None);
    };
    let (key, key_source) = if let Some(k) = given {
        (k, "--public-key".to_owned())
    } else if let Some(k) = pinned_key {
        (
            k,
            "the lock file (the key the installed version was verified with)".to_owned(),
        )
    } else if let Some(pub_asset) = choice.release.asset(github::PUBKEY_ASSET) {
        let url = &pub_asset.browser_download_url;
        let text = api
            .get_small(url, &format!("minisign.pub of release {tag}"), SIG_LIMIT)
            .await?;
        let text = String::from_utf8_lossy(&text);
        let k = PublicKey::parse(&text).map_err(|reason| InstallError::BadPublicKey {
            given: format!("minisign.pub of release {tag} ({url})"),
            reason,
        })?;
        ui::warn(&format!(
            "trusting key {} from release {tag}'s minisign.pub on first use; later installs of this driver must be signed with it (to check it, compare with the key the author publishes elsewhere, or pass it with --public-key)",
            k.id
        ));
        (
            k,
            format!("release {tag}'s minisign.pub, trusted on first use"),
        )
    } else {
        if opts.require_signature {
            return Err(InstallError::NoKey {
                source_: src.id(),
                tag: tag.clone(),
            });
        }
        ui::warn(&format!(
            "release {tag} is signed, but no public key is known to check the signature; pass the author's key with --public-key to verify it. Going on with SHA256SUMS only."
        ));
        return Ok(None);
    };
    let url = &sig_asset.browser_download_url;
    let sig = api
        .get_small(
            url,
            &format!("SHA256SUMS.minisig of release {tag}"),
            SIG_LIMIT,
        )
        .await?;
    let sig = String::from_utf8_lossy(&sig);
    match verify::verify_signature(sums, &sig, &key) {
        Ok(comment) => {
            ui::step(&format!(
                "SHA256SUMS is signed with key {} ({comment})",
                key.id
            ));
            Ok(Some((key, key_source)))
        }
        Err(reason) => Err(InstallError::BadSignature {
            source_: src.id(),
            tag: tag.clone(),
            hint: if key_source == "--public-key" || key_source.starts_with("the lock") {
                "do not install this release; if the author changed keys, get the new key from them and reinstall with --public-key NEW --force".to_owned()
            } else {
                "do not install this release; tell the author".to_owned()
            },
            reason,
            key_source,
        }),
    }
}

fn start_timeout() -> Duration {
    std::env::var(ENV_START_TIMEOUT)
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_secs(10))
}

/// Starts the binary as the CLI will (handshake, health, `GetInfo`),
/// checks that it calls itself `name` (and speaks `protocol`, when the
/// archive says which), ends it, and returns the protocol it chose and the
/// version it reports. `author` is the hint for a binary that does not
/// work.
async fn check_binary(
    name: &str,
    binary: &Path,
    what: &str,
    author: &str,
    protocol: Option<u32>,
    debug: bool,
) -> Result<(u32, String)> {
    let fail = |error: String, hint: &str| InstallError::Check {
        what: what.to_owned(),
        error,
        hint: hint.to_owned(),
    };
    let socket_dir =
        driver_host::make_socket_dir().map_err(|e| fail(e.to_string(), "check /tmp"))?;
    let limit = start_timeout();
    let mut opts = LaunchOptions::new(name, binary, socket_dir.path());
    opts.start_timeout = limit;
    if debug {
        opts.env.push(("MACHINE_DRIVER_LOG".into(), "debug".into()));
    }
    opts.on_log = Some(driver_host::log_sink(name.to_owned(), debug));
    let plugin = Plugin::launch(opts)
        .await
        .map_err(|e| fail(e.to_string(), author))?;
    let result = async {
        plugin
            .check_health(limit)
            .await
            .map_err(|e| fail(e.to_string(), author))?;
        let info = match tokio::time::timeout(limit, plugin.driver().get_info(v1::GetInfoRequest {})).await {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(status)) => {
                return Err(fail(
                    format!("GetInfo failed: {}", plugin.explain(&status).await),
                    author,
                ));
            }
            Err(_) => return Err(fail(format!("it did not answer GetInfo within {limit:?}"), author)),
        };
        let chosen = plugin.handshake().app_version;
        if info.name != name {
            return Err(fail(
                format!("it calls itself `{}`, but the file is for driver `{name}`", info.name),
                "tell the author: GetInfo's name must be the part of the file name after machine-driver-",
            ));
        }
        if let Some(p) = protocol
            && p != chosen
        {
            return Err(fail(
                format!("its name says protocol {p}, but it chose protocol {chosen} in the handshake"),
                "tell the author: the _pN part of the archive's name must be the protocol the binary speaks",
            ));
        }
        if info.protocol_version != chosen {
            return Err(fail(
                format!(
                    "it answered GetInfo for protocol {}, but chose {chosen} in the handshake",
                    info.protocol_version
                ),
                author,
            ));
        }
        ui::step(&format!(
            "Driver `{name}` {} answers (protocol {chosen}, {} {})",
            info.version, info.sdk_name, info.sdk_version
        ));
        Ok((chosen, info.version))
    }
    .await;
    // Waited for, so no driver process outlives the install.
    plugin.shutdown(Duration::from_secs(3)).await;
    result
}

/// Step 7: the lock first accepts the new digest besides the old, then the
/// binary is renamed into place, then the lock records the new binary
/// alone with its file identity. Each step is atomic, and a crash between
/// them leaves a driver that loads.
async fn commit(dir: &Dir, name: &str, binary: &Path, mut entry: Entry) -> Result<Entry> {
    let dest = dir.binary(name);
    std::fs::set_permissions(binary, std::fs::Permissions::from_mode(0o755))
        .map_err(io("set the mode of", binary))?;
    let bin2 = binary.to_owned();
    entry.sha256 = tokio::task::spawn_blocking(move || lock::sha256_file(&bin2))
        .await
        .map_err(|e| io("hash", binary)(std::io::Error::other(e.to_string())))?
        .map_err(io("read", binary))?;
    let before = lock::load(&dir.path)?;
    let mut lock = before.clone();
    if dest.exists() {
        entry.replacing_sha256 = Some(lock::sha256_file(&dest).map_err(io("read", &dest))?);
        let mut pending = entry.clone();
        pending.file = None;
        lock.drivers.insert(name.to_owned(), pending);
        lock::save(&dir.path, &lock)?;
    }
    if let Err(e) = std::fs::rename(binary, &dest) {
        // Put the lock back as it was: the old binary is still in place.
        let _ = lock::save(&dir.path, &before);
        return Err(io("move the new driver into place at", &dest)(e));
    }
    if let Ok(d) = File::open(&dir.path) {
        let _ = d.sync_all();
    }
    let meta = std::fs::metadata(&dest).map_err(io("read", &dest))?;
    entry.file = Some(FileId::of(&meta));
    entry.replacing_sha256 = None;
    lock.drivers.insert(name.to_owned(), entry.clone());
    lock::save(&dir.path, &lock)?;
    Ok(entry)
}

/// `install --path FILE [--name NAME]`: a local binary, for authors.
pub async fn install_path(
    store: &Store,
    file: &Path,
    opts: &Options,
    debug: bool,
) -> Result<Outcome> {
    let started = Instant::now();
    let file = std::path::absolute(file).unwrap_or_else(|_| file.to_owned());
    let meta = std::fs::metadata(&file).map_err(io("read", &file))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(InstallError::NotExecutable(file));
    }
    let name = match &opts.name {
        Some(n) => n.clone(),
        None => driver_host::name_of_path(&file),
    };
    if !driver_host::valid_name(&name) {
        return Err(InstallError::BadName(name));
    }
    let source = format!("{}{}", lock::PATH_SOURCE_PREFIX, file.display());
    let dir = Dir::open(store)?;
    let lock = lock::load(&dir.path)?;
    // Authors reinstall from the same path over and over: no --force
    // needed for that.
    check_replace(&dir, &lock, &name, &source, opts.force)?;
    ui::step(&format!(
        "Installing driver `{name}` from {}",
        file.display()
    ));
    let work = dir.temp()?;
    let copy = work.path().join(format!("{BINARY_PREFIX}{name}"));
    std::fs::copy(&file, &copy).map_err(io("copy", &file))?;
    // The version is the one the driver reports: there is no release.
    let (protocol, version) = check_binary(
        &name,
        &copy,
        &file.display().to_string(),
        "run `machine driver info PATH` on the binary to see the same error, and `-D` for its log",
        None,
        debug,
    )
    .await?;
    let entry = Entry {
        source,
        requested: None,
        version,
        tag: None,
        asset: None,
        url: None,
        archive_sha256: None,
        sha256: String::new(),
        protocol,
        public_key: None,
        key_source: None,
        installed_at: now(),
        file: None,
        replacing_sha256: None,
    };
    let entry = commit(&dir, &name, &copy, entry).await?;
    ui::done(
        &format!(
            "Installed driver `{name}` from {} at {}",
            file.display(),
            dir.binary(&name).display()
        ),
        started.elapsed(),
    );
    Ok(Outcome::Installed { name, entry })
}

/// `upgrade`: resolves one installed driver's source and range again and
/// installs a newer release if there is one. Returns the new entry, or
/// `None` when it is up to date.
pub async fn upgrade(
    store: &Store,
    name: &str,
    opts: &Options,
    debug: bool,
) -> Result<Option<Entry>> {
    let started = Instant::now();
    let dir = Dir::open(store)?;
    let lock = lock::load(&dir.path)?;
    let Some(entry) = lock.drivers.get(name).cloned() else {
        return Err(InstallError::NotInstalled {
            name: name.to_owned(),
            dir: dir.path.clone(),
            elsewhere: "\n  hint: `machine driver ls` shows where each driver comes from; only drivers installed with `machine driver install` can be upgraded".to_owned(),
        });
    };
    if entry.source.starts_with(lock::PATH_SOURCE_PREFIX) {
        ui::info(&format!(
            "driver `{name}` was installed from {}; reinstall it with `{}`",
            entry.source,
            entry.reinstall_command(name)
        ));
        return Ok(None);
    }
    let spec = match &entry.requested {
        Some(r) => format!("{}@{r}", entry.source),
        None => entry.source.clone(),
    };
    let src = Source::parse(&spec)?;
    let api = Api::from_env()?;
    ui::step(&format!("Looking up the releases of {}", src.spec()));
    let releases = api.releases(&src, fits(&src, Some(name))).await?;
    let choice = choose(&api, &src, &releases, Some(name))?;
    let installed = semver::Version::parse(&entry.version).ok();
    if installed.as_ref().is_some_and(|v| *v >= choice.version) {
        ui::info(&format!(
            "driver `{name}` is up to date: {} is the newest release of {} that fits",
            entry.version,
            src.spec()
        ));
        return Ok(None);
    }
    let new = install_choice(&dir, &api, &src, &choice, &lock, opts, debug).await?;
    ui::done(
        &format!(
            "Upgraded driver `{name}` from {} to {}",
            entry.version, new.version
        ),
        started.elapsed(),
    );
    Ok(Some(new))
}

/// `remove NAME`: the binary and its lock entry. Refused while machines use
/// the driver, unless forced.
pub fn remove(
    store: &Store,
    name: &str,
    force: bool,
    search: &driver_host::DriverSearch,
) -> Result<Option<Entry>> {
    if !driver_host::valid_name(name) {
        return Err(InstallError::BadName(name.to_owned()));
    }
    let dir = Dir::open(store)?;
    let mut lock = lock::load(&dir.path)?;
    let bin = dir.binary(name);
    let entry = lock.drivers.get(name).cloned();
    if entry.is_none() && !bin.exists() {
        let elsewhere = match search.find(name) {
            Ok(p) => format!(
                "; the one at {} was not installed by machine, so remove it yourself if you must",
                p.display()
            ),
            Err(_) => String::new(),
        };
        return Err(InstallError::NotInstalled {
            name: name.to_owned(),
            dir: dir.path.clone(),
            elsewhere,
        });
    }
    if !force {
        let mut users: Vec<String> = store
            .names()
            .unwrap_or_default()
            .into_iter()
            .filter(|m| store.load(m).is_ok_and(|r| r.driver == name))
            .collect();
        users.sort();
        if !users.is_empty() {
            return Err(InstallError::InUse {
                name: name.to_owned(),
                machines: users,
            });
        }
    }
    match std::fs::remove_file(&bin) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("remove", &bin)(e)),
    }
    if lock.drivers.remove(name).is_some() {
        lock::save(&dir.path, &lock)?;
    }
    Ok(entry)
}

/// For `create -d github.com/OWNER/REPO[@RANGE]`: installs the driver unless
/// an installed one from that source fits the request. Other driver
/// arguments are left alone.
pub async fn ensure_for_create(store: &Store, driver: &str, debug: bool) -> Result<()> {
    if !Source::is_github(driver) {
        return Ok(());
    }
    let src = Source::parse(driver)?;
    let dir = store.drivers_dir();
    let lock = lock::load(&dir)?;
    let installed = lock
        .drivers
        .iter()
        .find(|(_, e)| e.source.eq_ignore_ascii_case(&src.id()));
    if let Some((name, e)) = installed {
        let fits = semver::Version::parse(&e.version).is_ok_and(|v| match &src.request {
            Request::Newest => true,
            Request::Exact(want) => v == *want,
            Request::Range(r) => r.matches(&v),
        });
        if fits && dir.join(format!("{BINARY_PREFIX}{name}")).exists() {
            return Ok(());
        }
    }
    ui::step(&format!(
        "Driver {} is not installed; installing it first",
        src.spec()
    ));
    install_github(store, &src, &Options::default(), debug).await?;
    Ok(())
}
