//! One client stream of a worker: connect from a rotating loopback source address, send
//! `GET /events` (Herald, with a user JWT) or `GET /sub/<user>` (nchan), wait for the stream to
//! be ready, then read events until the socket closes, reconnecting with `Last-Event-ID` as a
//! browser would. Every event is recorded in the worker's [`State`]; nothing here waits
//! unboundedly (opens have a deadline, reconnects are counted and capped).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::state::State;
use crate::wire::{self, Body, Event, Sse};

/// Which server the streams talk to.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Kind {
    Herald,
    Nchan,
}

/// After the server closes a stream, wait this long before reconnecting (browsers wait for
/// `retry:`; shorter here so a closed stream costs less of a measured window).
const RECONNECT_DELAY: Duration = Duration::from_millis(250);
/// Reconnects of one stream within one scenario, at most.
const MAX_RECONNECTS: u32 = 5;
/// Longest wait for a reconnecting stream's ready.
const REOPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// What every stream of a worker shares.
pub struct Ctx {
    pub kind: Kind,
    pub addr: SocketAddr,
    pub secret: String,
    pub sources: Vec<IpAddr>,
    pub next_source: AtomicUsize,
    pub state: Arc<Mutex<State>>,
}

/// An open stream: the socket and its decoders.
pub struct Conn {
    sock: TcpStream,
    body: Body,
    sse: Sse,
}

impl Ctx {
    fn request(&self, user: usize, last_id: Option<&str>) -> String {
        let resume = last_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
        match self.kind {
            Kind::Herald => {
                let exp = wire::now_ns() / 1_000_000_000 + 3 * 3600;
                let claims = json!({"sub": format!("u{user}"), "exp": exp});
                let key = EncodingKey::from_secret(self.secret.as_bytes());
                let jwt = encode(&Header::default(), &claims, &key).expect("HS256 encode");
                format!(
                    "GET /events HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {jwt}\r\n{resume}\r\n",
                    self.addr
                )
            }
            Kind::Nchan => format!(
                "GET /sub/u{user} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n{resume}\r\n",
                self.addr
            ),
        }
    }

    /// Bind to the next source address (so ephemeral ports never run out), then connect.
    async fn connect(&self) -> Result<TcpStream, String> {
        let i = self.next_source.fetch_add(1, Ordering::Relaxed) % self.sources.len();
        let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
        socket
            .bind(SocketAddr::new(self.sources[i], 0))
            .map_err(|e| format!("bind {}: {e}", self.sources[i]))?;
        socket
            .connect(self.addr)
            .await
            .map_err(|e| format!("connect: {e}"))
    }
}

/// Open slot `idx`'s stream (resuming from its last event id, if any) and read until ready:
/// Herald's `ready` event, or for nchan the `200` head (it subscribes before answering).
pub async fn open(ctx: &Ctx, idx: usize) -> Result<Conn, String> {
    let (user, last_id) = ctx.state.lock().unwrap().identity(idx);
    let mut sock = ctx.connect().await?;
    let request = ctx.request(user, last_id.as_deref());
    sock.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 4096];
    let (head, len) = loop {
        let n = sock
            .read(&mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed before the response head".into());
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(found) = wire::head(&raw) {
            break found;
        }
    };
    if head.status != 200 {
        let text = String::from_utf8_lossy(&raw[len..]);
        return Err(format!("HTTP {}: {}", head.status, text.trim()));
    }
    let mut conn = Conn {
        sock,
        body: Body::new(head.chunked),
        sse: Sse::default(),
    };
    let mut ready = ctx.kind == Kind::Nchan;
    ready |= conn.consume(ctx, idx, &raw[len..]);
    while !ready {
        ready = conn.read_some(ctx, idx, &mut buf).await?;
    }
    Ok(conn)
}

impl Conn {
    /// Decode `bytes` and record their events; true if one was `ready`.
    fn consume(&mut self, ctx: &Ctx, idx: usize, bytes: &[u8]) -> bool {
        let mut body = Vec::new();
        self.body.feed(bytes, &mut body);
        let mut events: Vec<Event> = Vec::new();
        self.sse.feed(&body, &mut events);
        if events.is_empty() {
            return false;
        }
        let now = wire::now_ns();
        ctx.state.lock().unwrap().record(idx, &events, now)
    }

    /// One read: false at once if nothing arrived yet, an error when the socket closed.
    async fn read_some(&mut self, ctx: &Ctx, idx: usize, buf: &mut [u8]) -> Result<bool, String> {
        let n = self
            .sock
            .read(buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed by the server".into());
        }
        Ok(self.consume(ctx, idx, &buf[..n]))
    }
}

/// Read slot `idx`'s stream until it closes; then reconnect with its last event id, at most
/// `MAX_RECONNECTS` times. Ends when aborted (the worker closing its streams).
pub async fn read_loop(ctx: Arc<Ctx>, idx: usize, mut conn: Conn) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut reconnects = 0;
    loop {
        while conn.read_some(&ctx, idx, &mut buf).await.is_ok() {}
        ctx.state.lock().unwrap().set_up(idx, false);
        loop {
            if reconnects == MAX_RECONNECTS {
                return;
            }
            reconnects += 1;
            tokio::time::sleep(RECONNECT_DELAY).await;
            if let Ok(Ok(c)) = tokio::time::timeout(REOPEN_TIMEOUT, open(&ctx, idx)).await {
                conn = c;
                break;
            }
        }
        ctx.state.lock().unwrap().reconnected(idx);
    }
}
