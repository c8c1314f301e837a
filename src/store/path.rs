//! Remote paths: the text rules every service applies before touching the
//! disk, and the one resolution function that opens what it checked.
//!
//! A remote path is relative and `/`-separated. Refused, with `bad_path`:
//! absolute paths, `.` and `..`, empty components, NUL and other control
//! characters, backslashes, Windows drive prefixes (`C:`), components that
//! percent-decode (once or repeatedly) or Unicode-normalise (NFKC) to any of
//! these, slash look-alikes, bidirectional-override characters, over-long
//! names, and the store's reserved folder. What passes is then opened
//! through a directory handle ([`cap_std::fs::Dir`]) that cannot leave its
//! root, so a symlink pointing outside fails at the system call, and the path
//! that was checked is the path that is opened.

use std::fmt;
use std::path::{Path, PathBuf};

use cap_std::fs::Dir;
use percent_encoding::percent_decode_str;
use unicode_normalization::UnicodeNormalization;

/// Longest component, in bytes (the common file-system limit).
pub const MAX_NAME: usize = 255;
/// Longest path, in bytes.
pub const MAX_PATH: usize = 4096;
/// Deepest nesting accepted.
pub const MAX_DEPTH: usize = 64;
/// The store's own folder in each user space (partial uploads); reserved.
pub const RESERVED: &str = ".sockit-partial";

/// Characters that look like or act as path separators, or reorder text.
const FORBIDDEN: &[char] = &[
    '\\', '\u{2215}', '\u{2044}', '\u{29F8}', '\u{FF0F}', '\u{FF3C}', '\u{202A}', '\u{202B}',
    '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
];

/// Why a remote path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad path {path:?}: {reason}")]
pub struct PathError {
    /// The path as given (escaped when shown).
    pub path: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A validated relative path; empty means the root of the space.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RemotePath {
    components: Vec<String>,
}

impl fmt::Display for RemotePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.components.is_empty() {
            f.write_str(".")
        } else {
            f.write_str(&self.components.join("/"))
        }
    }
}

fn refuse(path: &str, reason: &'static str) -> PathError {
    PathError {
        path: path.to_string(),
        reason,
    }
}

/// Checks one component's text; `None` when it is acceptable.
fn component_problem(c: &str) -> Option<&'static str> {
    if c.is_empty() {
        return Some("empty path component");
    }
    if c == "." || c == ".." {
        return Some("'.' and '..' are not allowed");
    }
    if c.len() > MAX_NAME {
        return Some("a name is longer than 255 bytes");
    }
    if c.chars().any(|ch| ch.is_control()) {
        return Some("control characters are not allowed");
    }
    if c.chars().any(|ch| FORBIDDEN.contains(&ch)) {
        return Some("backslashes, slash look-alikes and direction overrides are not allowed");
    }
    let b = c.as_bytes();
    if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
        return Some("drive prefixes are not allowed");
    }
    None
}

/// Checks what a component could turn into: percent-decoding (repeatedly,
/// as long as it changes anything, to catch encoding nested any number of
/// times) and NFKC normalisation must not yield a separator or a dot name
/// either.
fn disguised_problem(c: &str) -> Option<&'static str> {
    let mut text = c.to_string();
    // Every decoding that changes the text shortens it or removes a `%`
    // (a byte that is not UTF-8 becomes U+FFFD, three bytes for three), so
    // it settles within twice its length: the bound is never reached.
    for _ in 0..=2 * c.len() {
        let decoded = percent_decode_str(&text).decode_utf8_lossy().into_owned();
        if decoded == text {
            break;
        }
        if decoded.contains('/') || component_problem(&decoded).is_some() {
            return Some("percent-encoded separators, dots or control characters are not allowed");
        }
        text = decoded;
    }
    let normal: String = c.nfkc().collect();
    if normal != c && (normal.contains('/') || component_problem(&normal).is_some()) {
        return Some("characters that normalise to separators or dots are not allowed");
    }
    None
}

impl RemotePath {
    /// The root of the space.
    pub fn root() -> RemotePath {
        RemotePath { components: vec![] }
    }

