//! The streams' timer wheel: each stream (or tail) waits in the slot of the tick at which it
//! may next need a ping or its end, so a tick visits only the streams due then instead of
//! every stream of the node. It is lazy: a stream that wrote meanwhile is visited at its old
//! time and put back at its new one, so a busy stream is visited about once a heartbeat and a
//! quiet one once per ping.

use std::sync::{Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::Sink;

/// Slots of the wheel, one tick each: a stream due further ahead waits in the farthest slot
/// and is put back from there (at the default 250 ms a tick, 128 s ahead).
const SLOTS: u64 = 512;

pub(super) struct Wheel(Mutex<Slots>);

struct Slots {
    /// Tick `n` is at `origin + n * period`: the first tick's time, so the wheel's ticks are
    /// the ticker's own (not up to a tick apart from them).
    origin: Option<Instant>,
    /// The last tick whose slot was taken.
    cursor: u64,
    slots: Vec<Vec<Weak<dyn Sink>>>,
    /// Added since the last tick: visited at the next one.
    fresh: Vec<Weak<dyn Sink>>,
}

impl Default for Wheel {
    fn default() -> Self {
        Wheel(Mutex::new(Slots {
            origin: None,
            cursor: 0,
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            fresh: Vec::new(),
        }))
    }
}

impl Wheel {
    /// A new stream: the next tick visits it.
    pub fn add(&self, sink: Weak<dyn Sink>) {
        self.lock().fresh.push(sink);
    }

    /// Take out the streams due by `now` (ticks `period` apart): the new ones and every slot
    /// since the last call.
    pub fn due(&self, now: Instant, period: Duration) -> Vec<Weak<dyn Sink>> {
        let mut g = self.lock();
        g.origin.get_or_insert(now);
        let target = g.tick_of(now, period);
        let mut due = std::mem::take(&mut g.fresh);
        // After a stall longer than the wheel, each slot once.
        for tick in (g.cursor + 1..=target).take(SLOTS as usize) {
            let slot = &mut g.slots[(tick % SLOTS) as usize];
            if due.is_empty() {
                std::mem::swap(&mut due, slot);
            } else {
                due.append(slot);
            }
        }
        g.cursor = g.cursor.max(target);
        due
    }

    /// Put back the streams visited, each in the slot of the first tick at or after the
    /// time it next needs one (the next tick at the earliest, the farthest slot at most).
    pub fn put_back(&self, later: Vec<(Weak<dyn Sink>, Instant)>, period: Duration) {
        let mut g = self.lock();
        let cursor = g.cursor;
        for (sink, at) in later {
            let tick = g.tick_at_or_after(at, period);
            let tick = tick.clamp(cursor + 1, cursor + SLOTS - 1);
            g.slots[(tick % SLOTS) as usize].push(sink);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Slots {
    /// The last tick at or before `at`.
    fn tick_of(&self, at: Instant, period: Duration) -> u64 {
        let (since, period) = self.nanos(at, period);
        (since / period) as u64
    }

    /// The first tick at or after `at`.
    fn tick_at_or_after(&self, at: Instant, period: Duration) -> u64 {
        let (since, period) = self.nanos(at, period);
        since.div_ceil(period) as u64
    }

    fn nanos(&self, at: Instant, period: Duration) -> (u128, u128) {
        let origin = self.origin.unwrap_or(at);
        let since = at.saturating_duration_since(origin).as_nanos();
        (since, period.as_nanos().max(1))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::hub::{Delivery, EndReason};

    const TICK: Duration = Duration::from_millis(250);

    /// Counts its ticks; due again `every` after its last write, which is each tick's time
    /// unless the test writes later (`wrote`).
    struct Due {
        every: Duration,
        wrote: Mutex<Option<Instant>>,
        ticks: AtomicUsize,
    }

    impl Sink for Due {
        fn deliver(&self, _: &Delivery) -> bool {
            true
        }
        fn end(&self, _: EndReason) {}
        fn catch_up(&self) {}
        fn tick(&self, now: Instant) -> Option<Instant> {
            self.ticks.fetch_add(1, Ordering::Relaxed);
            let wrote = self.wrote.lock().unwrap().unwrap_or(now);
            Some(wrote.max(now) + self.every)
        }
    }

    impl Due {
        fn ticks(&self) -> usize {
            self.ticks.load(Ordering::Relaxed)
        }
    }

    fn due(wheel: &Wheel, every: Duration) -> Arc<Due> {
        let sink = Arc::new(Due {
            every,
            wrote: Mutex::new(None),
            ticks: AtomicUsize::new(0),
        });
        let ticked: Arc<dyn Sink> = sink.clone();
        wheel.add(Arc::downgrade(&ticked));
        sink
    }

    /// One tick of the wheel as the hub does it.
    fn tick(wheel: &Wheel, now: Instant) {
        let later = wheel
            .due(now, TICK)
            .into_iter()
            .filter_map(|s| Some((s.clone(), s.upgrade()?.tick(now)?)))
            .collect();
        wheel.put_back(later, TICK);
    }

    #[test]
    fn a_stream_is_visited_when_new_then_only_when_due() {
        let wheel = Wheel::default();
        let origin = Instant::now();
        let (quick, slow) = (due(&wheel, TICK), due(&wheel, TICK * 4));
        for n in 0..8 {
            tick(&wheel, origin + TICK * n);
        }
        assert_eq!(quick.ticks(), 8);
        // New at tick 0, then due at 4 (and at 8).
        assert_eq!(slow.ticks(), 2);
    }

    /// A stream written to at every tick is put back a heartbeat after its last write when
    /// its slot comes up: visited once a heartbeat, not at every tick.
    #[test]
    fn a_busy_stream_is_visited_once_a_heartbeat() {
        let wheel = Wheel::default();
        let origin = Instant::now();
        let busy = due(&wheel, TICK * 4);
        for n in 0..12 {
            let now = origin + TICK * n;
            *busy.wrote.lock().unwrap() = Some(now);
            tick(&wheel, now);
        }
        // Ticks 0 (new), 4 and 8.
        assert_eq!(busy.ticks(), 3);
    }

    #[test]
    fn a_stream_far_ahead_waits_in_the_last_slot_and_a_dropped_one_is_forgotten() {
        let wheel = Wheel::default();
        let origin = Instant::now();
        let far = due(&wheel, Duration::from_secs(3600));
        drop(due(&wheel, TICK));
        for n in 0..=SLOTS as u32 {
            tick(&wheel, origin + TICK * n);
        }
        // New at tick 0, put back from the farthest slot once.
        assert_eq!(far.ticks(), 2);
        let held: usize = wheel.lock().slots.iter().map(Vec::len).sum();
        assert_eq!(held, 1, "only the live stream is kept");
    }

    #[test]
    fn after_a_stall_every_stream_due_meanwhile_is_visited_once() {
        let wheel = Wheel::default();
        let origin = Instant::now();
        let streams: Vec<_> = (1..=4).map(|n| due(&wheel, TICK * n)).collect();
        tick(&wheel, origin);
        tick(&wheel, origin + TICK * 5000);
        for s in &streams {
            assert_eq!(s.ticks(), 2);
        }
    }

    /// The wheel's ticks are the ticker's, wherever it started: a stream due at the
    /// ticker's next tick is visited then, not a tick later.
    #[test]
    fn ticks_are_counted_from_the_first() {
        let wheel = Wheel::default();
        let start = Instant::now() + TICK / 2;
        let s = due(&wheel, TICK);
        tick(&wheel, start);
        tick(&wheel, start + TICK);
        assert_eq!(s.ticks(), 2);
    }
}
