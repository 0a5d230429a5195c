//! Resumable, verified download of large files (the official SAM 2 checkpoints, 150–900 MB).
//!
//! [`download`] fetches a URL over HTTP(S) (through `ureq`, rustls TLS, redirects followed) into
//! `<dest>.part` (see [`part_path`]), resumes an existing `.part` with a `Range` request, checks the
//! size and optionally the sha256 of the result, and only then renames it atomically to `dest`.
//! Progress is reported through a throttled callback and the transfer can be cancelled through an
//! [`AtomicBool`]; a cancelled or dropped transfer keeps its `.part` so the next call resumes.
//!
//! This module is self-contained: it depends on no other module of the app, only on `ureq`,
//! `sha2`, `hex` and `thiserror`. It blocks, so call it from a worker thread.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Size of one network read; the cancel flag is checked between reads.
const NET_CHUNK: usize = 64 * 1024;
/// Size of one read while hashing the finished file.
const HASH_CHUNK: usize = 1024 * 1024;
/// Limit for DNS resolution and for establishing the connection (TCP + TLS).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Limit for a single read from the network (an idle connection fails after this).
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Minimum time between two progress callbacks of the same phase (~10 per second).
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);
/// The transfer rate is averaged over about this long.
const RATE_WINDOW: Duration = Duration::from_secs(3);
/// How often a download may start over from byte zero (server rejected or ignored the range).
const MAX_ATTEMPTS: usize = 2;

/// What to download and where to put it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `http://` or `https://` URL of the file; redirects are followed.
    pub url: &'a str,
    /// Final location of the file; its parent directory is created if missing. While downloading,
    /// the data lives in [`part_path`]`(dest)`.
    pub dest: &'a Path,
    /// Exact size of the file in bytes, if known. A server that announces another size is refused
    /// before anything is written, and the finished file must have exactly this size.
    pub expected_bytes: Option<u64>,
    /// Lowercase hex sha256 of the file, if known; checked before the file is moved into place.
    pub expected_sha256: Option<&'a str>,
}

/// What the download is doing when a [`Progress`] is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Resolving the host, connecting and waiting for the response headers.
    Connecting,
    /// Receiving the body; `downloaded_bytes` includes the bytes of a resumed `.part`.
    Downloading,
    /// Computing the sha256 of the finished file; `downloaded_bytes` counts the bytes hashed so far.
    Verifying,
}

/// One progress report, given to the callback of [`download`] at most about ten times per second
/// per phase, plus once when the transfer ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Current phase.
    pub phase: Phase,
    /// Bytes done so far (downloaded, or hashed while [`Phase::Verifying`]).
    pub downloaded_bytes: u64,
    /// Total size, when the server or the caller told it.
    pub total_bytes: Option<u64>,
    /// Throughput over the last few seconds, in bytes per second (0 until it can be measured).
    pub bytes_per_s: f64,
}

