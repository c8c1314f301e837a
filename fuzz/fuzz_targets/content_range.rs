//! The resumable upload's `Content-Range` (`sockit::web::api`) on arbitrary
//! header text.
//!
//! Checked: nothing panics; what is accepted is exactly
//! `bytes START-END/TOTAL` in decimal digits (spaces allowed around
//! START-END and TOTAL) with
//! START <= END < TOTAL, so the body length END - START + 1 cannot
//! overflow; and the `Content-Range` the downloads write for a range reads
//! back as that range.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sockit::web::api::parse_content_range;
use sockit::web::range::content_range;

/// The grammar, written out independently of the parser.
fn strict(v: &str) -> Option<(u64, u64, u64)> {
    let digits = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    let rest = v.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (s, e) = span.trim().split_once('-')?;
    let (s, e, t) = (digits(s)?, digits(e)?, digits(total.trim())?);
    (s <= e && e < t).then_some((s, e, t))
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let got = parse_content_range(text);
        assert_eq!(got, strict(text), "{text:?}");
        if let Some((s, e, t)) = got {
            assert!(s <= e && e < t);
            assert!((e - s).checked_add(1).is_some());
            assert_eq!(parse_content_range(&content_range(&(s..=e), t)), got);
        }
    }
    // Any range of any length survives the trip through the header.
    if let Some((a, rest)) = data.split_first_chunk::<8>() {
        if let Some((b, _)) = rest.split_first_chunk::<8>() {
            let (a, b) = (u64::from_be_bytes(*a), u64::from_be_bytes(*b));
            let (s, e) = (a.min(b), a.max(b));
            if let Some(t) = e.checked_add(1) {
                assert_eq!(
                    parse_content_range(&content_range(&(s..=e), t)),
                    Some((s, e, t))
                );
            }
        }
    }
});
