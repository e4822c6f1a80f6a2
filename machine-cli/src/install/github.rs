//! GitHub releases: the `github.com/OWNER/REPO[@VERSION|@RANGE]` source,
//! the one API call that lists a repository's releases, and the choice of
//! release and asset.
//!
//! Assets are named `machine-driver-NAME_VERSION_pPROTOCOL_OS_ARCH.tar.gz`
//! (Packer's scheme), so a release built for another platform or a
//! protocol this CLI does not speak is skipped by its name, before anything
//! is downloaded.

use std::fmt;

use semver::{Version, VersionReq};
use serde::Deserialize;

use super::InstallError;
use crate::driver_host::{BINARY_PREFIX, valid_name};

/// The API's base URL; GitHub Enterprise and tests point it elsewhere.
pub const ENV_API_URL: &str = "MACHINE_GITHUB_API_URL";
/// A token for the API: raises the rate limit from 60 requests an hour.
pub const ENV_TOKEN: &str = "MACHINE_GITHUB_TOKEN";
pub const DEFAULT_API_URL: &str = "https://api.github.com";
/// The checksum file every release must have.
pub const SUMS_ASSET: &str = "SHA256SUMS";
/// Its minisign signature, when the author signs releases.
pub const SIG_ASSET: &str = "SHA256SUMS.minisig";
/// The author's minisign public key, trusted on first use.
pub const PUBKEY_ASSET: &str = "minisign.pub";
const ARCHIVE_SUFFIX: &str = ".tar.gz";
/// Releases asked for per call (GitHub's maximum page size).
pub const PER_PAGE: u32 = 100;
/// Pages read at most, when the newest ones hold no release that fits.
pub const MAX_PAGES: usize = 10;

/// Which version to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The newest release that is not a prerelease.
    Newest,
    /// Exactly this version; the only way to get a prerelease.
    Exact(Version),
    /// The newest release in the range (Cargo's rules: `1.2` is `^1.2`).
    Range(VersionReq),
}

impl Request {
    /// Parses what follows `@`: a version (`1.2.3`, `v1.2.3`) or a range
    /// (`^1.2`, `>=1, <2`, `~1.4`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() || text == "latest" || text == "*" {
            return Ok(Request::Newest);
        }
        if let Ok(v) = Version::parse(text.strip_prefix('v').unwrap_or(text)) {
            return Ok(Request::Exact(v));
        }
        VersionReq::parse(&strip_v(text))
            .map(Request::Range)
            .map_err(|e| {
                format!(
                    "`{text}` is neither a version (1.2.3) nor a version range (^1.2, >=1, <2): {e}"
                )
            })
    }

    fn matches(&self, v: &Version, prerelease_flag: bool) -> bool {
        match self {
            Request::Exact(want) => v == want,
            // A release GitHub marks as a prerelease is one too, whatever its
            // version says.
            Request::Newest => v.pre.is_empty() && !prerelease_flag,
            Request::Range(req) => req.matches(v) && v.pre.is_empty() && !prerelease_flag,
        }
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Newest => f.write_str("the newest release"),
            Request::Exact(v) => write!(f, "version {v}"),
            Request::Range(r) => write!(f, "range {r}"),
        }
    }
}

/// `v` before a version number inside a range (`>=v1.2`) is allowed, as in
/// tags.
fn strip_v(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut prev: Option<char> = None;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let at_start = prev.is_none_or(|p| matches!(p, ' ' | ',' | '=' | '>' | '<' | '~' | '^'));
        if c == 'v' && at_start && chars.peek().is_some_and(char::is_ascii_digit) {
            prev = Some(c);
            continue;
        }
        out.push(c);
        prev = Some(c);
    }
    out
}

/// `github.com/OWNER/REPO` with what was asked of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub owner: String,
    pub repo: String,
    pub request: Request,
    /// What followed `@`, as typed, for the lock file.
    pub requested: Option<String>,
}

