//! Disk reads of downloads, one bounded chunk at a time.
//!
//! Every download (the framed `get`, the HTTP API's `/api/files`, the static
//! site's large files) reads its file through [`read_at`] or
//! [`read_hashed`]: one short task on the blocking pool per chunk, started
//! only when the socket has taken the previous one (plus one chunk read
//! ahead), so a client that stops reading holds no thread, only the chunks
//! already read for it.
//!
//! At most [`MAX_TRANSFER_READS`] of these tasks run at once across the
//! process; a download waits for a permit (first come, first served) before
//! it reads. That leaves the rest of tokio's blocking pool (512 threads) to
//! accounts and metadata work (Argon2, SQLite sessions, `stat`, `ls`, the
//! static site's lookups), which transfers therefore can never exhaust.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Semaphore;

/// Bytes read from disk per chunk of a download.
pub const READ_CHUNK: usize = 256 * 1024;

/// Most disk reads downloads may run on the blocking pool at once, all
/// downloads together: well below tokio's 512 blocking threads, so accounts
/// and metadata work always find a thread. 64 reads of 256 KiB from the page
/// cache keep tens of GB/s in flight, more than any network link here.
pub const MAX_TRANSFER_READS: usize = 64;

/// The permits of [`MAX_TRANSFER_READS`].
static READS: Semaphore = Semaphore::const_new(MAX_TRANSFER_READS);

/// Blocking reads of downloads in progress right now (for tests and
/// diagnostics).
pub fn reads_in_flight() -> usize {
    MAX_TRANSFER_READS - READS.available_permits()
}

/// Runs one chunk's blocking work under a transfer permit.
async fn transfer_task<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let permit = READS
        .acquire()
        .await
        .map_err(|_| io::Error::other("the transfer read limiter is closed"))?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        f()
    })
    .await
    .map_err(io::Error::other)?
}

/// Reads exactly `want` bytes of `file` at `at` on the blocking pool (see the
/// module docs), or fails if the file got shorter.
pub async fn read_at(file: Arc<std::fs::File>, at: u64, want: usize) -> io::Result<Bytes> {
    transfer_task(move || read_exact_at(&file, at, want)).await
}

/// [`read_at`], hashing the bytes into `hasher` on the same thread; returns
/// the chunk and the hasher.
pub async fn read_hashed(
    file: Arc<std::fs::File>,
    at: u64,
    want: usize,
    mut hasher: blake3::Hasher,
) -> io::Result<(Bytes, blake3::Hasher)> {
    transfer_task(move || {
        let chunk = read_exact_at(&file, at, want)?;
        hasher.update(&chunk);
        Ok((chunk, hasher))
    })
    .await
}

/// Hashes `len` bytes of `file` from `at`, a chunk at a time (the part of a
/// file a resumed download already has).
pub async fn hash_range(
    file: Arc<std::fs::File>,
    mut at: u64,
    len: u64,
    mut hasher: blake3::Hasher,
) -> io::Result<blake3::Hasher> {
    let end = at + len;
    while at < end {
        let want = (end - at).min(READ_CHUNK as u64) as usize;
        (_, hasher) = read_hashed(file.clone(), at, want, hasher).await?;
        at += want as u64;
    }
    Ok(hasher)
}

/// Reads exactly `want` bytes at `at` into a fresh buffer that is never
/// zeroed first (the read fills it), or fails if the file got shorter.
fn read_exact_at(file: &std::fs::File, at: u64, want: usize) -> io::Result<Bytes> {
    let mut buf = bytes::BytesMut::with_capacity(want);
    let mut filled = 0;
    while filled < want {
        // SAFETY: pread writes at most `want - filled` bytes into the spare
        // capacity, which holds at least that many; only the bytes it
        // reports are then counted as initialised (set_len below).
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                buf.as_mut_ptr().add(filled).cast(),
                want - filled,
                (at + filled as u64) as libc::off_t,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file got shorter while it was being sent",
            ));
        }
        filled += n as usize;
        // SAFETY: the first `filled` bytes were written by pread.
        unsafe { buf.set_len(filled) };
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_exact_chunks_and_hashes_them_in_order() {
        let data: Vec<u8> = (0..READ_CHUNK * 2 + 17).map(|i| (i * 7) as u8).collect();
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, &data).unwrap();
        let f = Arc::new(f);
        let got = read_at(f.clone(), 5, 100).await.unwrap();
        assert_eq!(&got[..], &data[5..105]);
        let h = hash_range(f.clone(), 0, data.len() as u64, blake3::Hasher::new())
            .await
            .unwrap();
        assert_eq!(h.finalize(), blake3::hash(&data));
        let short = read_at(f, data.len() as u64 - 1, 2).await.unwrap_err();
        assert_eq!(short.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(reads_in_flight(), 0);
    }
}
