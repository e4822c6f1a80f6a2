//! Boot images: a URL, fetched once, verified against the checksum the
//! distribution publishes and kept in a cache shared by every machine of
//! the store; or a local file, used where it is.
//!
//! Cache layout: `<cache>/<first 16 hex of sha256(url)>/<file name>`, plus
//! `<file name>.digest` with the digest it was verified against. A download
//! goes to a temporary file in that directory and is renamed into place
//! only once its digest matched, so an interrupted or corrupt download is
//! never used, and two machines created at once at worst both download.

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use sha2::Digest as _;
use tokio::io::AsyncWriteExt;

use crate::checksum::{Algo, Digest, find_in_sums};

/// Where a boot image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Url(String),
    File(PathBuf),
}

impl Source {
    /// `http(s)://…` is a URL, `file:///…` and anything else a path.
    pub fn parse(text: &str) -> Source {
        if text.starts_with("http://") || text.starts_with("https://") {
            Source::Url(text.to_owned())
        } else if let Some(path) = text.strip_prefix("file://") {
            Source::File(PathBuf::from(path))
        } else {
            Source::File(PathBuf::from(text))
        }
    }
}

/// How to check an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    /// For a URL, the `SHA512SUMS` or `SHA256SUMS` file in its directory;
    /// a local file is used as it is.
    Auto,
    /// No check, asked for explicitly.
    Skip,
    Digest(Digest),
    /// A checksum file at this URL.
    SumsUrl(String),
}

impl Checksum {
    /// Parses a flag value: empty or `auto`, `none`, `sha256:HEX`,
    /// `sha512:HEX`, or the URL of a checksum file.
    pub fn parse(text: &str) -> Result<Checksum, ImageError> {
        let text = text.trim();
        match text {
            "" | "auto" => Ok(Checksum::Auto),
            "none" => Ok(Checksum::Skip),
            t if t.starts_with("http://") || t.starts_with("https://") => {
                Ok(Checksum::SumsUrl(t.to_owned()))
            }
            t => Digest::parse(t)
                .map(Checksum::Digest)
                .ok_or_else(|| ImageError::BadChecksumFlag(t.to_owned())),
        }
    }
}

/// Failures of fetching or checking an image; each says which URL or file.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "`{0}` is not a checksum: use sha256:HEX, sha512:HEX, the URL of a SHA256SUMS/SHA512SUMS file, `auto` or `none`"
    )]
    BadChecksumFlag(String),
    #[error("cannot download {url}: {message}")]
    Download { url: String, message: String },
    #[error(
        "no checksum is published for {url} (looked for {looked}); give one with the driver's image checksum flag (sha256:HEX, a SUMS file URL) or `none` to skip the check"
    )]
    NoChecksum { url: String, looked: String },
    #[error("{sums} lists no checksum for {file}")]
    NotInSums { sums: String, file: String },
    #[error(
        "{what} does not match its checksum: expected {expected}, got {actual}; the download was discarded"
    )]
    Mismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("boot image {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("image cache {path}: {source}")]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ImageError {
    /// What the user can do about it, naming the driver's flags for the
    /// image (`image_flag`) and its checksum (`checksum_flag`).
    pub fn hint(&self, image_flag: &str, checksum_flag: &str) -> String {
        match self {
            ImageError::Download { .. } => format!(
                "check the network connection and proxy settings (HTTPS_PROXY); offline, download the image elsewhere and give its path with --{image_flag}"
            ),
            ImageError::NoChecksum { .. } | ImageError::NotInSums { .. } => format!(
                "give the image's digest with --{checksum_flag} sha256:HEX (or a SUMS file URL), or --{checksum_flag} none to boot it unchecked"
            ),
            ImageError::Mismatch { .. } => format!(
                "the image changed or was tampered with on the way; try again, and if it persists check --{image_flag} and --{checksum_flag}"
            ),
            ImageError::BadChecksumFlag(_) => format!("fix --{checksum_flag}"),
            ImageError::File { .. } => format!("check the path given with --{image_flag}"),
            ImageError::Cache { path, .. } => format!(
                "check that {} is writable and its disk has room",
                path.display()
            ),
        }
    }
}

/// A fetched (or local) image, ready to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub path: PathBuf,
    /// The digest it was verified against, if any.
    pub digest: Option<Digest>,
    /// Whether it came from the cache without a download.
    pub cached: bool,
}

