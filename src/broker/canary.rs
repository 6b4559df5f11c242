//! The broker's canary: how a node notices that Redis stopped delivering to its subscriptions
//! without saying so. A node subscribes canary channels of its own (one on one server; on a
//! cluster one in each window of [`WINDOW`] slots, so a primary that serves a whole window,
//! as any serving 511 slots in a row does, holds one) before any user's
//! channel, and again before lost users are restored (on a cluster, only where the slot's
//! node is a primary, as users' channels are); every [`ROUND`] it publishes a round
//! number on each and listens for it ([`FAST_ROUND`] for [`WATCH`] after a loss Redis reported
//! and the restore after it, when a silent loss is most likely). A canary published but not
//! heard back [`MISSES`] rounds in a row means the connection that held it lost its
//! subscriptions silently (a cluster client that replaced a node connection, say): the
//! subscription worker then treats it as a lost connection, makes every subscription again and
//! catches every stream up. A publish that fails proves nothing (Redis is away, which the
//! link reports itself) and is not counted; nor does one whose message the node has not had
//! the time to read: a publish counts once a marker the publisher puts in the node's push
//! queue behind Redis's answer has been read, so a node whose pushes lag is not taken for
//! one that lost them.

use std::collections::HashMap;
use std::time::Duration;

use redis::cluster_routing::Slot;
use redis::{PushInfo, PushKind, Value};
use tokio::time::Instant;

/// How often a round of canaries is published; each is judged at the next round.
const ROUND: Duration = Duration::from_secs(2);
/// The rounds' interval for [`WATCH`] after subscriptions were lost or restored.
const FAST_ROUND: Duration = Duration::from_millis(400);
const WATCH: Duration = Duration::from_secs(10);
/// Rounds in a row a canary must go unheard before the node's subscriptions count as lost:
/// one late delivery (a busy node reading its pushes) is not a loss.
const MISSES: u8 = 2;
/// Slots per canary on a cluster (64 canaries for the 16,384 slots: every primary of an even
/// split of up to 32 holds one).
const WINDOW: u16 = 256;
/// How long a canary that failed to subscribe (its primary did not answer within the command
/// deadline) is left before it is tried again: users' subscriptions wait behind the try.
const RETRY_FAILED: Duration = Duration::from_secs(5);
/// A canary that has failed to subscribe for this long is logged as a warning (once, until
/// it subscribes): its slots' subscriptions go unwatched meanwhile.
const TELL_FAILING: Duration = Duration::from_secs(30);

/// What the operator should hear of a canary's subscribe ([`Canary::subscribed`]).
#[derive(Debug, PartialEq)]
pub(super) enum Tell {
    Nothing,
    /// It has failed for [`TELL_FAILING`] or more.
    Failing,
    /// It subscribed after [`Tell::Failing`].
    Back,
}
const SLOTS: u16 = 16384;
const PREFIX: &str = "herald:canary:";
/// The kind of the marker a canary's publisher puts in the push queue.
const MARKER: &str = "herald-canary-published";

/// One canary channel and what was published and heard on it.
struct Channel {
    name: String,
    /// The round when it was subscribed on the current connection; `None`: not subscribed.
    subscribed_at: Option<u64>,
    /// The round last published on it, once Redis took the publish.
    sent: Option<u64>,
    /// The latest round heard back.
    heard: u64,
    /// Rounds in a row published and not heard.
    misses: u8,
    /// When subscribing it last failed.
    failed_at: Option<Instant>,
    /// When subscribing it began to fail, every try since having failed.
    failing_since: Option<Instant>,
    /// The operator was told it keeps failing ([`TELL_FAILING`]).
    told: bool,
}

impl Channel {
    /// Forget what was published and missed: it says nothing about the next subscription.
    fn forget(&mut self) {
        self.sent = None;
        self.misses = 0;
    }
}

/// The canaries of one node, kept by the subscription worker (which alone subscribes them).
pub(super) struct Canary {
    channels: Vec<Channel>,
    /// The latest round published.
    round: u64,
    next_at: Instant,
    /// Until when rounds come every [`FAST_ROUND`].
    watch_until: Option<Instant>,
}