impl Source {
    /// Whether a driver argument names a GitHub source rather than a driver
    /// name or a path.
    pub fn is_github(text: &str) -> bool {
        const PREFIX: &str = "github.com/";
        let t = text.strip_prefix("https://").unwrap_or(text);
        t.len() > PREFIX.len()
            && t.get(..PREFIX.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(PREFIX))
    }

    /// Parses `github.com/OWNER/REPO[@VERSION|@RANGE]` (`https://` and
    /// `.git` are allowed, as copied from a browser).
    pub fn parse(text: &str) -> Result<Self, InstallError> {
        let bad = |why: &str| InstallError::BadSource {
            source_: text.to_owned(),
            reason: why.to_owned(),
        };
        let (path, at) = match text.split_once('@') {
            Some((p, a)) => (p, Some(a)),
            None => (text, None),
        };
        let path = path.strip_prefix("https://").unwrap_or(path);
        if !Self::is_github(path) {
            return Err(bad("it does not start with github.com/"));
        }
        let rest = path["github.com/".len()..].trim_end_matches('/');
        let mut parts = rest.split('/');
        let (Some(owner), Some(repo), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected github.com/OWNER/REPO"));
        };
        let repo = repo.strip_suffix(".git").unwrap_or(repo);
        let owner_ok =
            !owner.is_empty() && owner.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        let repo_ok = !repo.is_empty()
            && repo != "."
            && repo != ".."
            && repo
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !owner_ok || !repo_ok {
            return Err(bad(
                "OWNER and REPO may hold only letters, digits, '-', '_' and '.'",
            ));
        }
        let request = match at {
            None => Request::Newest,
            Some(a) => Request::parse(a).map_err(|e| bad(&e))?,
        };
        Ok(Self {
            owner: owner.to_owned(),
            repo: repo.to_owned(),
            request,
            requested: at.map(str::to_owned).filter(|a| !a.is_empty()),
        })
    }

    /// `github.com/OWNER/REPO`, as recorded in the lock file.
    pub fn id(&self) -> String {
        format!("github.com/{}/{}", self.owner, self.repo)
    }

    /// The source as typed, with its version or range.
    pub fn spec(&self) -> String {
        match &self.requested {
            Some(r) => format!("{}@{r}", self.id()),
            None => self.id(),
        }
    }
}

/// A release as the API lists it (the fields used).
#[derive(Debug, Clone, Deserialize)]
pub struct Release {
    pub tag_name: String,
    #[serde(default)]
    pub draft: bool,
    #[serde(default)]
    pub prerelease: bool,
    #[serde(default)]
    pub html_url: Option<String>,
    #[serde(default)]
    pub assets: Vec<Asset>,
}

/// A file attached to a release.
#[derive(Debug, Clone, Deserialize)]
pub struct Asset {
    pub name: String,
    pub browser_download_url: String,
    #[serde(default)]
    pub size: u64,
}

impl Release {
    pub fn asset(&self, name: &str) -> Option<&Asset> {
        self.assets.iter().find(|a| a.name == name)
    }
}

/// What an archive's name says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetName {
    pub driver: String,
    pub version: Version,
    pub protocol: u32,
    pub os: String,
    pub arch: String,
}

/// Parses `machine-driver-NAME_VERSION_pPROTOCOL_OS_ARCH.tar.gz`; anything
/// else (SHA256SUMS, other files) is not a driver archive.
pub fn parse_asset_name(name: &str) -> Option<AssetName> {
    let middle = name
        .strip_prefix(BINARY_PREFIX)?
        .strip_suffix(ARCHIVE_SUFFIX)?;
    // From the right: the name may contain `_`, the others may not.
    let mut parts = middle.rsplitn(5, '_');
    let arch = parts.next()?;
    let os = parts.next()?;
    let protocol = parts.next()?.strip_prefix('p')?.parse().ok()?;
    let version = parts.next()?;
    let driver = parts.next()?;
    let version = Version::parse(version.strip_prefix('v').unwrap_or(version)).ok()?;
    if !valid_name(driver) || os.is_empty() || arch.is_empty() {
        return None;
    }
    Some(AssetName {
        driver: driver.to_owned(),
        version,
        protocol,
        os: os.to_owned(),
        arch: arch.to_owned(),
    })
}