/// Reports download progress: bytes so far and the total when known.
pub type ProgressFn<'a> = &'a mut (dyn FnMut(u64, Option<u64>) + Send);

/// Fetches (or finds in `cache`) and verifies an image.
pub async fn fetch(
    source: &Source,
    checksum: &Checksum,
    cache: &Path,
    progress: ProgressFn<'_>,
) -> Result<Image, ImageError> {
    match source {
        Source::File(path) => local(path, checksum).await,
        Source::Url(url) => remote(url, checksum, cache, progress).await,
    }
}

/// [`fetch`], telling the CLI what happens: which URL is fetched, and how
/// far the download is, in steps of a percent.
pub async fn fetch_reporting(
    source: &Source,
    checksum: &Checksum,
    cache: &Path,
    progress: &machine_driver_sdk::Progress,
) -> Result<Image, ImageError> {
    if let Source::Url(url) = source {
        progress.step(format!("fetching {url}")).await;
    }
    // The download calls back synchronously; a task forwards to the
    // (async) progress stream, dropping updates rather than stalling it.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(u64, Option<u64>)>(16);
    let reporter = {
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut last = -1.0f64;
            while let Some((done, total)) = rx.recv().await {
                if let Some(total) = total.filter(|t| *t > 0) {
                    let f = done as f64 / total as f64;
                    if f - last >= 0.01 || f >= 1.0 {
                        last = f;
                        progress.fraction("downloading the image", f).await;
                    }
                }
            }
        })
    };
    let mut report = move |done: u64, total: Option<u64>| {
        let _ = tx.try_send((done, total));
    };
    let fetched = fetch(source, checksum, cache, &mut report).await;
    drop(report);
    let _ = reporter.await;
    fetched
}

async fn local(path: &Path, checksum: &Checksum) -> Result<Image, ImageError> {
    let file_err = |source| ImageError::File {
        path: path.to_owned(),
        source,
    };
    let meta = tokio::fs::metadata(path).await.map_err(file_err)?;
    if !meta.is_file() {
        return Err(file_err(std::io::Error::other("not a regular file")));
    }
    let expected = match checksum {
        Checksum::Auto | Checksum::Skip => None,
        Checksum::Digest(d) => Some(d.clone()),
        Checksum::SumsUrl(sums) => {
            let name = file_name(&path.to_string_lossy());
            Some(digest_from_sums(&client()?, sums, &name, None).await?)
        }
    };
    if let Some(expected) = &expected {
        let actual = hash_file(path, expected.algo).await.map_err(file_err)?;
        if &actual != expected {
            return Err(ImageError::Mismatch {
                what: path.display().to_string(),
                expected: expected.clone(),
                actual,
            });
        }
    }
    Ok(Image {
        path: path.to_owned(),
        digest: expected,
        cached: false,
    })
}

fn client() -> Result<reqwest::Client, ImageError> {
    reqwest::Client::builder()
        .user_agent(concat!("machine-vm-support/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| ImageError::Download {
            url: String::new(),
            message: e.to_string(),
        })
}

fn file_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    path.rsplit('/').next().unwrap_or(path).to_owned()
}

fn sibling(url: &str, name: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    match path.rfind('/') {
        Some(i) => format!("{}{name}", &path[..=i]),
        None => name.to_owned(),
    }
}

/// Describes a reqwest failure with its causes (connection refused, …).
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// GETs a small text document; `Ok(None)` on 404.
async fn get_text(client: &reqwest::Client, url: &str) -> Result<Option<String>, ImageError> {
    let err = |message: String| ImageError::Download {
        url: url.to_owned(),
        message,
    };
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| err(describe(&e)))?;
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !resp.status().is_success() {
        return Err(err(format!("HTTP {}", resp.status())));
    }
    resp.text().await.map(Some).map_err(|e| err(describe(&e)))
}

async fn digest_from_sums(
    client: &reqwest::Client,
    sums_url: &str,
    file: &str,
    algo: Option<Algo>,
) -> Result<Digest, ImageError> {
    let text = get_text(client, sums_url)
        .await?
        .ok_or_else(|| ImageError::Download {
            url: sums_url.to_owned(),
            message: "HTTP 404 Not Found".into(),
        })?;
    find_in_sums(&text, file, algo).ok_or_else(|| ImageError::NotInSums {
        sums: sums_url.to_owned(),
        file: file.to_owned(),
    })
}