/// Why a download failed. Every message says what failed and ends with the URL or the path.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The host could not be resolved or connected to (no network, DNS failure, refused, timeout).
    #[error(
        "cannot reach {host} — no network connection? Download the file elsewhere and pick it with \
         \"Choose file…\" ({reason}): {url}",
        host = host_of(.url)
    )]
    Offline {
        /// The URL that was requested.
        url: String,
        /// The underlying network error, for the user.
        reason: String,
    },
    /// The server answered with an HTTP status other than 200/206 (e.g. 404).
    #[error("the server answered HTTP {status} instead of the file: {url}")]
    Http {
        /// HTTP status code of the response.
        status: u16,
        /// The URL that was requested.
        url: String,
    },
    /// Another network or protocol failure (TLS error, malformed response, too many redirects…).
    #[error("download failed while talking to {host} ({reason}): {url}", host = host_of(.url))]
    Network {
        /// The URL that was requested.
        url: String,
        /// The underlying error, for the user.
        reason: String,
    },
    /// The size announced by the server, or the size of the finished file, is not the expected one.
    #[error("size mismatch: expected {expected} bytes, but the download has {found} bytes: {url}")]
    SizeMismatch {
        /// Size given in [`Request::expected_bytes`].
        expected: u64,
        /// Size announced by the server or found on disk.
        found: u64,
        /// The URL that was requested.
        url: String,
    },
    /// The sha256 of the finished file is not the expected one; the download was deleted.
    #[error("sha256 mismatch: expected {expected}, found {found}; the downloaded data was deleted: {path}")]
    HashMismatch {
        /// Hash given in [`Request::expected_sha256`].
        expected: String,
        /// Hash of the downloaded data.
        found: String,
        /// Destination the file would have been written to.
        path: PathBuf,
    },
    /// Reading, writing, creating or renaming a local file failed (disk full, no permission…).
    #[error("file access failed ({source}): {path}")]
    Io {
        /// The I/O error.
        source: io::Error,
        /// The file or directory concerned.
        path: PathBuf,
    },
    /// The cancel flag was set; the `.part` file is kept so a later call resumes.
    #[error("download cancelled; the partial file is kept to resume later: {url}")]
    Cancelled {
        /// The URL that was being downloaded.
        url: String,
    },
    /// The connection dropped or stalled mid-transfer; the `.part` file is kept so a later call resumes.
    #[error("connection to {host} dropped after {downloaded} bytes; try again to resume: {url}", host = host_of(.url))]
    Interrupted {
        /// Bytes of the file on disk when the connection dropped (including resumed bytes).
        downloaded: u64,
        /// The URL that was being downloaded.
        url: String,
    },
}

/// Path of the partial file used while downloading to `dest`: `dest` with `.part` appended
/// (`sam2.1_hiera_large.pt` → `sam2.1_hiera_large.pt.part`), in the same directory.
#[must_use]
pub fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
}

/// Downloads `req.url` to `req.dest` and returns `req.dest`.
///
/// * If `dest` already exists with the expected size (and hash, when given), returns at once
///   without touching the network.
/// * Data is written to [`part_path`]`(dest)`; an existing `.part` is resumed with a `Range`
///   request (a server that ignores it makes the download start over; a `.part` longer than
///   `expected_bytes` is deleted first).
/// * When finished, the size and optional sha256 are checked, then the `.part` is renamed to `dest`.
/// * `progress` is called at most about ten times per second per phase and once at the end;
///   `cancel` is checked between 64 KiB reads (and 1 MiB hash reads).
///
/// Blocks until done: call it from a worker thread.
///
/// # Errors
/// See [`DownloadError`]. After [`DownloadError::Cancelled`] and [`DownloadError::Interrupted`]
/// the `.part` is kept and calling again resumes.
pub fn download(
    req: &Request<'_>,
    progress: &mut dyn FnMut(Progress),
    cancel: &AtomicBool,
) -> Result<PathBuf, DownloadError> {
    let mut reporter = Reporter::new(progress);
    let dest = req.dest;

    if dest_is_complete(req, &mut reporter, cancel)? {
        return Ok(dest.to_path_buf());
    }
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|source| DownloadError::Io { source, path: parent.to_path_buf() })?;
    }

    let part = part_path(dest);
    let mut offset = file_len(&part)?.unwrap_or(0);
    if let Some(expected) = req.expected_bytes
        && offset > expected
    {
        remove_file(&part)?;
        offset = 0;
    }

    // A `.part` that already has the expected size only needs verification: no network needed.
    let already_complete = offset > 0 && Some(offset) == req.expected_bytes;
    if !already_complete {
        let mut done = false;
        for _ in 0..MAX_ATTEMPTS {
            match fetch(req, &part, offset, &mut reporter, cancel)? {
                Fetch::Done => {
                    done = true;
                    break;
                }
                Fetch::Restart => {
                    remove_file(&part)?;
                    offset = 0;
                }
            }
        }
        if !done {
            return Err(DownloadError::Network {
                url: req.url.to_owned(),
                reason: "the server kept rejecting the resume request".to_owned(),
            });
        }
    }

    finish(req, &part, &mut reporter, cancel)
}

