//! The static site: files from one folder, as `sockit web DIR` and the `/`
//! of `sockit serve` serve them.
//!
//! Every URL path is decoded and checked by [`parse_url_path`] (the rules of
//! [`RemotePath`]) and opened through the one resolution function
//! ([`crate::store::path::resolve`]), so the path that was checked is the
//! path that is opened and a symlink leading out of the folder fails at the
//! system call. Dot-files are not served unless asked for.
//!
//! Small files are kept in memory with their validators and compressed
//! variants, revalidated against the disk at most once per
//! [`SiteOptions::revalidate`]: the hot path of a busy site is a map lookup,
//! not an `open`/`stat` on the blocking pool.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, UNIX_EPOCH};

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use cap_std::fs::Dir;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use percent_encoding::percent_decode_str;
use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::sync::OnceCell;

use super::body::{file_body, file_parts_body, Part};
use super::range::{self, Ranges, Validators};
use super::sealed::read_exact;
use crate::store::path::{open_for_reading, resolve, PathError, RemotePath};

/// Default cap on one file kept in memory.
pub const DEFAULT_CACHE_FILE_MAX: u64 = 1024 * 1024;
/// Default cap on all files kept in memory.
pub const DEFAULT_CACHE_TOTAL: usize = 64 * 1024 * 1024;
/// Default time a cached file is trusted before its metadata is checked.
pub const DEFAULT_REVALIDATE: Duration = Duration::from_secs(1);
/// Headers a cached file's response carries, at most.
const RESPONSE_HEADERS: usize = 16;
/// Smallest body compressed on the fly.
pub const COMPRESS_MIN: u64 = 1024;

/// How the site is served.
#[derive(Debug, Clone)]
pub struct SiteOptions {
    /// The folder served.
    pub root: PathBuf,
    /// Show a listing for folders without `index.html`.
    pub list: bool,
    /// Serve dot-files (and show them in listings).
    pub hidden: bool,
    /// Follow symlinks that lead outside the folder.
    pub follow_symlinks: bool,
    /// `Cache-Control` of files; `None` sends none.
    pub cache_control: Option<String>,
    /// Compress text types on the fly when the client accepts it.
    pub compress: bool,
    /// Largest file kept in memory.
    pub cache_file_max: u64,
    /// Most bytes kept in memory.
    pub cache_total: usize,
    /// How long a cached file is trusted before its metadata is checked.
    pub revalidate: Duration,
}

impl SiteOptions {
    /// Defaults for serving `root`.
    pub fn new(root: impl Into<PathBuf>) -> SiteOptions {
        SiteOptions {
            root: root.into(),
            list: true,
            hidden: false,
            follow_symlinks: false,
            cache_control: Some("no-cache".into()),
            compress: true,
            cache_file_max: DEFAULT_CACHE_FILE_MAX,
            cache_total: DEFAULT_CACHE_TOTAL,
            revalidate: DEFAULT_REVALIDATE,
        }
    }
}

/// A static site. Cheap to clone.
#[derive(Clone)]
pub struct Site {
    inner: Arc<SiteInner>,
}

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Site")
            .field("options", &self.inner.opts)
            .finish()
    }
}

struct SiteInner {
    opts: SiteOptions,
    /// The folder, opened once; everything is resolved beneath it.
    root: Dir,
    /// Small files by URL path.
    cache: RwLock<HashMap<String, Arc<Cached>>>,
    /// Bytes held by `cache`.
    cache_used: AtomicUsize,
    /// Origin of the cache's millisecond clock.
    epoch: Instant,
    cache_control: Option<HeaderValue>,
}

/// A small file held in memory.
struct Cached {
    /// What was opened (for revalidation).
    path: RemotePath,
    bytes: Bytes,
    stat: Stat,
    validators: Validators,
    last_modified: HeaderValue,
    etag: HeaderValue,
    content_type: HeaderValue,
    compressible: bool,
    /// Precompressed siblings (`name.br`, `name.gz`), when present.
    sibling_br: Option<Bytes>,
    sibling_gz: Option<Bytes>,
    /// Variants compressed on first demand (`None`: compression did not pay).
    br: OnceCell<Option<Bytes>>,
    gz: OnceCell<Option<Bytes>>,
    /// Milliseconds after the site's epoch of the last metadata check.
    checked_ms: AtomicU64,
}

/// What identifies a file's version on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    ino: u64,
    mtime_ns: i64,
    len: u64,
}

