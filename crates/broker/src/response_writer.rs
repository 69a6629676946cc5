//! Writes a [`Response`] to a non-blocking socket: bytes chunks with `send`, file chunks with
//! `sendfile(2)` so record bytes go from the page cache to the socket without entering user
//! space.
//!
//! A copying path (`pread` into a reused buffer, then `send`) sits behind the same writer. It
//! is used when the kernel refuses `sendfile` for this file/socket pair (`EINVAL`, `ENOSYS`),
//! and can be chosen with [`WriteMode::Copy`] so benchmarks can compare both (see DESIGN.md
//! §3: on loopback `sendfile` is not always the faster one).
//!
//! Before a file chunk is sent, the page cache is asked whether it holds the chunk
//! (`cold_read.rs`): a resident chunk goes out with one `sendfile` as before; one that is not
//! is sent piece by piece ([`ColdReads::chunk_bytes`]), each resident piece with `sendfile` and
//! each other one read uncached on the cold-read pool and sent from that buffer, so no async
//! worker waits for the disk and catch-up reads do not evict the hot tail.
//!
//! Every send goes through tokio's readiness (`writable().await` + `try_io`), so a partial
//! send simply waits for the socket to drain. Nothing is buffered beyond the response being
//! written, which is what bounds memory for a client that stops reading.

use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use rustix::io::Errno;
use rustix::net::SendFlags;
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::cold_read::{self, ColdReads, ReadPath, ReadPathPolicy};
use crate::error::ConnectionError;
use crate::metrics::Metrics;
use crate::response::{Chunk, Response};
use rill_storage::page_cache;
use rill_storage::FileSlice;

/// How file chunks are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteMode {
    /// `sendfile(2)` from the segment file to the socket (the default; zero copy).
    #[default]
    Sendfile,
    /// `pread` into a buffer, then `send`; what TLS will need, and the benchmark baseline.
    Copy,
}

impl std::str::FromStr for WriteMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sendfile" => Ok(WriteMode::Sendfile),
            "copy" => Ok(WriteMode::Copy),
            other => Err(format!("unknown write mode {other:?} (sendfile|copy)")),
        }
    }
}

/// Size of the per-connection copy buffer. Allocated only when the copy path first runs.
const COPY_BUFFER_BYTES: usize = 1 << 20;

/// Largest single `sendfile` call. Large calls cost fewer syscalls (DESIGN.md: 16 MiB calls
/// were the fastest measured); the kernel caps a call near 2 GiB anyway.
const SENDFILE_CALL_BYTES_MAX: u64 = 16 << 20;

/// One per connection: owns the copy buffer and remembers whether `sendfile` works here.
pub struct ResponseWriter {
    mode: WriteMode,
    copy_buffer: Vec<u8>,
    /// The broker's cold-read pool; `None` sends every chunk as hot (no residency check).
    cold: Option<Arc<ColdReads>>,
    metrics: Arc<Metrics>,
}

impl ResponseWriter {
    /// A writer for one connection; the copy buffer is allocated only if the copy path runs.
    pub fn new(
        mode: WriteMode,
        cold: Option<Arc<ColdReads>>,
        metrics: Arc<Metrics>,
    ) -> ResponseWriter {
        ResponseWriter {
            mode,
            copy_buffer: Vec::new(),
            cold,
            metrics,
        }
    }

    /// Sends every chunk of `response`, in order, completely.
    ///
    /// # Errors
    /// Socket errors, and [`ConnectionError::FileShrunk`] when a segment file is shorter than
    /// the range storage gave us (a retention race): the size prefix is already on the wire,
    /// so the only honest answer is closing the connection.
    pub async fn write(
        &mut self,
        stream: &TcpStream,
        response: &Response,
    ) -> Result<(), ConnectionError> {
        let chunks = response.chunks();
        for (index, chunk) in chunks.iter().enumerate() {
            let more_follows = index + 1 < chunks.len();
            match chunk {
                Chunk::Bytes(bytes) => send_all(stream, bytes, more_follows).await?,
                Chunk::File(slice) => self.write_file(stream, slice, more_follows).await?,
            }
        }
        Ok(())
    }

    /// Sends one file chunk: whole with `sendfile` when resident (or when the policy says
    /// hot), else piece by piece, hot pieces from the page cache and cold ones from the pool.
    async fn write_file(
        &mut self,
        stream: &TcpStream,
        slice: &FileSlice,
        more_follows: bool,
    ) -> Result<(), ConnectionError> {
        let total_bytes = u64::from(slice.len);
        let policy = self
            .cold
            .as_ref()
            .map_or(ReadPathPolicy::Hot, |c| c.policy());
        let whole = match policy {
            ReadPathPolicy::Hot => ReadPath::Hot,
            _ => cold_read::choose(
                policy,
                &page_cache::residency(&slice.file, slice.position, total_bytes),
            ),
        };
        if whole == ReadPath::Hot {
            self.count_hot(total_bytes);
            return self.write_hot(stream, slice, more_follows).await;
        }
        let Some(cold) = self.cold.clone() else {
            unreachable!("a cold choice needs a cold-read pool (policy is Hot without one)");
        };
        let chunk_bytes = cold.chunk_bytes() as u64;
        let mut done_bytes: u64 = 0;
        while done_bytes < total_bytes {
            let piece_bytes = (total_bytes - done_bytes).min(chunk_bytes);
            let piece = FileSlice {
                file: Arc::clone(&slice.file),
                position: slice.position + done_bytes,
                // Fits: at most the slice's own u32 length.
                len: piece_bytes as u32,
            };
            let piece_more = more_follows || done_bytes + piece_bytes < total_bytes;
            let path = cold_read::choose(
                policy,
                &page_cache::residency(&piece.file, piece.position, piece_bytes),
            );
            if path == ReadPath::Hot {
                self.count_hot(piece_bytes);
                self.write_hot(stream, &piece, piece_more).await?;
            } else {
                let chunk = cold
                    .read(
                        Arc::clone(&piece.file),
                        piece.position,
                        piece_bytes as usize,
                    )
                    .await?;
                if chunk.bytes.len() as u64 != piece_bytes {
                    return Err(ConnectionError::FileShrunk {
                        position: slice.position,
                        len: slice.len,
                    });
                }
                Metrics::add(&self.metrics.cold_reads_total, 1);
                Metrics::add(&self.metrics.cold_read_bytes_total, piece_bytes);
                send_all(stream, &chunk.bytes, piece_more).await?;
            }
            done_bytes += piece_bytes;
        }
        Ok(())
    }

