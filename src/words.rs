//! The words a user reads for the common failures, the same in every
//! command: `connection refused by 127.0.0.1:7999`, `no such file or
//! folder`, never an `(os error 111)`.

use std::fmt::Display;
use std::io;

/// An I/O error in plain words: the system's message without its
/// `(os error N)` tail, in lower case, "folder" for "directory".
pub fn io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => return "no such file or folder".into(),
        io::ErrorKind::PermissionDenied => return "permission denied".into(),
        io::ErrorKind::AlreadyExists => return "already exists".into(),
        _ => {}
    }
    let text = e.to_string();
    let text = match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => &text[..at],
        _ => &text,
    };
    let mut chars = text.chars();
    let first = chars.next().map(|c| c.to_lowercase().collect::<String>());
    format!("{}{}", first.unwrap_or_default(), chars.as_str()).replace("directory", "folder")
}

/// A failed connection to `addr`, as `connect` says it.
pub fn connect_failed(addr: impl Display, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => format!("connection refused by {addr}"),
        io::ErrorKind::TimedOut => format!("timed out connecting to {addr}"),
        _ => format!("cannot connect to {addr}: {}", io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_words() {
        let refused = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(
            connect_failed("127.0.0.1:1", &refused),
            "connection refused by 127.0.0.1:1"
        );
        let missing = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(io(&missing), "no such file or folder");
        let not_dir = io::Error::from_raw_os_error(libc::ENOTDIR);
        assert_eq!(io(&not_dir), "not a folder");
        assert!(!io(&io::Error::from_raw_os_error(libc::ENOSPC)).contains("os error"));
    }
}