impl Stat {
    fn of(meta: &std::fs::Metadata) -> Stat {
        use std::os::unix::fs::MetadataExt;
        Stat {
            ino: meta.ino(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            len: meta.len(),
        }
    }

    fn validators(&self) -> Validators {
        Validators::new(self.ino, self.mtime_ns, self.len)
    }
}

/// Decodes a URL path (`/a/b%20c/`) into a checked remote path and whether
/// it named a folder (a trailing slash). Each segment is percent-decoded
/// once, must be UTF-8 (overlong forms are not), and must pass the
/// [`RemotePath`] rules; `%2f` inside a segment, dot segments, backslashes,
/// NUL and double-encoded dots are all refused.
pub fn parse_url_path(raw: &str) -> Result<(RemotePath, bool), PathError> {
    let bad = |reason| PathError {
        path: raw.to_string(),
        reason,
    };
    let Some(rest) = raw.strip_prefix('/') else {
        return Err(bad("the path must start with '/'"));
    };
    let (rest, folder) = match rest.strip_suffix('/') {
        Some(r) => (r, true),
        None => (rest, rest.is_empty()),
    };
    let mut path = RemotePath::root();
    if rest.is_empty() {
        return Ok((path, true));
    }
    for segment in rest.split('/') {
        let decoded = percent_decode_str(segment).collect::<Vec<u8>>();
        let name = String::from_utf8(decoded).map_err(|_| bad("the path is not valid UTF-8"))?;
        path = path.join(&name)?;
    }
    Ok((path, folder))
}

/// Opens `path` beneath the site's root through the one resolution
/// function, or, with `follow_symlinks`, through the ambient file system
/// (symlinks may then lead anywhere, which is what the option asks for).
/// Either way without waiting on the file (`O_NONBLOCK`): a FIFO answers at
/// once, and [`lookup`] refuses what is not a regular file or folder.
fn open_path(site: &SiteInner, path: &RemotePath) -> std::io::Result<std::fs::File> {
    if site.opts.follow_symlinks {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(site.opts.root.join(path.to_path_buf()))
    } else {
        let r = resolve(&site.root, path)?;
        Ok(open_for_reading(&r.dir, r.name_or_dot())?.into_std())
    }
}

/// What a URL path turned out to be.
enum Lookup {
    /// A file, opened, with its metadata.
    File {
        file: std::fs::File,
        stat: Stat,
        path: RemotePath,
        /// A precompressed sibling to send instead, with its encoding.
        sibling: Option<(std::fs::File, u64, &'static str)>,
    },
    /// A small file, now in the cache.
    Cached(Arc<Cached>),
    /// A folder asked for without its trailing slash.
    AddSlash,
    /// A folder without `index.html`: its listing.
    Listing(Vec<ListEntry>),
    /// Neither a regular file nor a folder (a FIFO, a device): never read.
    NotAFile,
    NotFound,
}

/// One row of a folder listing.
#[derive(Debug, Clone, Serialize)]
pub struct ListEntry {
    pub name: String,
    pub dir: bool,
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub modified: i64,
}

/// Which encodings the client accepts, by preference of ours (br, then gzip).
#[derive(Debug, Clone, Copy, Default)]
struct Accepts {
    br: bool,
    gzip: bool,
}

fn accepts(headers: &HeaderMap) -> Accepts {
    let mut a = Accepts::default();
    for v in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(v) = v.to_str() else { continue };
        for item in v.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            if refused {
                continue;
            }
            match coding {
                "br" => a.br = true,
                "gzip" | "x-gzip" => a.gzip = true,
                "*" => {
                    a.br = true;
                    a.gzip = true;
                }
                _ => {}
            }
        }
    }
    a
}

pub(crate) fn content_type_of(name: &str) -> (HeaderValue, bool) {
    let mime = mime_guess::from_path(name).first_or_octet_stream();
    let essence = mime.essence_str();
    let text = mime.type_() == mime_guess::mime::TEXT;
    let compressible = text
        || matches!(
            essence,
            "application/javascript"
                | "application/json"
                | "application/xml"
                | "application/wasm"
                | "application/manifest+json"
                | "application/rss+xml"
                | "application/atom+xml"
                | "image/svg+xml"
                | "application/x-javascript"
        );
    let value = if text || essence == "application/javascript" || essence == "application/json" {
        format!("{essence}; charset=utf-8")
    } else {
        essence.to_string()
    };
    (
        HeaderValue::from_str(&value)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
        compressible,
    )
}

/// The HTML 404 page.
pub fn not_found_page() -> Response<Body> {
    html_page(
        StatusCode::NOT_FOUND,
        "Not found",
        "<h1>404 Not found</h1><p>There is nothing at this address.</p>",
    )
}