/// Result of one HTTP exchange.
enum Fetch {
    /// The `.part` now holds everything the server has.
    Done,
    /// The `.part` cannot be resumed (bad range answer): delete it and start from byte zero.
    Restart,
}

/// Performs one GET (with `Range` when `offset > 0`) and appends the body to `part`.
fn fetch(
    req: &Request<'_>,
    part: &Path,
    offset: u64,
    reporter: &mut Reporter<'_>,
    cancel: &AtomicBool,
) -> Result<Fetch, DownloadError> {
    let url = req.url;
    if cancel.load(Ordering::Relaxed) {
        return Err(DownloadError::Cancelled { url: url.to_owned() });
    }
    reporter.begin(Phase::Connecting, offset);
    reporter.update(offset, req.expected_bytes, true);

    let agent = ureq::Agent::config_builder()
        .timeout_resolve(Some(CONNECT_TIMEOUT))
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_per_read(Some(READ_TIMEOUT))
        .timeout_per_write(Some(READ_TIMEOUT))
        .http_status_as_error(false)
        // Ranges apply to the raw bytes: never let the server compress the body.
        .accept_encoding("identity")
        .build()
        .new_agent();
    let mut request = agent.get(url);
    if offset > 0 {
        request = request.header("Range", format!("bytes={offset}-"));
    }
    let response = request.call().map_err(|e| classify_call_error(&e, url, offset))?;

    let status = response.status().as_u16();
    let content_range =
        response.headers().get("content-range").and_then(|v| v.to_str().ok()).and_then(parse_content_range);
    let body_len = response.body().content_length();

    let (start, total) = match status {
        200 => (0, body_len),
        206 => match content_range {
            Some(ContentRange { range: Some((first, _)), total }) if first == offset => {
                (offset, total.or(body_len.map(|n| offset + n)))
            }
            _ => return Ok(Fetch::Restart),
        },
        416 if offset > 0 => {
            let server_total = content_range.and_then(|cr| cr.total);
            if Some(offset) == req.expected_bytes || Some(offset) == server_total {
                return Ok(Fetch::Done);
            }
            return Ok(Fetch::Restart);
        }
        _ => return Err(DownloadError::Http { status, url: url.to_owned() }),
    };
    if let (Some(expected), Some(found)) = (req.expected_bytes, total)
        && expected != found
    {
        return Err(DownloadError::SizeMismatch { expected, found, url: url.to_owned() });
    }
    let total = total.or(req.expected_bytes);

    let io_err = |source| DownloadError::Io { source, path: part.to_path_buf() };
    let mut file = if start == 0 {
        File::create(part).map_err(io_err)?
    } else {
        OpenOptions::new().append(true).open(part).map_err(io_err)?
    };

    reporter.begin(Phase::Downloading, start);
    let mut reader = response.into_body().into_reader();
    let mut buf = vec![0u8; NET_CHUNK];
    let mut downloaded = start;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(DownloadError::Cancelled { url: url.to_owned() });
        }
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                file.flush().map_err(io_err)?;
                return Err(DownloadError::Interrupted { downloaded, url: url.to_owned() });
            }
        };
        file.write_all(&buf[..n]).map_err(io_err)?;
        downloaded += n as u64;
        if let Some(expected) = req.expected_bytes
            && downloaded > expected
        {
            drop(file);
            remove_file(part)?;
            return Err(DownloadError::SizeMismatch { expected, found: downloaded, url: url.to_owned() });
        }
        reporter.update(downloaded, total, false);
    }
    file.sync_all().map_err(io_err)?;
    reporter.update(downloaded, total, true);

    if let Some(total) = total
        && downloaded < total
    {
        return Err(DownloadError::Interrupted { downloaded, url: url.to_owned() });
    }
    Ok(Fetch::Done)
}

