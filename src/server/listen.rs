//! The listening sockets: several on the one `--listen` address (`SO_REUSEPORT`), each with
//! its own accept queue, so a burst of reconnects (every stream of a node at once) waits in
//! the kernel instead of being dropped, and one accept loop taking from whichever is ready.

use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll};

use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Connections the kernel queues per socket; it caps this at `net.core.somaxconn` (4096 on
/// current Linux). tokio's `bind` asks for 128 (mio follows std), which overflowed when every
/// stream of a node reconnected at once: a dropped handshake waits for the client's
/// retransmission (a second, then more), which turned a 3 s reconnect storm into 8 s now and
/// then.
const BACKLOG: u32 = 65_535;

/// Sockets on the address. Linux spreads new connections over them by their addresses and
/// ports, so the node queues this many times `somaxconn`: 8 × 4096 holds a reconnect storm
/// of the 20,000 streams one process can keep (its open-files limit here), where one queue
/// dropped 4,600–9,300 handshakes of 19,000, each then retried a second later.
const QUEUES: usize = 8;

/// The node's listening sockets.
pub struct Listeners {
    sockets: Vec<TcpListener>,
    /// Where the next accept starts looking, so no queue waits behind a busy one.
    next: usize,
}

impl Listeners {
    /// Bind [`QUEUES`] sockets on `addr` (port 0: one free port for all). The address is
    /// first bound once without `SO_REUSEPORT`, which fails while any process listens there,
    /// so a second Herald on the same port is refused at start-up rather than handed part of
    /// its connections (two started within the same microseconds are not told apart). That
    /// socket stays bound until the others listen, so no other bind is given the port in
    /// between. Where the system has no `SO_REUSEPORT`, it listens alone.
    pub fn bind(addr: SocketAddr) -> io::Result<Listeners> {
        let probe = socket(addr)?;
        probe.bind(addr)?;
        let addr = probe.local_addr()?;
        if let Err(e) = socket(addr)?.set_reuseport(true) {
            tracing::warn!(error = %e, "no SO_REUSEPORT here: one accept queue");
            let sockets = vec![probe.listen(BACKLOG)?];
            return Ok(Listeners { sockets, next: 0 });
        }
        let sockets = (0..QUEUES)
            .map(|_| {
                let socket = socket(addr)?;
                socket.set_reuseport(true)?;
                socket.bind(addr)?;
                socket.listen(BACKLOG)
            })
            .collect::<io::Result<_>>()?;
        drop(probe);
        Ok(Listeners { sockets, next: 0 })
    }

    /// The bound address (with the port chosen for port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sockets[0].local_addr()
    }

    /// The next connection from any of the sockets.
    pub async fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(TcpStream, SocketAddr)>> {
        let count = self.sockets.len();
        for step in 0..count {
            let at = (self.next + step) % count;
            if let Poll::Ready(accepted) = self.sockets[at].poll_accept(cx) {
                self.next = (at + 1) % count;
                return Poll::Ready(accepted);
            }
        }
        Poll::Pending
    }
}

/// A TCP socket for `addr`'s family with address reuse on (as tokio's `bind` does).
fn socket(addr: SocketAddr) -> io::Result<TcpSocket> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_queue_is_served_and_the_port_is_taken() {
        let mut listeners = Listeners::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listeners.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        assert_eq!(listeners.sockets.len(), QUEUES);
        assert!(listeners
            .sockets
            .iter()
            .all(|s| s.local_addr().unwrap() == addr));
        // Another bind of the address fails, as for a single socket.
        assert_eq!(
            Listeners::bind(addr).err().map(|e| e.kind()),
            Some(io::ErrorKind::AddrInUse)
        );
        // Connections from many source ports land in several queues; all are accepted.
        let clients: Vec<_> = (0..64)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        for _ in &clients {
            let accepted =
                tokio::time::timeout(std::time::Duration::from_secs(5), listeners.accept());
            accepted.await.expect("accepted in time").unwrap();
        }
    }
}