fn html_page(status: StatusCode, title: &str, body: &str) -> Response<Body> {
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title></head><body>{body}<hr><address>sockit</address></body></html>\n"
    );
    let mut r = Response::new(Body::from(page));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

/// Escapes text for HTML content and attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A name as one URL path segment.
fn encode_segment(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, SEGMENT).to_string()
}

const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn status(code: StatusCode) -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = code;
    r
}

impl Site {
    /// Opens the site's folder.
    pub fn open(opts: SiteOptions) -> std::io::Result<Site> {
        let root =
            Dir::open_ambient_dir(&opts.root, cap_std::ambient_authority()).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot open {}: {e}", opts.root.display()),
                )
            })?;
        let cache_control = opts
            .cache_control
            .as_deref()
            .and_then(|c| HeaderValue::from_str(c).ok());
        Ok(Site {
            inner: Arc::new(SiteInner {
                opts,
                root,
                cache: RwLock::default(),
                cache_used: AtomicUsize::new(0),
                epoch: Instant::now(),
                cache_control,
            }),
        })
    }

    /// The folder served.
    pub fn root(&self) -> &Path {
        &self.inner.opts.root
    }

    /// Answers one request.
    pub async fn serve<B>(&self, req: &Request<B>) -> Response<Body> {
        let method = req.method();
        if method != Method::GET && method != Method::HEAD {
            let mut r = status(StatusCode::METHOD_NOT_ALLOWED);
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        let raw = req.uri().path();
        if let Some(hit) = self.cached(raw) {
            return self.respond_cached(req, &hit).await;
        }
        let (path, folder) = match parse_url_path(raw) {
            Ok(p) => p,
            Err(e) => {
                return html_page(
                    StatusCode::BAD_REQUEST,
                    "Bad request",
                    &format!("<h1>400 Bad request</h1><p>{}</p>", escape_html(e.reason)),
                )
            }
        };
        if !self.inner.opts.hidden && path.has_hidden_component() {
            return not_found_page();
        }
        let site = self.inner.clone();
        let key = raw.to_string();
        let enc = accepts(req.headers());
        let found = tokio::task::spawn_blocking(move || lookup(&site, &path, folder, key, enc))
            .await
            .unwrap_or(Lookup::NotFound);
        match found {
            Lookup::Cached(c) => self.respond_cached(req, &c).await,
            Lookup::File {
                file,
                stat,
                path,
                sibling,
            } => self.respond_file(req, file, stat, &path, sibling),
            Lookup::AddSlash => {
                let mut location = format!("{raw}/");
                if let Some(q) = req.uri().query() {
                    location.push('?');
                    location.push_str(q);
                }
                super::redirect(&location)
            }
            Lookup::Listing(entries) => listing(req, raw, entries),
            Lookup::NotAFile => html_page(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "<h1>403 Forbidden</h1><p>This is not a regular file; only files and folders are served.</p>",
            ),
            Lookup::NotFound => not_found_page(),
        }
    }

    /// A cached file, if fresh (revalidating it when it is due).
    fn cached(&self, raw: &str) -> Option<Arc<Cached>> {
        let hit = self.inner.cache.read().ok()?.get(raw).cloned()?;
        let now = self.inner.epoch.elapsed().as_millis() as u64;
        let checked = hit.checked_ms.load(Ordering::Relaxed);
        if now.saturating_sub(checked) < self.inner.opts.revalidate.as_millis() as u64 {
            return Some(hit);
        }
        // Due for a check: a stat of a path whose directories are usually in
        // the kernel's cache, done inline, once per period per file.
        let current = open_path(&self.inner, &hit.path).and_then(|f| Ok(Stat::of(&f.metadata()?)));
        match current {
            Ok(s) if s == hit.stat => {
                hit.checked_ms.store(now, Ordering::Relaxed);
                Some(hit)
            }
            _ => {
                self.evict(raw);
                None
            }
        }
    }

    fn evict(&self, raw: &str) {
        if let Ok(mut map) = self.inner.cache.write() {
            if let Some(old) = map.remove(raw) {
                self.inner
                    .cache_used
                    .fetch_sub(old.bytes.len(), Ordering::Relaxed);
            }
        }
    }

    fn headers_for(&self, h: &mut HeaderMap, v: &Validators, content_type: HeaderValue) {
        h.insert(header::CONTENT_TYPE, content_type);
        if let Ok(e) = HeaderValue::from_str(&v.etag) {
            h.insert(header::ETAG, e);
        }
        if let Ok(lm) = HeaderValue::from_str(&v.last_modified()) {
            h.insert(header::LAST_MODIFIED, lm);
        }
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        if let Some(cc) = &self.inner.cache_control {
            h.insert(header::CACHE_CONTROL, cc.clone());
        }
    }

    async fn respond_cached<B>(&self, req: &Request<B>, c: &Cached) -> Response<Body> {
        let method = req.method();
        let headers = req.headers();
        let wants_range = headers.contains_key(header::RANGE) && method == Method::GET;
        // A compressed variant, if the client takes one and it pays.
        let mut variant = None;
        if !wants_range && (c.compressible || c.sibling_br.is_some() || c.sibling_gz.is_some()) {
            let enc = accepts(headers);
            if enc.br {
                variant = self.variant(c, &c.sibling_br, &c.br, "br").await;
            }
            if variant.is_none() && enc.gzip {
                variant = self.variant(c, &c.sibling_gz, &c.gz, "gzip").await;
            }
        }
        let vary = c.compressible || c.sibling_br.is_some() || c.sibling_gz.is_some();
        let (bytes, validators, etag, encoding) = match variant {
            Some((b, enc)) => {
                let v = c.validators.variant(if enc == "br" { "br" } else { "gz" });
                let etag = HeaderValue::from_str(&v.etag).unwrap_or(c.etag.clone());
                (b, v, etag, Some(enc))
            }
            None => (c.bytes.clone(), c.validators.clone(), c.etag.clone(), None),
        };
        if let Some(code) = range::preconditions(method, headers, &validators) {
            let mut r = status(code);
            r.headers_mut().insert(header::ETAG, etag);
            r.headers_mut()
                .insert(header::LAST_MODIFIED, c.last_modified.clone());
            if vary {
                r.headers_mut()
                    .insert(header::VARY, HeaderValue::from_static("accept-encoding"));
            }
            return r;
        }
        let len = bytes.len() as u64;
        let mut r = match range::ranges(method, headers, &validators, len) {
            Ranges::Full => {
                let mut r = if method == Method::HEAD {
                    let mut r = Response::new(Body::empty());
                    r.headers_mut().insert(header::CONTENT_LENGTH, len.into());
                    r
                } else {
                    let mut r = Response::new(Body::from(bytes));
                    // Room for every header this response gets (security
                    // headers included), so the map never grows on the way.
                    r.headers_mut().reserve(RESPONSE_HEADERS);
                    r
                };
                if let Some(enc) = encoding {
                    r.headers_mut()
                        .insert(header::CONTENT_ENCODING, HeaderValue::from_static(enc));
                }
                r
            }
            Ranges::Partial(ranges) if ranges.len() == 1 => {
                let rg = &ranges[0];
                let part = bytes.slice(*rg.start() as usize..=*rg.end() as usize);
                let mut r = Response::new(Body::from(part));
                *r.status_mut() = StatusCode::PARTIAL_CONTENT;
                if let Ok(v) = HeaderValue::from_str(&range::content_range(rg, len)) {
                    r.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                r
            }
            Ranges::Partial(ranges) => {
                let boundary = boundary_for(&validators);
                let ct = c
                    .content_type
                    .to_str()
                    .unwrap_or("application/octet-stream");
                let mut out = BytesMut::new();
                for rg in &ranges {
                    out.extend_from_slice(
                        part_head(&boundary, ct, &range::content_range(rg, len)).as_bytes(),
                    );
                    out.extend_from_slice(&bytes[*rg.start() as usize..=*rg.end() as usize]);
                }
                out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
                return self.multipart_response(
                    out.freeze().into(),
                    &boundary,
                    &validators,
                    c.content_type.clone(),
                );
            }
            Ranges::Unsatisfiable => return unsatisfiable(len),
        };
        // The hot path: every value pre-built when the file was cached.
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, c.content_type.clone());
        h.insert(header::ETAG, etag);
        h.insert(header::LAST_MODIFIED, c.last_modified.clone());
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        if let Some(cc) = &self.inner.cache_control {
            h.insert(header::CACHE_CONTROL, cc.clone());
        }
        if vary {
            r.headers_mut()
                .insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        }
        r
    }

    /// An encoded variant of a cached file: its precompressed sibling, else
    /// (for compressible types above the threshold) one compressed on first
    /// demand and kept.
    async fn variant(
        &self,
        c: &Cached,
        sibling: &Option<Bytes>,
        made: &OnceCell<Option<Bytes>>,
        coding: &'static str,
    ) -> Option<(Bytes, &'static str)> {
        if let Some(b) = sibling {
            return Some((b.clone(), coding));
        }
        if !(c.compressible && self.inner.opts.compress && c.bytes.len() as u64 >= COMPRESS_MIN) {
            return None;
        }
        made.get_or_init(|| compress(c.bytes.clone(), coding))
            .await
            .clone()
            .map(|b| (b, coding))
    }

    fn multipart_response(
        &self,
        body: Body,
        boundary: &str,
        v: &Validators,
        content_type: HeaderValue,
    ) -> Response<Body> {
        let mut r = Response::new(body);
        *r.status_mut() = StatusCode::PARTIAL_CONTENT;
        self.headers_for(r.headers_mut(), v, content_type);
        if let Ok(ct) = HeaderValue::from_str(&format!("multipart/byteranges; boundary={boundary}"))
        {
            r.headers_mut().insert(header::CONTENT_TYPE, ct);
        }
        r
    }

    fn respond_file<B>(
        &self,
        req: &Request<B>,
        file: std::fs::File,
        stat: Stat,
        path: &RemotePath,
        sibling: Option<(std::fs::File, u64, &'static str)>,
    ) -> Response<Body> {
        let name = path.name().unwrap_or("index.html");
        let (content_type, compressible) = content_type_of(name);
        let base = stat.validators();
        let method = req.method();
        let headers = req.headers();
        let wants_range = headers.contains_key(header::RANGE) && method == Method::GET;
        let enc = accepts(headers);
        // Precompressed sibling, else on-the-fly compression, else identity.
        if !wants_range {
            if let Some((sib, sib_len, coding)) = sibling {
                let v = base.variant(if coding == "br" { "br" } else { "gz" });
                if let Some(code) = range::preconditions(method, headers, &v) {
                    return self.not_modified(code, &v, true);
                }
                let mut r = if method == Method::HEAD {
                    let mut r = Response::new(Body::empty());
                    r.headers_mut()
                        .insert(header::CONTENT_LENGTH, sib_len.into());
                    r
                } else {
                    Response::new(file_body(sib, 0, sib_len))
                };
                self.headers_for(r.headers_mut(), &v, content_type);
                r.headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding));
                r.headers_mut()
                    .insert(header::VARY, HeaderValue::from_static("accept-encoding"));
                return r;
            }
            if compressible
                && self.inner.opts.compress
                && stat.len >= COMPRESS_MIN
                && (enc.br || enc.gzip)
            {
                let coding = if enc.br { "br" } else { "gzip" };
                let v = base.variant(if enc.br { "br" } else { "gz" });
                if let Some(code) = range::preconditions(method, headers, &v) {
                    return self.not_modified(code, &v, true);
                }
                let mut r = if method == Method::HEAD {
                    Response::new(Body::empty())
                } else {
                    Response::new(compress_stream(file, coding))
                };
                self.headers_for(r.headers_mut(), &v, content_type);
                r.headers_mut().remove(header::ACCEPT_RANGES);
                r.headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding));
                r.headers_mut()
                    .insert(header::VARY, HeaderValue::from_static("accept-encoding"));
                return r;
            }
        }
        let vary = compressible && self.inner.opts.compress && stat.len >= COMPRESS_MIN;
        let mut r = send_file_with(method, headers, file, stat, content_type);
        if let Some(cc) = &self.inner.cache_control {
            r.headers_mut().insert(header::CACHE_CONTROL, cc.clone());
        }
        if vary {
            r.headers_mut()
                .insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        }
        r
    }

    fn not_modified(&self, code: StatusCode, v: &Validators, vary: bool) -> Response<Body> {
        let mut r = status(code);
        if let Ok(e) = HeaderValue::from_str(&v.etag) {
            r.headers_mut().insert(header::ETAG, e);
        }
        if let Ok(lm) = HeaderValue::from_str(&v.last_modified()) {
            r.headers_mut().insert(header::LAST_MODIFIED, lm);
        }
        if let Some(cc) = &self.inner.cache_control {
            r.headers_mut().insert(header::CACHE_CONTROL, cc.clone());
        }
        if vary {
            r.headers_mut()
                .insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        }
        r
    }
}

