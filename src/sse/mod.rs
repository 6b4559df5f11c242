//! The last mile: SSE framing (`frame`, each change encoded once) and the per-stream state
//! machine that writes `ready`, replay, live changes, pings and the end reason (`stream`).

pub(crate) mod frame;
pub(crate) mod stream;