/// The digest a URL's image must have, per `checksum`; `None` for Skip.
async fn expected_digest(
    client: &reqwest::Client,
    url: &str,
    checksum: &Checksum,
) -> Result<Option<Digest>, ImageError> {
    let name = file_name(url);
    match checksum {
        Checksum::Skip => Ok(None),
        Checksum::Digest(d) => Ok(Some(d.clone())),
        Checksum::SumsUrl(sums) => digest_from_sums(client, sums, &name, None).await.map(Some),
        Checksum::Auto => {
            let candidates = [("SHA512SUMS", Algo::Sha512), ("SHA256SUMS", Algo::Sha256)];
            for (sums, algo) in candidates {
                let sums_url = sibling(url, sums);
                if let Some(text) = get_text(client, &sums_url).await? {
                    return find_in_sums(&text, &name, Some(algo)).map(Some).ok_or(
                        ImageError::NotInSums {
                            sums: sums_url,
                            file: name,
                        },
                    );
                }
            }
            Err(ImageError::NoChecksum {
                url: url.to_owned(),
                looked: candidates
                    .iter()
                    .map(|(s, _)| sibling(url, s))
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        }
    }
}

fn cache_dir_of(cache: &Path, url: &str) -> PathBuf {
    let key = hex::encode(sha2::Sha256::digest(url.as_bytes()));
    cache.join(&key[..16])
}

async fn remote(
    url: &str,
    checksum: &Checksum,
    cache: &Path,
    progress: ProgressFn<'_>,
) -> Result<Image, ImageError> {
    let client = client()?;
    let name = file_name(url);
    if name.is_empty() || name == "." || name == ".." {
        return Err(ImageError::Download {
            url: url.to_owned(),
            message: "the URL names no file".into(),
        });
    }
    let dir = cache_dir_of(cache, url);
    let target = dir.join(&name);
    let digest_file = dir.join(format!("{name}.digest"));

    let expected = expected_digest(&client, url, checksum).await?;
    // A cached copy is used when it was verified against the same digest
    // (a "latest" URL whose SUMS changed downloads the new image).
    if let Ok(recorded) = tokio::fs::read_to_string(&digest_file).await
        && target.is_file()
    {
        let recorded = recorded.trim();
        let same = match &expected {
            Some(d) => recorded == d.to_string(),
            None => true,
        };
        if same {
            return Ok(Image {
                path: target,
                digest: expected,
                cached: true,
            });
        }
    }

    let cache_err = |path: &Path, source| ImageError::Cache {
        path: path.to_owned(),
        source,
    };
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| cache_err(&dir, e))?;
    let part = dir.join(format!(".{name}.{}.part", std::process::id()));
    let result = download(&client, url, &part, expected.as_ref(), progress).await;
    let actual = match result {
        Ok(d) => d,
        Err(e) => {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(e);
        }
    };
    if let Some(expected) = &expected
        && &actual != expected
    {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(ImageError::Mismatch {
            what: url.to_owned(),
            expected: expected.clone(),
            actual,
        });
    }
    let recorded = expected.clone().unwrap_or(actual);
    let finish = async {
        tokio::fs::rename(&part, &target).await?;
        let tmp = dir.join(format!(".{name}.{}.digest", std::process::id()));
        tokio::fs::write(&tmp, format!("{recorded}\n")).await?;
        tokio::fs::rename(&tmp, &digest_file).await
    };
    if let Err(e) = finish.await {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(cache_err(&target, e));
    }
    Ok(Image {
        path: target,
        digest: expected,
        cached: false,
    })
}

/// Streams `url` into `part`, hashing as it goes.
async fn download(
    client: &reqwest::Client,
    url: &str,
    part: &Path,
    expected: Option<&Digest>,
    progress: ProgressFn<'_>,
) -> Result<Digest, ImageError> {
    let err = |message: String| ImageError::Download {
        url: url.to_owned(),
        message,
    };
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| err(describe(&e)))?;
    if !resp.status().is_success() {
        return Err(err(format!("HTTP {}", resp.status())));
    }
    let total = resp.content_length();
    let mut hasher = expected.map_or(Algo::Sha256, |d| d.algo).hasher();
    let mut file = tokio::fs::File::create(part)
        .await
        .map_err(|e| ImageError::Cache {
            path: part.to_owned(),
            source: e,
        })?;
    let mut stream = resp.bytes_stream();
    let mut done = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| err(describe(&e)))?;
        hasher.update(&chunk);
        file.write_all(&chunk)
            .await
            .map_err(|e| ImageError::Cache {
                path: part.to_owned(),
                source: e,
            })?;
        done += chunk.len() as u64;
        progress(done, total);
    }
    if let Some(total) = total
        && done != total
    {
        return Err(err(format!(
            "the connection ended after {done} of {total} bytes"
        )));
    }
    file.sync_all().await.map_err(|e| ImageError::Cache {
        path: part.to_owned(),
        source: e,
    })?;
    Ok(hasher.finish())
}