/// Sends a file as it is (no encoding): preconditions (304/412), HEAD,
/// a single range (206), several ranges (multipart/byteranges) or 416.
/// The API's downloads use it as the static site does.
pub(crate) fn send_file(
    method: &Method,
    headers: &HeaderMap,
    file: std::fs::File,
    meta: &std::fs::Metadata,
    content_type: HeaderValue,
) -> Response<Body> {
    send_file_with(method, headers, file, Stat::of(meta), content_type)
}

fn send_file_with(
    method: &Method,
    headers: &HeaderMap,
    file: std::fs::File,
    stat: Stat,
    content_type: HeaderValue,
) -> Response<Body> {
    let v = stat.validators();
    let set_validators = |h: &mut HeaderMap| {
        if let Ok(e) = HeaderValue::from_str(&v.etag) {
            h.insert(header::ETAG, e);
        }
        if let Ok(lm) = HeaderValue::from_str(&v.last_modified()) {
            h.insert(header::LAST_MODIFIED, lm);
        }
    };
    if let Some(code) = range::preconditions(method, headers, &v) {
        let mut r = status(code);
        set_validators(r.headers_mut());
        return r;
    }
    let len = stat.len;
    let mut r = match range::ranges(method, headers, &v, len) {
        Ranges::Full => {
            if method == Method::HEAD {
                let mut r = Response::new(Body::empty());
                r.headers_mut().insert(header::CONTENT_LENGTH, len.into());
                r
            } else {
                Response::new(file_body(file, 0, len))
            }
        }
        Ranges::Partial(ranges) if ranges.len() == 1 => {
            let rg = &ranges[0];
            let mut r = Response::new(file_body(file, *rg.start(), rg.end() - rg.start() + 1));
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
            if let Ok(cr) = HeaderValue::from_str(&range::content_range(rg, len)) {
                r.headers_mut().insert(header::CONTENT_RANGE, cr);
            }
            r
        }
        Ranges::Partial(ranges) => {
            let boundary = boundary_for(&v);
            let ct = content_type
                .to_str()
                .unwrap_or("application/octet-stream")
                .to_string();
            let mut parts = Vec::with_capacity(ranges.len() * 2 + 1);
            for rg in &ranges {
                let Ok(f) = file.try_clone() else {
                    return status(StatusCode::INTERNAL_SERVER_ERROR);
                };
                parts.push(Part::Bytes(Bytes::from(part_head(
                    &boundary,
                    &ct,
                    &range::content_range(rg, len),
                ))));
                parts.push(Part::File {
                    file: f,
                    offset: *rg.start(),
                    len: rg.end() - rg.start() + 1,
                });
            }
            parts.push(Part::Bytes(Bytes::from(format!("\r\n--{boundary}--\r\n"))));
            let mut r = Response::new(file_parts_body(parts));
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
            set_validators(r.headers_mut());
            r.headers_mut()
                .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            if let Ok(ct) =
                HeaderValue::from_str(&format!("multipart/byteranges; boundary={boundary}"))
            {
                r.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            return r;
        }
        Ranges::Unsatisfiable => return unsatisfiable(len),
    };
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type);
    set_validators(h);
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    r
}

