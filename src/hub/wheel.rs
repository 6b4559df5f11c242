//! The streams' timer wheel: each stream (or tail) waits in the slot of the tick at which it
//! may next need a ping or its end, so a tick visits only the streams due then instead of
//! every stream of the node. It is lazy: a stream that wrote meanwhile is visited at its old
//! time and put back at its new one, so a busy stream is visited about once a heartbeat and a
//! quiet one once per ping.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::Sink;

/// Slots of the wheel, one tick each: a stream due further ahead waits in the farthest slot
/// and is put back from there (at the default 250 ms a tick, 128 s ahead).
const SLOTS: u64 = 512;

pub(super) struct Wheel(Mutex<Slots>);

struct Slots {
    /// Tick `n` is at `origin + n * period`.
    origin: Instant,
    /// The last tick whose slot was taken.
    cursor: u64,
    slots: Vec<Vec<Weak<dyn Sink>>>,
    /// Added since the last tick: visited at the next one.
    fresh: Vec<Weak<dyn Sink>>,
}

impl Default for Wheel {
    fn default() -> Self {
        Wheel(Mutex::new(Slots {
            origin: Instant::now(),
            cursor: 0,
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            fresh: Vec::new(),
        }))
    }
}

impl Wheel {
    /// A new stream: the next tick visits it.
    pub fn add(&self, sink: &Arc<dyn Sink>) {
        self.lock().fresh.push(Arc::downgrade(sink));
    }

    /// Take out the streams due by `now` (ticks `period` apart): the new ones and every slot
    /// since the last call.
    pub fn due(&self, now: Instant, period: Duration) -> Vec<Weak<dyn Sink>> {
        let mut g = self.lock();
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
        let since = at.saturating_duration_since(self.origin).as_nanos();
        (since, period.as_nanos().max(1))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::hub::{Delivery, EndReason};

    const TICK: Duration = Duration::from_millis(250);

    /// Counts its ticks; next due `every` after each.
    struct Due {
        every: Duration,
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
            Some(now + self.every)
        }
    }

    fn due(every: Duration) -> Arc<Due> {
        Arc::new(Due {
            every,
            ticks: AtomicUsize::new(0),
        })
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
        let origin = wheel.lock().origin;
        let (quick, slow) = (due(TICK), due(TICK * 4));
        wheel.add(&(quick.clone() as Arc<dyn Sink>));
        wheel.add(&(slow.clone() as Arc<dyn Sink>));
        for n in 1..=8 {
            tick(&wheel, origin + TICK * n);
        }
        assert_eq!(quick.ticks.load(Ordering::Relaxed), 8);
        // New at tick 1, then due at 5 (and at 9).
        assert_eq!(slow.ticks.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_stream_far_ahead_waits_in_the_last_slot_and_a_dropped_one_is_forgotten() {
        let wheel = Wheel::default();
        let origin = wheel.lock().origin;
        let far = due(Duration::from_secs(3600));
        let gone = due(TICK);
        wheel.add(&(far.clone() as Arc<dyn Sink>));
        wheel.add(&(gone.clone() as Arc<dyn Sink>));
        drop(gone);
        for n in 1..=SLOTS as u32 + 1 {
            tick(&wheel, origin + TICK * n);
        }
        // New at tick 1, put back from the farthest slot once.
        assert_eq!(far.ticks.load(Ordering::Relaxed), 2);
        let held: usize = wheel.lock().slots.iter().map(Vec::len).sum();
        assert_eq!(held, 1, "only the live stream is kept");
    }

    #[test]
    fn after_a_stall_every_stream_due_meanwhile_is_visited_once() {
        let wheel = Wheel::default();
        let origin = wheel.lock().origin;
        let streams: Vec<_> = (1..=4).map(|n| due(TICK * n)).collect();
        for s in &streams {
            wheel.add(&(s.clone() as Arc<dyn Sink>));
        }
        tick(&wheel, origin + TICK);
        tick(&wheel, origin + TICK * 5000);
        for s in &streams {
            assert_eq!(s.ticks.load(Ordering::Relaxed), 2);
        }
    }
}
