//! Conditional requests (ETag, Last-Modified: 304 and 412) and byte ranges
//! (206, multipart/byteranges, 416) over one file's representation. Shared
//! by the static site and the API's downloads.

use std::ops::RangeInclusive;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{header, HeaderMap, Method, StatusCode};

/// Most ranges honoured in one request (more gets 416): many tiny ranges
/// would turn one request into a flood of multipart headers.
pub const MAX_RANGES: usize = 64;

/// What identifies one version of a file's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validators {
    /// Strong entity tag, quoted.
    pub etag: String,
    /// Modification time, whole seconds (HTTP dates have no fraction).
    pub modified: SystemTime,
}

impl Validators {
    /// Validators from file metadata: the ETag changes when the inode, the
    /// modification time (ns) or the length does, as a replaced or edited
    /// file always changes one of them.
    pub fn new(ino: u64, mtime_ns: i64, len: u64) -> Validators {
        let secs = (mtime_ns.max(0) as u64) / 1_000_000_000;
        Validators {
            etag: format!("\"{ino:x}-{mtime_ns:x}-{len:x}\""),
            modified: UNIX_EPOCH + Duration::from_secs(secs),
        }
    }

    /// The same validators for an encoded variant (`gz`, `br`).
    pub fn variant(&self, suffix: &str) -> Validators {
        let base = self.etag.trim_end_matches('"');
        Validators {
            etag: format!("{base}-{suffix}\""),
            modified: self.modified,
        }
    }

    /// `Last-Modified` text.
    pub fn last_modified(&self) -> String {
        httpdate::fmt_http_date(self.modified)
    }
}

/// Does `etag` match one of the tags in an `If-None-Match` / `If-Match`
/// list? `weak` compares ignoring `W/` (If-None-Match); strong comparison
/// never matches a weak tag.
fn list_matches(list: &str, etag: &str, weak: bool) -> bool {
    list.split(',').map(str::trim).any(|t| {
        if t == "*" {
            return true;
        }
        match t.strip_prefix("W/") {
            Some(w) => weak && w == etag,
            None => t == etag,
        }
    })
}

fn date(headers: &HeaderMap, name: header::HeaderName) -> Option<SystemTime> {
    headers
        .get(name)?
        .to_str()
        .ok()
        .and_then(|s| httpdate::parse_http_date(s).ok())
}

/// Evaluates the preconditions (RFC 9110 section 13.2.2): `Some(304)` or
/// `Some(412)` when the request stops here, `None` to go on.
pub fn preconditions(method: &Method, headers: &HeaderMap, v: &Validators) -> Option<StatusCode> {
    if let Some(im) = headers.get(header::IF_MATCH).and_then(|h| h.to_str().ok()) {
        if !list_matches(im, &v.etag, false) {
            return Some(StatusCode::PRECONDITION_FAILED);
        }
    } else if let Some(t) = date(headers, header::IF_UNMODIFIED_SINCE) {
        if v.modified > t {
            return Some(StatusCode::PRECONDITION_FAILED);
        }
    }
    let safe = method == Method::GET || method == Method::HEAD;
    if let Some(inm) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|h| h.to_str().ok())
    {
        if list_matches(inm, &v.etag, true) {
            return Some(if safe {
                StatusCode::NOT_MODIFIED
            } else {
                StatusCode::PRECONDITION_FAILED
            });
        }
    } else if safe {
        if let Some(t) = date(headers, header::IF_MODIFIED_SINCE) {
            if v.modified <= t {
                return Some(StatusCode::NOT_MODIFIED);
            }
        }
    }
    None
}

/// What to send of a file of `len` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ranges {
    /// The whole file (no Range, an ignorable one, or If-Range failed).
    Full,
    /// These ranges (206): one range is sent plainly, several as
    /// `multipart/byteranges`.
    Partial(Vec<RangeInclusive<u64>>),
    /// 416, with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Decides on the `Range` header of a GET (and `If-Range`).
pub fn ranges(method: &Method, headers: &HeaderMap, v: &Validators, len: u64) -> Ranges {
    if method != Method::GET {
        return Ranges::Full;
    }
    let Some(range) = headers.get(header::RANGE).and_then(|h| h.to_str().ok()) else {
        return Ranges::Full;
    };
    if let Some(if_range) = headers.get(header::IF_RANGE).and_then(|h| h.to_str().ok()) {
        let fresh = if if_range.starts_with('"') {
            if_range == v.etag
        } else {
            // A date validator must match exactly (and it is weak by nature).
            httpdate::parse_http_date(if_range).is_ok_and(|t| t == v.modified)
        };
        if !fresh {
            return Ranges::Full;
        }
    }
    use http_range_header::{RangeInvalid, RangeUnsatisfiableError as E};
    let parsed = match http_range_header::parse_range_header(range) {
        Ok(p) => p,
        Err(E::Invalid(RangeInvalid::Reversed)) => return Ranges::Unsatisfiable,
        Err(E::Invalid(_)) => return Ranges::Full, // Malformed: ignore it.
        Err(_) => return Ranges::Unsatisfiable,
    };
    if parsed.len() > MAX_RANGES {
        return Ranges::Unsatisfiable;
    }
    match parsed.validate(len) {
        Ok(r) if r.is_empty() => Ranges::Full,
        Ok(mut r) => {
            if r.len() > 1 {
                // Sorted and coalesced: overlapping or adjacent ranges are
                // sent once, as RFC 9110 allows.
                r.sort_by_key(|x| *x.start());
                let mut merged: Vec<RangeInclusive<u64>> = Vec::with_capacity(r.len());
                for x in r {
                    match merged.last_mut() {
                        Some(last) if *x.start() <= last.end().saturating_add(1) => {
                            *last = *last.start()..=(*last.end()).max(*x.end());
                        }
                        _ => merged.push(x),
                    }
                }
                r = merged;
            }
            Ranges::Partial(r)
        }
        Err(E::Invalid(RangeInvalid::Reversed)) => Ranges::Unsatisfiable,
        Err(E::Invalid(_)) => Ranges::Full,
        Err(_) => Ranges::Unsatisfiable,
    }
}