async fn hash_file(path: &Path, algo: Algo) -> std::io::Result<Digest> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut file = std::fs::File::open(&path)?;
        let mut hasher = algo.hasher();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(hasher.finish())
    })
    .await
    .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// What the test server answers for a path: a body, or a body cut
    /// short after some bytes (with the full length announced).
    #[derive(Clone)]
    enum Reply {
        Body(Vec<u8>),
        Cut(Vec<u8>, usize),
    }

    /// A small HTTP/1.1 server on 127.0.0.1 that counts requests per path.
    struct Server {
        base: String,
        hits: Arc<Mutex<HashMap<String, usize>>>,
    }

    async fn serve(routes: HashMap<&'static str, Reply>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(Mutex::new(HashMap::new()));
        let routes: HashMap<String, Reply> =
            routes.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let counter = hits.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let routes = routes.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&req);
                    let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    *counter.lock().unwrap().entry(path.clone()).or_default() += 1;
                    let (status, body, send) = match routes.get(&path) {
                        Some(Reply::Body(b)) => ("200 OK", b.clone(), b.len()),
                        Some(Reply::Cut(b, n)) => ("200 OK", b.clone(), *n),
                        None => ("404 Not Found", Vec::new(), 0),
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = sock.write_all(head.as_bytes()).await;
                    let _ = sock.write_all(&body[..send]).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        Server { base, hits }
    }

    fn sha512_hex(data: &[u8]) -> String {
        hex::encode(sha2::Sha512::digest(data))
    }

    async fn get(
        server: &Server,
        path: &str,
        checksum: &Checksum,
        cache: &Path,
    ) -> Result<Image, ImageError> {
        let mut calls = 0u32;
        let mut progress = |_: u64, _: Option<u64>| calls += 1;
        fetch(
            &Source::Url(format!("{}{path}", server.base)),
            checksum,
            cache,
            &mut progress,
        )
        .await
    }

    fn leftovers(cache: &Path) -> Vec<String> {
        let mut found = Vec::new();
        for dir in std::fs::read_dir(cache).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(dir.path()).unwrap().flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    found.push(name);
                }
            }
        }
        found
    }

    #[tokio::test]
    async fn downloads_verifies_and_caches() {
        let image = b"a disk image".repeat(1000);
        let sums = format!("{}  disk.qcow2\n", sha512_hex(&image));
        let server = serve(HashMap::from([
            ("/img/disk.qcow2", Reply::Body(image.clone())),
            ("/img/SHA512SUMS", Reply::Body(sums.into_bytes())),
        ]))
        .await;
        let cache = tempfile::tempdir().unwrap();
        let first = get(&server, "/img/disk.qcow2", &Checksum::Auto, cache.path())
            .await
            .unwrap();
        assert!(!first.cached);
        assert_eq!(std::fs::read(&first.path).unwrap(), image);
        assert_eq!(first.digest.unwrap().algo, Algo::Sha512);

        let second = get(&server, "/img/disk.qcow2", &Checksum::Auto, cache.path())
            .await
            .unwrap();
        assert!(second.cached);
        assert_eq!(second.path, first.path);
        assert_eq!(server.hits.lock().unwrap()["/img/disk.qcow2"], 1);
        assert!(leftovers(cache.path()).is_empty());
    }

    #[tokio::test]
    async fn mismatch_is_refused_and_nothing_is_kept() {
        let sums = format!("{}  disk.qcow2\n", sha512_hex(b"the real image"));
        let server = serve(HashMap::from([
            ("/disk.qcow2", Reply::Body(b"a tampered image".to_vec())),
            ("/SHA512SUMS", Reply::Body(sums.into_bytes())),
        ]))
        .await;
        let cache = tempfile::tempdir().unwrap();
        let err = get(&server, "/disk.qcow2", &Checksum::Auto, cache.path())
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("does not match its checksum") && text.contains("/disk.qcow2"),
            "{text}"
        );
        let dir = cache_dir_of(cache.path(), &format!("{}/disk.qcow2", server.base));
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn no_published_checksum_is_an_error_unless_skipped() {
        let server = serve(HashMap::from([(
            "/disk.qcow2",
            Reply::Body(b"image".to_vec()),
        )]))
        .await;
        let cache = tempfile::tempdir().unwrap();
        let err = get(&server, "/disk.qcow2", &Checksum::Auto, cache.path())
            .await
            .unwrap_err();
        assert!(
            matches!(err, ImageError::NoChecksum { .. }) && err.to_string().contains("SHA256SUMS"),
            "{err}"
        );
        let ok = get(&server, "/disk.qcow2", &Checksum::Skip, cache.path())
            .await
            .unwrap();
        assert_eq!(std::fs::read(ok.path).unwrap(), b"image");
    }

    #[tokio::test]
    async fn explicit_digest_and_sums_url() {
        let image = b"ubuntu".to_vec();
        let hex256 = hex::encode(sha2::Sha256::digest(&image));
        let server = serve(HashMap::from([
            ("/a/noble.img", Reply::Body(image.clone())),
            (
                "/sums/SHA256SUMS",
                Reply::Body(format!("{hex256} *noble.img\n").into_bytes()),
            ),
        ]))
        .await;
        let cache = tempfile::tempdir().unwrap();
        let by_digest = Checksum::parse(&format!("sha256:{hex256}")).unwrap();
        get(&server, "/a/noble.img", &by_digest, cache.path())
            .await
            .unwrap();
        let cache2 = tempfile::tempdir().unwrap();
        let by_url = Checksum::parse(&format!("{}/sums/SHA256SUMS", server.base)).unwrap();
        get(&server, "/a/noble.img", &by_url, cache2.path())
            .await
            .unwrap();
        let wrong = Checksum::parse(&format!("sha256:{}", "0".repeat(64))).unwrap();
        let cache3 = tempfile::tempdir().unwrap();
        assert!(matches!(
            get(&server, "/a/noble.img", &wrong, cache3.path()).await,
            Err(ImageError::Mismatch { .. })
        ));
    }

    #[tokio::test]
    async fn a_cut_download_leaves_no_file() {
        let image = vec![7u8; 100_000];
        let server = serve(HashMap::from([(
            "/disk.img",
            Reply::Cut(image.clone(), 40_000),
        )]))
        .await;
        let cache = tempfile::tempdir().unwrap();
        let err = get(&server, "/disk.img", &Checksum::Skip, cache.path())
            .await
            .unwrap_err();
        assert!(matches!(err, ImageError::Download { .. }), "{err}");
        assert!(err.to_string().contains("/disk.img"), "{err}");
        let dir = cache_dir_of(cache.path(), &format!("{}/disk.img", server.base));
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn unreachable_server_names_the_url() {
        let port = crate::ports::free_port().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let mut progress = |_: u64, _: Option<u64>| {};
        let url = format!("http://127.0.0.1:{port}/disk.img");
        let err = fetch(
            &Source::Url(url.clone()),
            &Checksum::Skip,
            cache.path(),
            &mut progress,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains(&url), "{err}");
    }

    #[tokio::test]
    async fn local_files_are_checked_when_a_digest_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.qcow2");
        std::fs::write(&path, b"local").unwrap();
        let ok = fetch(
            &Source::parse(&path.to_string_lossy()),
            &Checksum::Auto,
            dir.path(),
            &mut |_, _| {},
        )
        .await
        .unwrap();
        assert_eq!(ok.path, path);
        let wrong = Checksum::parse(&format!("sha512:{}", "a".repeat(128))).unwrap();
        assert!(matches!(
            fetch(
                &Source::File(path.clone()),
                &wrong,
                dir.path(),
                &mut |_, _| {}
            )
            .await,
            Err(ImageError::Mismatch { .. })
        ));
        let missing = fetch(
            &Source::File(dir.path().join("nope.qcow2")),
            &Checksum::Auto,
            dir.path(),
            &mut |_, _| {},
        )
        .await
        .unwrap_err();
        assert!(missing.to_string().contains("nope.qcow2"), "{missing}");
    }
}