fn unsatisfiable(len: u64) -> Response<Body> {
    let mut r = status(StatusCode::RANGE_NOT_SATISFIABLE);
    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
        r.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    r
}

fn boundary_for(v: &Validators) -> String {
    let h = blake3::hash(v.etag.as_bytes()).to_hex();
    format!("sockit-{}", &h[..24])
}

fn part_head(boundary: &str, content_type: &str, content_range: &str) -> String {
    format!("\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: {content_range}\r\n\r\n")
}

/// Compresses a small body on the blocking pool; `None` when it does not
/// get smaller.
async fn compress(bytes: Bytes, coding: &'static str) -> Option<Bytes> {
    let input = bytes.clone();
    let out = async move {
        let mut out = Vec::with_capacity(input.len() / 3 + 64);
        let reader = std::io::Cursor::new(input);
        let result = if coding == "br" {
            async_compression::tokio::bufread::BrotliEncoder::with_quality(
                reader,
                async_compression::Level::Precise(6),
            )
            .read_to_end(&mut out)
            .await
        } else {
            async_compression::tokio::bufread::GzipEncoder::new(reader)
                .read_to_end(&mut out)
                .await
        };
        result.ok().map(|_| out)
    }
    .await?;
    (out.len() < bytes.len()).then(|| Bytes::from(out))
}

