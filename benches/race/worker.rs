//! Worker mode (`race --worker …`): one load-generator process holding up to a few thousand
//! streams, so the race can go past one process's 20,000 open files. It reads one command a
//! line on stdin and answers one line on stdout (plus `progress <seq>` lines during a
//! broadcast round). Every wait is bounded:
//!
//! - `open FIRST COUNT STOP_ON_FAIL TIMEOUT_MS` → `opened OK FAILED LAST_READY_NS FIRST_ERROR`
//! - `round ID [progress]` → `ok` (forget the previous round's deliveries)
//! - `expect all N` | `expect list C1 C2 …` → `done EXPECTED DISTINCT DUPS STALE RESETS
//!   RECONNECTS LAST_COMPLETE_NS HIST`, once every stream has its events, or after
//!   `STALL` without progress, or after `EXPECT_TIMEOUT`
//! - `storm TIMEOUT_MS` → `back OK FAILED LAST_READY_NS RETRIES FIRST_ERROR`: close every
//!   stream at once, then reopen them all at once with `Last-Event-ID`, retrying refused ones
//!   with herald.js's backoff, all within TIMEOUT_MS
//! - `quit` (or end of input) ends the process.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Semaphore;

use crate::state::{Slot, State};
use crate::stream::{self, Ctx, Kind};
use crate::wire;

/// Streams opening at once per worker (not for the storm, which opens all at once).
const OPEN_CONCURRENCY: usize = 256;
/// `expect` gives up when no new event arrived for this long…
const STALL: Duration = Duration::from_secs(3);
/// …or after this long in all.
const EXPECT_TIMEOUT: Duration = Duration::from_secs(30);
/// A refused storm reconnect is retried after this, doubling up to `MAX_BACKOFF` (herald.js's
/// `MIN_BACKOFF_MS` and `MAX_BACKOFF_MS`).
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often waits look at the state.
const POLL: Duration = Duration::from_millis(10);

/// Parse the worker's flags, run its command loop on a single-threaded runtime.
pub fn main(args: &[String]) {
    let flag = |name: &str| {
        let i = args.iter().position(|a| a == name).expect(name);
        args[i + 1].clone()
    };
    let kind = match flag("--kind").as_str() {
        "nchan" => Kind::Nchan,
        _ => Kind::Herald,
    };
    let ctx = Arc::new(Ctx {
        kind,
        addr: flag("--addr").parse().expect("--addr"),
        secret: flag("--secret"),
        sources: flag("--sources")
            .split(',')
            .map(|s| s.parse::<IpAddr>().expect("--sources"))
            .collect(),
        next_source: AtomicUsize::new(0),
        state: Arc::new(Mutex::new(State::default())),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(serve(ctx));
}

async fn serve(ctx: Arc<Ctx>) {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        let reply = match words.first().copied() {
            Some("open") => open(&ctx, &words).await,
            Some("round") => begin(&ctx, &words),
            Some("expect") => expect(&ctx, &words).await,
            Some("storm") => storm(&ctx, &words).await,
            Some("quit") | None => break,
            Some(other) => format!("error unknown command {other}"),
        };
        println!("{reply}");
    }
}

fn number<T: std::str::FromStr>(words: &[&str], i: usize) -> T {
    words
        .get(i)
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("bad command {words:?}"))
}

/// How a batch of opens went, shared by their tasks.
#[derive(Default)]
struct Batch {
    stop_on_fail: bool,
    /// Retry a failed open (the storm).
    retry: bool,
    retries: AtomicU64,
    failed: AtomicBool,
    first_error: Mutex<Option<String>>,
}

async fn open(ctx: &Arc<Ctx>, words: &[&str]) -> String {
    let (first, count): (usize, usize) = (number(words, 1), number(words, 2));
    let timeout = Duration::from_millis(number(words, 4));
    let batch = Arc::new(Batch {
        stop_on_fail: number::<u8>(words, 3) == 1,
        ..Batch::default()
    });
    let range = {
        let mut state = ctx.state.lock().unwrap();
        let base = state.slots.len();
        state.slots.extend((first..first + count).map(Slot::new));
        base..base + count
    };
    let permits = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
    for idx in range.clone() {
        let task = tokio::spawn(run(
            ctx.clone(),
            idx,
            Some(permits.clone()),
            batch.clone(),
            timeout,
        ));
        ctx.state.lock().unwrap().slots[idx].task = Some(task.abort_handle());
    }
    settle(ctx, range.clone(), timeout * 2 + Duration::from_secs(5)).await;
    let (up, last_ready) = up_and_last_ready(ctx, range.clone());
    let error = batch.first_error.lock().unwrap().clone();
    format!(
        "opened {up} {} {last_ready} {}",
        range.len() - up,
        error.unwrap_or_else(|| "-".into())
    )
}

