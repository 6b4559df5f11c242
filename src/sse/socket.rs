//! The socket transport of a stream (plain HTTP/1.x `/events`, off hyper once the request
//! head is answered): live changes are written straight from the hub, so this task only
//! waits while there is something it must do: a full socket to drain (for at most
//! `--send-timeout` at a time), a catch-up from the store, the stream's end, or a client that
//! closes (or half-closes) its side. Bytes a client sends after its `/events` request are
//! read and dropped: nothing more is answered on this connection.

use std::future::poll_fn;
use std::io;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::net::TcpStream;

use super::stream::{Handle, Work};

/// Reads of a client's stray bytes per wake-up, so a client that floods can't hold a worker.
const MAX_READS: usize = 16;

/// Run the stream until it ends or the client goes; dropping `handle` then takes it out of
/// the hub, and the socket closes once the stream lets go of it too.
pub async fn run(handle: Handle, io: Arc<TcpStream>, send_timeout: Duration) {
    loop {
        match handle.stream().work() {
            Work::Close | Work::Frame(_) => break,
            // Boxed, like the timer below: rare, and kept out of every idle stream's task.
            Work::CatchUp => Box::pin(handle.catch_up_or_wait()).await,
            Work::Flush => {
                // The timer exists only while a client is behind.
                // A client behind for `--send-timeout` (or a failed socket) ends the stream.
                match Box::pin(tokio::time::timeout(send_timeout, io.writable())).await {
                    Ok(Ok(())) => handle.flush(),
                    _ => break,
                }
            }
            // Polled by hand, not `select!` on `woken()` and `readable()`: those futures
            // carry waiter nodes, which made every idle stream's task twice the size.
            Work::Idle => {
                let gone = poll_fn(|cx| {
                    if handle.stream().poll_woken(cx).is_ready() {
                        return Poll::Ready(false);
                    }
                    match io.poll_read_ready(cx) {
                        Poll::Ready(Ok(())) => Poll::Ready(client_gone(&io)),
                        Poll::Ready(Err(_)) => Poll::Ready(true),
                        Poll::Pending => Poll::Pending,
                    }
                })
                .await;
                if gone {
                    break;
                }
            }
        }
    }
}

/// Read what the client sent; true when it closed its side (or the socket failed).
fn client_gone(io: &TcpStream) -> bool {
    let mut buf = [0u8; 512];
    for _ in 0..MAX_READS {
        match io.try_read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
    false
}