/// This machine's platform in asset names: Go's `GOOS`/`GOARCH` spelling.
pub fn platform() -> (&'static str, &'static str) {
    let os = match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        other => other,
    };
    (os, arch)
}

/// The release and asset chosen.
#[derive(Debug, Clone)]
pub struct Choice {
    pub release: Release,
    pub version: Version,
    pub asset: Asset,
    pub parsed: AssetName,
}

/// Why a release that matched the request was passed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub tag: String,
    pub reason: String,
}

/// The outcome of [`select`]: the choice, if any, and the newer releases
/// passed over on the way, with why.
#[derive(Debug, Clone)]
pub struct Selection {
    pub choice: Option<Choice>,
    pub skipped: Vec<Skipped>,
    /// Releases whose tag is not a version, or that did not match.
    pub not_matching: usize,
    /// Whether a release passed over only offers protocols newer than ours.
    pub newer_protocol_only: bool,
}

/// Picks the newest release that matches `request` and has an archive for
/// `(os, arch)` built for one of `protocols` (the highest such one). Drafts
/// are never chosen; prereleases only by their exact version. `name` limits
/// the choice to one driver when a repository publishes several.
pub fn select(
    releases: &[Release],
    request: &Request,
    (os, arch): (&str, &str),
    protocols: &[u32],
    name: Option<&str>,
) -> Selection {
    let mut candidates: Vec<(Version, &Release)> = Vec::new();
    let mut not_matching = 0;
    for r in releases.iter().filter(|r| !r.draft) {
        let tag = r.tag_name.strip_prefix('v').unwrap_or(&r.tag_name);
        match Version::parse(tag) {
            Ok(v) if request.matches(&v, r.prerelease) => candidates.push((v, r)),
            _ => not_matching += 1,
        }
    }
    candidates.sort_by(|a, b| b.0.cmp(&a.0));
    let mut skipped = Vec::new();
    let mut newer_protocol_only = false;
    let max_ours = protocols.iter().copied().max().unwrap_or(0);
    for (version, release) in candidates {
        let archives: Vec<(&Asset, AssetName)> = release
            .assets
            .iter()
            .filter_map(|a| parse_asset_name(&a.name).map(|p| (a, p)))
            .filter(|(_, p)| name.is_none_or(|n| p.driver == n))
            .collect();
        let skip = |reason: String| Skipped {
            tag: release.tag_name.clone(),
            reason,
        };
        if archives.is_empty() {
            skipped.push(skip(match name {
                Some(n) => format!("no archive for driver `{n}` named {BINARY_PREFIX}{n}_VERSION_pPROTOCOL_OS_ARCH{ARCHIVE_SUFFIX}"),
                None => format!("no archive named {BINARY_PREFIX}NAME_VERSION_pPROTOCOL_OS_ARCH{ARCHIVE_SUFFIX}"),
            }));
            continue;
        }
        let mut drivers: Vec<&str> = archives.iter().map(|(_, p)| p.driver.as_str()).collect();
        drivers.sort_unstable();
        drivers.dedup();
        if drivers.len() > 1 {
            skipped.push(skip(format!(
                "it has archives for several drivers ({}); choose one with --name",
                drivers.join(", ")
            )));
            continue;
        }
        let wrong_version: Vec<&str> = archives
            .iter()
            .filter(|(_, p)| p.version != version)
            .map(|(a, _)| a.name.as_str())
            .collect();
        let here: Vec<&(&Asset, AssetName)> = archives
            .iter()
            .filter(|(_, p)| p.os == os && p.arch == arch && p.version == version)
            .collect();
        if here.is_empty() {
            let mut platforms: Vec<String> = archives
                .iter()
                .map(|(_, p)| format!("{}/{}", p.os, p.arch))
                .collect();
            platforms.sort();
            platforms.dedup();
            let mut reason = format!(
                "no archive for {os}/{arch} (it has {})",
                platforms.join(", ")
            );
            if !wrong_version.is_empty() {
                reason += &format!(
                    "; {} do not carry the release's version {version}",
                    wrong_version.join(", ")
                );
            }
            skipped.push(skip(reason));
            continue;
        }
        let best = here
            .iter()
            .filter(|(_, p)| protocols.contains(&p.protocol))
            .max_by_key(|(_, p)| p.protocol);
        match best {
            Some((asset, parsed)) => {
                return Selection {
                    choice: Some(Choice {
                        release: release.clone(),
                        version,
                        asset: (*asset).clone(),
                        parsed: parsed.clone(),
                    }),
                    skipped,
                    not_matching,
                    newer_protocol_only,
                };
            }
            None => {
                let mut theirs: Vec<u32> = here.iter().map(|(_, p)| p.protocol).collect();
                theirs.sort_unstable();
                theirs.dedup();
                if theirs.iter().all(|p| *p > max_ours) {
                    newer_protocol_only = true;
                }
                skipped.push(skip(format!(
                    "its {os}/{arch} archives are for protocol {}, and this machine speaks {}",
                    join(&theirs),
                    join(protocols)
                )));
            }
        }
    }
    Selection {
        choice: None,
        skipped,
        not_matching,
        newer_protocol_only,
    }
}

