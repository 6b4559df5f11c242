//! A worker's record of its streams: per stream the user, the last event id and which
//! sequence numbers of the current round arrived; per worker the counters and the latency
//! histogram of the round. Events of another round are counted as stale and otherwise ignored,
//! so a late delivery from one scenario never counts in the next. Plain data behind one
//! `std::sync::Mutex`, never held across an await.

use crate::hist::Hist;
use crate::wire::{Event, Marker};

/// One client stream.
pub struct Slot {
    pub user: usize,
    pub last_id: Option<String>,
    /// Bit `seq` set when that sequence number of the round arrived.
    seen: Vec<u64>,
    pub distinct: u32,
    pub expected: u32,
    /// When the last not-yet-seen event arrived (ns since the epoch).
    pub last_new_ns: u64,
    /// Reading (ready received, socket open).
    pub up: bool,
    /// When the stream last became ready (ns since the epoch).
    pub ready_ns: u64,
    /// The open failed (or was skipped after another failed): settled, not up.
    pub failed: bool,
    pub task: Option<tokio::task::AbortHandle>,
}

/// Counters of the current round.
#[derive(Default)]
pub struct Round {
    pub id: u32,
    /// Report `progress <seq>` on stdout when every stream has all seqs up to `seq`.
    pub progress: bool,
    pub received: u64,
    pub dups: u64,
    pub stale: u64,
    pub resets: u64,
    pub reconnects: u64,
    pub hist: Hist,
    /// Streams up when the round began: the ones progress waits for.
    live: u32,
    /// Per seq, how many streams have it; `reported` is the highest seq announced.
    per_seq: Vec<u32>,
    reported: u32,
}

#[derive(Default)]
pub struct State {
    pub slots: Vec<Slot>,
    pub round: Round,
}

impl Slot {
    pub fn new(user: usize) -> Self {
        Slot {
            user,
            last_id: None,
            seen: Vec::new(),
            distinct: 0,
            expected: 0,
            last_new_ns: 0,
            up: false,
            ready_ns: 0,
            failed: false,
            task: None,
        }
    }

    /// Mark `seq` seen; false if it already was.
    fn insert(&mut self, seq: u32) -> bool {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= self.seen.len() {
            self.seen.resize(word + 1, 0);
        }
        let fresh = self.seen[word] & (1 << bit) == 0;
        self.seen[word] |= 1 << bit;
        fresh
    }

    pub fn complete(&self) -> bool {
        self.distinct >= self.expected
    }
}

impl State {
    pub fn identity(&self, idx: usize) -> (usize, Option<String>) {
        let slot = &self.slots[idx];
        (slot.user, slot.last_id.clone())
    }

    pub fn set_up(&mut self, idx: usize, up: bool) {
        self.slots[idx].up = up;
    }

    pub fn ready(&mut self, idx: usize, now: u64) {
        self.slots[idx].up = true;
        self.slots[idx].ready_ns = now;
    }

    pub fn reconnected(&mut self, idx: usize) {
        self.slots[idx].up = true;
        self.round.reconnects += 1;
    }

    /// Start round `id`: forget what arrived, expect nothing yet.
    pub fn begin(&mut self, id: u32, progress: bool) {
        for slot in &mut self.slots {
            slot.seen.clear();
            slot.distinct = 0;
            slot.expected = 0;
        }
        let live = self.slots.iter().filter(|s| s.up).count() as u32;
        self.round = Round {
            id,
            progress,
            live,
            ..Round::default()
        };
    }

    /// Record a batch of events of slot `idx`, received at `now` (ns); true if one was Herald's `ready`.
    pub fn record(&mut self, idx: usize, events: &[Event], now: u64) -> bool {
        let mut ready = false;
        for event in events {
            if let Some(id) = &event.id {
                self.slots[idx].last_id = Some(id.clone());
            }
            match event.name.as_deref() {
                Some("ready") => ready = true,
                Some("reset") => self.round.resets += 1,
                _ => {}
            }
            if let Some(marker) = Marker::find(&event.data) {
                self.delivered(idx, marker, now);
            }
        }
        ready
    }

    fn delivered(&mut self, idx: usize, marker: Marker, now: u64) {
        let round = &mut self.round;
        round.received += 1;
        if marker.round != round.id {
            round.stale += 1;
            return;
        }
        let slot = &mut self.slots[idx];
        if !slot.insert(marker.seq) {
            round.dups += 1;
            return;
        }
        slot.distinct += 1;
        slot.last_new_ns = now;
        round.hist.record(now.saturating_sub(marker.sent_ns) / 1000);
        if round.progress {
            round.count_for_progress(marker.seq);
        }
    }

    /// Totals over the slots: (expected, distinct, all complete, last completion ns).
    pub fn totals(&self) -> (u64, u64, bool, u64) {
        let expected = self.slots.iter().map(|s| u64::from(s.expected)).sum();
        let distinct = self.slots.iter().map(|s| u64::from(s.distinct)).sum();
        let complete = self.slots.iter().all(Slot::complete);
        let last = self
            .slots
            .iter()
            .filter(|s| s.expected > 0)
            .map(|s| s.last_new_ns)
            .max()
            .unwrap_or(0);
        (expected, distinct, complete, last)
    }
}

impl Round {
    fn count_for_progress(&mut self, seq: u32) {
        let seq = seq as usize;
        if seq >= self.per_seq.len() {
            self.per_seq.resize(seq + 1, 0);
        }
        self.per_seq[seq] += 1;
        let next = |r: &Round| r.per_seq.get(r.reported as usize + 1).copied();
        while next(self).is_some_and(|n| n >= self.live) {
            self.reported += 1;
            println!("progress {}", self.reported);
        }
    }
}
