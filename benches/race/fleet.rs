//! The parent's side of the worker processes: spawns `race --worker …` (this same binary), one
//! per `per` streams, each on its own loopback source addresses; sends commands and sums the
//! answers. User `u<i>` lives on worker `i / per`. Every answer is awaited at most
//! `REPLY_TIMEOUT` (longer than any wait inside a worker), so a stuck worker ends the run.

use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, Notify};

use crate::hist::Hist;
use crate::procs;
use crate::stream::Kind;
use crate::worker;

/// Longest wait for a worker's answer to one command.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

struct Worker {
    child: Child,
    stdin: ChildStdin,
    replies: mpsc::UnboundedReceiver<String>,
    /// Users of its streams, in the order of its slots.
    users: Vec<usize>,
}

/// Per worker, the highest seq every one of its streams has (broadcast rounds).
#[derive(Default)]
pub struct Progress {
    seqs: Vec<AtomicU32>,
    changed: Notify,
}

pub struct Fleet {
    workers: Vec<Worker>,
    per: usize,
    pub progress: Arc<Progress>,
}

/// `open` summed over workers.
pub struct Opened {
    pub up: u64,
    pub failed: u64,
    /// When the last stream became ready (ns since the epoch).
    pub last_ready_ns: u64,
    pub error: Option<String>,
}

/// `expect` summed over workers.
#[derive(Default)]
pub struct Delivered {
    pub expected: u64,
    pub distinct: u64,
    pub dups: u64,
    pub stale: u64,
    pub resets: u64,
    pub reconnects: u64,
    pub last_complete_ns: u64,
    pub hist: Hist,
}

/// `storm` summed over workers.
pub struct Back {
    pub up: u64,
    pub failed: u64,
    pub last_ready_ns: u64,
    /// Reopens tried again after a refusal or failure.
    pub retries: u64,
    pub error: Option<String>,
}

fn word<T: std::str::FromStr + Default>(words: &[&str], i: usize) -> T {
    words
        .get(i)
        .and_then(|w| w.parse().ok())
        .unwrap_or_default()
}

fn rest(words: &[&str], i: usize) -> Option<String> {
    let text = words.get(i..).unwrap_or_default().join(" ");
    (!text.is_empty() && text != "-").then_some(text)
}

