//! What one phase of the race runs on: a fresh Redis (Redis mode), a fresh server (Herald or
//! nginx + nchan), the worker fleet and a publisher, all dropped together at the end of the
//! phase (workers first, Redis last). Also the run's settings: sizes for a full run
//! (`--bench`) and for the smoke run the test suite makes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::fleet::Fleet;
use crate::procs::{self, Server};
use crate::publish::Publisher;
use crate::stream::Kind;

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Mode {
    Embedded,
    Redis,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Embedded => "embedded",
            Mode::Redis => "redis",
        }
    }
}

/// How big each scenario is.
pub struct Sizes {
    /// Streams (one user each) for idle, targeted, group and broadcast.
    pub streams: usize,
    /// `max` stops here if the server hasn't.
    pub max_cap: usize,
    /// Streams in the reconnect storm.
    pub storm: usize,
    /// Targeted publishes per second, and for how long.
    pub rate: u32,
    pub window: Duration,
    /// Targeted publishes per second during the storm.
    pub storm_rate: u32,
    /// Streams per worker process (each process may hold 20,000 files).
    pub per_worker: usize,
    /// Group publishes not yet delivered to every stream, at most, during broadcast.
    pub broadcast_window: u32,
}

impl Sizes {
    pub fn full() -> Sizes {
        Sizes {
            streams: 10_000,
            max_cap: 45_000,
            storm: 19_000,
            rate: 5_000,
            window: Duration::from_secs(10),
            storm_rate: 1_000,
            per_worker: 9_000,
            broadcast_window: 4,
        }
    }

    pub fn smoke() -> Sizes {
        Sizes {
            streams: 50,
            max_cap: 100,
            storm: 50,
            rate: 200,
            window: Duration::from_secs(1),
            storm_rate: 100,
            per_worker: 25,
            broadcast_window: 4,
        }
    }
}

/// The run's settings, from the command line.
pub struct Config {
    pub sizes: Sizes,
    /// Only these scenarios (all when empty).
    pub scenarios: Vec<String>,
    pub targets: Vec<Kind>,
    pub modes: Vec<Mode>,
    pub herald: String,
    pub secret: String,
    /// Logs and nginx prefixes go under here.
    pub dir: PathBuf,
}

impl Config {
    pub fn wants(&self, scenario: &str) -> bool {
        self.scenarios.is_empty() || self.scenarios.iter().any(|s| s == scenario)
    }
}

/// CPU µs used so far by each side.
#[derive(Clone, Copy)]
pub struct Cpu {
    pub server: u64,
    pub redis: u64,
    /// The load generator: the worker processes and this one.
    pub client: u64,
}

/// One phase's processes. Field order is drop order.
pub struct Stage {
    pub fleet: Fleet,
    pub publisher: Arc<Publisher>,
    pub server: Server,
    pub redis: Option<Server>,
    round: u32,
}

impl Stage {
    /// Start Redis (Redis mode), the server and enough workers for `streams`.
    pub async fn start(
        config: &Config,
        kind: Kind,
        mode: Mode,
        phase: &str,
        streams: usize,
    ) -> Result<Stage, String> {
        let dir = config.dir.join(format!("{kind:?}-{}-{phase}", mode.name()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let redis = match mode {
            Mode::Redis => Some(Server::redis(&dir)?),
            Mode::Embedded => None,
        };
        let server = match kind {
            Kind::Herald => Server::herald(&config.herald, &config.secret, redis.as_ref(), &dir)?,
            Kind::Nchan => Server::nchan(redis.as_ref(), &dir)?,
        };
        let addr = server.addr.to_string();
        let per = config.sizes.per_worker;
        let fleet = Fleet::spawn(
            kind,
            &addr,
            &config.secret,
            streams.div_ceil(per).max(1),
            per,
        )?;
        let mut publisher = Publisher::new(kind, &addr, &config.secret);
        if let (Some(redis), Kind::Herald) = (&redis, kind) {
            publisher
                .connect_ingest(&format!("redis://{}", redis.addr))
                .await?;
        }
        Ok(Stage {
            fleet,
            publisher: Arc::new(publisher),
            server,
            redis,
            round: 0,
        })
    }

    /// A new round id (events of earlier rounds then count as stale).
    pub fn next_round(&mut self) -> u32 {
        self.round += 1;
        self.round
    }

    /// CPU used so far.
    pub fn cpu_us(&self) -> Cpu {
        Cpu {
            server: self.server.cpu_us(),
            redis: self.redis.as_ref().map_or(0, Server::cpu_us),
            client: self.fleet.cpu_us() + procs::cpu_us(&[std::process::id()]),
        }
    }
}
