//! HTTP for installs: small GETs (the releases list, SHA256SUMS, the
//! signature) and streamed downloads to a file, hashed on the way, with a
//! size cap and a progress display on stderr.
//!
//! Every failure names the URL and what was being fetched, and turns
//! GitHub's rate-limit answers (403/429 with `x-ratelimit-remaining: 0` or
//! `retry-after`) into advice to set `MACHINE_GITHUB_TOKEN`.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, USER_AGENT};

use super::InstallError;

/// Limit for connecting to a server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Limit for a server to send the next bytes: a stalled download fails
/// instead of hanging.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// An HTTP client set up for GitHub.
#[derive(Debug, Clone)]
pub struct Http {
    client: reqwest::Client,
    /// Whether MACHINE_GITHUB_TOKEN is set, for the rate-limit advice.
    token_set: bool,
}

/// The text of an error and all its causes: reqwest's own message alone
/// ("error sending request") does not say what went wrong.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cause = c.source();
    }
    text
}

impl Http {
    /// `https_only`: refuse plain-HTTP URLs and redirects. Set whenever the
    /// API itself is reached over HTTPS, so a release that links to (or
    /// redirects to) `http://` cannot have its files swapped in transit.
    pub fn new(token_set: bool, https_only: bool) -> Result<Self, InstallError> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .https_only(https_only)
            .build()
            .map_err(|e| InstallError::Client(error_chain(&e)))?;
        Ok(Self { client, token_set })
    }

    fn request(&self, url: &str, token: Option<&str>, accept: &str) -> reqwest::RequestBuilder {
        let mut req = self
            .client
            .get(url)
            .header(USER_AGENT, concat!("machine/", env!("CARGO_PKG_VERSION")))
            .header(ACCEPT, accept)
            .header("X-GitHub-Api-Version", "2022-11-28");
        if let Some(t) = token {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        req
    }

    async fn send(
        &self,
        url: &str,
        token: Option<&str>,
        accept: &str,
        what: &str,
    ) -> Result<reqwest::Response, InstallError> {
        let resp =
            self.request(url, token, accept)
                .send()
                .await
                .map_err(|e| InstallError::Connect {
                    what: what.to_owned(),
                    url: url.to_owned(),
                    reason: error_chain(&e),
                })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let headers = resp.headers().clone();
        // The body says why (GitHub sends {"message": ...}); a little is
        // enough.
        let body = resp.bytes().await.unwrap_or_default();
        Err(self.status_error(url, what, status, &headers, &body))
    }

    fn status_error(
        &self,
        url: &str,
        what: &str,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) -> InstallError {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let message = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| {
                String::from_utf8_lossy(&body[..body.len().min(200)])
                    .trim()
                    .to_owned()
            });
        let limited = matches!(status.as_u16(), 403 | 429)
            && (header("x-ratelimit-remaining").as_deref() == Some("0")
                || header("retry-after").is_some()
                || message.to_ascii_lowercase().contains("rate limit"));
        if limited {
            let resets = header("x-ratelimit-reset")
                .and_then(|v| v.parse::<u64>().ok())
                .map(|epoch| {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0);
                    let mins = epoch.saturating_sub(now).div_ceil(60);
                    format!(" (it resets in {mins} min)")
                })
                .or_else(|| header("retry-after").map(|s| format!(" (retry after {s} s)")))
                .unwrap_or_default();
            return InstallError::RateLimited {
                url: url.to_owned(),
                resets,
                token_set: self.token_set,
            };
        }
        if status == StatusCode::UNAUTHORIZED && self.token_set {
            return InstallError::BadToken {
                url: url.to_owned(),
                message,
            };
        }
        InstallError::Http {
            status: status.as_u16(),
            url: url.to_owned(),
            what: what.to_owned(),
            message,
        }
    }

    /// GETs a small document (at most `limit` bytes) into memory.
    pub async fn get_small(
        &self,
        url: &str,
        token: Option<&str>,
        what: &str,
        limit: u64,
    ) -> Result<Vec<u8>, InstallError> {
        Ok(self.get_page(url, token, what, limit).await?.0)
    }

    /// [`Http::get_small`] for one page of a paginated API list: also
    /// returns the URL of the next page, from the `Link` header.
    pub async fn get_page(
        &self,
        url: &str,
        token: Option<&str>,
        what: &str,
        limit: u64,
    ) -> Result<(Vec<u8>, Option<String>), InstallError> {
        let mut resp = self
            .send(url, token, "application/vnd.github+json", what)
            .await?;
        let next = resp
            .headers()
            .get_all(reqwest::header::LINK)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(next_link);
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| InstallError::Interrupted {
            what: what.to_owned(),
            url: url.to_owned(),
            got: body.len() as u64,
            reason: error_chain(&e),
        })? {
            body.extend_from_slice(&chunk);
            if body.len() as u64 > limit {
                return Err(InstallError::TooLarge {
                    what: what.to_owned(),
                    url: url.to_owned(),
                    limit,
                });
            }
        }
        Ok((body, next))
    }

    /// Downloads `url` into `dest` (created new), at most `limit` bytes,
    /// showing progress, and returns the SHA-256 of what was written.
    /// `dest` is removed again on failure.
    pub async fn download(
        &self,
        url: &str,
        token: Option<&str>,
        what: &str,
        dest: &Path,
        limit: u64,
        expected_size: Option<u64>,
    ) -> Result<String, InstallError> {
        let result = self
            .download_inner(url, token, what, dest, limit, expected_size)
            .await;
        if result.is_err() {
            let _ = std::fs::remove_file(dest);
        }
        result
    }

    async fn download_inner(
        &self,
        url: &str,
        token: Option<&str>,
        what: &str,
        dest: &Path,
        limit: u64,
        expected_size: Option<u64>,
    ) -> Result<String, InstallError> {
        if let Some(size) = expected_size.filter(|s| *s > limit) {
            return Err(InstallError::TooLarge {
                what: format!("{what} ({})", human_bytes(size)),
                url: url.to_owned(),
                limit,
            });
        }
        let mut resp = self
            .send(url, token, "application/octet-stream", what)
            .await?;
        let total = resp.content_length().or(expected_size);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dest)
            .map_err(|source| InstallError::Io {
                action: "create",
                path: dest.to_owned(),
                source,
            })?;
        let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
        let mut progress = Progress::start(what, total);
        let mut got: u64 = 0;
        // Redraws also while no data arrives, so a stalled download shows
        // what it has and a falling rate rather than a stale figure.
        let mut tick = tokio::time::interval(Progress::REDRAW);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // `chunk` is cancel-safe: it only returns data it has taken.
            let next = tokio::select! {
                next = resp.chunk() => next,
                _ = tick.tick(), if progress.tty => {
                    progress.update(got);
                    continue;
                }
            };
            let chunk = match next {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    progress.abandon();
                    return Err(InstallError::Interrupted {
                        what: what.to_owned(),
                        url: url.to_owned(),
                        got,
                        reason: error_chain(&e),
                    });
                }
            };
            got += chunk.len() as u64;
            if got > limit {
                progress.abandon();
                return Err(InstallError::TooLarge {
                    what: what.to_owned(),
                    url: url.to_owned(),
                    limit,
                });
            }
            hash.update(&chunk);
            file.write_all(&chunk).map_err(|source| {
                progress.abandon();
                InstallError::Io {
                    action: "write",
                    path: dest.to_owned(),
                    source,
                }
            })?;
            progress.update(got);
        }
        progress.finish(got);
        if let Some(want) = expected_size.filter(|s| *s > 0 && *s != got) {
            return Err(InstallError::Interrupted {
                what: what.to_owned(),
                url: url.to_owned(),
                got,
                reason: format!("the release lists {want} bytes"),
            });
        }
        file.sync_all().map_err(|source| InstallError::Io {
            action: "write",
            path: dest.to_owned(),
            source,
        })?;
        Ok(hex::encode(hash.finish()))
    }
}