/// What the listener and the publishing task tell the worker about the canaries.
pub(super) enum Report {
    /// A round was heard on the channel.
    Heard(String, u64),
    /// Redis took the publish of a round on the channel, and every push that came before
    /// its answer has been read.
    Published(String, u64),
    /// Redis ended the subscription to the channel (its slot left the node).
    Dropped(String),
}

/// What the worker does at a round.
pub(super) enum Round {
    /// Publish `round` on each of these channels, and report the ones Redis took.
    Publish(u64, Vec<String>),
    /// A canary went unheard [`MISSES`] rounds in a row: every subscription is lost.
    Silent(String),
    /// Nothing to check: no canary is subscribed (no stream yet, or Redis is away).
    Idle,
}

impl Canary {
    /// The canaries of the node `owner` (its name and run: unique among live nodes).
    pub(super) fn new(owner: &str, cluster: bool) -> Self {
        let tags = if cluster {
            window_tags()
        } else {
            vec!["0".to_owned()]
        };
        Canary {
            channels: tags
                .into_iter()
                .map(|tag| Channel {
                    name: format!("{PREFIX}{{{tag}}}:{owner}"),
                    subscribed_at: None,
                    sent: None,
                    heard: 0,
                    misses: 0,
                    failed_at: None,
                    failing_since: None,
                    told: false,
                })
                .collect(),
            round: 0,
            next_at: Instant::now() + ROUND,
            watch_until: None,
        }
    }

    /// The channels to subscribe: not subscribed on the current connection, and not failed
    /// within [`RETRY_FAILED`].
    pub(super) fn unsubscribed(&self) -> Vec<String> {
        let now = Instant::now();
        (self.channels.iter())
            .filter(|c| c.subscribed_at.is_none())
            .filter(|c| c.failed_at.is_none_or(|at| now >= at + RETRY_FAILED))
            .map(|c| c.name.clone())
            .collect()
    }

    /// Subscribing `name` on the current connection succeeded (`ok`) or failed.
    pub(super) fn subscribed(&mut self, name: &str, ok: bool) -> Tell {
        let round = self.round;
        let Some(channel) = self.channel(name) else {
            return Tell::Nothing;
        };
        if ok {
            channel.subscribed_at = Some(round);
            channel.failed_at = None;
            channel.failing_since = None;
            channel.forget();
            return match std::mem::take(&mut channel.told) {
                true => Tell::Back,
                false => Tell::Nothing,
            };
        }
        let now = Instant::now();
        channel.failed_at = Some(now);
        let since = *channel.failing_since.get_or_insert(now);
        if channel.told || now < since + TELL_FAILING {
            return Tell::Nothing;
        }
        channel.told = true;
        Tell::Failing
    }

    pub(super) fn take(&mut self, report: Report) {
        match report {
            Report::Heard(name, round) => self.heard(&name, round),
            Report::Published(name, round) => self.published(&name, round),
            Report::Dropped(name) => self.lost(Some(&name)),
        }
    }

    /// The connection's subscriptions are gone (`name`: only that canary's, its slot left the
    /// node); a new connection may reach what the old one could not.
    pub(super) fn lost(&mut self, name: Option<&str>) {
        for channel in &mut self.channels {
            if name.is_none_or(|name| name == channel.name) {
                channel.subscribed_at = None;
                channel.failed_at = None;
                channel.forget();
            }
        }
    }

    /// When the next round is due.
    pub(super) fn next_at(&self) -> Instant {
        self.next_at
    }

    /// Check often for [`WATCH`] from now.
    pub(super) fn watch(&mut self) {
        let now = Instant::now();
        self.watch_until = Some(now + WATCH);
        self.next_at = self.next_at.min(now + FAST_ROUND);
    }

    /// Judge the last round and start the next. `active`: this node holds subscriptions
    /// worth checking.
    pub(super) fn round(&mut self, active: bool) -> Round {
        let now = Instant::now();
        let watching = self.watch_until.is_some_and(|until| now < until);
        self.next_at = now + if watching { FAST_ROUND } else { ROUND };
        let mut silent = None;
        for channel in &mut self.channels {
            match channel.sent.take() {
                Some(sent) if channel.heard < sent => channel.misses += 1,
                Some(_) => channel.misses = 0,
                None => {}
            }
            if channel.misses >= MISSES {
                silent.get_or_insert_with(|| channel.name.clone());
            }
        }
        if let Some(name) = silent {
            self.lost(None);
            return Round::Silent(name);
        }
        let subscribed: Vec<String> = (self.channels.iter())
            .filter(|c| c.subscribed_at.is_some())
            .map(|c| c.name.clone())
            .collect();
        if subscribed.is_empty() || !active {
            self.channels.iter_mut().for_each(Channel::forget);
            return Round::Idle;
        }
        self.round += 1;
        Round::Publish(self.round, subscribed)
    }

