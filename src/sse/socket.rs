//! The socket transport of a stream (plain HTTP/1.x `/events`, off hyper once the request
//! head is answered): live changes are written straight from the hub, so this task only
//! waits while there is something it must do: a full socket to drain (for at most
//! `--send-timeout` at a time, less once the node stops), a catch-up from the store, the
//! stream's end, or a client that closes (or half-closes) its side. Bytes a client sends
//! after its `/events` request are read and dropped: nothing more is answered on this
//! connection.

use std::future::poll_fn;
use std::io;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::stream::{Handle, Work};
use crate::shutdown::{Shutdown, STOPPING_SEND_TIMEOUT};

/// Reads of a client's stray bytes per wake-up, so a client that floods can't hold a worker.
const MAX_READS: usize = 16;

/// Run the stream until it ends or the client goes; dropping `handle` then takes it out of
/// the hub and the stream lets go of the socket. Returns the socket when the stream ended on
/// Herald's side (the caller closes it); `None` when the client went (it is closed here).
pub async fn run(
    handle: Handle,
    io: Arc<TcpStream>,
    send_timeout: Duration,
    stop: &Shutdown,
) -> Option<TcpStream> {
    // (One loop in this function, not a helper's future inside it: every idle stream's task
    // holds this future, so each byte of it counts.)
    let ended_here = loop {
        match handle.stream().work() {
            Work::Close | Work::Frame(_) => break true,
            // Boxed, like the timer below: rare, and kept out of every idle stream's task.
            Work::CatchUp => Box::pin(handle.catch_up_or_wait()).await,
            Work::Flush => {
                // The timer exists only while a client is behind.
                // A client behind for `--send-timeout` (or a failed socket) ends the stream.
                if !Box::pin(writable(&io, send_timeout, stop)).await {
                    break true;
                }
                handle.flush();
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
                    break false;
                }
            }
        }
    };
    drop(handle);
    ended_here.then(|| Arc::try_unwrap(io).ok()).flatten()
}

/// Whether the socket takes more within `send_timeout`, or, once the node stops, within
/// [`STOPPING_SEND_TIMEOUT`] of then.
async fn writable(io: &TcpStream, send_timeout: Duration, stop: &Shutdown) -> bool {
    let by = Instant::now() + send_timeout;
    tokio::select! {
        ready = tokio::time::timeout_at(by, io.writable()) => return matches!(ready, Ok(Ok(()))),
        () = stop.wait() => {}
    }
    let by = by.min(Instant::now() + STOPPING_SEND_TIMEOUT);
    matches!(tokio::time::timeout_at(by, io.writable()).await, Ok(Ok(())))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket the peer does not read from: full once `writable` would wait. Once the node
    /// stops, the wait for it is [`STOPPING_SEND_TIMEOUT`], not the send timeout.
    #[tokio::test]
    async fn a_full_socket_is_waited_for_less_once_the_node_stops() {
        let listening = tokio::net::TcpSocket::new_v4().unwrap();
        listening.set_recv_buffer_size(4096).unwrap();
        listening.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = listening.listen(1).unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_send_buffer_size(4096).unwrap();
        let connect = socket.connect(listener.local_addr().unwrap());
        let (server, _peer) = tokio::join!(connect, listener.accept());
        let server = server.unwrap();
        // Full: the peer's receive buffer too (it takes what is in flight a moment later).
        let chunk = [0u8; 4096];
        for _ in 0..100 {
            while server.try_write(&chunk).is_ok() {}
            tokio::time::sleep(Duration::from_millis(20)).await;
            if server.try_write(&chunk).is_err() {
                break;
            }
        }
        let (trigger, stop) = crate::shutdown::channel();
        let wait =
            tokio::spawn(async move { writable(&server, Duration::from_secs(30), &stop).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stopped = Instant::now();
        trigger.fire();
        assert!(!wait.await.unwrap());
        let waited = stopped.elapsed();
        assert!(waited >= STOPPING_SEND_TIMEOUT && waited < 3 * STOPPING_SEND_TIMEOUT);
    }
}