    fn count_hot(&self, bytes: u64) {
        Metrics::add(&self.metrics.hot_reads_total, 1);
        Metrics::add(&self.metrics.hot_read_bytes_total, bytes);
    }

    /// Sends a range from the page cache: `sendfile`, or the copying path.
    async fn write_hot(
        &mut self,
        stream: &TcpStream,
        slice: &FileSlice,
        more_follows: bool,
    ) -> Result<(), ConnectionError> {
        let mut sent_bytes: u64 = 0;
        if self.mode == WriteMode::Sendfile {
            match sendfile_all(stream, slice, &self.metrics).await {
                Ok(()) => return Ok(()),
                Err(SendfileError::Unsupported { sent_bytes: sent }) => {
                    tracing::warn!("sendfile unsupported here; using the copying path");
                    self.mode = WriteMode::Copy;
                    sent_bytes = sent;
                }
                Err(SendfileError::Io(e)) => return Err(ConnectionError::Io(e)),
                Err(SendfileError::Shrunk) => {
                    return Err(ConnectionError::FileShrunk {
                        position: slice.position,
                        len: slice.len,
                    })
                }
            }
        }
        self.copy_file(stream, slice, sent_bytes, more_follows)
            .await
    }

    /// The copying path: `pread` a buffer's worth (a page-cache copy, microseconds, so it runs
    /// inline like storage's own reads) and send it, until the slice is done.
    async fn copy_file(
        &mut self,
        stream: &TcpStream,
        slice: &FileSlice,
        mut done_bytes: u64,
        more_follows: bool,
    ) -> Result<(), ConnectionError> {
        if self.copy_buffer.is_empty() {
            self.copy_buffer = vec![0u8; COPY_BUFFER_BYTES];
        }
        let total_bytes = u64::from(slice.len);
        while done_bytes < total_bytes {
            let want = (total_bytes - done_bytes).min(COPY_BUFFER_BYTES as u64) as usize;
            let buf = &mut self.copy_buffer[..want];
            let n = slice.file.read_at(buf, slice.position + done_bytes)?;
            if n == 0 {
                return Err(ConnectionError::FileShrunk {
                    position: slice.position,
                    len: slice.len,
                });
            }
            let last = done_bytes + n as u64 == total_bytes;
            send_all(stream, &self.copy_buffer[..n], more_follows || !last).await?;
            done_bytes += n as u64;
            Metrics::add(&self.metrics.copied_bytes_total, n as u64);
        }
        Ok(())
    }
}

enum SendfileError {
    /// The kernel cannot sendfile from this file to this socket; `sent_bytes` already went.
    Unsupported {
        sent_bytes: u64,
    },
    Shrunk,
    Io(io::Error),
}

async fn sendfile_all(
    stream: &TcpStream,
    slice: &FileSlice,
    metrics: &Metrics,
) -> Result<(), SendfileError> {
    let end = slice.position + u64::from(slice.len);
    let mut offset = slice.position;
    while offset < end {
        stream.writable().await.map_err(SendfileError::Io)?;
        let count = (end - offset).min(SENDFILE_CALL_BYTES_MAX) as usize;
        let result = stream.try_io(Interest::WRITABLE, || {
            rustix::fs::sendfile(stream, &*slice.file, Some(&mut offset), count)
                .map_err(io::Error::from)
        });
        match result {
            Ok(0) => return Err(SendfileError::Shrunk),
            // The kernel advanced `offset` by `n`.
            Ok(n) => Metrics::add(&metrics.sendfile_bytes_total, n as u64),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if is_unsupported(&e) => {
                return Err(SendfileError::Unsupported {
                    sent_bytes: offset - slice.position,
                })
            }
            Err(e) => return Err(SendfileError::Io(e)),
        }
    }
    Ok(())
}

fn is_unsupported(e: &io::Error) -> bool {
    let code = e.raw_os_error();
    code == Some(Errno::INVAL.raw_os_error()) || code == Some(Errno::NOSYS.raw_os_error())
}

/// Sends all of `bytes`. With `more_follows`, passes `MSG_MORE` so the kernel may coalesce a
/// small header with the file bytes that follow instead of sending a tiny segment.
async fn send_all(stream: &TcpStream, bytes: &[u8], more_follows: bool) -> io::Result<()> {
    let flags = if more_follows {
        SendFlags::MORE | SendFlags::NOSIGNAL
    } else {
        SendFlags::NOSIGNAL
    };
    let mut done = 0;
    while done < bytes.len() {
        stream.writable().await?;
        let result = stream.try_io(Interest::WRITABLE, || {
            rustix::net::send(stream, &bytes[done..], flags).map_err(io::Error::from)
        });
        match result {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
