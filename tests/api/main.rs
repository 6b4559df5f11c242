//! Integration suite: the real `herald` binary over real HTTP, in embedded mode and against a
//! real redis-server. Behaviour tests are written once and run in both modes (`both_modes!`).
//!
//! `common/` is the harness (processes, Redis and cluster fixtures, request helpers, tokens, the
//! SSE reader, raw HTTP, the echo upstream; its `mod.rs` maps the files); every test file
//! starts with `use crate::common::*;`. The other modules are the tests, one area each.

mod common;

mod actions;
mod admin;
mod archive;
mod auth;
mod cli;
mod cluster;
mod collapse;
mod conformance;
mod counts_race;
mod due_nodes;
mod edge;
mod fields;
mod filters;
mod identity;
mod ingest;
#[cfg(feature = "kafka")]
mod kafka;
mod limits;
mod nginx;
mod nodes;
mod observe;
mod ops;
mod outage;
mod preferences;
mod publish;
mod push;
mod retention;
mod schedule;
mod seen;
mod stream;
mod tls;
mod transport;
mod tray;
mod tray_nodes;