/// A file compressed as it is sent (no length known in advance).
fn compress_stream(file: std::fs::File, coding: &'static str) -> Body {
    let reader = tokio::io::BufReader::with_capacity(
        super::body::FILE_CHUNK,
        tokio::fs::File::from_std(file),
    );
    if coding == "br" {
        let enc = async_compression::tokio::bufread::BrotliEncoder::with_quality(
            reader,
            async_compression::Level::Precise(4),
        );
        Body::from_stream(tokio_util::io::ReaderStream::with_capacity(enc, 64 * 1024))
    } else {
        let enc = async_compression::tokio::bufread::GzipEncoder::new(reader);
        Body::from_stream(tokio_util::io::ReaderStream::with_capacity(enc, 64 * 1024))
    }
}

/// Finds what `path` names (blocking): a file (cached when small), a folder's
/// `index.html` or its listing, or nothing.
fn lookup(site: &SiteInner, path: &RemotePath, folder: bool, key: String, enc: Accepts) -> Lookup {
    // Folders open too (read-only), so a failure here is real: missing, or
    // a symlink leading out.
    let Ok(file) = open_path(site, path) else {
        return Lookup::NotFound;
    };
    let Ok(meta) = file.metadata() else {
        return Lookup::NotFound;
    };
    let (file, meta, path) = if meta.is_dir() {
        if !folder {
            return Lookup::AddSlash;
        }
        let Ok(dir) = Dir::from_std_file(file).try_clone() else {
            return Lookup::NotFound;
        };
        match open_for_reading(&dir, Path::new("index.html")).map(|f| f.into_std()) {
            Ok(f) => match f.metadata() {
                Ok(m) if m.is_file() => {
                    let index = match path.join("index.html") {
                        Ok(p) => p,
                        Err(_) => return Lookup::NotFound,
                    };
                    (f, m, index)
                }
                Ok(m) if !m.is_dir() => return Lookup::NotAFile,
                _ => return Lookup::NotFound,
            },
            Err(_) if site.opts.list => return Lookup::Listing(list_dir(&dir, site.opts.hidden)),
            Err(_) => return Lookup::NotFound,
        }
    } else if meta.is_file() {
        if folder {
            return Lookup::NotFound;
        }
        (file, meta, path.clone())
    } else {
        return Lookup::NotAFile;
    };
    let stat = Stat::of(&meta);
    let name = path.name().unwrap_or("index.html").to_string();
    let sibling_of = |suffix: &str| -> Option<(std::fs::File, u64)> {
        let sibling = path.parent().join(&format!("{name}.{suffix}")).ok()?;
        let f = open_path(site, &sibling).ok()?;
        let m = f.metadata().ok()?;
        m.is_file().then_some((f, m.len()))
    };
    if stat.len <= site.opts.cache_file_max {
        if let Some(c) = load_cached(site, &file, stat, &path, &name, &sibling_of) {
            let c = Arc::new(c);
            insert_cached(site, key, c.clone());
            return Lookup::Cached(c);
        }
    }
    let sibling = if enc.br {
        sibling_of("br").map(|(f, l)| (f, l, "br"))
    } else {
        None
    }
    .or_else(|| {
        if enc.gzip {
            sibling_of("gz").map(|(f, l)| (f, l, "gzip"))
        } else {
            None
        }
    });
    Lookup::File {
        file,
        stat,
        path,
        sibling,
    }
}

