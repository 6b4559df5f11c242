//! Herald: a real-time notification edge server.
//!
//! A notification flows config → auth/session → route → store (commit) → broker → hub → stream:
//!
//! - `cli`, `config`: the command line and its typed, validated form.
//! - `server`, `shutdown`, `connect_limit`, `send_timeout`: accept loop, one hyper task per
//!   connection (head size cap, send timeout), `--max-connect-rate`, drain on SIGTERM.
//! - `state`: `AppState`, the cheap-to-clone handle every handler gets.
//! - `auth`, `forwarded`: JWT keys, sessions and callers, the Origin rule; the client's
//!   address and scheme (trusted proxies only).
//! - `routes`: the HTTP endpoints; `error` maps failures to the JSON error body.
//! - `store`: trays, change logs, sessions, groups, presence (memory or Redis).
//! - `broker`: changes and stream controls between nodes (Redis sharded pub/sub);
//!   `redis_conn`: the one connection type for one Redis server or a cluster, with
//!   deadlines, fail-fast while Redis is away and a probe that brings it back.
//! - `hub`: this node's live streams by user; fan-out without copying payloads.
//! - `sse`: frame encoding and the per-stream state machine.
//! - `cleaner`: retention, on one node at a time; `ingest`: the Redis ingest stream.
//! - `model`, `metrics`, `commands` (`herald token` / `herald publish`).

mod auth;
mod broker;
mod cli;
mod config;
mod connect_limit;
mod error;
mod forwarded;
mod hub;
mod ingest;
mod metrics;
mod model;
mod publish;
mod redis_conn;
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
