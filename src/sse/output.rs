//! Where a stream's bytes go: queued for hyper's response body to pull, or written to the
//! socket at once with one vectored write of the shared frame (chunk-framed for HTTP/1.1,
//! nothing copied), and queued only while the socket is full.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::Arc;

use bytes::{Buf, Bytes};
use tokio::net::TcpStream;

const CRLF: &[u8] = b"\r\n";
/// The chunk that ends a chunked response.
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";
/// Slices handed to one vectored write while flushing a backlog.
const MAX_SLICES: usize = 64;

/// Whether the bytes are on their way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Written, or queued to be.
    Ok,
    /// The socket failed: the stream is over.
    Failed,
}

pub enum Output {
    /// hyper's response body pulls the frames.
    Body(Queue),
    Socket(Socket),
    /// The stream is over; bytes are dropped.
    Closed,
}

/// Bytes waiting, in order, with their total length.
#[derive(Default)]
pub struct Queue {
    parts: VecDeque<Bytes>,
    bytes: usize,
}

impl Queue {
    fn push(&mut self, part: Bytes) {
        if !part.is_empty() {
            self.bytes += part.len();
            self.parts.push_back(part);
        }
    }

    fn pop(&mut self) -> Option<Bytes> {
        let part = self.parts.pop_front()?;
        self.bytes -= part.len();
        Some(part)
    }

    /// Drop the first `n` bytes (written).
    fn consume(&mut self, mut n: usize) {
        self.bytes -= n;
        while n > 0 {
            let Some(front) = self.parts.front_mut() else {
                return;
            };
            if n < front.len() {
                front.advance(n);
                return;
            }
            n -= front.len();
            self.parts.pop_front();
        }
    }
}

pub struct Socket {
    io: Arc<TcpStream>,
    /// HTTP/1.1: each frame is a chunk. HTTP/1.0: the body ends when the connection closes.
    chunked: bool,
    /// What the socket did not take yet (already chunk-framed).
    queue: Queue,
}

impl Output {
    pub fn body() -> Self {
        Output::Body(Queue::default())
    }

    /// Write `frame` (or queue it behind what waits).
    pub fn send(&mut self, frame: Bytes) -> Written {
        match self {
            Output::Body(queue) => queue.push(frame),
            Output::Socket(socket) => return socket.send(frame),
            Output::Closed => {}
        }
        Written::Ok
    }

    /// The next frame for hyper's body.
    pub fn pull(&mut self) -> Option<Bytes> {
        match self {
            Output::Body(queue) => queue.pop(),
            _ => None,
        }
    }

    /// Bytes waiting for the client.
    pub fn backlog(&self) -> usize {
        match self {
            Output::Body(queue) => queue.bytes,
            Output::Socket(socket) => socket.queue.bytes,
            Output::Closed => 0,
        }
    }

    pub fn is_backed_up(&self) -> bool {
        self.backlog() > 0
    }

    /// Switch to writing to `io`, starting with the frames queued so far.
    pub fn attach(&mut self, io: Arc<TcpStream>, chunked: bool) -> Written {
        let Output::Body(queue) = std::mem::replace(self, Output::Closed) else {
            return Written::Failed;
        };
        let mut socket = Socket {
            io,
            chunked,
            queue: Queue::default(),
        };
        let mut written = Written::Ok;
        for frame in queue.parts {
            if socket.send(frame) == Written::Failed {
                written = Written::Failed;
            }
        }
        *self = Output::Socket(socket);
        written
    }

    /// The end of the response: the last chunk (a body ends by itself when hyper pulls
    /// `None`; an HTTP/1.0 body ends when the connection closes).
    pub fn finish(&mut self) -> Written {
        match self {
            Output::Socket(socket) if socket.chunked => {
                socket.write([LAST_CHUNK], || [Bytes::from_static(LAST_CHUNK)])
            }
            _ => Written::Ok,
        }
    }

    /// Write what is queued, as far as the socket takes it.
    pub fn flush(&mut self) -> Written {
        match self {
            Output::Socket(socket) => socket.flush(),
            _ => Written::Ok,
        }
    }

    pub fn close(&mut self) {
        *self = Output::Closed;
    }
}

impl Socket {
    fn send(&mut self, frame: Bytes) -> Written {
        if !self.chunked {
            return self.write([&frame[..]], || [frame.clone()]);
        }
        let mut head = [0u8; 18];
        let head = chunk_head(&mut head, frame.len());
        self.write([head, &frame[..], CRLF], || {
            [
                Bytes::copy_from_slice(head),
                frame.clone(),
                Bytes::from_static(CRLF),
            ]
        })
    }