fn load_cached(
    site: &SiteInner,
    file: &std::fs::File,
    stat: Stat,
    path: &RemotePath,
    name: &str,
    sibling_of: &dyn Fn(&str) -> Option<(std::fs::File, u64)>,
) -> Option<Cached> {
    let bytes = read_exact(file, stat.len)?;
    let (content_type, compressible) = content_type_of(name);
    let sibling = |suffix| {
        sibling_of(suffix)
            .filter(|(_, l)| *l <= site.opts.cache_file_max)
            .and_then(|(f, l)| read_exact(&f, l))
    };
    let validators = stat.validators();
    Some(Cached {
        path: path.clone(),
        etag: HeaderValue::from_str(&validators.etag).ok()?,
        last_modified: HeaderValue::from_str(&validators.last_modified()).ok()?,
        validators,
        bytes,
        stat,
        content_type,
        compressible,
        sibling_br: sibling("br"),
        sibling_gz: sibling("gz"),
        br: OnceCell::new(),
        gz: OnceCell::new(),
        checked_ms: AtomicU64::new(site.epoch.elapsed().as_millis() as u64),
    })
}

fn insert_cached(site: &SiteInner, key: String, c: Arc<Cached>) {
    let size = c.bytes.len();
    let Ok(mut map) = site.cache.write() else {
        return;
    };
    // Over budget: drop arbitrary entries until this one fits.
    while site.cache_used.load(Ordering::Relaxed) + size > site.opts.cache_total {
        let Some(victim) = map.keys().next().cloned() else {
            return; // Bigger than the whole budget.
        };
        if let Some(old) = map.remove(&victim) {
            site.cache_used
                .fetch_sub(old.bytes.len(), Ordering::Relaxed);
        }
    }
    site.cache_used.fetch_add(size, Ordering::Relaxed);
    if let Some(old) = map.insert(key, c) {
        site.cache_used
            .fetch_sub(old.bytes.len(), Ordering::Relaxed);
    }
}

/// Most entries shown in one listing.
const MAX_LISTING: usize = 10_000;