fn join(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

/// The API client: base URL and token from the environment.
#[derive(Debug, Clone)]
pub struct Api {
    pub base: String,
    token: Option<String>,
    pub http: super::download::Http,
}

impl Api {
    pub fn from_env() -> Result<Self, InstallError> {
        let base = std::env::var(ENV_API_URL)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| DEFAULT_API_URL.to_owned());
        let base = base.trim_end_matches('/').to_owned();
        let token = std::env::var(ENV_TOKEN)
            .ok()
            .filter(|t| !t.trim().is_empty());
        Ok(Self {
            http: super::download::Http::new(token.is_some(), base.starts_with("https://"))?,
            base,
            token: token.map(|t| t.trim().to_owned()),
        })
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// The token, only for URLs on the API's own origin: it must not leak
    /// to download hosts (github.com serves assets from other hosts).
    pub fn token_for(&self, url: &str) -> Option<&str> {
        if self.same_origin(url) {
            self.token.as_deref()
        } else {
            None
        }
    }

    /// GETs a small file at `url` (an asset), sending the token only if
    /// `url` is on the API's own host.
    pub async fn get_small(
        &self,
        url: &str,
        what: &str,
        limit: u64,
    ) -> Result<Vec<u8>, InstallError> {
        self.http
            .get_small(url, self.token_for(url), what, limit)
            .await
    }

    pub fn releases_url(&self, src: &Source) -> String {
        format!(
            "{}/repos/{}/{}/releases?per_page={PER_PAGE}",
            self.base, src.owner, src.repo
        )
    }

    /// The repository's releases, newest first, one page (100) at a time
    /// until `enough` says what was read so far will do, there are no
    /// more, or [`MAX_PAGES`] were read. Usually the first page does: one
    /// API call.
    pub async fn releases(
        &self,
        src: &Source,
        mut enough: impl FnMut(&[Release]) -> bool,
    ) -> Result<Vec<Release>, InstallError> {
        let mut url = self.releases_url(src);
        let mut all: Vec<Release> = Vec::new();
        for page in 1..=MAX_PAGES {
            let what = match page {
                1 => format!("the releases of {}", src.id()),
                n => format!("page {n} of the releases of {}", src.id()),
            };
            let (body, next) = self
                .http
                .get_page(&url, self.token_for(&url), &what, 32 << 20)
                .await
                .map_err(|e| match e {
                    InstallError::Http {
                        status: 404, url, ..
                    } => InstallError::RepoNotFound {
                        source_: src.id(),
                        url,
                    },
                    other => other,
                })?;
            let batch: Vec<Release> =
                serde_json::from_slice(&body).map_err(|e| InstallError::BadReply {
                    url: url.clone(),
                    reason: format!("the releases list is not the JSON GitHub sends: {e}"),
                })?;
            all.extend(batch);
            // Only the API's own pages are followed.
            match next {
                Some(n) if !enough(&all) && self.same_origin(&n) => url = n,
                _ => break,
            }
        }
        Ok(all)
    }

    fn same_origin(&self, url: &str) -> bool {
        let origin = |u: &str| {
            reqwest::Url::parse(u)
                .ok()
                .map(|p| p.origin().ascii_serialization())
        };
        origin(url).is_some() && origin(url) == origin(&self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(tag: &str, assets: &[&str]) -> Release {
        Release {
            tag_name: tag.into(),
            draft: false,
            prerelease: false,
            html_url: None,
            assets: assets
                .iter()
                .map(|n| Asset {
                    name: (*n).into(),
                    browser_download_url: format!("http://x/{n}"),
                    size: 1,
                })
                .collect(),
        }
    }

    fn asset(name: &str, v: &str, p: u32) -> String {
        format!("machine-driver-{name}_{v}_p{p}_linux_amd64.tar.gz")
    }

    const HERE: (&str, &str) = ("linux", "amd64");

    #[test]
    fn parses_sources() {
        let s = Source::parse("github.com/acme/machine-driver-x").unwrap();
        assert_eq!(
            (s.owner.as_str(), s.repo.as_str(), &s.request),
            ("acme", "machine-driver-x", &Request::Newest)
        );
        assert_eq!(s.id(), "github.com/acme/machine-driver-x");
        let s = Source::parse("https://github.com/acme/x.git@v1.2.3").unwrap();
        assert_eq!(s.request, Request::Exact(Version::new(1, 2, 3)));
        assert_eq!(s.requested.as_deref(), Some("v1.2.3"));
        assert_eq!(s.spec(), "github.com/acme/x@v1.2.3");
        let s = Source::parse("github.com/acme/x@^1.2").unwrap();
        assert_eq!(
            s.request,
            Request::Range(VersionReq::parse("^1.2").unwrap())
        );
        let s = Source::parse("github.com/acme/x@>=v1, <v2").unwrap();
        assert_eq!(
            s.request,
            Request::Range(VersionReq::parse(">=1, <2").unwrap())
        );
        for bad in [
            "github.com/acme",
            "github.com/acme/x/y",
            "github.com/ac me/x",
            "github.com/acme/..",
            "github.com/acme/x@not a version",
            "gitlab.com/acme/x",
        ] {
            assert!(Source::parse(bad).is_err(), "{bad}");
        }
        assert!(Source::is_github("github.com/a/b"));
        assert!(Source::is_github("GitHub.com/a/b"));
        assert!(!Source::is_github("./github.com/a"));
        assert!(!Source::is_github("none"));
        assert!(!Source::is_github("ééééééééééé/x"));
    }

    #[test]
    fn parses_asset_names() {
        assert_eq!(
            parse_asset_name("machine-driver-my_drv_1.2.3-rc.1_p12_darwin_arm64.tar.gz"),
            Some(AssetName {
                driver: "my_drv".into(),
                version: Version::parse("1.2.3-rc.1").unwrap(),
                protocol: 12,
                os: "darwin".into(),
                arch: "arm64".into(),
            })
        );
        for not in [
            "SHA256SUMS",
            "machine-driver-x_1.2.3_linux_amd64.tar.gz",
            "machine-driver-x_1.2.3_pX_linux_amd64.tar.gz",
            "machine-driver-x_1.2_p1_linux_amd64.tar.gz",
            "machine-driver-x_1.2.3_p1_linux_amd64.zip",
            "machine-driver-.x_1.2.3_p1_linux_amd64.tar.gz",
        ] {
            assert_eq!(parse_asset_name(not), None, "{not}");
        }
    }

    #[test]
    fn picks_the_newest_match_with_an_asset_and_protocol() {
        let releases = vec![
            release("v1.0.0", &[&asset("x", "1.0.0", 1)]),
            release("v1.3.0", &[&asset("x", "1.3.0", 1)]),
            release("v1.2.0", &[&asset("x", "1.2.0", 1)]),
            release("v2.0.0", &[&asset("x", "2.0.0", 1)]),
            release("nightly", &[&asset("x", "9.9.9", 1)]),
        ];
        let pick = |req: &str| {
            select(&releases, &Request::parse(req).unwrap(), HERE, &[1], None)
                .choice
                .map(|c| c.version.to_string())
        };
        assert_eq!(pick(""), Some("2.0.0".into()));
        assert_eq!(pick("^1"), Some("1.3.0".into()));
        assert_eq!(pick("~1.2"), Some("1.2.0".into()));
        assert_eq!(pick(">=1.1, <1.3"), Some("1.2.0".into()));
        assert_eq!(pick("1.0.0"), Some("1.0.0".into()));
        assert_eq!(pick("v1.0.0"), Some("1.0.0".into()));
        assert_eq!(pick("1.1.0"), None);
        assert_eq!(pick("^3"), None);
    }

    #[test]
    fn drafts_never_and_prereleases_only_by_exact_version() {
        let mut pre = release("v2.0.0-rc.1", &[&asset("x", "2.0.0-rc.1", 1)]);
        pre.prerelease = true;
        let mut flagged = release("v1.5.0", &[&asset("x", "1.5.0", 1)]);
        flagged.prerelease = true;
        let mut draft = release("v3.0.0", &[&asset("x", "3.0.0", 1)]);
        draft.draft = true;
        let releases = vec![
            release("v1.0.0", &[&asset("x", "1.0.0", 1)]),
            pre,
            flagged,
            draft,
        ];
        let pick = |req: &str| {
            select(&releases, &Request::parse(req).unwrap(), HERE, &[1], None)
                .choice
                .map(|c| c.version.to_string())
        };
        assert_eq!(pick(""), Some("1.0.0".into()));
        assert_eq!(pick(">=1"), Some("1.0.0".into()));
        assert_eq!(pick("2.0.0-rc.1"), Some("2.0.0-rc.1".into()));
        assert_eq!(pick("1.5.0"), Some("1.5.0".into()));
        assert_eq!(pick("3.0.0"), None);
    }

    #[test]
    fn chooses_the_highest_protocol_we_speak_and_explains_skips() {
        let releases = vec![
            release(
                "v2.0.0",
                &[
                    &asset("x", "2.0.0", 3),
                    "machine-driver-x_2.0.0_p1_darwin_arm64.tar.gz",
                ],
            ),
            release(
                "v1.9.0",
                &[
                    "machine-driver-x_1.9.0_p1_windows_amd64.tar.gz",
                    "SHA256SUMS",
                ],
            ),
            release(
                "v1.8.0",
                &[
                    &asset("x", "1.8.0", 1),
                    &asset("x", "1.8.0", 2),
                    &asset("x", "1.8.0", 3),
                ],
            ),
        ];
        let sel = select(&releases, &Request::Newest, HERE, &[1, 2], None);
        let c = sel.choice.unwrap();
        assert_eq!(
            (c.version.to_string(), c.parsed.protocol),
            ("1.8.0".into(), 2)
        );
        assert_eq!(sel.skipped.len(), 2);
        assert_eq!(sel.skipped[0].tag, "v2.0.0");
        assert!(
            sel.skipped[0]
                .reason
                .contains("protocol 3, and this machine speaks 1, 2"),
            "{:?}",
            sel.skipped
        );
        assert!(
            sel.skipped[1]
                .reason
                .contains("no archive for linux/amd64 (it has windows/amd64)"),
            "{:?}",
            sel.skipped
        );
        assert!(sel.newer_protocol_only);

        let sel = select(&releases[..1], &Request::Newest, HERE, &[1], None);
        assert!(sel.choice.is_none());
    }

    #[test]
    fn several_drivers_in_one_release_need_a_name() {
        let releases = vec![release(
            "v1.0.0",
            &[&asset("a", "1.0.0", 1), &asset("b", "1.0.0", 1)],
        )];
        let sel = select(&releases, &Request::Newest, HERE, &[1], None);
        assert!(sel.choice.is_none());
        assert!(sel.skipped[0].reason.contains("several drivers (a, b)"));
        let sel = select(&releases, &Request::Newest, HERE, &[1], Some("b"));
        assert_eq!(sel.choice.unwrap().parsed.driver, "b");
    }
}