/// `3.4 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Progress on stderr: a bar redrawn in place when stderr is a terminal,
/// otherwise one plain line when the download starts (logs and pipes get
/// no carriage returns).
#[derive(Debug)]
struct Progress {
    label: String,
    total: Option<u64>,
    tty: bool,
    started: Instant,
    last: Option<Instant>,
    drawn: bool,
}

impl Progress {
    /// Ten redraws a second are plenty, and cheap on slow terminals.
    const REDRAW: Duration = Duration::from_millis(100);

    fn start(label: &str, total: Option<u64>) -> Self {
        let tty =
            std::io::stderr().is_terminal() && std::env::var("TERM").map_or(true, |t| t != "dumb");
        let size = total
            .map(|t| format!(" ({})", human_bytes(t)))
            .unwrap_or_default();
        if !tty {
            crate::ui::step(&format!("Downloading {label}{size}"));
        }
        Self {
            label: label.to_owned(),
            total,
            tty,
            started: Instant::now(),
            last: None,
            drawn: false,
        }
    }

    fn update(&mut self, done: u64) {
        if !self.tty {
            return;
        }
        if self.last.is_some_and(|l| l.elapsed() < Self::REDRAW) {
            return;
        }
        self.last = Some(Instant::now());
        self.draw(done);
    }

