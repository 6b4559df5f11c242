//! The scenarios of the race, each run the same way against Herald and nchan. Three phases,
//! each on fresh processes ([`Stage`]): the main one here (idle streams, then targeted
//! fan-out — also through Herald's Redis ingest in Redis mode —, one group publish,
//! broadcast), and `max` and `storm` in [`capacity`]. Figures go to the [`Table`]; nothing is
//! asserted about them.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crate::capacity;
use crate::fleet::{Delivered, Opened};
use crate::procs::{socket_slab_kib, tcp_mem_pages};
use crate::publish::{self, Via};
use crate::report::{raw, thousands, Table};
use crate::stage::{Config, Cpu, Mode, Stage};
use crate::stream::Kind;
use crate::wire::{now_ns, Marker};

/// Deadline for one stream's ready when opening many.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a broadcast waits for one group publish to reach every stream.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for Herald to empty its ingest stream after the ingest scenario.
const INGEST_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a scenario's figures go.
pub struct Out<'a> {
    pub table: &'a mut Table,
    pub kind: Kind,
    pub mode: Mode,
}

impl Out<'_> {
    pub fn raw(&self, scenario: &str, text: &str) {
        raw(self.mode.name(), self.kind, scenario, text);
    }

    pub fn num(&mut self, figure: &str, value: f64, decimals: usize) {
        self.table.num(figure, self.kind, value, decimals);
    }

    pub fn count(&mut self, figure: &str, value: u64) {
        self.table.count(figure, self.kind, value);
    }

    pub fn tally(&mut self, figure: &str, value: u64) {
        self.table.tally(figure, self.kind, value);
    }

    /// Lost, duplicates and the latency percentiles of a round, under `name`.
    pub fn deliveries(&mut self, name: &str, got: &Delivered, quantiles: &[(&str, f64)]) {
        self.tally(
            &format!("{name}: lost"),
            got.expected.saturating_sub(got.distinct),
        );
        self.tally(&format!("{name}: duplicates"), got.dups);
        for (label, q) in quantiles {
            let ms = got.hist.quantile_us(*q) as f64 / 1000.0;
            self.num(&format!("{name}: latency {label} (ms)"), ms, 2);
        }
        let text = format!(
            "expected {}, distinct {}, dups {}, stale {}, resets {}, reconnects {}, latency max {:.2} ms",
            got.expected,
            got.distinct,
            got.dups,
            got.stale,
            got.resets,
            got.reconnects,
            got.hist.max_us() as f64 / 1000.0
        );
        self.raw(name, &text);
    }

    /// Server (and redis-server) CPU per delivery over a window; the load generator's in a raw line.
    fn cpu(&mut self, name: &str, before: Cpu, after: Cpu, deliveries: u64) {
        let per = |a: u64, b: u64| (b - a) as f64 / deliveries.max(1) as f64;
        let server = per(before.server, after.server);
        self.num(&format!("{name}: server CPU-µs per delivery"), server, 1);
        if self.mode == Mode::Redis {
            let redis = per(before.redis, after.redis);
            self.num(
                &format!("{name}: redis-server CPU-µs per delivery"),
                redis,
                1,
            );
        }
        let client = per(before.client, after.client);
        self.raw(
            name,
            &format!("load generator CPU-µs per delivery: {client:.1}"),
        );
    }
}

pub fn secs_between(from_ns: u64, to_ns: u64) -> f64 {
    to_ns.saturating_sub(from_ns) as f64 / 1e9
}

/// Every phase the configuration asks for; a failing phase is reported and the next one runs.
pub async fn run_target(config: &Config, out: &mut Out<'_>) {
    let main = ["idle", "targeted", "ingest", "group", "broadcast"];
    if main.iter().any(|s| config.wants(s)) {
        if let Err(e) = main_phase(config, out).await {
            out.table.text("error", out.kind, e.clone());
            out.raw("main", &format!("error: {e}"));
        }
    }
    for (name, phase) in [("max", Phase::Max), ("storm", Phase::Storm)] {
        if config.wants(name) {
            let result = match phase {
                Phase::Max => capacity::max(config, out).await,
                Phase::Storm => capacity::storm(config, out).await,
            };
            if let Err(e) = result {
                out.table
                    .text(&format!("{name}: error"), out.kind, e.clone());
                out.raw(name, &format!("error: {e}"));
            }
        }
    }
}

enum Phase {
    Max,
    Storm,
}