    /// Redis took the publish of `round` on `name` (it counts if the canary was subscribed
    /// before that round).
    fn published(&mut self, name: &str, round: u64) {
        if let Some(channel) = self.channel(name) {
            if channel.subscribed_at.is_some_and(|at| at < round) {
                channel.sent = Some(round);
            }
        }
    }

    /// `round` was heard on `name`.
    fn heard(&mut self, name: &str, round: u64) {
        if let Some(channel) = self.channel(name) {
            channel.heard = channel.heard.max(round);
        }
    }

    fn channel(&mut self, name: &str) -> Option<&mut Channel> {
        self.channels.iter_mut().find(|c| c.name == name)
    }
}

/// The marker that follows Redis's answer to the publish of `round` on `channel` in the push
/// queue: the connection hands a push to the queue before the answers read after it, so a
/// round's own message, when it came, is ahead of its marker.
pub(super) fn marker(channel: String, round: u64) -> PushInfo {
    PushInfo {
        kind: PushKind::Other(MARKER.to_owned()),
        data: vec![
            Value::BulkString(channel.into_bytes()),
            Value::Int(round as i64),
        ],
    }
}

/// The channel and round of a [`marker`].
pub(super) fn read_marker(push: &PushInfo) -> Option<Report> {
    let PushKind::Other(kind) = &push.kind else {
        return None;
    };
    match (kind == MARKER, push.data.as_slice()) {
        (true, [Value::BulkString(channel), Value::Int(round)]) => Some(Report::Published(
            String::from_utf8(channel.clone()).ok()?,
            u64::try_from(*round).ok()?,
        )),
        _ => None,
    }
}

/// Whether `channel` is a canary channel (any node's).
pub(super) fn is_canary(channel: &str) -> bool {
    channel.starts_with(PREFIX)
}