    /// Write `pieces` at once when nothing waits; when the socket doesn't take them all,
    /// queue the rest of `owned()` (the same bytes as owned parts, built only then).
    fn write<const N: usize>(
        &mut self,
        pieces: [&[u8]; N],
        owned: impl FnOnce() -> [Bytes; N],
    ) -> Written {
        let total: usize = pieces.iter().map(|p| p.len()).sum();
        let mut written = 0;
        if self.queue.bytes == 0 {
            match self.io.try_write_vectored(&pieces.map(IoSlice::new)) {
                Ok(n) if n == total => return Written::Ok,
                Ok(n) => written = n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return Written::Failed,
            }
        }
        for mut part in owned() {
            let skip = written.min(part.len());
            written -= skip;
            part.advance(skip);
            self.queue.push(part);
        }
        Written::Ok
    }

    fn flush(&mut self) -> Written {
        while self.queue.bytes > 0 {
            let slices: Vec<IoSlice<'_>> = self
                .queue
                .parts
                .iter()
                .take(MAX_SLICES)
                .map(|p| IoSlice::new(p))
                .collect();
            match self.io.try_write_vectored(&slices) {
                Ok(0) => return Written::Failed,
                Ok(n) => self.queue.consume(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return Written::Failed,
            }
        }
        Written::Ok
    }
}

/// `<length in hex>\r\n`, in `buf`.
fn chunk_head(buf: &mut [u8; 18], len: usize) -> &[u8] {
    let digits = format_hex(len, &mut buf[..16]);
    let end = digits + 2;
    buf[digits..end].copy_from_slice(CRLF);
    &buf[..end]
}

/// Lower-case hex of `n` at the start of `out`; returns its length.
fn format_hex(n: usize, out: &mut [u8]) -> usize {
    let digits = ((usize::BITS - n.leading_zeros()).div_ceil(4)).max(1) as usize;
    for (i, byte) in out[..digits].iter_mut().enumerate() {
        let shift = 4 * (digits - 1 - i);
        *byte = b"0123456789abcdef"[(n >> shift) & 0xf];
    }
    digits
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// Chunk heads are the length in lower-case hex and CRLF.
    #[test]
    fn chunk_heads() {
        let mut buf = [0u8; 18];
        assert_eq!(chunk_head(&mut buf, 0), b"0\r\n");
        assert_eq!(chunk_head(&mut buf, 100), b"64\r\n");
        assert_eq!(chunk_head(&mut buf, 0xabcdef), b"abcdef\r\n");
    }

    /// Consuming across parts drops whole parts and advances into the next.
    #[test]
    fn queue_consumes_across_parts() {
        let mut q = Queue::default();
        q.push(Bytes::from_static(b"abc"));
        q.push(Bytes::from_static(b"defg"));
        q.consume(5);
        assert_eq!(q.bytes, 2);
        assert_eq!(q.pop().as_deref(), Some(&b"fg"[..]));
    }

    async fn pair() -> (Arc<TcpStream>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, (server, _)) =
            tokio::join!(client, async { listener.accept().await.unwrap() });
        (Arc::new(server), client.unwrap())
    }

    /// Frames queued for the body are written chunk-framed once the socket takes over, and
    /// the last chunk ends the response.
    #[tokio::test]
    async fn socket_writes_chunks_and_the_last_chunk() {
        let (server, mut client) = pair().await;
        let mut out = Output::body();
        out.send(Bytes::from_static(b"hello"));
        assert_eq!(out.attach(server, true), Written::Ok);
        out.send(Bytes::from_static(b"event: x\n\n"));
        out.finish();
        out.close();
        let mut got = String::new();
        client.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "5\r\nhello\r\na\r\nevent: x\n\n\r\n0\r\n\r\n");
    }

    /// A client that doesn't read fills the socket; the rest waits in the queue, in order,
    /// and arrives whole once it reads.
    #[tokio::test]
    async fn a_full_socket_queues_the_rest() {
        let (server, mut client) = pair().await;
        let mut out = Output::body();
        out.attach(server, false);
        let frame = Bytes::from(vec![b'x'; 64 * 1024]);
        let mut sent = 0;
        while !out.is_backed_up() {
            out.send(frame.clone());
            sent += frame.len();
        }
        let reader = tokio::spawn(async move {
            let mut n = 0;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match client.read(&mut buf).await.unwrap() {
                    0 => return n,
                    k => n += k,
                }
            }
        });
        let Output::Socket(socket) = &mut out else {
            unreachable!()
        };
        while socket.queue.bytes > 0 {
            socket.io.writable().await.unwrap();
            assert_eq!(socket.flush(), Written::Ok);
        }
        out.close();
        assert_eq!(reader.await.unwrap(), sent);
    }
}
