//! A GitHub-like release server on 127.0.0.1 for the driver-install tests:
//! the releases API (`GET /repos/OWNER/REPO/releases`) and the assets it
//! links to, over real HTTP/1.1 on a real socket, plus builders for the
//! files a release holds (`.tar.gz` archives, `SHA256SUMS`).
//!
//! Any route can be replaced (a 403 with rate-limit headers, a download
//! that breaks off halfway), and every request is logged with its headers,
//! so a test can check what the CLI asked for and sent. The server is
//! listening when [`ReleaseServer::start`] returns; dropping it stops it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// What the server answers on one path.
#[derive(Debug, Clone)]
pub enum Route {
    /// A complete response.
    Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Announces the whole body in Content-Length, sends only the first
    /// `send` bytes, then closes the connection: a download cut midway.
    Cut { body: Vec<u8>, send: usize },
    /// Announces the whole body, sends the first `send` bytes, then holds
    /// the rest back until `gate` opens: a download the test can watch
    /// part-way through.
    Held {
        body: Vec<u8>,
        send: usize,
        gate: Gate,
    },
    /// A paginated list, as GitHub serves one: the `page` query parameter
    /// (from 1) picks the body, and a `Link: <…>; rel="next"` header names
    /// the next page while there is one.
    Pages { url: String, bodies: Vec<Vec<u8>> },
}

impl Route {
    pub fn ok(body: impl Into<Vec<u8>>) -> Self {
        Route::Reply {
            status: 200,
            headers: Vec::new(),
            body: body.into(),
        }
    }
}

/// Holds back the rest of a [`Route::Held`] body until opened. Clones
/// share the gate.
#[derive(Debug, Clone, Default)]
pub struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    /// How long a held response waits at most, so that a test that fails
    /// before opening the gate does not leave a server thread behind.
    const LIMIT: Duration = Duration::from_secs(120);

    pub fn new() -> Self {
        Self::default()
    }

    pub fn open(&self) {
        let (open, cv) = &*self.0;
        *open.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
    }

    /// Waits until the gate is open, or [`Gate::LIMIT`] has passed.
    fn wait(&self) {
        let (open, cv) = &*self.0;
        let guard = open.lock().unwrap_or_else(|e| e.into_inner());
        let _ = cv
            .wait_timeout_while(guard, Self::LIMIT, |open| !*open)
            .unwrap_or_else(|e| e.into_inner());
    }
}

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// With its query string.
    pub path: String,
    /// Names in lowercase.
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
struct State {
    routes: HashMap<String, Route>,
    requests: Vec<Request>,
}

/// The server; stops when dropped.
#[derive(Debug)]
pub struct ReleaseServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// One release to publish.
#[derive(Debug, Clone, Default)]
pub struct ReleaseSpec {
    pub tag: String,
    pub draft: bool,
    pub prerelease: bool,
    /// File name and content.
    pub assets: Vec<(String, Vec<u8>)>,
    /// Sizes to announce in the releases list instead of the real ones.
    pub announced_sizes: HashMap<String, u64>,
}

impl ReleaseSpec {
    pub fn new(tag: &str) -> Self {
        Self {
            tag: tag.to_owned(),
            ..Self::default()
        }
    }

    pub fn asset(mut self, name: &str, data: impl Into<Vec<u8>>) -> Self {
        self.assets.push((name.to_owned(), data.into()));
        self
    }

    /// Adds `SHA256SUMS` over the assets so far.
    pub fn with_sums(self) -> Self {
        let sums = sha256sums(
            &self
                .assets
                .iter()
                .map(|(n, d)| (n.as_str(), d.as_slice()))
                .collect::<Vec<_>>(),
        );
        self.asset("SHA256SUMS", sums)
    }

    pub fn data(&self, name: &str) -> Option<&[u8]> {
        self.assets
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d.as_slice())
    }
}

