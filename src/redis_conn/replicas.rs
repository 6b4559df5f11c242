//! Which Redis Cluster slots' primaries have no replica, from the link's reads of
//! `CLUSTER NODES` (a replica counts unless the cluster marked it failed): an answered tray
//! write waits for the replica of a slot that has one (see `store/redis/confirm.rs`). A slot counts as
//! replicated while any read of the last [`REMEMBERED`] listed a replica for it: right after
//! a failover the new primary has none yet, while this node may still be sending to the old
//! one, which is exactly when the wait matters. A replica that does not confirm in time
//! (down before the cluster marks it failed, or resyncing) turns the wait off everywhere for
//! [`REMEMBERED`]: a `WAIT` that times out holds up every command behind it on the shared
//! connection to its node, so it must not happen call after call.

use std::collections::HashSet;
use std::time::Duration;

use redis::cluster_routing::Slot;
use tokio::time::Instant;

/// How often the link reads the cluster's slots for this.
const READ_EVERY: Duration = Duration::from_secs(5);
/// How long a read that listed a replica for a slot counts.
const REMEMBERED: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct Replicas {
    /// Each distinct read (its unreplicated ranges, `<first>-<last>` lines) of the last
    /// [`REMEMBERED`], with when it was last read.
    reads: Vec<(String, Instant)>,
    /// The slots every one of those reads names, with the reads it was built from. `None`
    /// before the first read: every slot counts as unreplicated.
    unreplicated: Option<(Vec<String>, HashSet<Slot>)>,
    tried_at: Option<Instant>,
    /// Until when no slot counts as replicated: a replica did not confirm in time.
    off_until: Option<Instant>,
}

impl Replicas {
    /// Whether a read is due (and, if so, noted as tried now): every [`READ_EVERY`], and at
    /// every call until one succeeded.
    pub fn try_now(&mut self, now: Instant) -> bool {
        let due =
            self.unreplicated.is_none() || self.tried_at.is_none_or(|at| now >= at + READ_EVERY);
        if due {
            self.tried_at = Some(now);
        }
        due
    }

    /// A read of `CLUSTER NODES`.
    pub fn read(&mut self, nodes: &str, now: Instant) {
        let ranges = unreplicated_ranges(nodes);
        match self.reads.iter_mut().find(|(read, _)| *read == ranges) {
            Some((_, at)) => *at = now,
            None => self.reads.push((ranges, now)),
        }
        self.reads.retain(|(_, at)| now < *at + REMEMBERED);
        let mut key: Vec<String> = self.reads.iter().map(|(read, _)| read.clone()).collect();
        key.sort();
        if self
            .unreplicated
            .as_ref()
            .is_some_and(|(built, _)| *built == key)
        {
            return;
        }
        let mut sets = key.iter().map(|ranges| slots(ranges));
        let mut all = sets.next().unwrap_or_default();
        for set in sets {
            all.retain(|slot| set.contains(slot));
        }
        self.unreplicated = Some((key, all));
    }

    pub fn unreplicated(&self, slot: Slot, now: Instant) -> bool {
        self.off_until.is_some_and(|until| now < until)
            || (self.unreplicated.as_ref()).is_none_or(|(_, slots)| slots.contains(&slot))
    }

    /// A replica did not confirm a write in time; true when writes waited for replicas until
    /// then (calls in flight meanwhile may time out too, and say so again).
    pub fn unconfirmed(&mut self, now: Instant) -> bool {
        let waited = self.off_until.is_none_or(|until| now >= until);
        self.off_until = Some(now + REMEMBERED);
        waited
    }
}

