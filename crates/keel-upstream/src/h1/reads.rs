//! Socket reads that start small and grow only while they fill their room, so that a connection
//! carrying small messages (a request head, a stream's chunks) never holds a large buffer.
//! keel's upstream connections and its server's client connections read this way.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use tokio::io::AsyncRead;

/// The first read reserves this much; reads that fill their space double it.
const FIRST_READ: usize = 1024;
/// Reads never reserve more than this.
pub(crate) const MAX_READ: usize = 64 * 1024;

/// How much the next read from a socket reserves.
#[derive(Debug)]
pub struct GrowingReads {
    next: usize,
}

impl Default for GrowingReads {
    fn default() -> GrowingReads {
        GrowingReads { next: FIRST_READ }
    }
}

impl GrowingReads {
    /// Reads more bytes from `io` into `buffer`: how many (0 when the peer closed the
    /// connection). Reserves room first when little is left; a read that fills its room makes
    /// the next one reserve twice as much.
    pub fn poll_fill<IO: AsyncRead + Unpin>(
        &mut self,
        io: &mut IO,
        cx: &mut Context<'_>,
        buffer: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        if buffer.capacity() - buffer.len() < self.next / 2 {
            buffer.reserve(self.next);
        }
        let room = buffer.capacity() - buffer.len();
        let read = ready!(tokio_util::io::poll_read_buf(Pin::new(io), cx, buffer))?;
        if read == room {
            self.next = (self.next * 2).min(MAX_READ);
        }
        Poll::Ready(Ok(read))
    }

    /// Starts again from the first, small read (the buffer was given back).
    pub fn reset(&mut self) {
        self.next = FIRST_READ;
    }
}