impl ReleaseServer {
    /// Binds 127.0.0.1 on a free port and starts answering.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let state = state.clone();
                    std::thread::spawn(move || serve(conn, &state));
                }
            })
        };
        Self {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// The base URL, for `MACHINE_GITHUB_API_URL`.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The path the releases list of OWNER/REPO is served at.
    pub fn releases_path(owner: &str, repo: &str) -> String {
        format!("/repos/{owner}/{repo}/releases")
    }

    /// The path an asset is served at.
    pub fn download_path(owner: &str, repo: &str, tag: &str, name: &str) -> String {
        format!("/{owner}/{repo}/releases/download/{tag}/{name}")
    }

    /// Serves `route` at `path` (without query string), replacing what was
    /// there.
    pub fn route(&self, path: &str, route: Route) {
        self.lock().routes.insert(path.to_owned(), route);
    }

    /// Publishes releases of OWNER/REPO: the releases list in GitHub's
    /// shape, and every asset at its download URL. Replaces what OWNER/REPO
    /// had.
    pub fn publish(&self, owner: &str, repo: &str, releases: &[ReleaseSpec]) {
        let list = self.release_entries(owner, repo, releases);
        let body = serde_json::to_vec_pretty(&list).expect("releases JSON");
        self.route(&Self::releases_path(owner, repo), Route::ok(body));
    }

    /// [`ReleaseServer::publish`], with the list served in pages of
    /// `page_size` releases linked by `Link` headers (whatever `per_page`
    /// the client asks for, as a server may).
    pub fn publish_paged(
        &self,
        owner: &str,
        repo: &str,
        releases: &[ReleaseSpec],
        page_size: usize,
    ) {
        let list = self.release_entries(owner, repo, releases);
        let bodies = list
            .chunks(page_size)
            .map(|page| serde_json::to_vec_pretty(page).expect("releases JSON"))
            .collect();
        let path = Self::releases_path(owner, repo);
        let url = format!("{}{path}", self.api_url());
        self.route(&path, Route::Pages { url, bodies });
    }

    /// The releases list's entries, and every asset routed at its URL.
    fn release_entries(
        &self,
        owner: &str,
        repo: &str,
        releases: &[ReleaseSpec],
    ) -> Vec<serde_json::Value> {
        let base = self.api_url();
        let mut list = Vec::new();
        for (i, r) in releases.iter().enumerate() {
            let mut assets = Vec::new();
            for (j, (name, data)) in r.assets.iter().enumerate() {
                let path = Self::download_path(owner, repo, &r.tag, name);
                assets.push(serde_json::json!({
                    "id": i * 1000 + j,
                    "name": name,
                    "size": r.announced_sizes.get(name).copied().unwrap_or(data.len() as u64),
                    "content_type": "application/octet-stream",
                    "browser_download_url": format!("{base}{path}"),
                    "url": format!("{base}/repos/{owner}/{repo}/releases/assets/{}", i * 1000 + j),
                }));
                self.route(&path, Route::ok(data.clone()));
            }
            list.push(serde_json::json!({
                "id": i,
                "tag_name": r.tag,
                "name": r.tag,
                "draft": r.draft,
                "prerelease": r.prerelease,
                "html_url": format!("{base}/{owner}/{repo}/releases/tag/{}", r.tag),
                "assets": assets,
            }));
        }
        list
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }

    /// Requests whose path (without query) is `path`.
    pub fn requests_to(&self, path: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.split('?').next() == Some(path))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for ReleaseServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        _ => "Status",
    }
}

/// Answers one connection: one request, then close.
fn serve(conn: TcpStream, state: &Mutex<State>) {
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            return;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let route = {
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        st.requests.push(Request {
            method,
            path: path.clone(),
            headers,
        });
        st.routes
            .get(path.split('?').next().unwrap_or_default())
            .cloned()
    };
    let route = route.unwrap_or_else(|| Route::Reply {
        status: 404,
        headers: vec![("content-type".into(), "application/json".into())],
        body: br#"{"message":"Not Found"}"#.to_vec(),
    });
    let mut conn = conn;
    match route {
        Route::Reply {
            status,
            headers,
            body,
        } => write_reply(&mut conn, status, &headers, &body),
        Route::Pages { url, bodies } => {
            let page = path
                .split_once('?')
                .and_then(|(_, q)| q.split('&').find_map(|kv| kv.strip_prefix("page=")))
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(1);
            let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
            if page < bodies.len() {
                headers.push((
                    "link".to_owned(),
                    format!(
                        "<{url}?per_page=100&page={}>; rel=\"next\", <{url}?per_page=100&page={}>; rel=\"last\"",
                        page + 1,
                        bodies.len()
                    ),
                ));
            }
            let body = bodies
                .get(page.wrapping_sub(1))
                .map_or(&b"[]"[..], Vec::as_slice);
            write_reply(&mut conn, 200, &headers, body);
        }
        Route::Cut { body, send } => {
            write_head(&mut conn, body.len());
            let _ = conn.write_all(&body[..send.min(body.len())]);
        }
        Route::Held { body, send, gate } => {
            let (first, rest) = body.split_at(send.min(body.len()));
            write_head(&mut conn, body.len());
            let _ = conn.write_all(first);
            let _ = conn.flush();
            gate.wait();
            let _ = conn.write_all(rest);
        }
    }
    let _ = conn.flush();
    let _ = conn.shutdown(Shutdown::Both);
}

