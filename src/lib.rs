//! Herald: a real-time notification edge server.
//!
//! A notification flows config → auth/session → route → store (commit) → broker → hub → stream:
//!
//! - `cli`: the command line (`serve`, `token`, `publish`); builds `Config` and `Keys`.
//! - `server`, `shutdown`, `connect_limit`, `send_timeout`: accept loop, one hyper task per
//!   connection (head size cap, send timeout), `--max-connect-rate`, the background tasks,
//!   drain on SIGTERM; `server::observe` gives every request its id, log span and count.
//! - `routes`: the HTTP endpoints, one family per file; `routes::body` builds every response,
//!   error bodies included.
//! - `auth`, `forwarded`: JWT keys and claims, sessions and callers, the Origin rule; the
//!   connection's `ConnInfo` and the client's address and scheme (trusted proxies only).
//! - `sse`: frame encoding and the per-stream state machine.
//! - `state`: `AppState`, the cheap-to-clone handle every handler gets.
//! - `publish`: the publish service (HTTP, ingest and `herald publish` share it); `ingest`: the
//!   Redis ingest stream; `retention`: purging old notifications, one node at a time; `due`:
//!   deliveries, snooze ends and expiries as they come due, on every node;
//!   `upstream`: the `/api/` upstream client.
//! - `store`: trays, change logs, sessions, groups, presence (memory or Redis).
//! - `broker`: changes and stream controls between nodes (Redis sharded pub/sub);
//!   `redis_conn`: the one connection type for one Redis server or a cluster, with
//!   deadlines, fail-fast while Redis is away and a probe that brings it back.
//! - `hub`: this node's live streams by user; fan-out without copying payloads.
//! - `config`: `Config` and `Backend`, typed and validated.
//! - `model`, `error`, `metrics`: the nouns and ids, the error type, the counters;
//!   `request_id`: the id that names each HTTP request in responses, upstream calls and logs.
//!
//! # Layers
//!
//! Each module imports only from layers below it (or its own folder's `mod.rs`), bottom up:
//! domain (`model`, `error`, `auth::jwt`, `sse::frame`, `metrics`, `shutdown`, `request_id`) →
//! `config` → backends (`redis_conn`, `hub`, then `store`, then `broker`) → services
//! (`publish`, `ingest`, `retention`, `due`, `upstream`) → `state` (builds, spawns nothing) →
//! HTTP (`routes`,
//! `auth::{session, origin}`, `sse::stream`, `forwarded`, `connect_limit`, `send_timeout`) →
//! `server` (starts every task) → `cli` (the only code that sees clap). Modules are private;
//! the one public item is [`main`]. `docs/architecture.md` draws the layers and
//! `scripts/module_graph.py` checks them.

mod auth;
mod broker;
mod cli;
mod config;
mod connect_limit;
mod due;
mod error;
mod forwarded;
mod hub;
mod ingest;
mod metrics;
mod model;
mod pem;
mod publish;
mod push;
mod redis_conn;
mod request_id;
mod retention;
mod routes;
mod send_timeout;
mod server;
mod shutdown;
mod sse;
mod state;
mod store;
mod upstream;

pub use cli::main;

/// What `benches/hot_path.rs` measures, re-exported only with the `bench-internals` feature
/// (normal builds keep every module private): encoding a change once, a recipient's
/// notification JSON, the memory store's publish, parsing a channel message, routing a change
/// to streams, writing it to a socket and verifying a publisher's token.
#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub mod bench {
    pub use crate::auth::jwt::{Checks, Keys};
    pub use crate::broker::Message;
    pub use crate::hub::{Delivery, EndReason, Hub, Sink};
    pub use crate::metrics::Metrics;
    pub use crate::model::{
        new_ids, Change, ChangeKind, Epoch, ItemState, NotificationInput, Template,
    };
    pub use crate::sse::frame::change as encode_change;
    pub use crate::sse::Output;
    pub use crate::store::{MemoryStore, Recipient};
}