/// The slot ranges of the primaries without a replica in `CLUSTER NODES` (its lines: id,
/// address, flags, primary's id, …, then the slots served: `<first>-<last>` or one slot, or a
/// migration in brackets), as `<first>-<last>` lines, sorted.
fn unreplicated_ranges(nodes: &str) -> String {
    let lines: Vec<Vec<&str>> = nodes
        .lines()
        .map(|line| line.split_whitespace().collect())
        .filter(|fields: &Vec<&str>| fields.len() >= 8)
        .collect();
    let is = |fields: &[&str], flag: &str| fields[2].split(',').any(|f| f == flag);
    let replicated: HashSet<&str> = (lines.iter())
        .filter(|f| is(f, "slave") && !is(f, "fail"))
        .map(|f| f[3])
        .collect();
    let mut ranges: Vec<(u16, String)> = (lines.iter())
        .filter(|f| is(f, "master") && !replicated.contains(f[0]))
        .flat_map(|f| f[8..].iter().filter(|range| !range.starts_with('[')))
        .filter_map(|range| {
            let (first, last) = range.split_once('-').unwrap_or((range, range));
            Some((first.parse().ok()?, format!("{first}-{last}")))
        })
        .collect();
    ranges.sort();
    let ranges: Vec<String> = ranges.into_iter().map(|(_, range)| range).collect();
    ranges.join("\n")
}

/// The slots of `<first>-<last>` lines.
fn slots(ranges: &str) -> HashSet<Slot> {
    ranges
        .lines()
        .filter_map(|range| {
            let (first, last) = range.split_once('-')?;
            Some(first.parse::<u16>().ok()?..=last.parse::<u16>().ok()?)
        })
        .flatten()
        .filter_map(Slot::new)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(n: u16) -> Slot {
        Slot::new(n).unwrap()
    }

    const NODES: &str = "\
a 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10921 10922 [10923->-c]
c 127.0.0.1:7002@17002 master - 0 0 3 connected 10923-16383
d 127.0.0.1:7003@17003 slave a 0 0 1 connected
e 127.0.0.1:7004@17004 slave,fail b 0 0 2 disconnected
f 127.0.0.1:7005@17005 master,fail - 0 0 4 disconnected";

    #[test]
    fn primaries_without_a_replica_in_service() {
        assert_eq!(
            unreplicated_ranges(NODES),
            "5461-10921\n10922-10922\n10923-16383"
        );
    }

    #[test]
    fn unreplicated_before_the_first_read_and_as_read() {
        let mut r = Replicas::default();
        let t = Instant::now();
        assert!(r.unreplicated(slot(7), t));
        r.read(NODES, t);
        assert!(!r.unreplicated(slot(0), t) && !r.unreplicated(slot(5460), t));
        assert!(r.unreplicated(slot(5461), t) && r.unreplicated(slot(16383), t));
    }

    #[test]
    fn a_replica_read_counts_for_a_while() {
        let mut r = Replicas::default();
        let t = Instant::now();
        r.read(NODES, t);
        // A failover: `d` promoted, `a` failed; the new primary has no replica yet.
        let after = "\
a 127.0.0.1:7000@17000 master,fail - 0 0 1 disconnected
d 127.0.0.1:7003@17003 myself,master - 0 0 5 connected 0-5460";
        r.read(after, t + Duration::from_secs(5));
        assert!(!r.unreplicated(slot(100), t));
        r.read(after, t + REMEMBERED + Duration::from_secs(1));
        assert!(r.unreplicated(slot(100), t));
    }

    #[test]
    fn a_replica_that_did_not_confirm_turns_the_wait_off_for_a_while() {
        let mut r = Replicas::default();
        let t = Instant::now();
        r.read(NODES, t);
        assert!(r.unconfirmed(t), "the first turns it off");
        assert!(
            !r.unconfirmed(t + Duration::from_millis(5)),
            "calls in flight: said once"
        );
        assert!(r.unreplicated(slot(0), t + Duration::from_secs(1)));
        assert!(!r.unreplicated(slot(0), t + REMEMBERED + Duration::from_millis(5)));
        assert!(
            r.unconfirmed(t + 2 * REMEMBERED),
            "off again after it came back on"
        );
    }

    #[test]
    fn reads_are_paced() {
        let mut r = Replicas::default();
        let t = Instant::now();
        assert!(r.try_now(t));
        assert!(r.try_now(t + Duration::from_secs(1)), "none read yet");
        r.read("", t + Duration::from_secs(1));
        assert!(!r.try_now(t + Duration::from_secs(2)));
        assert!(r.try_now(t + Duration::from_secs(1) + READ_EVERY));
    }
}