fn list_dir(dir: &Dir, hidden: bool) -> Vec<ListEntry> {
    let mut out = Vec::new();
    let Ok(entries) = dir.entries() else {
        return out;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !hidden && name.starts_with('.') {
            continue;
        }
        // Follows symlinks beneath the root; one leading out is not shown.
        let Ok(meta) = dir.metadata(&name) else {
            continue;
        };
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.into_std().duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() as i64);
        out.push(ListEntry {
            dir: meta.is_dir(),
            size: if meta.is_dir() { 0 } else { meta.len() },
            modified,
            name,
        });
        if out.len() >= MAX_LISTING {
            break;
        }
    }
    out.sort_by(|a, b| b.dir.cmp(&a.dir).then_with(|| a.name.cmp(&b.name)));
    out
}

fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn listing<B>(req: &Request<B>, raw: &str, entries: Vec<ListEntry>) -> Response<Body> {
    let wants_json = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "json" || p.starts_with("json=")))
        || req
            .headers()
            .get(header::ACCEPT)
            .and_then(|a| a.to_str().ok())
            .is_some_and(|a| a.contains("application/json"));
    if wants_json {
        let body = serde_json::to_vec(&serde_json::json!({ "path": percent_decode_str(raw).decode_utf8_lossy(), "entries": entries }))
            .unwrap_or_default();
        let mut r = Response::new(Body::from(body));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return r;
    }
    // Names are shown as a terminal shows them: control characters and
    // direction overrides escaped (`\u{202e}`), so no name can pass for
    // another; links keep the real name.
    use crate::store::path::escape_for_terminal;
    let visible = |name: &str| escape_html(&escape_for_terminal(name));
    let shown = percent_decode_str(raw).decode_utf8_lossy().into_owned();
    let title = format!("Index of {}", visible(&shown));
    let mut rows = String::new();
    if raw != "/" {
        rows.push_str("<tr><td><a href=\"../\">../</a></td><td></td><td></td></tr>\n");
    }
    for e in &entries {
        let href = format!(
            "{}{}",
            encode_segment(&e.name),
            if e.dir { "/" } else { "" }
        );
        let date =
            httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(e.modified.max(0) as u64));
        rows.push_str(&format!(
            "<tr><td><a href=\"{}\"{}>{}{}</a></td><td class=\"size\">{}</td><td>{}</td></tr>\n",
            escape_html(&href),
            if escape_for_terminal(&e.name) != e.name {
                " title=\"this name holds control or direction characters, shown escaped\""
            } else {
                ""
            },
            visible(&e.name),
            if e.dir { "/" } else { "" },
            if e.dir {
                "-".to_string()
            } else {
                human_size(e.size)
            },
            date
        ));
    }
    let body = format!(
        "<h1>{title}</h1><table><thead><tr><th>Name</th><th>Size</th><th>Modified</th></tr></thead><tbody>\n{rows}</tbody></table>"
    );
    html_page(StatusCode::OK, &title, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_paths_decode_and_refuse_what_they_must() {
        let ok = |raw: &str| parse_url_path(raw).map(|(p, d)| (p.to_string(), d));
        assert_eq!(ok("/").unwrap(), (".".into(), true));
        assert_eq!(ok("/a/b%20c.txt").unwrap(), ("a/b c.txt".into(), false));
        assert_eq!(ok("/docs/").unwrap(), ("docs".into(), true));
        assert_eq!(ok("/r%C3%A9sum%C3%A9").unwrap(), ("résumé".into(), false));
        assert_eq!(ok("/100%25").unwrap(), ("100%".into(), false));
        for bad in [
            "/../etc/passwd",
            "/a/../../x",
            "/%2e%2e/x",
            "/%2E%2E/x",
            "/a%2fb",
            "/a%2F..%2Fb",
            "/%252e%252e/x",
            "/a\\b",
            "/a%5c..%5cb",
            "/a%00b",
            "/%c0%ae%c0%ae/x",
            "/%ff",
            "//etc/passwd",
            "/./x",
            "relative",
        ] {
            assert!(ok(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn html_escaping_neutralises_markup() {
        assert_eq!(
            escape_html("<img src=x onerror=alert(1)>.txt"),
            "&lt;img src=x onerror=alert(1)&gt;.txt"
        );
        assert_eq!(escape_html("a\"b'c&"), "a&quot;b&#39;c&amp;");
    }

    #[test]
    fn accept_encoding_respects_q_zero() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip, br;q=0"),
        );
        let a = accepts(&h);
        assert!(a.gzip && !a.br);
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        let a = accepts(&h);
        assert!(!a.gzip && !a.br);
    }
}