    fn draw(&mut self, done: u64) {
        const WIDTH: usize = 24;
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = format!("{}/s", human_bytes((done as f64 / secs) as u64));
        let line = match self.total.filter(|t| *t > 0) {
            Some(total) => {
                let frac = (done as f64 / total as f64).clamp(0.0, 1.0);
                let filled = (frac * WIDTH as f64).round() as usize;
                format!(
                    "{} [{}{}] {:>3.0}% {} / {}  {rate}",
                    short(&self.label, 48),
                    "#".repeat(filled),
                    " ".repeat(WIDTH - filled),
                    frac * 100.0,
                    human_bytes(done),
                    human_bytes(total)
                )
            }
            None => format!("{} {}  {rate}", short(&self.label, 48), human_bytes(done)),
        };
        let mut err = std::io::stderr().lock();
        // `\r` and padding rather than terminal escapes: works everywhere.
        let _ = write!(err, "\r{line:<100}");
        let _ = err.flush();
        self.drawn = true;
    }

    fn finish(&mut self, done: u64) {
        if self.tty {
            self.draw(done);
            let _ = writeln!(std::io::stderr());
            self.drawn = false;
        }
    }

    fn abandon(&mut self) {
        if self.drawn {
            let _ = writeln!(std::io::stderr());
            self.drawn = false;
        }
    }
}

fn short(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let tail: String = s
            .chars()
            .rev()
            .take(max - 1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("…{tail}")
    }
}

/// The `rel="next"` URL in a `Link` header (RFC 8288), as GitHub sends
/// for paginated lists: `<URL>; rel="next", <URL>; rel="last"`.
pub fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once(';')?;
        let url = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .any(|p| {
                p.trim()
                    .strip_prefix("rel=")
                    .map(|r| r.trim_matches('"'))
                    .is_some_and(|r| r.split_whitespace().any(|r| r == "next"))
            })
            .then(|| url.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_next_link() {
        let h = r#"<https://api.github.com/repositories/1/releases?per_page=100&page=2>; rel="next", <https://api.github.com/repositories/1/releases?per_page=100&page=5>; rel="last""#;
        assert_eq!(
            next_link(h).as_deref(),
            Some("https://api.github.com/repositories/1/releases?per_page=100&page=2")
        );
        let last_page = r#"<https://x/r?page=1>; rel="first", <https://x/r?page=4>; rel="prev""#;
        assert_eq!(next_link(last_page), None);
        assert_eq!(next_link("garbage"), None);
    }

    #[tokio::test]
    async fn an_https_api_refuses_plain_http_files() {
        let http = Http::new(false, true).unwrap();
        let err = http
            .get_small("http://127.0.0.1:9/SHA256SUMS", None, "SHA256SUMS", 10)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cannot fetch SHA256SUMS from http://127.0.0.1:9/SHA256SUMS"),
            "{err}"
        );
        assert!(err.contains("URL scheme is not allowed"), "{err}");
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 * 1024 * 1024 + 400 * 1024), "3.4 MiB");
        assert_eq!(short("abcdef", 4), "…def");
        assert_eq!(short("abc", 4), "abc");
    }
}
