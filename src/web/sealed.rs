//! Cached file contents that a plain connection sends with `sendfile`.
//!
//! hyper writes a response body from memory, so every response is copied
//! into the socket once. nginx hands page-cache pages to the socket instead
//! (`sendfile`); for a 100 KiB file that copy is the whole difference in
//! requests per second between the two.
//!
//! A cached file of at least [`MIN_LEN`] bytes is therefore kept in a
//! `memfd`: an anonymous in-memory file, sealed against every change once
//! filled (no write, no shrink, no grow), and mapped read-only. The `Bytes`
//! the cache hands to hyper point into that mapping. The plain-TCP
//! connection ([`super::Watched`]) asks [`lookup`] about the buffers hyper
//! gives it; a buffer inside a sealed mapping is sent with `sendfile` from
//! the memfd at the same offset, so the kernel passes the pages to the
//! socket without copying them. Everything else (small files, TLS, HTTP/2
//! framing) writes from the same mapping as ordinary memory.
//!
//! The seals are what make this sound: the content cannot change while a
//! response is in flight (so what is sent is what the ETag names), and the
//! file cannot shrink (so reading the mapping never faults).
//!
//! Each sealed file holds one descriptor while anything refers to it; at
//! most [`MAX_SEALED`] exist at once, and past that (or where `memfd` is not
//! available) contents stay ordinary heap memory.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::RwLock;

use bytes::Bytes;
use memfd::{FileSeal, MemfdOptions};
use memmap2::Mmap;

/// Smallest content kept in a sealed file. Below this, copying is cheaper
/// than the extra system call `sendfile` takes.
pub const MIN_LEN: usize = 16 * 1024;

/// Most sealed files at once (each holds a descriptor).
pub const MAX_SEALED: usize = 1024;

/// Sealed mappings by start address: (length, memfd).
static REGIONS: RwLock<BTreeMap<usize, (usize, RawFd)>> = RwLock::new(BTreeMap::new());

/// The registry for a change. Its critical sections cannot panic, but a
/// poisoned lock is taken anyway: skipping an unregistration would leave a
/// closed descriptor behind for `lookup`.
fn regions_mut() -> std::sync::RwLockWriteGuard<'static, BTreeMap<usize, (usize, RawFd)>> {
    REGIONS.write().unwrap_or_else(|e| e.into_inner())
}

/// Sealed files alive.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// A sealed, mapped memfd; dropped when the last `Bytes` into it goes.
struct Sealed {
    map: Mmap,
    /// Kept open for `sendfile` as long as the mapping is registered.
    _file: File,
}

impl AsRef<[u8]> for Sealed {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

impl Drop for Sealed {
    fn drop(&mut self) {
        // Unregistered before the mapping and the descriptor go, so no
        // lookup can return a closed descriptor.
        regions_mut().remove(&(self.map.as_ptr() as usize));
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Reads exactly `len` bytes of `src` (from its current position) into
/// memory: a sealed file when `len` is large enough and one is available,
/// else the heap. `None` if the file does not hold exactly `len` bytes.
pub fn read_exact(src: &File, len: u64) -> Option<Bytes> {
    let size = usize::try_from(len).ok()?;
    if size >= MIN_LEN {
        if let Some(bytes) = sealed(src, size) {
            return bytes;
        }
    }
    let mut buf = Vec::with_capacity(size);
    src.take(len + 1).read_to_end(&mut buf).ok()?;
    (buf.len() == size).then(|| Bytes::from(buf))
}

/// A sealed copy of `src`; `None` when no sealed file can be made (the
/// caller falls back to the heap), `Some(None)` when `src` is not `len`
/// bytes long.
fn sealed(src: &File, len: usize) -> Option<Option<Bytes>> {
    if LIVE.fetch_add(1, Ordering::Relaxed) >= MAX_SEALED {
        LIVE.fetch_sub(1, Ordering::Relaxed);
        return None;
    }
    // From here the count is released by `Sealed::drop` or below.
    let made = (|| {
        let mfd = MemfdOptions::new()
            .allow_sealing(true)
            .create("sockit-web-cache")
            .ok()?;
        let mut file = mfd.as_file();
        let copied = std::io::copy(&mut src.take(len as u64 + 1), &mut file).ok()?;
        if copied != len as u64 {
            return Some(None);
        }
        file.flush().ok()?;
        mfd.add_seals(&[
            FileSeal::SealShrink,
            FileSeal::SealGrow,
            FileSeal::SealWrite,
            FileSeal::SealSeal,
        ])
        .ok()?;
        let file = mfd.into_file();
        // SAFETY: the memfd is sealed against writes, shrinking and growing,
        // and the seals cannot be removed (SealSeal), so the mapped bytes
        // never change and never stop being backed: the slice is valid for
        // as long as the mapping lives.
        let map = unsafe { Mmap::map(&file) }.ok()?;
        Some(Some((map, file)))
    })();
    match made {
        Some(Some((map, file))) => {
            regions_mut().insert(map.as_ptr() as usize, (map.len(), file.as_raw_fd()));
            Some(Some(Bytes::from_owner(Sealed { map, _file: file })))
        }
        Some(None) => {
            LIVE.fetch_sub(1, Ordering::Relaxed);
            Some(None)
        }
        None => {
            LIVE.fetch_sub(1, Ordering::Relaxed);
            None
        }
    }
}

/// The sealed file and offset that `buf` is a part of, if it is one. The
/// descriptor stays valid as long as `buf` is borrowed: the mapping it
/// points into is only unregistered once nothing refers to it.
pub fn lookup(buf: &[u8]) -> Option<(RawFd, u64)> {
    if buf.len() < MIN_LEN {
        return None;
    }
    let at = buf.as_ptr() as usize;
    let regions = REGIONS.read().unwrap_or_else(|e| e.into_inner());
    let (&start, &(len, fd)) = regions.range(..=at).next_back()?;
    (at + buf.len() <= start + len).then(|| (fd, (at - start) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom};

    fn file_with(content: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(content).unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        f
    }

    #[test]
    fn large_contents_are_sealed_and_found_at_their_offset() {
        let content: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let bytes = read_exact(&file_with(&content), content.len() as u64).unwrap();
        assert_eq!(&bytes[..], &content[..]);
        let (fd, off) = lookup(&bytes).expect("sealed");
        assert_eq!(off, 0);
        let part = bytes.slice(30_000..60_000);
        assert_eq!(lookup(&part), Some((fd, 30_000)));
        // The descriptor really holds the content, sealed.
        let mut back = vec![0; 10];
        let n = unsafe { libc::pread(fd, back.as_mut_ptr().cast(), 10, 30_000) };
        assert_eq!(n, 10);
        assert_eq!(&back[..], &content[30_000..30_010]);
        let n = unsafe { libc::pwrite(fd, back.as_ptr().cast(), 10, 0) };
        assert_eq!(n, -1, "a sealed file refuses writes");
        // A slice too short to be worth sendfile, and one that is not ours.
        assert_eq!(lookup(&bytes[..100]), None);
        assert_eq!(lookup(&content[..]), None);
    }

    #[test]
    fn small_and_mismatched_contents() {
        let small = read_exact(&file_with(b"hello"), 5).unwrap();
        assert_eq!(&small[..], b"hello");
        assert_eq!(lookup(&small), None);
        let content = vec![7u8; MIN_LEN * 2];
        assert!(read_exact(&file_with(&content), content.len() as u64 + 1).is_none());
        assert!(read_exact(&file_with(&content), content.len() as u64 - 1).is_none());
        assert!(read_exact(&file_with(b"hello"), 4).is_none());
    }
}