/// For each window of [`WINDOW`] slots, the first of the hash tags `0`, `1`, … whose slot
/// lies in it.
fn window_tags() -> Vec<String> {
    let windows = SLOTS / WINDOW;
    let window_of: HashMap<Slot, u16> = (0..SLOTS)
        .filter_map(|n| Some((Slot::new(n)?, n / WINDOW)))
        .collect();
    let mut tags: Vec<Option<String>> = vec![None; windows as usize];
    let mut missing = windows;
    for n in 0u32.. {
        let tag = n.to_string();
        let window = window_of[&Slot::for_key(format!("{{{tag}}}"))] as usize;
        if tags[window].is_none() {
            tags[window] = Some(tag);
            missing -= 1;
            if missing == 0 {
                break;
            }
        }
    }
    tags.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every window of slots has a canary, each in its own window.
    #[test]
    fn a_cluster_has_a_canary_in_every_window() {
        let canary = Canary::new("n:run", true);
        let names = canary.unsubscribed();
        assert_eq!(names.len(), 64);
        let mut windows: Vec<u16> = names
            .iter()
            .map(|name| {
                let slot = Slot::for_key(name);
                (0..SLOTS).find(|n| Slot::new(*n) == Some(slot)).unwrap() / WINDOW
            })
            .collect();
        windows.sort();
        assert_eq!(windows, (0..64).collect::<Vec<_>>());
        assert!(names.iter().all(|n| is_canary(n) && n.ends_with("}:n:run")));
        assert_eq!(Canary::new("n:run", false).channels.len(), 1);
    }

    /// A marker reads back as the publish it follows; other pushes are not markers.
    #[test]
    fn markers_read_back() {
        let push = marker("herald:canary:{0}:n".into(), 7);
        assert!(matches!(read_marker(&push), Some(Report::Published(c, 7)) if c.ends_with(":n")));
        let other = PushInfo {
            kind: PushKind::Other("x".into()),
            data: Vec::new(),
        };
        assert!(read_marker(&other).is_none());
    }

    /// A canary that keeps failing to subscribe is told once, after [`TELL_FAILING`], and
    /// again when it subscribes.
    #[test]
    fn a_canary_failing_for_long_is_told_once() {
        let mut canary = Canary::new("n", false);
        let name = canary.unsubscribed()[0].clone();
        assert_eq!(canary.subscribed(&name, false), Tell::Nothing);
        let began = |canary: &mut Canary, ago: Duration| {
            canary.channels[0].failing_since = Some(Instant::now() - ago);
        };
        began(&mut canary, TELL_FAILING - Duration::from_secs(1));
        assert_eq!(canary.subscribed(&name, false), Tell::Nothing);
        began(&mut canary, TELL_FAILING);
        assert_eq!(canary.subscribed(&name, false), Tell::Failing);
        began(&mut canary, 2 * TELL_FAILING);
        assert_eq!(canary.subscribed(&name, false), Tell::Nothing, "once");
        assert_eq!(canary.subscribed(&name, true), Tell::Back);
        assert_eq!(canary.subscribed(&name, true), Tell::Nothing);
        assert_eq!(
            canary.subscribed(&name, false),
            Tell::Nothing,
            "a new run of failures"
        );
        assert!(canary.channels[0]
            .failing_since
            .is_some_and(|t| t.elapsed() < TELL_FAILING));
    }

    /// Rounds come every [`FAST_ROUND`] for [`WATCH`] after `watch`, every [`ROUND`] else.
    #[test]
    fn rounds_come_often_while_watching() {
        let mut canary = Canary::new("n", false);
        let due_in = |canary: &Canary| canary.next_at() - Instant::now();
        assert!(due_in(&canary) > FAST_ROUND);
        canary.watch();
        assert!(due_in(&canary) <= FAST_ROUND);
        canary.round(true);
        assert!(due_in(&canary) <= FAST_ROUND);
        canary.watch_until = Some(Instant::now()); // the watch is over
        canary.round(true);
        assert!(due_in(&canary) > FAST_ROUND);
    }

    /// A canary unheard twice in a row is a loss; once, or a publish Redis did not take, is
    /// not; neither is a publish from before the channel's latest subscription. A canary not
    /// subscribed is not published on, and one that failed to subscribe is left a while.
    #[test]
    fn two_unheard_rounds_are_a_loss() {
        let mut canary = Canary::new("n", true);
        assert!(matches!(canary.round(true), Round::Idle));
        let names = canary.unsubscribed();
        let name = names[3].clone();
        canary.subscribed(&name, true);
        canary.subscribed(&names[4], false);
        assert_eq!(
            canary.unsubscribed().len(),
            62,
            "one subscribed, one failed just now"
        );
        assert!(matches!(canary.round(false), Round::Idle));
        let publish = |canary: &mut Canary| match canary.round(true) {
            Round::Publish(round, names) => {
                assert_eq!(names, std::slice::from_ref(&name));
                round
            }
            _ => panic!("a round to publish"),
        };
        let published = |canary: &mut Canary, round| {
            canary.take(Report::Published(name.clone(), round));
        };
        let round = publish(&mut canary);
        published(&mut canary, round);
        let round = publish(&mut canary); // one miss
        canary.take(Report::Heard(name.clone(), round));
        published(&mut canary, round);
        let round = publish(&mut canary); // heard
        published(&mut canary, round);
        publish(&mut canary); // one miss; this publish not taken
        let round = publish(&mut canary); // not a miss
        published(&mut canary, round);
        assert!(matches!(canary.round(true), Round::Silent(n) if n == name));
        assert!(matches!(canary.round(true), Round::Idle));
        assert_eq!(
            canary.unsubscribed().len(),
            64,
            "a new connection: every one, again"
        );
        canary.subscribed(&name, true);
        published(&mut canary, round); // sent before the new subscription
        assert!(canary.channels.iter().all(|c| c.sent.is_none()));
        let round = publish(&mut canary);
        canary.take(Report::Dropped(name.clone()));
        published(&mut canary, round);
        assert!(matches!(canary.round(true), Round::Idle));
    }
}