impl Fleet {
    /// Spawn `count` workers streaming from `kind` at `addr`.
    pub fn spawn(
        kind: Kind,
        addr: &str,
        secret: &str,
        count: usize,
        per: usize,
    ) -> Result<Fleet, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let kind_arg = if kind == Kind::Nchan {
            "nchan"
        } else {
            "herald"
        };
        let progress = Arc::new(Progress {
            seqs: (0..count).map(|_| AtomicU32::new(0)).collect(),
            changed: Notify::new(),
        });
        let mut workers = Vec::with_capacity(count);
        for index in 0..count {
            let mut child = Command::new(&exe)
                .args([
                    "--worker", "--kind", kind_arg, "--addr", addr, "--secret", secret,
                ])
                .args(["--sources", &worker::sources(index)])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("spawn a worker: {e}"))?;
            let stdout = child.stdout.take().expect("piped stdout");
            let stdin = child.stdin.take().expect("piped stdin");
            let (tx, replies) = mpsc::unbounded_channel();
            let progress = progress.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(seq) = line.strip_prefix("progress ") {
                        progress.seqs[index].store(seq.parse().unwrap_or(0), Ordering::Relaxed);
                        progress.changed.notify_waiters();
                    } else if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            workers.push(Worker {
                child,
                stdin,
                replies,
                users: Vec::new(),
            });
        }
        Ok(Fleet {
            workers,
            per,
            progress,
        })
    }

    /// Send each worker its command (`None`: none), then collect the answers of those that got one.
    async fn ask(&mut self, commands: Vec<Option<String>>) -> Result<Vec<String>, String> {
        let mut asked = Vec::new();
        for (w, command) in commands.into_iter().enumerate() {
            if let Some(command) = command {
                let stdin = &mut self.workers[w].stdin;
                stdin
                    .write_all(format!("{command}\n").as_bytes())
                    .await
                    .map_err(|e| format!("worker {w}: {e}"))?;
                asked.push(w);
            }
        }
        let mut replies = Vec::new();
        for w in asked {
            let reply = tokio::time::timeout(REPLY_TIMEOUT, self.workers[w].replies.recv()).await;
            match reply {
                Ok(Some(line)) => replies.push(line),
                Ok(None) => return Err(format!("worker {w} exited")),
                Err(_) => return Err(format!("worker {w}: no answer within {REPLY_TIMEOUT:?}")),
            }
        }
        Ok(replies)
    }

    /// Open streams for users `0..n` (each worker its share), `timeout` per stream.
    pub async fn open(
        &mut self,
        n: usize,
        stop_on_fail: bool,
        timeout: Duration,
    ) -> Result<Opened, String> {
        let per = self.per;
        let commands = (0..self.workers.len())
            .map(|w| {
                let first = w * per;
                let count = n.saturating_sub(first).min(per);
                self.workers[w].users.extend(first..first + count);
                let stop = u8::from(stop_on_fail);
                (count > 0).then(|| format!("open {first} {count} {stop} {}", timeout.as_millis()))
            })
            .collect();
        let mut opened = Opened {
            up: 0,
            failed: 0,
            last_ready_ns: 0,
            error: None,
        };
        for line in self.ask(commands).await? {
            let words: Vec<&str> = line.split_whitespace().collect();
            opened.up += word::<u64>(&words, 1);
            opened.failed += word::<u64>(&words, 2);
            opened.last_ready_ns = opened.last_ready_ns.max(word(&words, 3));
            opened.error = opened.error.or_else(|| rest(&words, 4));
        }
        Ok(opened)
    }

    fn busy(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.workers.len()).filter(|w| !self.workers[*w].users.is_empty())
    }

    fn to_busy(&self, command: impl Fn(usize) -> String) -> Vec<Option<String>> {
        let busy: Vec<usize> = self.busy().collect();
        (0..self.workers.len())
            .map(|w| busy.contains(&w).then(|| command(w)))
            .collect()
    }

    /// Start round `id` on every worker with streams.
    pub async fn round(&mut self, id: u32, progress: bool) -> Result<(), String> {
        for seq in &self.progress.seqs {
            seq.store(0, Ordering::Relaxed);
        }
        let suffix = if progress { " progress" } else { "" };
        self.ask(self.to_busy(|_| format!("round {id}{suffix}")))
            .await?;
        Ok(())
    }

    /// Every stream expects `n` events of the round; wait for them (bounded) and sum up.
    pub async fn expect_all(&mut self, n: u32) -> Result<Delivered, String> {
        let commands = self.to_busy(|_| format!("expect all {n}"));
        self.expect(commands).await
    }

    /// Stream of user `u` expects `counts[u]` events (users past the end: none).
    pub async fn expect_each(&mut self, counts: &[u32]) -> Result<Delivered, String> {
        let commands = self.to_busy(|w| {
            let each: Vec<String> = self.workers[w]
                .users
                .iter()
                .map(|u| counts.get(*u).copied().unwrap_or(0).to_string())
                .collect();
            format!("expect list {}", each.join(" "))
        });
        self.expect(commands).await
    }

    async fn expect(&mut self, commands: Vec<Option<String>>) -> Result<Delivered, String> {
        let mut sum = Delivered::default();
        for line in self.ask(commands).await? {
            let words: Vec<&str> = line.split_whitespace().collect();
            sum.expected += word::<u64>(&words, 1);
            sum.distinct += word::<u64>(&words, 2);
            sum.dups += word::<u64>(&words, 3);
            sum.stale += word::<u64>(&words, 4);
            sum.resets += word::<u64>(&words, 5);
            sum.reconnects += word::<u64>(&words, 6);
            sum.last_complete_ns = sum.last_complete_ns.max(word(&words, 7));
            sum.hist.merge(&Hist::decode(words.get(8).unwrap_or(&"")));
        }
        Ok(sum)
    }

    /// Close every stream at once and reopen them all at once with Last-Event-ID.
    pub async fn storm(&mut self, timeout: Duration) -> Result<Back, String> {
        let commands = self.to_busy(|_| format!("storm {}", timeout.as_millis()));
        let mut back = Back {
            up: 0,
            failed: 0,
            last_ready_ns: 0,
            retries: 0,
            error: None,
        };
        for line in self.ask(commands).await? {
            let words: Vec<&str> = line.split_whitespace().collect();
            back.up += word::<u64>(&words, 1);
            back.failed += word::<u64>(&words, 2);
            back.last_ready_ns = back.last_ready_ns.max(word(&words, 3));
            back.retries += word::<u64>(&words, 4);
            back.error = back.error.or_else(|| rest(&words, 5));
        }
        Ok(back)
    }

    /// CPU µs used so far by the worker processes.
    pub fn cpu_us(&self) -> u64 {
        let pids: Vec<u32> = self.workers.iter().filter_map(|w| w.child.id()).collect();
        procs::cpu_us(&pids)
    }

    /// Wait until every worker with streams reports `seq` complete; false after `limit`.
    pub async fn wait_progress(&self, seq: u32, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let busy: Vec<usize> = self.busy().collect();
        loop {
            let changed = self.progress.changed.notified();
            let least = busy
                .iter()
                .map(|w| self.progress.seqs[*w].load(Ordering::Relaxed))
                .min()
                .unwrap_or(u32::MAX);
            if least >= seq {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            let _ = tokio::time::timeout(Duration::from_millis(5), changed).await;
        }
    }
}