/// A 200 head announcing `len` bytes, for the routes that then send less
/// or pause.
fn write_head(conn: &mut TcpStream, len: usize) {
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n");
    let _ = conn.write_all(head.as_bytes());
}

fn write_reply(conn: &mut TcpStream, status: u16, headers: &[(String, String)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        reason(status),
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body);
}

/// This machine's platform as asset names spell it (Go's GOOS/GOARCH).
pub fn platform() -> (&'static str, &'static str) {
    let os = match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    (os, arch)
}

/// `machine-driver-NAME_VERSION_pPROTOCOL_OS_ARCH.tar.gz` for this platform.
pub fn asset_name(driver: &str, version: &str, protocol: u32) -> String {
    let (os, arch) = platform();
    format!("machine-driver-{driver}_{version}_p{protocol}_{os}_{arch}.tar.gz")
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A `SHA256SUMS` file, as `sha256sum` writes it.
pub fn sha256sums(files: &[(&str, &[u8])]) -> Vec<u8> {
    files
        .iter()
        .map(|(n, d)| format!("{}  {n}\n", sha256_hex(d)))
        .collect::<String>()
        .into_bytes()
}

/// One entry of a test archive.
#[derive(Debug, Clone)]
pub enum Entry {
    File {
        path: String,
        data: Vec<u8>,
        mode: u32,
    },
    Dir(String),
    Symlink {
        path: String,
        target: String,
    },
    /// A header written byte by byte, for what `tar`'s builder refuses to
    /// write (`..`, absolute paths) or sizes that lie; `data` follows it,
    /// padded to a block.
    Raw {
        name: Vec<u8>,
        kind: tar::EntryType,
        size: u64,
        data: Vec<u8>,
        link: Vec<u8>,
    },
}

/// A `.tar.gz` of `entries`. Stored, not compressed (still a valid gzip
/// stream): the archives hold a debug build of a driver, tests build many,
/// and deflate in an unoptimised test build takes seconds per archive.
pub fn tar_gz(entries: &[Entry]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
    let mut b = tar::Builder::new(gz);
    for e in entries {
        match e {
            Entry::File { path, data, mode } => {
                let mut h = tar::Header::new_gnu();
                h.set_size(data.len() as u64);
                h.set_mode(*mode);
                h.set_entry_type(tar::EntryType::Regular);
                b.append_data(&mut h, path, data.as_slice())
                    .expect("tar file");
            }
            Entry::Dir(path) => {
                let mut h = tar::Header::new_gnu();
                h.set_size(0);
                h.set_mode(0o755);
                h.set_entry_type(tar::EntryType::Directory);
                b.append_data(&mut h, path, std::io::empty())
                    .expect("tar dir");
            }
            Entry::Symlink { path, target } => {
                let mut h = tar::Header::new_gnu();
                h.set_size(0);
                h.set_mode(0o777);
                h.set_entry_type(tar::EntryType::Symlink);
                b.append_link(&mut h, path, target).expect("tar symlink");
            }
            Entry::Raw {
                name,
                kind,
                size,
                data,
                link,
            } => {
                let mut h = tar::Header::new_old();
                h.as_old_mut().name[..name.len()].copy_from_slice(name);
                h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
                h.set_entry_type(*kind);
                h.set_size(*size);
                h.set_mode(0o755);
                h.set_cksum();
                let out = b.get_mut();
                out.write_all(h.as_bytes()).expect("raw header");
                out.write_all(data).expect("raw data");
                out.write_all(&vec![0; (512 - data.len() % 512) % 512])
                    .expect("padding");
            }
        }
    }
    b.into_inner().expect("tar end").finish().expect("gzip end")
}

/// A driver archive as release tools make one: a directory holding the
/// binary `machine-driver-NAME` and a README.
pub fn driver_archive(driver: &str, binary: &[u8]) -> Vec<u8> {
    let dir = format!("machine-driver-{driver}");
    tar_gz(&[
        Entry::Dir(format!("{dir}/")),
        Entry::File {
            path: format!("{dir}/machine-driver-{driver}"),
            data: binary.to_vec(),
            mode: 0o755,
        },
        Entry::File {
            path: format!("{dir}/README.md"),
            data: b"a driver\n".to_vec(),
            mode: 0o644,
        },
    ])
}