/// `Content-Range` of one range.
pub fn content_range(r: &RangeInclusive<u64>, len: u64) -> String {
    format!("bytes {}-{}/{len}", r.start(), r.end())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        m
    }

    fn v() -> Validators {
        Validators::new(7, 1_700_000_000_123_456_789, 1000)
    }

    #[test]
    fn etag_changes_with_any_of_inode_mtime_length() {
        let a = v();
        assert_ne!(
            a.etag,
            Validators::new(8, 1_700_000_000_123_456_789, 1000).etag
        );
        assert_ne!(
            a.etag,
            Validators::new(7, 1_700_000_000_123_456_788, 1000).etag
        );
        assert_ne!(
            a.etag,
            Validators::new(7, 1_700_000_000_123_456_789, 999).etag
        );
        assert_ne!(a.etag, a.variant("gz").etag);
        assert!(a.variant("gz").etag.ends_with("-gz\""));
    }

    #[test]
    fn not_modified_by_etag_and_date() {
        let val = v();
        let get = Method::GET;
        assert_eq!(
            preconditions(&get, &h(&[("if-none-match", &val.etag)]), &val),
            Some(StatusCode::NOT_MODIFIED)
        );
        let weak = format!("W/{}", val.etag);
        assert_eq!(
            preconditions(
                &get,
                &h(&[("if-none-match", &format!("\"x\", {weak}"))]),
                &val
            ),
            Some(StatusCode::NOT_MODIFIED)
        );
        assert_eq!(
            preconditions(&get, &h(&[("if-none-match", "\"other\"")]), &val),
            None
        );
        let lm = val.last_modified();
        assert_eq!(
            preconditions(&get, &h(&[("if-modified-since", &lm)]), &val),
            Some(StatusCode::NOT_MODIFIED)
        );
        // If-None-Match wins over If-Modified-Since.
        assert_eq!(
            preconditions(
                &get,
                &h(&[("if-none-match", "\"other\""), ("if-modified-since", &lm)]),
                &val
            ),
            None
        );
        let earlier = httpdate::fmt_http_date(val.modified - Duration::from_secs(1));
        assert_eq!(
            preconditions(&get, &h(&[("if-modified-since", &earlier)]), &val),
            None
        );
        assert_eq!(
            preconditions(&get, &h(&[("if-match", "\"other\"")]), &val),
            Some(StatusCode::PRECONDITION_FAILED)
        );
        assert_eq!(
            preconditions(&get, &h(&[("if-match", &weak)]), &val),
            Some(StatusCode::PRECONDITION_FAILED)
        );
        assert_eq!(
            preconditions(&get, &h(&[("if-match", &val.etag)]), &val),
            None
        );
    }

    #[test]
    fn ranges_cover_the_edge_cases() {
        let val = v();
        let get = Method::GET;
        let r = |s: &str| ranges(&get, &h(&[("range", s)]), &val, 1000);
        assert_eq!(r("bytes=0-0"), Ranges::Partial(vec![0..=0]));
        assert_eq!(r("bytes=-100"), Ranges::Partial(vec![900..=999]));
        assert_eq!(r("bytes=990-"), Ranges::Partial(vec![990..=999]));
        assert_eq!(r("bytes=990-5000"), Ranges::Partial(vec![990..=999]));
        assert_eq!(r("bytes=5-2"), Ranges::Unsatisfiable);
        assert_eq!(r("bytes=1000-"), Ranges::Unsatisfiable);
        assert_eq!(r("bytes=2000-3000"), Ranges::Unsatisfiable);
        assert_eq!(r("bytes=0-1,5-9"), Ranges::Partial(vec![0..=1, 5..=9]));
        assert_eq!(r("bytes=5-9,0-1"), Ranges::Partial(vec![0..=1, 5..=9]));
        assert_eq!(r("bytes=0-4,3-9"), Ranges::Partial(vec![0..=9]));
        assert_eq!(r("lines=1-2"), Ranges::Full);
        assert_eq!(r("bytes=abc"), Ranges::Full);
        let many: Vec<String> = (0..200)
            .map(|i| format!("{}-{}", i * 4, i * 4 + 1))
            .collect();
        assert_eq!(
            r(&format!("bytes={}", many.join(","))),
            Ranges::Unsatisfiable
        );
        // HEAD and a stale If-Range get the whole file.
        assert_eq!(
            ranges(&Method::HEAD, &h(&[("range", "bytes=0-0")]), &val, 1000),
            Ranges::Full
        );
        assert_eq!(
            ranges(
                &get,
                &h(&[("range", "bytes=0-0"), ("if-range", "\"old\"")]),
                &val,
                1000
            ),
            Ranges::Full
        );
        assert_eq!(
            ranges(
                &get,
                &h(&[("range", "bytes=0-0"), ("if-range", &val.etag)]),
                &val,
                1000
            ),
            Ranges::Partial(vec![0..=0])
        );
    }
}