/// Checks size and hash of the finished `.part`, then renames it to `dest`.
fn finish(
    req: &Request<'_>,
    part: &Path,
    reporter: &mut Reporter<'_>,
    cancel: &AtomicBool,
) -> Result<PathBuf, DownloadError> {
    let len = file_len(part)?.unwrap_or(0);
    if let Some(expected) = req.expected_bytes
        && len != expected
    {
        if len > expected {
            remove_file(part)?;
        }
        return Err(DownloadError::SizeMismatch { expected, found: len, url: req.url.to_owned() });
    }
    if let Some(expected) = req.expected_sha256 {
        let found = sha256_file(part, len, reporter, cancel, req.url)?;
        if !found.eq_ignore_ascii_case(expected.trim()) {
            remove_file(part)?;
            return Err(DownloadError::HashMismatch {
                expected: expected.to_owned(),
                found,
                path: req.dest.to_path_buf(),
            });
        }
    }
    fs::rename(part, req.dest).map_err(|source| DownloadError::Io { source, path: req.dest.to_path_buf() })?;
    Ok(req.dest.to_path_buf())
}

/// Whether `dest` already holds the expected file (size, and hash when given).
fn dest_is_complete(
    req: &Request<'_>,
    reporter: &mut Reporter<'_>,
    cancel: &AtomicBool,
) -> Result<bool, DownloadError> {
    let Some(len) = file_len(req.dest)? else { return Ok(false) };
    if req.expected_bytes.is_some_and(|expected| expected != len) {
        return Ok(false);
    }
    match req.expected_sha256 {
        Some(expected) => {
            let found = sha256_file(req.dest, len, reporter, cancel, req.url)?;
            Ok(found.eq_ignore_ascii_case(expected.trim()))
        }
        None => Ok(true),
    }
}

/// Streams `path` through sha256 in 1 MiB chunks, reporting [`Phase::Verifying`] progress.
fn sha256_file(
    path: &Path,
    len: u64,
    reporter: &mut Reporter<'_>,
    cancel: &AtomicBool,
    url: &str,
) -> Result<String, DownloadError> {
    let io_err = |source| DownloadError::Io { source, path: path.to_path_buf() };
    let mut file = File::open(path).map_err(io_err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; HASH_CHUNK];
    let mut hashed = 0u64;
    reporter.begin(Phase::Verifying, 0);
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(DownloadError::Cancelled { url: url.to_owned() });
        }
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(io_err(source)),
        };
        hasher.update(&buf[..n]);
        hashed += n as u64;
        reporter.update(hashed, Some(len), false);
    }
    reporter.update(hashed, Some(len), true);
    Ok(hex::encode(hasher.finalize()))
}

/// Maps an error of the request phase (before any body byte) to a [`DownloadError`].
fn classify_call_error(err: &ureq::Error, url: &str, downloaded: u64) -> DownloadError {
    use ureq::{Error as E, Timeout as T};
    let url_owned = url.to_owned();
    match err {
        E::HostNotFound | E::ConnectionFailed | E::Timeout(T::Resolve | T::Connect) => {
            DownloadError::Offline { url: url_owned, reason: err.to_string() }
        }
        E::Io(e) => match e.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof => DownloadError::Interrupted { downloaded, url: url_owned },
            // Refused, unreachable, DNS lookup failure (reported by the OS as an I/O error)…
            _ => DownloadError::Offline { url: url_owned, reason: err.to_string() },
        },
        _ => DownloadError::Network { url: url_owned, reason: err.to_string() },
    }
}

/// Parsed `Content-Range` header: `bytes first-last/total`, `bytes */total` or `bytes first-last/*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ContentRange {
    range: Option<(u64, u64)>,
    total: Option<u64>,
}

fn parse_content_range(value: &str) -> Option<ContentRange> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    let range = match range.trim() {
        "*" => None,
        r => {
            let (first, last) = r.split_once('-')?;
            Some((first.trim().parse().ok()?, last.trim().parse().ok()?))
        }
    };
    Some(ContentRange { range, total })
}

/// Host (and port) of a URL, for messages: `https://dl.fbaipublicfiles.com/x` → `dl.fbaipublicfiles.com`.
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    authority.rsplit_once('@').map_or(authority, |(_, host)| host)
}