    /// Validates a remote path. `""` and `"."` are the root.
    pub fn parse(text: &str) -> Result<RemotePath, PathError> {
        if text.is_empty() || text == "." {
            return Ok(RemotePath::root());
        }
        if text.len() > MAX_PATH {
            return Err(refuse(text, "the path is longer than 4096 bytes"));
        }
        if text.starts_with('/') {
            return Err(refuse(
                text,
                "absolute paths are not allowed; paths are relative to your space",
            ));
        }
        let mut components = Vec::new();
        for c in text.split('/') {
            if let Some(reason) = component_problem(c).or_else(|| disguised_problem(c)) {
                return Err(refuse(text, reason));
            }
            components.push(c.to_string());
        }
        if components.len() > MAX_DEPTH {
            return Err(refuse(text, "the path is nested more than 64 levels deep"));
        }
        if components[0] == RESERVED {
            return Err(refuse(text, "this name is reserved by sockit"));
        }
        Ok(RemotePath { components })
    }

    /// True for the root of the space.
    pub fn is_root(&self) -> bool {
        self.components.is_empty()
    }

    /// The last component, if any.
    pub fn name(&self) -> Option<&str> {
        self.components.last().map(String::as_str)
    }

    /// The path without its last component.
    pub fn parent(&self) -> RemotePath {
        let mut components = self.components.clone();
        components.pop();
        RemotePath { components }
    }

    /// This path with one more validated component.
    pub fn join(&self, name: &str) -> Result<RemotePath, PathError> {
        if name.contains('/') {
            return Err(refuse(name, "a name cannot contain '/'"));
        }
        if let Some(reason) = component_problem(name).or_else(|| disguised_problem(name)) {
            return Err(refuse(name, reason));
        }
        let mut components = self.components.clone();
        components.push(name.to_string());
        RemotePath::parse(&components.join("/"))
    }

    /// The components.
    pub fn components(&self) -> &[String] {
        &self.components
    }

    /// As a relative file-system path.
    pub fn to_path_buf(&self) -> PathBuf {
        self.components.iter().collect()
    }

    /// True if a component (or the name) starts with a dot.
    pub fn has_hidden_component(&self) -> bool {
        self.components.iter().any(|c| c.starts_with('.'))
    }
}

/// A resolved path: the directory that holds it, opened, and its name in
/// that directory (`None` for the root itself).
#[derive(Debug)]
pub struct Resolved {
    /// The containing directory, opened beneath the root.
    pub dir: Dir,
    /// The final name inside `dir`.
    pub name: Option<String>,
}

impl Resolved {
    /// The final name, or `"."` for the root itself.
    pub fn name_or_dot(&self) -> &Path {
        Path::new(self.name.as_deref().unwrap_or("."))
    }
}

/// The one path-resolution function: opens the directory containing `path`
/// beneath `root`. Every later operation uses the returned handle and the
/// final name, so nothing is resolved twice. Symlinks may be followed only
/// while they stay beneath `root`; one that leads out fails with
/// `PermissionDenied` from the system call.
pub fn resolve(root: &Dir, path: &RemotePath) -> std::io::Result<Resolved> {
    let dir = if path.components.len() <= 1 {
        root.try_clone()?
    } else {
        root.open_dir(path.parent().to_path_buf())?
    };
    Ok(Resolved {
        dir,
        name: path.name().map(String::from),
    })
}

/// Opens `name` in `dir` (a resolved path, see [`resolve`]) for reading
/// without waiting on it: `O_NONBLOCK`, so a FIFO or a device planted in a
/// space returns at once instead of holding a thread until a writer comes.
/// The caller then checks the metadata of the open file and serves only
/// regular files and folders (on which `O_NONBLOCK` has no effect).
pub fn open_for_reading(dir: &Dir, name: &Path) -> std::io::Result<cap_std::fs::File> {
    use cap_std::fs::OpenOptionsExt;
    let mut opts = cap_std::fs::OpenOptions::new();
    opts.read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    dir.open_with(name, &opts)
}

