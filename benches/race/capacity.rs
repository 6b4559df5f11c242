//! The race's capacity phases, each on fresh processes: `max` (open streams until the server
//! takes no more, and say which limit stopped it) and `storm` (drop every stream at once,
//! reopen all at once with Last-Event-ID while targeted publishing goes on).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::publish::{self, Via};
use crate::report::thousands;
use crate::scenarios::{memory, report_open, secs_between, Out, OPEN_TIMEOUT};
use crate::stage::{Config, Stage};
use crate::wire::{now_ns, Marker};

/// The ready deadline in `max`, where the first stream the server can't take ends the phase.
const MAX_OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest the storm waits for every stream to be back.
const STORM_TIMEOUT: Duration = Duration::from_secs(30);
/// Targeted publishing runs this long before the storm begins (and at most 60 s in all).
const STORM_LEAD: Duration = Duration::from_secs(1);

/// Open streams until the server takes no more (or the bench's cap): how many, how fast, and why it stopped.
pub async fn max(config: &Config, out: &mut Out<'_>) -> Result<(), String> {
    let cap = config.sizes.max_cap;
    let mut stage = Stage::start(config, out.kind, out.mode, "max", cap).await?;
    let before = memory(&stage).await;
    let started = now_ns();
    let opened = stage.fleet.open(cap, true, MAX_OPEN_TIMEOUT).await?;
    let after = memory(&stage).await;
    report_open(out, "max", started, &opened, before, after);
    let stopped = if opened.up as usize >= cap {
        format!("the bench's cap ({})", thousands(cap as u64))
    } else {
        let fds = stage.server.fds();
        let counts: Vec<String> = fds.iter().map(|(n, _)| thousands(*n as u64)).collect();
        let limit = fds.iter().map(|(_, l)| *l).max().unwrap_or(0);
        format!(
            "open files per server process: {} (limit {} each); {} out-of-files log lines",
            counts.join(", "),
            thousands(limit),
            stage.server.emfile_lines()
        )
    };
    out.table.text("max: stopped by", out.kind, stopped);
    Ok(())
}

/// Reconnect storm: every stream dropped at once and reopened at once with Last-Event-ID while
/// targeted publishing continues; time until all are back and caught up, lost, duplicates.
pub async fn storm(config: &Config, out: &mut Out<'_>) -> Result<(), String> {
    let n = config.sizes.storm;
    let name = format!("storm of {}", thousands(n as u64));
    let mut stage = Stage::start(config, out.kind, out.mode, "storm", n).await?;
    let opened = stage.fleet.open(n, false, OPEN_TIMEOUT).await?;
    out.count(&format!("{name}: streams"), opened.up);
    // Every stream gets an event id first (nchan's streams have none until a message).
    stage.publisher.set_members(n).await?;
    let prime = stage.next_round();
    stage.fleet.round(prime, false).await?;
    stage
        .publisher
        .to_group(&Marker {
            round: prime,
            seq: 1,
            sent_ns: now_ns(),
        })
        .await?;
    stage.fleet.expect_all(1).await?;

    let round = stage.next_round();
    stage.fleet.round(round, false).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let sizes = &config.sizes;
    let publishing = tokio::spawn(publish::targeted(
        stage.publisher.clone(),
        Via::Http,
        round,
        n,
        sizes.storm_rate,
        Duration::from_secs(60),
        stop.clone(),
    ));
    tokio::time::sleep(STORM_LEAD).await;
    let dropped = now_ns();
    let back = stage.fleet.storm(STORM_TIMEOUT).await?;
    stop.store(true, Ordering::Relaxed);
    let paced = publishing.await.map_err(|e| format!("publisher: {e}"))?;
    let got = stage.fleet.expect_each(&paced.accepted()).await?;
    let all_back = back.failed == 0;
    if all_back {
        let secs = secs_between(dropped, back.last_ready_ns);
        out.num(&format!("{name}: all back (s)"), secs, 2);
    } else {
        let text = format!(
            "{} of {} within {STORM_TIMEOUT:?}",
            thousands(back.up),
            thousands(n as u64)
        );
        out.table
            .text(&format!("{name}: all back (s)"), out.kind, text);
    }
    let lost = got.expected.saturating_sub(got.distinct);
    if all_back && lost == 0 {
        let caught_up = got.last_complete_ns.max(back.last_ready_ns);
        out.num(
            &format!("{name}: all caught up (s)"),
            secs_between(dropped, caught_up),
            2,
        );
    } else {
        out.table.text(
            &format!("{name}: all caught up (s)"),
            out.kind,
            "never".into(),
        );
    }
    out.tally(
        &format!("{name}: reconnects retried (refused or failed first)"),
        back.retries,
    );
    out.tally(&format!("{name}: streams not back"), back.failed);
    out.tally(&format!("{name}: publishes refused"), paced.failed);
    out.deliveries(&name, &got, &[]);
    let text = format!(
        "{} back, {} not back, {} retries (first refusal: {}); {} targeted publishes at {}/s, {} failed ({})",
        back.up,
        back.failed,
        back.retries,
        back.error.as_deref().unwrap_or("none"),
        paced.sent,
        sizes.storm_rate,
        paced.failed,
        paced.first_error.as_deref().unwrap_or("no error")
    );
    out.raw(&name, &text);
    Ok(())
}