/// Size of a file, `None` if it does not exist.
fn file_len(path: &Path) -> Result<Option<u64>, DownloadError> {
    match fs::metadata(path) {
        Ok(meta) => Ok(Some(meta.len())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(DownloadError::Io { source, path: path.to_path_buf() }),
    }
}

/// Removes a file; a file that is already gone is fine.
fn remove_file(path: &Path) -> Result<(), DownloadError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DownloadError::Io { source, path: path.to_path_buf() }),
    }
}

/// Throttles progress callbacks and measures the rate over a sliding window.
struct Reporter<'p> {
    callback: &'p mut dyn FnMut(Progress),
    phase: Phase,
    last_emit: Option<Instant>,
    /// `(time, bytes)` samples; the front one is the rate baseline (about `RATE_WINDOW` old).
    samples: VecDeque<(Instant, u64)>,
}

impl<'p> Reporter<'p> {
    fn new(callback: &'p mut dyn FnMut(Progress)) -> Self {
        Self { callback, phase: Phase::Connecting, last_emit: None, samples: VecDeque::new() }
    }

    /// Starts a phase: resets the throttle (the next update is reported) and the rate baseline.
    fn begin(&mut self, phase: Phase, done: u64) {
        self.phase = phase;
        self.last_emit = None;
        self.samples.clear();
        self.samples.push_back((Instant::now(), done));
    }

    /// Reports `done` if the last report is old enough, or always when `force` is set.
    fn update(&mut self, done: u64, total: Option<u64>, force: bool) {
        let now = Instant::now();
        if !force && self.last_emit.is_some_and(|t| now.duration_since(t) < PROGRESS_INTERVAL) {
            return;
        }
        self.last_emit = Some(now);
        self.samples.push_back((now, done));
        while self.samples.len() > 2 && self.samples.get(1).is_some_and(|(t, _)| now.duration_since(*t) >= RATE_WINDOW)
        {
            self.samples.pop_front();
        }
        let bytes_per_s = match self.samples.front() {
            Some(&(t0, b0)) if now.duration_since(t0) >= Duration::from_millis(1) => {
                done.saturating_sub(b0) as f64 / now.duration_since(t0).as_secs_f64()
            }
            _ => 0.0,
        };
        (self.callback)(Progress { phase: self.phase, downloaded_bytes: done, total_bytes: total, bytes_per_s });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};
    use std::thread::JoinHandle;

    const BLOB_LEN: usize = 300 * 1024;