async fn main_phase(config: &Config, out: &mut Out<'_>) -> Result<(), String> {
    let n = config.sizes.streams;
    let mut stage = Stage::start(config, out.kind, out.mode, "main", n).await?;
    idle(&mut stage, n, config.wants("idle"), out).await?;
    if config.wants("targeted") {
        targeted(&mut stage, config, Via::Http, out).await?;
    }
    if config.wants("ingest") && out.kind == Kind::Herald && out.mode == Mode::Redis {
        targeted(&mut stage, config, Via::Ingest, out).await?;
        drain_ingest(&stage, out).await?;
    }
    if config.wants("group") || config.wants("broadcast") {
        stage.publisher.set_members(n).await?;
    }
    if config.wants("group") {
        group(&mut stage, n, out).await?;
    }
    if config.wants("broadcast") {
        broadcast(&mut stage, config, out).await?;
    }
    Ok(())
}

/// Memory now, after the server has settled.
pub struct Memory {
    /// The server's Pss, KiB.
    pss: u64,
    /// The kernel's TCP buffer pages (all sockets).
    tcp_pages: u64,
    /// The kernel's socket objects, KiB (of both ends).
    slab: u64,
}

/// The server's memory once it settled: 2 s after the last stream opened, so what a burst of
/// opens used only for a moment (request buffers) and the allocator then returned (Herald's
/// jemalloc purges pages idle for about a second) is not counted per stream.
pub async fn memory(stage: &Stage) -> Memory {
    tokio::time::sleep(Duration::from_secs(2)).await;
    Memory {
        pss: stage.server.pss_kib(),
        tcp_pages: tcp_mem_pages(),
        slab: socket_slab_kib(),
    }
}

/// Open `n` streams; with `record`, report the time and memory they took.
async fn idle(stage: &mut Stage, n: usize, record: bool, out: &mut Out<'_>) -> Result<(), String> {
    let before = memory(stage).await;
    let started = now_ns();
    let opened = stage.fleet.open(n, false, OPEN_TIMEOUT).await?;
    let after = memory(stage).await;
    if record {
        let name = format!("idle {}", thousands(n as u64));
        report_open(out, &name, started, &opened, before, after);
    }
    Ok(())
}

pub fn report_open(
    out: &mut Out<'_>,
    name: &str,
    started: u64,
    opened: &Opened,
    before: Memory,
    after: Memory,
) {
    let up = opened.up.max(1) as f64;
    let per = |a: u64, b: u64| b.saturating_sub(a) as f64 / up;
    out.count(&format!("{name}: streams open"), opened.up);
    out.num(
        &format!("{name}: time to open (s)"),
        secs_between(started, opened.last_ready_ns),
        2,
    );
    out.num(
        &format!("{name}: server memory per stream (KiB Pss)"),
        per(before.pss, after.pss),
        2,
    );
    let slab = per(before.slab, after.slab);
    out.num(
        &format!("{name}: kernel socket objects per stream (KiB, both ends)"),
        slab,
        2,
    );
    let buffers = per(before.tcp_pages, after.tcp_pages) * 4.0;
    out.num(
        &format!("{name}: kernel TCP buffers per stream (KiB, both ends)"),
        buffers,
        2,
    );
    let text = format!(
        "{} up, {} not opened (first error: {}); Pss {} → {} KiB; socket slab {} → {} KiB; TCP pages {} → {}",
        opened.up,
        opened.failed,
        opened.error.as_deref().unwrap_or("no error"),
        before.pss,
        after.pss,
        before.slab,
        after.slab,
        before.tcp_pages,
        after.tcp_pages
    );
    out.raw(name, &text);
}

