//! The last mile: SSE framing (`frame`, each change encoded once), the per-stream state that
//! the hub hands changes to (`stream`), where its bytes go (`output`), and the socket
//! transport that holds a plain HTTP/1.x stream off hyper (`socket`).

pub(crate) mod frame;
mod output;
pub(crate) mod socket;
pub(crate) mod stream;

#[cfg(feature = "bench-internals")]
pub use self::output::Output;
