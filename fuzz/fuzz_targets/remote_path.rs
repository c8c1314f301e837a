//! The store's path rules (`sockit::store::path`) on arbitrary text.
//!
//! Checked for every accepted path: it is relative, within the length and
//! depth limits, made only of plain names (no empty, `.` or `..` component,
//! no NUL or other control character, no backslash, slash look-alike,
//! direction override or drive prefix), never the reserved folder; no
//! component turns into a separator or a dot name when percent-decoded (as
//! many times as it changes) or NFKC-normalised; it prints back as itself;
//! building it name by name with `join` gives the same path; and `resolve`
//! under a real root keeps the final name and opens nothing outside.

#![no_main]

use std::path::Component;
use std::sync::OnceLock;

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use libfuzzer_sys::fuzz_target;
use sockit::store::path::{MAX_DEPTH, MAX_NAME, MAX_PATH, RESERVED};
use sockit::store::{resolve, RemotePath};

/// An empty root folder, shared by all runs (resolution only reads).
fn root() -> &'static Dir {
    static ROOT: OnceLock<(tempfile::TempDir, Dir)> = OnceLock::new();
    &ROOT
        .get_or_init(|| {
            let tmp = tempfile::tempdir().expect("a temporary folder for the root");
            let dir = Dir::open_ambient_dir(tmp.path(), ambient_authority())
                .expect("the temporary root opens");
            (tmp, dir)
        })
        .1
}

/// A name that is, or acts as, something other than a plain name.
fn dangerous(name: &str) -> bool {
    name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.contains('\\')
        || name.chars().any(char::is_control)
}

fn percent_decoded_forms(name: &str) -> Vec<String> {
    let mut forms = Vec::new();
    let mut text = name.to_string();
    loop {
        let next = percent_encoding::percent_decode_str(&text)
            .decode_utf8_lossy()
            .into_owned();
        if next == text {
            return forms;
        }
        forms.push(next.clone());
        text = next;
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(path) = RemotePath::parse(text) else {
        return;
    };
    if text.is_empty() || text == "." {
        assert!(path.is_root());
        return;
    }
    assert!(text.len() <= MAX_PATH);
    assert!(!text.starts_with('/'));
    let names = path.components();
    assert!(!names.is_empty() && names.len() <= MAX_DEPTH);
    assert_ne!(names[0], RESERVED);
    for name in names {
        assert!(name.len() <= MAX_NAME, "{name:?}");
        assert!(!dangerous(name), "{name:?}");
        assert!(!name.contains('\0'));
        let b = name.as_bytes();
        assert!(!(b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':'));
        for form in percent_decoded_forms(name) {
            assert!(!dangerous(&form), "{name:?} percent-decodes to {form:?}");
        }
        let nfkc: String =
            unicode_normalization::UnicodeNormalization::nfkc(name.as_str()).collect();
        assert!(!dangerous(&nfkc), "{name:?} normalises to {nfkc:?}");
    }
    assert!(
        path.to_path_buf()
            .components()
            .all(|c| matches!(c, Component::Normal(_))),
        "{:?} is not a plain relative path",
        path.to_path_buf()
    );
    assert_eq!(path.to_string(), text);
    assert_eq!(RemotePath::parse(&path.to_string()).as_ref(), Ok(&path));
    let mut built = RemotePath::root();
    for name in names {
        built = built.join(name).expect("an accepted name joins");
    }
    assert_eq!(built, path);

    match resolve(root(), &path) {
        Ok(r) => assert_eq!(r.name.as_deref(), path.name()),
        // Only one name resolves in the empty root; deeper ones are not there.
        Err(e) => assert!(names.len() > 1, "{text:?}: {e}"),
    }
});