async fn targeted(
    stage: &mut Stage,
    config: &Config,
    via: Via,
    out: &mut Out<'_>,
) -> Result<(), String> {
    let name = match via {
        Via::Http => "targeted",
        Via::Ingest => "targeted via Redis ingest",
    };
    let sizes = &config.sizes;
    let round = stage.next_round();
    stage.fleet.round(round, false).await?;
    let (cpu0, started) = (stage.cpu_us(), now_ns());
    let stop = Arc::new(AtomicBool::new(false));
    let paced = publish::targeted(
        stage.publisher.clone(),
        via,
        round,
        sizes.streams,
        sizes.rate,
        sizes.window,
        stop,
    )
    .await;
    let got = stage.fleet.expect_each(&paced.accepted()).await?;
    let cpu1 = stage.cpu_us();
    let rate = got.distinct as f64 / secs_between(started, got.last_complete_ns).max(1e-9);
    out.num(&format!("{name}: deliveries/s"), rate, 0);
    out.tally(&format!("{name}: publishes refused"), paced.failed);
    out.deliveries(name, &got, &[("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)]);
    out.cpu(name, cpu0, cpu1, got.distinct);
    let text = format!(
        "{} publishes in {:.2} s ({:.0}/s offered {}/s), {} failed ({})",
        paced.sent,
        paced.elapsed.as_secs_f64(),
        paced.sent as f64 / paced.elapsed.as_secs_f64(),
        sizes.rate,
        paced.failed,
        paced.first_error.as_deref().unwrap_or("no error")
    );
    out.raw(name, &text);
    Ok(())
}

/// Wait (bounded) until Herald has handled every ingest entry, so a backlog doesn't run into
/// the next scenario.
async fn drain_ingest(stage: &Stage, out: &Out<'_>) -> Result<(), String> {
    let started = std::time::Instant::now();
    let mut left = stage.publisher.ingest_backlog().await?;
    while left > 0 && started.elapsed() < INGEST_DRAIN_TIMEOUT {
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = stage.publisher.ingest_backlog().await?;
    }
    let text = format!(
        "ingest backlog {left} entries after {:.1} s of draining",
        started.elapsed().as_secs_f64()
    );
    out.raw("targeted via Redis ingest", &text);
    Ok(())
}

async fn group(stage: &mut Stage, n: usize, out: &mut Out<'_>) -> Result<(), String> {
    let name = format!("group of {}", thousands(n as u64));
    let round = stage.next_round();
    stage.fleet.round(round, false).await?;
    let (cpu0, started) = (stage.cpu_us(), now_ns());
    let marker = Marker {
        round,
        seq: 1,
        sent_ns: started,
    };
    stage.publisher.to_group(&marker).await?;
    let got = stage.fleet.expect_all(1).await?;
    let cpu1 = stage.cpu_us();
    out.num(
        &format!("{name}: time until all have it (ms)"),
        secs_between(started, got.last_complete_ns) * 1e3,
        1,
    );
    out.deliveries(&name, &got, &[("p50", 0.5), ("p99", 0.99), ("max", 1.0)]);
    out.num(
        &format!("{name}: server CPU (ms)"),
        (cpu1.server - cpu0.server) as f64 / 1e3,
        1,
    );
    out.cpu(&name, cpu0, cpu1, got.distinct);
    Ok(())
}

async fn broadcast(stage: &mut Stage, config: &Config, out: &mut Out<'_>) -> Result<(), String> {
    let name = "broadcast";
    let window = config.sizes.broadcast_window;
    let round = stage.next_round();
    stage.fleet.round(round, true).await?;
    let (cpu0, started) = (stage.cpu_us(), now_ns());
    let mut publishes = tokio::task::JoinSet::new();
    let (mut seq, mut stalled) = (0u32, false);
    while secs_between(started, now_ns()) < config.sizes.window.as_secs_f64() {
        if seq >= window
            && !stage
                .fleet
                .wait_progress(seq + 1 - window, PROGRESS_TIMEOUT)
                .await
        {
            stalled = true;
            break;
        }
        seq += 1;
        let (publisher, marker) = (
            stage.publisher.clone(),
            Marker {
                round,
                seq,
                sent_ns: now_ns(),
            },
        );
        publishes.spawn(async move { publisher.to_group(&marker).await });
    }
    let answered = tokio::time::timeout(Duration::from_secs(30), publishes.join_all()).await;
    let failed = answered.map_or(u64::from(seq), |r| {
        r.iter().filter(|r| r.is_err()).count() as u64
    });
    let got = stage.fleet.expect_all(seq).await?;
    let cpu1 = stage.cpu_us();
    let rate = got.distinct as f64 / secs_between(started, got.last_complete_ns).max(1e-9);
    out.num(&format!("{name}: deliveries/s"), rate, 0);
    out.cpu(name, cpu0, cpu1, got.distinct);
    out.deliveries(name, &got, &[("p50", 0.5), ("p99", 0.99)]);
    let text = format!("{seq} group publishes, at most {window} undelivered at once; {failed} failed; stalled: {stalled}");
    out.raw(name, &text);
    Ok(())
}
