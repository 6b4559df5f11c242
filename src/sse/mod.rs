//! The last mile: SSE framing (`frame`, each change encoded once), the per-stream state that
//! the hub hands changes to (`stream`), where its bytes go (`output`), what drops a hyper
//! stream's carrier when its backlog overflows (`abort`), the socket
//! transport that holds a plain HTTP/1.x stream off hyper (`socket`), an operator's live
//! tail of one user's changes (`tail`), how either wakes its transport (`wake`), and the
//! mark of a client that closed its connection before its stream opened (`went`).

mod abort;
mod admission;
pub(crate) mod frame;
mod output;
pub(crate) mod socket;
pub(crate) mod stream;
pub(crate) mod tail;
mod wake;
mod went;

#[cfg(feature = "bench-internals")]
pub use self::output::Output;