    fn blob() -> Vec<u8> {
        let mut x: u32 = 0x1234_5678;
        (0..BLOB_LEN)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 24) as u8
            })
            .collect()
    }

    fn sha_hex(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    /// Switches of the test server.
    #[derive(Debug, Clone, Copy, Default)]
    struct Behaviour {
        /// Answer 200 with the whole file even when a Range is requested.
        ignore_range: bool,
        /// Close the connection after this many body bytes of the first response.
        drop_after: Option<usize>,
        /// Answer 404 to everything.
        not_found: bool,
        /// Advertise this Content-Length on 200 answers instead of the real one.
        advertised_len: Option<usize>,
    }

    /// Minimal HTTP/1.1 server on 127.0.0.1 serving `blob()` at `/file`, one connection at a time.
    struct TestServer {
        addr: SocketAddr,
        /// The `Range` header of every request received (`None` when absent).
        ranges: Arc<Mutex<Vec<Option<String>>>>,
        stop: Arc<AtomicBool>,
        handle: Option<JoinHandle<()>>,
    }

    impl TestServer {
        fn start(behaviour: Behaviour) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind test server");
            let addr = listener.local_addr().expect("local addr");
            let ranges = Arc::new(Mutex::new(Vec::new()));
            let stop = Arc::new(AtomicBool::new(false));
            let (log, stop2) = (Arc::clone(&ranges), Arc::clone(&stop));
            let handle = std::thread::Builder::new()
                .name("download-test-server".into())
                .spawn(move || {
                    let data = blob();
                    let mut first = true;
                    for stream in listener.incoming() {
                        if stop2.load(Ordering::SeqCst) {
                            break;
                        }
                        if let Ok(stream) = stream {
                            let _ = serve(stream, behaviour, first, &data, &log);
                            first = false;
                        }
                    }
                })
                .expect("spawn test server");
            Self { addr, ranges, stop, handle: Some(handle) }
        }

        fn url(&self) -> String {
            format!("http://{}/file", self.addr)
        }

        fn ranges(&self) -> Vec<Option<String>> {
            self.ranges.lock().expect("lock").clone()
        }
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            let _ = TcpStream::connect(self.addr);
            if let Some(handle) = self.handle.take() {
                let _ = handle.join();
            }
        }
    }

    fn serve(
        mut stream: TcpStream,
        b: Behaviour,
        first: bool,
        data: &[u8],
        log: &Mutex<Vec<Option<String>>>,
    ) -> io::Result<()> {
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut reader = io::BufReader::new(stream.try_clone()?);
        let mut range = None;
        let mut line = String::new();
        reader.read_line(&mut line)?; // request line
        if line.is_empty() {
            return Ok(()); // shutdown poke
        }
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.trim().eq_ignore_ascii_case("range")
            {
                range = Some(value.trim().to_owned());
            }
        }
        log.lock().map_err(|_| io::Error::other("poisoned"))?.push(range.clone());

        if b.not_found {
            let body = "not found";
            write!(
                stream,
                "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )?;
            return stream.flush();
        }
        let start = range
            .filter(|_| !b.ignore_range)
            .and_then(|r| r.strip_prefix("bytes=")?.strip_suffix('-')?.parse::<usize>().ok());
        let body = match start {
            Some(s) if s >= data.len() => {
                write!(
                    stream,
                    "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{}\r\nContent-Length: 0\r\n\
                     Connection: close\r\n\r\n",
                    data.len()
                )?;
                return stream.flush();
            }
            Some(s) => {
                write!(
                    stream,
                    "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {s}-{}/{}\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n",
                    data.len() - 1,
                    data.len(),
                    data.len() - s
                )?;
                &data[s..]
            }
            None => {
                let len = b.advertised_len.unwrap_or(data.len());
                write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")?;
                data
            }
        };
        let body = match b.drop_after {
            Some(k) if first => &body[..k.min(body.len())],
            _ => body,
        };
        stream.write_all(body)?;
        stream.flush()
    }

    fn req<'a>(url: &'a str, dest: &'a Path, bytes: Option<u64>, sha: Option<&'a str>) -> Request<'a> {
        Request { url, dest, expected_bytes: bytes, expected_sha256: sha }
    }

    fn read(path: &Path) -> Vec<u8> {
        fs::read(path).expect("read file")
    }

    #[test]
    fn full_download_verified() {
        let server = TestServer::start(Behaviour::default());
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("models/ckpt.pt");
        let (url, data) = (server.url(), blob());
        let sha = sha_hex(&data);
        let mut reports = Vec::new();
        let out = download(
            &req(&url, &dest, Some(BLOB_LEN as u64), Some(&sha)),
            &mut |p| reports.push(p),
            &AtomicBool::new(false),
        )
        .expect("download");
        assert_eq!(out, dest);
        assert_eq!(read(&dest), data);
        assert!(!part_path(&dest).exists());
        assert_eq!(reports.first().map(|p| p.phase), Some(Phase::Connecting));
        assert!(reports.iter().any(|p| p.phase == Phase::Downloading
            && p.downloaded_bytes == BLOB_LEN as u64
            && p.total_bytes == Some(BLOB_LEN as u64)));
        assert_eq!(reports.last().map(|p| (p.phase, p.downloaded_bytes)), Some((Phase::Verifying, BLOB_LEN as u64)));
        assert_eq!(server.ranges(), vec![None]);
    }

    #[test]
    fn dropped_connection_then_resume() {
        let k = 100_000;
        let server = TestServer::start(Behaviour { drop_after: Some(k), ..Default::default() });
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("ckpt.pt");
        let (url, data) = (server.url(), blob());
        let sha = sha_hex(&data);
        let r = req(&url, &dest, Some(BLOB_LEN as u64), Some(&sha));
        let cancel = AtomicBool::new(false);

        let err = download(&r, &mut |_| {}, &cancel).expect_err("must be interrupted");
        assert!(matches!(err, DownloadError::Interrupted { downloaded, .. } if downloaded == k as u64), "{err}");
        assert!(err.to_string().ends_with(&url));
        assert_eq!(read(&part_path(&dest)), &data[..k]);
        assert!(!dest.exists());

        download(&r, &mut |_| {}, &cancel).expect("resume");
        assert_eq!(read(&dest), data);
        assert!(!part_path(&dest).exists());
        assert_eq!(server.ranges(), vec![None, Some(format!("bytes={k}-"))]);
    }

    #[test]
    fn server_ignoring_range_restarts_from_zero() {
        let server = TestServer::start(Behaviour { ignore_range: true, ..Default::default() });
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("ckpt.pt");
        fs::write(part_path(&dest), [0xAAu8; 1000]).expect("write part");
        let (url, data) = (server.url(), blob());
        download(&req(&url, &dest, Some(BLOB_LEN as u64), None), &mut |_| {}, &AtomicBool::new(false))
            .expect("download");
        assert_eq!(read(&dest), data);
        assert_eq!(server.ranges(), vec![Some("bytes=1000-".to_owned())]);
    }

    #[test]
    fn wrong_sha256_keeps_nothing() {
        let server = TestServer::start(Behaviour::default());
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("ckpt.pt");
        let (url, wrong) = (server.url(), "0".repeat(64));
        let err = download(&req(&url, &dest, None, Some(&wrong)), &mut |_| {}, &AtomicBool::new(false))
            .expect_err("hash must mismatch");
        let actual = sha_hex(&blob());
        assert!(
            matches!(&err, DownloadError::HashMismatch { expected, found, .. } if *expected == wrong && *found == actual)
        );
        let msg = err.to_string();
        assert!(msg.contains(&wrong) && msg.contains(&actual) && msg.ends_with(&dest.display().to_string()), "{msg}");
        assert!(!dest.exists());
        assert!(!part_path(&dest).exists());
    }

    #[test]
    fn size_mismatch_before_writing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("ckpt.pt");

        // The caller expects another size than the server has.
        let server = TestServer::start(Behaviour::default());
        let url = server.url();
        let err = download(&req(&url, &dest, Some(BLOB_LEN as u64 + 1), None), &mut |_| {}, &AtomicBool::new(false))
            .expect_err("size must mismatch");
        assert!(matches!(err, DownloadError::SizeMismatch { expected, found, .. }
            if expected == BLOB_LEN as u64 + 1 && found == BLOB_LEN as u64));
        assert!(err.to_string().ends_with(&url));
        assert!(!part_path(&dest).exists() && !dest.exists());

        // The server advertises a wrong Content-Length.
        let server = TestServer::start(Behaviour { advertised_len: Some(BLOB_LEN + 5000), ..Default::default() });
        let url = server.url();
        let err = download(&req(&url, &dest, Some(BLOB_LEN as u64), None), &mut |_| {}, &AtomicBool::new(false))
            .expect_err("size must mismatch");
        assert!(matches!(err, DownloadError::SizeMismatch { found, .. } if found == BLOB_LEN as u64 + 5000));
        assert!(!part_path(&dest).exists() && !dest.exists());
    }

    #[test]
    fn http_404() {
        let server = TestServer::start(Behaviour { not_found: true, ..Default::default() });
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("ckpt.pt");
        let url = server.url();
        let err = download(&req(&url, &dest, None, None), &mut |_| {}, &AtomicBool::new(false)).expect_err("404");
        assert!(matches!(err, DownloadError::Http { status: 404, .. }), "{err}");
        assert!(err.to_string().ends_with(&url));
        assert!(!dest.exists());
    }

    #[test]
    fn nothing_listening_is_offline() {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind").port();
        let url = format!("http://127.0.0.1:{port}/file");
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("ckpt.pt");
        let err = download(&req(&url, &dest, None, None), &mut |_| {}, &AtomicBool::new(false)).expect_err("offline");
        assert!(matches!(err, DownloadError::Offline { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("cannot reach 127.0.0.1:{port} — no network connection?")), "{msg}");
        assert!(msg.contains("\"Choose file…\"") && msg.ends_with(&url), "{msg}");
    }

    #[test]
    fn cancel_from_callback_then_resume() {
        let server = TestServer::start(Behaviour::default());
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("ckpt.pt");
        let (url, data) = (server.url(), blob());
        let r = req(&url, &dest, Some(BLOB_LEN as u64), None);
        let cancel = AtomicBool::new(false);
        let err = download(
            &r,
            &mut |p| {
                if p.phase == Phase::Downloading && p.downloaded_bytes > 0 {
                    cancel.store(true, Ordering::Relaxed);
                }
            },
            &cancel,
        )
        .expect_err("cancelled");
        assert!(matches!(err, DownloadError::Cancelled { .. }), "{err}");
        let partial = read(&part_path(&dest));
        assert!(!partial.is_empty() && partial.len() < BLOB_LEN, "{}", partial.len());
        assert_eq!(partial, &data[..partial.len()]);

        cancel.store(false, Ordering::Relaxed);
        download(&r, &mut |_| {}, &cancel).expect("resume");
        assert_eq!(read(&dest), data);
        assert_eq!(server.ranges(), vec![None, Some(format!("bytes={}-", partial.len()))]);
    }

    #[test]
    fn complete_dest_needs_no_network() {
        let server = TestServer::start(Behaviour::default());
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("ckpt.pt");
        let (url, data) = (server.url(), blob());
        fs::write(&dest, &data).expect("write dest");
        let sha = sha_hex(&data);
        let out = download(&req(&url, &dest, Some(BLOB_LEN as u64), Some(&sha)), &mut |_| {}, &AtomicBool::new(false))
            .expect("already there");
        assert_eq!(out, dest);
        assert!(server.ranges().is_empty());
    }

    #[test]
    fn complete_part_without_expected_size_gets_416() {
        let server = TestServer::start(Behaviour::default());
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("ckpt.pt");
        let (url, data) = (server.url(), blob());
        fs::write(part_path(&dest), &data).expect("write part");
        download(&req(&url, &dest, None, None), &mut |_| {}, &AtomicBool::new(false)).expect("416 = complete");
        assert_eq!(read(&dest), data);
        assert_eq!(server.ranges(), vec![Some(format!("bytes={BLOB_LEN}-"))]);
    }

    #[test]
    fn oversized_part_is_discarded() {
        let server = TestServer::start(Behaviour::default());
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("ckpt.pt");
        let (url, data) = (server.url(), blob());
        fs::write(part_path(&dest), vec![1u8; BLOB_LEN + 10]).expect("write part");
        download(&req(&url, &dest, Some(BLOB_LEN as u64), None), &mut |_| {}, &AtomicBool::new(false))
            .expect("download");
        assert_eq!(read(&dest), data);
        assert_eq!(server.ranges(), vec![None]);
    }

    #[test]
    fn content_range_and_host_parsing() {
        assert_eq!(
            parse_content_range("bytes 10-299/300"),
            Some(ContentRange { range: Some((10, 299)), total: Some(300) })
        );
        assert_eq!(parse_content_range("bytes */300"), Some(ContentRange { range: None, total: Some(300) }));
        assert_eq!(parse_content_range("bytes 0-9/*"), Some(ContentRange { range: Some((0, 9)), total: None }));
        assert_eq!(parse_content_range("items 0-9/10"), None);
        assert_eq!(host_of("https://dl.fbaipublicfiles.com/segment_anything_2/x.pt"), "dl.fbaipublicfiles.com");
        assert_eq!(host_of("http://u:p@127.0.0.1:8080?x"), "127.0.0.1:8080");
        assert_eq!(part_path(Path::new("/m/a.pt")), PathBuf::from("/m/a.pt.part"));
    }
}
