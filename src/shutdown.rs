//! The stop signal: `server::serve` turns SIGINT/SIGTERM into one `Shutdown` value that every long-lived
//! loop (accept loop, streams, broker tasks) selects on.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// Once the node stops, the longest one write to a client may stay blocked (the client does
/// not read), in place of `--send-timeout`: the drain waits for no stream whose client
/// stopped reading (it resumes elsewhere by its last event id), and a request's answer that
/// still moves is not cut (the bound is per write, as `--send-timeout`'s).
pub const STOPPING_SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// A cheap-to-clone handle; `wait()` resolves once shutdown has begun.
#[derive(Clone)]
pub struct Shutdown {
    /// When shutdown began.
    rx: watch::Receiver<Option<Instant>>,
}

/// The side that starts the shutdown.
pub struct Trigger {
    tx: watch::Sender<Option<Instant>>,
}

pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(None);
    (Trigger { tx }, Shutdown { rx })
}

impl Trigger {
    pub fn fire(&self) {
        self.tx.send_if_modified(|began| {
            let first = began.is_none();
            began.get_or_insert_with(Instant::now);
            first
        });
    }
}

impl Shutdown {
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(Option::is_some).await;
    }

    /// [`Shutdown::wait`] as an owned, boxed future, for a poll-based type to keep (only while
    /// it waits: a blocked write, a lingering close).
    pub fn stopped(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let stop = self.clone();
        Box::pin(async move { stop.wait().await })
    }

    pub fn is_stopping(&self) -> bool {
        self.rx.borrow().is_some()
    }

    /// How long shutdown has been going on (`None` while running).
    pub fn elapsed(&self) -> Option<Duration> {
        self.rx.borrow().map(|began| began.elapsed())
    }
}

/// SIGINT and SIGTERM, heard from when this is made on: one that comes between two
/// [`StopSignals::next`] calls is not lost.
pub struct StopSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    pub fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            StopSignals {
                term: signal(SignalKind::terminate()).expect("install SIGTERM handler"),
                int: signal(SignalKind::interrupt()).expect("install SIGINT handler"),
            }
        }
        #[cfg(not(unix))]
        StopSignals {}
    }

    /// Resolves on the next SIGINT or SIGTERM.
    pub async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