/// Shows a name with control characters escaped, so no name can move the
/// cursor, change colours or clear the screen of whoever lists it.
pub fn escape_for_terminal(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for ch in name.chars() {
        if ch.is_control() || FORBIDDEN[1..].contains(&ch) {
            out.extend(ch.escape_unicode());
        } else {
            out.push(ch);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_paths() {
        for ok in [
            "a",
            "a/b/c.txt",
            "报告 2026.pdf",
            "docs/报告 2026.pdf",
            ".profile",
            "a..b",
            "...x",
            "100% done",
            "10:30 notes",
            "é",
        ] {
            let p = RemotePath::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(p.to_string(), ok);
        }
        assert!(RemotePath::parse("").unwrap().is_root());
        assert!(RemotePath::parse(".").unwrap().is_root());
    }

    /// Hostile paths, each refused by the text rules alone.
    pub const HOSTILE: &[&str] = &[
        "../x",
        "..",
        "a/../../x",
        "a/..",
        "./a",
        "a/./b",
        "/etc/passwd",
        "//server/share",
        "..\\x",
        "a\\b",
        "a\0b",
        "C:x",
        "c:\\windows",
        "a//b",
        "a/",
        "%2e%2e/x",
        "%2E%2E",
        "a/%2e%2e/%2e%2e/x",
        "%252e%252e/x",
        "..%2fx",
        "a%2f..%2f..%2fx",
        "%00",
        "\u{FF0E}\u{FF0E}/x",
        "a\u{FF0F}b",
        "a\u{2215}b",
        "\u{FF3C}x",
        "evil\u{202E}txt.exe",
        "a\nb",
        "a\rb",
        "\u{1b}[2Jx",
        "a\u{7f}",
        ".sockit-partial/x",
        ".sockit-partial",
    ];

    #[test]
    fn hostile_paths_are_refused() {
        for bad in HOSTILE {
            assert!(RemotePath::parse(bad).is_err(), "accepted {bad:?}");
        }
        assert!(RemotePath::parse(&"a/".repeat(70)).is_err());
        assert!(RemotePath::parse(&"n".repeat(256)).is_err());
        assert!(RemotePath::parse(&"n".repeat(255)).is_ok());
    }

    /// Found by fuzz/remote_path: decoding stopped after 4 rounds, so a
    /// dot encoded 5 times (`%252525252e`) passed as a name.
    #[test]
    fn dots_percent_encoded_5_to_40_times_are_refused() {
        for depth in [5, 6, 10, 40] {
            for name in [".", ".."] {
                let mut text = name.replace('.', "%2e");
                for _ in 1..depth {
                    text = text.replace('%', "%25");
                }
                assert!(
                    RemotePath::parse(&text).is_err(),
                    "{name:?} encoded {depth} times: {text}"
                );
            }
        }
        assert!(
            RemotePath::parse("%252525252541").is_ok(),
            "an encoded 'A' is a name"
        );
    }

    #[test]
    fn join_checks_the_name() {
        let root = RemotePath::root();
        assert!(root.join("..").is_err());
        assert!(root.join("a/b").is_err());
        assert_eq!(
            root.join("a").unwrap().join("b").unwrap().to_string(),
            "a/b"
        );
    }

    #[test]
    fn resolve_refuses_symlinks_out_and_allows_them_within() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        std::fs::create_dir(tmp.path().join("inner")).unwrap();
        std::fs::write(tmp.path().join("inner/ok"), b"ok").unwrap();
        std::os::unix::fs::symlink(outside.path(), tmp.path().join("out")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), tmp.path().join("leak")).unwrap();
        std::os::unix::fs::symlink("inner", tmp.path().join("alias")).unwrap();
        let root = Dir::open_ambient_dir(tmp.path(), cap_std::ambient_authority()).unwrap();
        let r = resolve(&root, &RemotePath::parse("out/secret").unwrap());
        assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::PermissionDenied);
        let r = resolve(&root, &RemotePath::parse("leak").unwrap()).unwrap();
        assert!(r.dir.open(r.name_or_dot()).is_err());
        let r = resolve(&root, &RemotePath::parse("alias/ok").unwrap()).unwrap();
        assert_eq!(r.dir.read(r.name_or_dot()).unwrap(), b"ok");
    }

    #[test]
    fn names_are_escaped_for_terminals() {
        assert_eq!(escape_for_terminal("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(escape_for_terminal("报告 2026.pdf"), "报告 2026.pdf");
        assert_eq!(escape_for_terminal("x\u{202e}y"), "x\\u{202e}y");
    }
}