/// One stream's task: open (within `timeout`, holding a permit while opening), then read.
async fn run(
    ctx: Arc<Ctx>,
    idx: usize,
    permits: Option<Arc<Semaphore>>,
    batch: Arc<Batch>,
    timeout: Duration,
) {
    let permit = match &permits {
        Some(p) => Some(p.clone().acquire_owned().await.expect("semaphore")),
        None => None,
    };
    if batch.stop_on_fail && batch.failed.load(Ordering::Relaxed) {
        ctx.state.lock().unwrap().slots[idx].failed = true;
        return;
    }
    let opened = open_retrying(&ctx, idx, timeout, &batch).await;
    drop(permit);
    match opened {
        Ok(conn) => {
            ctx.state.lock().unwrap().ready(idx, wire::now_ns());
            stream::read_loop(ctx, idx, conn).await;
        }
        Err(e) => {
            batch.failed.store(true, Ordering::Relaxed);
            batch.first_error.lock().unwrap().get_or_insert(e);
            ctx.state.lock().unwrap().slots[idx].failed = true;
        }
    }
}

/// Open slot `idx`'s stream within `limit`. In a storm a refused or failed attempt is tried
/// again after `FIRST_BACKOFF`, doubling up to `MAX_BACKOFF`, as herald.js does; elsewhere the
/// first failure counts.
async fn open_retrying(
    ctx: &Ctx,
    idx: usize,
    limit: Duration,
    batch: &Batch,
) -> Result<stream::Conn, String> {
    let deadline = Instant::now() + limit;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let error = match tokio::time::timeout(left, stream::open(ctx, idx)).await {
            Ok(Ok(conn)) => return Ok(conn),
            Ok(Err(e)) => e,
            Err(_) => format!("no ready within {limit:?}"),
        };
        if !batch.retry || Instant::now() + backoff >= deadline {
            return Err(error);
        }
        batch.first_error.lock().unwrap().get_or_insert(error);
        batch.retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Wait until every slot in `range` is up or failed, at most `limit`.
async fn settle(ctx: &Ctx, range: std::ops::Range<usize>, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let settled = |state: &State| state.slots[range.clone()].iter().all(|s| s.up || s.failed);
        if settled(&ctx.state.lock().unwrap()) {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Streams of `range` up, and when the last of them became ready (ns since the epoch).
fn up_and_last_ready(ctx: &Ctx, range: std::ops::Range<usize>) -> (usize, u64) {
    let state = ctx.state.lock().unwrap();
    let up = state.slots[range.clone()].iter().filter(|s| s.up);
    let last = up.clone().map(|s| s.ready_ns).max().unwrap_or(0);
    (up.count(), last)
}

fn begin(ctx: &Ctx, words: &[&str]) -> String {
    let progress = words.get(2) == Some(&"progress");
    ctx.state.lock().unwrap().begin(number(words, 1), progress);
    "ok".into()
}

async fn expect(ctx: &Ctx, words: &[&str]) -> String {
    {
        let mut state = ctx.state.lock().unwrap();
        let all = words.get(1) == Some(&"all");
        for (i, slot) in state.slots.iter_mut().enumerate() {
            slot.expected = if all {
                number(words, 2)
            } else {
                number(words, i + 2)
            };
        }
    }
    let started = Instant::now();
    let (mut last_distinct, mut last_change) = (u64::MAX, Instant::now());
    loop {
        let (_, distinct, complete, _) = ctx.state.lock().unwrap().totals();
        if distinct != last_distinct {
            (last_distinct, last_change) = (distinct, Instant::now());
        }
        if complete || last_change.elapsed() > STALL || started.elapsed() > EXPECT_TIMEOUT {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let state = ctx.state.lock().unwrap();
    let (expected, distinct, _, last_complete) = state.totals();
    let r = &state.round;
    format!(
        "done {expected} {distinct} {} {} {} {} {last_complete} {}",
        r.dups,
        r.stale,
        r.resets,
        r.reconnects,
        r.hist.encode()
    )
}

/// Abort every stream's task (dropping its socket: the client closes), keeping the slots.
async fn abort_all(ctx: &Ctx) {
    for slot in &mut ctx.state.lock().unwrap().slots {
        if let Some(task) = slot.task.take() {
            task.abort();
        }
        (slot.up, slot.failed) = (false, false);
    }
    // Let the runtime drop the aborted tasks (and so close their sockets).
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn storm(ctx: &Arc<Ctx>, words: &[&str]) -> String {
    let timeout = Duration::from_millis(number(words, 1));
    abort_all(ctx).await;
    let batch = Arc::new(Batch {
        retry: true,
        ..Batch::default()
    });
    let count = ctx.state.lock().unwrap().slots.len();
    for idx in 0..count {
        let task = tokio::spawn(run(ctx.clone(), idx, None, batch.clone(), timeout));
        ctx.state.lock().unwrap().slots[idx].task = Some(task.abort_handle());
    }
    settle(ctx, 0..count, timeout + Duration::from_secs(1)).await;
    let (up, last_ready) = up_and_last_ready(ctx, 0..count);
    let error = batch.first_error.lock().unwrap().clone();
    format!(
        "back {up} {} {last_ready} {} {}",
        count - up,
        batch.retries.load(Ordering::Relaxed),
        error.unwrap_or_else(|| "-".into())
    )
}

/// The loopback source addresses of worker `index`: 127.<1+index/250>.<index%250>.1–8.
pub fn sources(index: usize) -> String {
    (1..=8)
        .map(|host| format!("127.{}.{}.{host}", 1 + index / 250, index % 250))
        .collect::<Vec<_>>()
        .join(",")
}
