//! The file service: accounts and a private file space per user, over the
//! framed port. [`server`] answers the messages; [`client`] speaks them for
//! `sockit put`, `get`, `ls`, `rm`, `mv` and `mkdir`. Every message is
//! documented in `docs/protocol.md`.

pub mod client;
pub mod commands;
pub mod server;

/// Message types this service answers (after `auth` or `login`).
pub const MESSAGES: &[&str] = &["put", "get", "ls", "stat", "rm", "mv", "mkdir"];

/// Files up to this size may be sent inline (header, body and hash in one
/// message), which lets a client pipeline many small uploads.
pub const MAX_INLINE: u64 = 1024 * 1024;

/// Bytes read from or written to disk at a time during a transfer.
pub const TRANSFER_CHUNK: usize = 256 * 1024;

/// Chunks in flight between the disk thread and the socket per transfer.
const PIPE_DEPTH: usize = 4;

/// Disk side of a transfer, on a blocking thread: disk I/O and hashing run
/// beside the network I/O instead of taking turns with it, and at most
/// [`PIPE_DEPTH`] chunks are in flight.
pub mod pipe {
    use std::io::{Read, Write};
    use std::sync::Arc;

    use bytes::Bytes;
    use tokio::sync::mpsc;
    use tokio::task::JoinHandle;

    use super::{PIPE_DEPTH, TRANSFER_CHUNK};

    /// Reads `len` bytes of `file` from its current position, hashing them
    /// into `hasher`; the chunks arrive on the receiver. The task returns the
    /// hasher, or the read error (including the file ending early).
    ///
    /// The task holds a blocking thread until the receiver has taken every
    /// chunk: right for the client, which sends its own file, wrong for a
    /// server, where the receiver's pace is a peer's; the server's downloads
    /// use [`Chunks`].
    pub fn reader(
        mut file: std::fs::File,
        len: u64,
        mut hasher: blake3::Hasher,
    ) -> (
        mpsc::Receiver<Bytes>,
        JoinHandle<std::io::Result<blake3::Hasher>>,
    ) {
        let (tx, rx) = mpsc::channel(PIPE_DEPTH);
        let task = tokio::task::spawn_blocking(move || {
            let mut left = len;
            while left > 0 {
                let mut buf = vec![0u8; left.min(TRANSFER_CHUNK as u64) as usize];
                let mut filled = 0;
                while filled < buf.len() {
                    match file.read(&mut buf[filled..]) {
                        Ok(0) => {
                            return Err(std::io::Error::new(
                                std::io::ErrorKind::UnexpectedEof,
                                "the file got shorter while it was being read",
                            ))
                        }
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                hasher.update(&buf);
                left -= buf.len() as u64;
                if tx.blocking_send(Bytes::from(buf)).is_err() {
                    // The receiver gave up; its error is what matters.
                    break;
                }
            }
            Ok(hasher)
        });
        (rx, task)
    }

    /// A download's disk side on a server: each [`Chunks::next`] reads and
    /// hashes one chunk in a short blocking task
    /// ([`crate::store::read::read_hashed`]), so a peer that stops reading
    /// holds no thread, only the chunk being sent and the one read ahead.
    pub struct Chunks {
        file: Arc<std::fs::File>,
        at: u64,
        end: u64,
        /// The hash so far; out with the read in flight, so a read dropped
        /// half-way leaves `None` and the download cannot claim a hash.
        hasher: Option<blake3::Hasher>,
    }

    impl Chunks {
        /// `len` bytes of `file` from `at`, hashed into `hasher` (which
        /// already covers what comes before `at`).
        pub fn new(file: Arc<std::fs::File>, at: u64, len: u64, hasher: blake3::Hasher) -> Chunks {
            Chunks {
                file,
                at,
                end: at + len,
                hasher: Some(hasher),
            }
        }

        /// The next chunk (at most [`TRANSFER_CHUNK`] bytes), `None` at the
        /// end, or the read error (including the file ending early).
        pub async fn next(&mut self) -> std::io::Result<Option<Bytes>> {
            if self.at >= self.end {
                return Ok(None);
            }
            let want = (self.end - self.at).min(TRANSFER_CHUNK as u64) as usize;
            let hasher = self.hasher.take().ok_or_else(interrupted)?;
            let (chunk, hasher) =
                crate::store::read::read_hashed(self.file.clone(), self.at, want, hasher).await?;
            self.hasher = Some(hasher);
            self.at += want as u64;
            Ok(Some(chunk))
        }

        /// The hash of the whole file, once every chunk has been read.
        pub fn finish(self) -> std::io::Result<blake3::Hasher> {
            if self.at < self.end {
                return Err(interrupted());
            }
            self.hasher.ok_or_else(interrupted)
        }
    }

    fn interrupted() -> std::io::Error {
        std::io::Error::other("a read of this download was interrupted")
    }

    /// What a writer ends with: the file (unsynced), the hash of everything
    /// written through it (after any prefix), and the bytes written.
    pub type Written = (std::fs::File, blake3::Hasher, u64);

    /// Writes and hashes the chunks sent to it; dropping the sender ends the
    /// stream. The task returns the file (unsynced) and the hasher.
    pub fn writer(
        mut file: std::fs::File,
        mut hasher: blake3::Hasher,
    ) -> (mpsc::Sender<Bytes>, JoinHandle<std::io::Result<Written>>) {
        let (tx, mut rx) = mpsc::channel::<Bytes>(PIPE_DEPTH);
        let task = tokio::task::spawn_blocking(move || {
            let mut written = 0u64;
            let mut flushed = 0u64;
            let start = std::io::Seek::stream_position(&mut file)?;
            while let Some(chunk) = rx.blocking_recv() {
                hasher.update(&chunk);
                file.write_all(&chunk)?;
                written += chunk.len() as u64;
                if written - flushed >= WRITEBACK_EVERY {
                    start_writeback(&file, start + flushed, written - flushed);
                    flushed = written;
                }
            }
            Ok((file, hasher, written))
        });
        (tx, task)
    }

    /// How much written data may wait before its writeback is started.
    const WRITEBACK_EVERY: u64 = 32 * 1024 * 1024;

    /// Starts writing a range of the file to disk without waiting for it, so
    /// the fsync at the end of a large transfer has little left to do and the
    /// page cache does not fill with dirty data (Linux; elsewhere a no-op).
    fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: a plain system call on a descriptor we own; it only
            // schedules writeback and cannot affect memory safety.
            unsafe {
                libc::sync_file_range(
                    file.as_raw_fd(),
                    offset as libc::off64_t,
                    len as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (file, offset, len);
    }

    /// Hashes the first `len` bytes of `file` (the part a resumed transfer
    /// already has), leaving the position after them.
    pub fn hash_prefix(file: &mut std::fs::File, len: u64) -> std::io::Result<blake3::Hasher> {
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; TRANSFER_CHUNK];
        let mut left = len;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = file.read(&mut buf[..want])?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the partial file is shorter than expected",
                ));
            }
            hasher.update(&buf[..n]);
            left -= n as u64;
        }
        Ok(hasher)
    }
}
