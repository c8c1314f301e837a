//! `Range`, `If-Range` and the other preconditions (`sockit::web::range`)
//! on arbitrary header values and an arbitrary file length.
//!
//! Input: 8 bytes of file length, then the `Range` value, then after a
//! `\n` the `If-Range` value, then after another `\n` an `If-None-Match`.
//! Checked: nothing panics; every range sent lies within the file, is not
//! empty, and comes sorted, apart and at most `MAX_RANGES` of them; an empty
//! file never gets a partial answer; a failed `If-Range` gets the whole file.

#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use http::{header, HeaderMap, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use sockit::web::range::{content_range, preconditions, ranges, Ranges, Validators, MAX_RANGES};

fuzz_target!(|data: &[u8]| {
    let Some((len, rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    // Mostly small lengths, so ranges fall both inside and past the end.
    let len = match u64::from_be_bytes(*len) {
        n if n >> 63 == 1 => n,
        n => n % 100_000,
    };
    let mut parts = rest.splitn(3, |&b| b == b'\n');
    let (Some(range), if_range, inm) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    let Ok(range) = HeaderValue::from_bytes(range) else {
        return;
    };
    let v = Validators {
        etag: "\"1-2-3\"".into(),
        modified: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::RANGE, range);
    let mut if_range_ok = true;
    if let Some(value) = if_range.and_then(|b| HeaderValue::from_bytes(b).ok()) {
        if let Ok(text) = value.to_str() {
            if_range_ok = text == v.etag || text == v.last_modified();
        }
        headers.insert(header::IF_RANGE, value);
    }
    if let Some(value) = inm.and_then(|b| HeaderValue::from_bytes(b).ok()) {
        headers.insert(header::IF_NONE_MATCH, value.clone());
        headers.insert(header::IF_MATCH, value);
    }
    let _ = preconditions(&Method::GET, &headers, &v);
    let _ = preconditions(&Method::PUT, &headers, &v);
    assert_eq!(ranges(&Method::HEAD, &headers, &v, len), Ranges::Full);

    match ranges(&Method::GET, &headers, &v, len) {
        Ranges::Full | Ranges::Unsatisfiable => {}
        Ranges::Partial(rs) => {
            assert!(if_range_ok, "a range sent although If-Range did not match");
            assert!(len > 0, "a range of an empty file");
            assert!(
                !rs.is_empty() && rs.len() <= MAX_RANGES,
                "{} ranges",
                rs.len()
            );
            for r in &rs {
                assert!(r.start() <= r.end() && *r.end() < len, "{r:?} of {len}");
                let text = content_range(r, len);
                assert_eq!(text, format!("bytes {}-{}/{len}", r.start(), r.end()));
            }
            for w in rs.windows(2) {
                assert!(
                    w[0].end().saturating_add(1) < *w[1].start(),
                    "{:?} and {:?} are not sorted and apart",
                    w[0],
                    w[1]
                );
            }
        }
    }
});
