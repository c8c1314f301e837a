//! The hashes of a stored file, recorded with the file itself when it is
//! published, so a download can name them before it sends a byte (HTTP's
//! `Repr-Digest` is a header; the framed `get` hashes as it sends).
//!
//! The record is an extended attribute of the file (`user.sockit.digests`):
//! it belongs to the inode, so it moves with the file on publish and rename,
//! goes with it on delete, and is made durable by the same fsync as the data.
//! It also names the length and modification time the file had when it was
//! written; a file changed since (by anything but the store, which never
//! writes a published file in place) no longer matches and has no known
//! hashes. Where the file system keeps no user attributes, nothing is
//! recorded and downloads carry no digest.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;

/// The attribute that holds the record.
const ATTRIBUTE: &CStr = c"user.sockit.digests";
/// The record's format, first in its text.
const VERSION: &str = "v1";
/// Longer than any record written (two hashes in hex, two numbers).
const MAX_RECORD: usize = 256;

/// What is known of a stored file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digests {
    /// BLAKE3 of the whole file: every upload computes it.
    pub blake3: blake3::Hash,
    /// SHA-256 of the whole file, when the transport that stored it
    /// computed one (the HTTP API does; the framed port does not).
    pub sha256: Option<[u8; 32]>,
}

/// The length and modification time a record was made for.
fn stamp(meta: &std::fs::Metadata) -> (u64, i64) {
    (meta.len(), meta.mtime() * 1_000_000_000 + meta.mtime_nsec())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The record's text: `v1 LENGTH MTIME_NS BLAKE3 SHA256` (hex; `-` for an
/// unknown SHA-256).
fn format_record(d: &Digests, (len, mtime_ns): (u64, i64)) -> String {
    let sha = d
        .sha256
        .as_ref()
        .map_or_else(|| "-".to_string(), |s| hex(s));
    format!("{VERSION} {len} {mtime_ns} {} {sha}", d.blake3.to_hex())
}

/// The digests in `record`, if it is well formed and was made for `now`.
fn parse_record(record: &[u8], now: (u64, i64)) -> Option<Digests> {
    let text = std::str::from_utf8(record).ok()?;
    let mut fields = text.split(' ');
    if fields.next()? != VERSION {
        return None;
    }
    let len: u64 = fields.next()?.parse().ok()?;
    let mtime_ns: i64 = fields.next()?.parse().ok()?;
    let blake3 = blake3::Hash::from_bytes(unhex32(fields.next()?)?);
    let sha256 = match fields.next()? {
        "-" => None,
        s => Some(unhex32(s)?),
    };
    if fields.next().is_some() || (len, mtime_ns) != now {
        return None;
    }
    Some(Digests { blake3, sha256 })
}

/// Records `digests` on `file` for its current length and modification
/// time: call it after the last write and after setting the time.
pub fn record(file: &File, digests: &Digests) -> io::Result<()> {
    let text = format_record(digests, stamp(&file.metadata()?));
    set_attribute(file, text.as_bytes())
}

/// The digests recorded on `file`, if any were and the file has not
/// changed since.
pub fn recorded(file: &File) -> Option<Digests> {
    let now = stamp(&file.metadata().ok()?);
    parse_record(&get_attribute(file).ok()?, now)
}

#[cfg(target_os = "linux")]
fn set_attribute(file: &File, value: &[u8]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: the name is NUL-terminated, `value` is valid for `len` bytes,
    // and the descriptor stays open for the call.
    let r = unsafe {
        libc::fsetxattr(
            file.as_raw_fd(),
            ATTRIBUTE.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(target_os = "linux")]
fn get_attribute(file: &File) -> io::Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; MAX_RECORD];
    // SAFETY: the name is NUL-terminated, `buf` is writable for its length
    // (the kernel writes at most that, or fails with ERANGE), and the
    // descriptor stays open for the call.
    let n = unsafe {
        libc::fgetxattr(
            file.as_raw_fd(),
            ATTRIBUTE.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(buf[..n as usize].to_vec())
}

#[cfg(not(target_os = "linux"))]
fn set_attribute(_file: &File, _value: &[u8]) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

#[cfg(not(target_os = "linux"))]
fn get_attribute(_file: &File) -> io::Result<Vec<u8>> {
    Err(io::ErrorKind::Unsupported.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn digests_of(data: &[u8], sha: bool) -> Digests {
        use sha2::Digest as _;
        Digests {
            blake3: blake3::hash(data),
            sha256: sha.then(|| sha2::Sha256::digest(data).into()),
        }
    }

    #[test]
    fn a_record_is_read_back_while_the_file_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = File::create(&path).unwrap();
        f.write_all(b"hello").unwrap();
        assert_eq!(recorded(&f), None, "nothing recorded yet");
        let d = digests_of(b"hello", true);
        record(&f, &d).unwrap();
        // Another descriptor, as a download opens it; and after a rename.
        let moved = dir.path().join("g");
        std::fs::rename(&path, &moved).unwrap();
        assert_eq!(recorded(&File::open(&moved).unwrap()), Some(d));
        let without_sha = digests_of(b"hello", false);
        record(&f, &without_sha).unwrap();
        assert_eq!(recorded(&File::open(&moved).unwrap()), Some(without_sha));
    }

    #[test]
    fn a_file_changed_after_its_record_has_no_known_digests() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = File::create(&path).unwrap();
        f.write_all(b"hello").unwrap();
        f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000))
            .unwrap();
        record(&f, &digests_of(b"hello", true)).unwrap();
        // Same length, new content: the modification time moves.
        let mut g = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        g.write_all(b"HELLO").unwrap();
        assert_eq!(recorded(&File::open(&path).unwrap()), None);
        // Other length, the time put back.
        g.set_len(4).unwrap();
        g.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000))
            .unwrap();
        assert_eq!(recorded(&File::open(&path).unwrap()), None);
    }

    #[test]
    fn records_are_parsed_strictly() {
        let d = digests_of(b"x", true);
        let now = (1, 7);
        let good = format_record(&d, now);
        assert_eq!(parse_record(good.as_bytes(), now), Some(d));
        assert_eq!(parse_record(good.as_bytes(), (1, 8)), None);
        assert_eq!(parse_record(good.as_bytes(), (2, 7)), None);
        let d = digests_of(b"x", false);
        let good = format_record(&d, now);
        assert!(good.ends_with(" -"), "{good}");
        assert_eq!(parse_record(good.as_bytes(), now), Some(d));
        for bad in [
            String::new(),
            good.replacen("v1", "v2", 1),
            format!("{good} extra"),
            good.replace(" -", " "),
            good.replace(" -", &format!(" {}", "g".repeat(64))),
            good[..good.len() - 10].to_string(),
        ] {
            assert_eq!(parse_record(bad.as_bytes(), now), None, "{bad:?}");
        }
        assert_eq!(parse_record(&[0xff, 0xfe], now), None);
    }
}
