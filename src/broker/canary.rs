//! The broker's canary: how a node notices that Redis stopped delivering to its subscriptions
//! without saying so. A node subscribes canary channels of its own (one on one server; on a
//! cluster one in each 1,024-slot window, so every primary that serves a window holds one)
//! before any user's channel, and again before lost users are restored; every
//! [`ROUND`] it publishes a round number on each and listens for it. A canary published but
//! not heard back [`MISSES`] rounds in a row means the connection that held it lost its
//! subscriptions silently (a cluster client that replaced a node connection, say): the
//! subscription worker then treats it as a lost connection, makes every subscription again and
//! catches every stream up. A publish that fails proves nothing (Redis is away, which the
//! link reports itself) and is not counted.

use std::collections::HashMap;
use std::time::Duration;

use redis::cluster_routing::Slot;
use tokio::time::Instant;

/// How often a round of canaries is published; each is judged at the next round.
pub(super) const ROUND: Duration = Duration::from_secs(2);
/// Rounds in a row a canary must go unheard before the node's subscriptions count as lost:
/// one late delivery (a busy node reading its pushes) is not a loss.
const MISSES: u8 = 2;
/// Slots per canary on a cluster (16 canaries for the 16,384 slots).
const WINDOW: u16 = 1024;
const SLOTS: u16 = 16384;
const PREFIX: &str = "herald:canary:";

/// One canary channel and what was published and heard on it.
struct Channel {
    name: String,
    /// The round last published on it, once Redis took the publish.
    sent: Option<u64>,
    /// The latest round heard back.
    heard: u64,
    /// Rounds in a row published and not heard.
    misses: u8,
}

/// The canaries of one node, kept by the subscription worker (which alone subscribes them).
pub(super) struct Canary {
    channels: Vec<Channel>,
    /// Whether the channels are subscribed on the current connection.
    subscribed: bool,
    /// The round of the latest publish; publishes of earlier rounds than the subscription's
    /// do not count.
    round: u64,
    subscribed_round: u64,
    next_at: Instant,
}

/// What the worker does at a round.
pub(super) enum Round {
    /// Publish `round` on each of these channels, and report the ones Redis took.
    Publish(u64, Vec<String>),
    /// A canary went unheard [`MISSES`] rounds in a row: every subscription is lost.
    Silent(String),
    /// Nothing to check: the canaries are not subscribed (no stream yet, or Redis is away).
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
                    sent: None,
                    heard: 0,
                    misses: 0,
                })
                .collect(),
            subscribed: false,
            round: 0,
            subscribed_round: 0,
            next_at: Instant::now() + ROUND,
        }
    }

    /// The channels to subscribe, when they are not on the current connection.
    pub(super) fn unsubscribed(&self) -> Option<Vec<String>> {
        (!self.subscribed).then(|| self.channels.iter().map(|c| c.name.clone()).collect())
    }

    /// The channels were subscribed on the current connection.
    pub(super) fn subscribed(&mut self) {
        self.subscribed = true;
        self.subscribed_round = self.round;
    }

    /// The connection's subscriptions are gone (or one canary's: its slot left the node).
    pub(super) fn lost(&mut self) {
        self.subscribed = false;
        self.lost_track();
    }

    /// Forget what was published and missed: it says nothing about the next subscription.
    fn lost_track(&mut self) {
        for channel in &mut self.channels {
            channel.sent = None;
            channel.misses = 0;
        }
    }

    /// When the next round is due.
    pub(super) fn next_at(&self) -> Instant {
        self.next_at
    }

    /// Judge the last round and start the next. `active`: this node holds subscriptions
    /// worth checking.
    pub(super) fn round(&mut self, active: bool) -> Round {
        self.next_at = Instant::now() + ROUND;
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
            self.lost();
            return Round::Silent(name);
        }
        if !self.subscribed || !active {
            self.lost_track();
            return Round::Idle;
        }
        self.round += 1;
        let names = self.channels.iter().map(|c| c.name.clone()).collect();
        Round::Publish(self.round, names)
    }

    /// Redis took the publish of `round` on `name`.
    pub(super) fn published(&mut self, name: &str, round: u64) {
        if !self.subscribed || round <= self.subscribed_round {
            return;
        }
        if let Some(channel) = self.channels.iter_mut().find(|c| c.name == name) {
            channel.sent = Some(round);
        }
    }

    /// `round` was heard on `name`.
    pub(super) fn heard(&mut self, name: &str, round: u64) {
        if let Some(channel) = self.channels.iter_mut().find(|c| c.name == name) {
            channel.heard = channel.heard.max(round);
        }
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
        let names = canary.unsubscribed().unwrap();
        assert_eq!(names.len(), 16);
        let mut windows: Vec<u16> = names
            .iter()
            .map(|name| {
                let slot = Slot::for_key(name);
                (0..SLOTS).find(|n| Slot::new(*n) == Some(slot)).unwrap() / WINDOW
            })
            .collect();
        windows.sort();
        assert_eq!(windows, (0..16).collect::<Vec<_>>());
        assert!(names.iter().all(|n| is_canary(n) && n.ends_with("}:n:run")));
        assert_eq!(Canary::new("n:run", false).channels.len(), 1);
    }

    /// A canary unheard twice in a row is a loss; once, or a publish Redis did not take, is
    /// not; neither is a publish from before the channel's latest subscription.
    #[test]
    fn two_unheard_rounds_are_a_loss() {
        let mut canary = Canary::new("n", false);
        assert!(matches!(canary.round(true), Round::Idle));
        canary.subscribed();
        assert!(matches!(canary.round(false), Round::Idle));
        let name = canary.channels[0].name.clone();
        let Round::Publish(round, _) = canary.round(true) else {
            panic!("a round to publish")
        };
        canary.published(&name, round);
        let Round::Publish(round, _) = canary.round(true) else {
            panic!("one miss is not a loss")
        };
        canary.heard(&name, round);
        canary.published(&name, round);
        let Round::Publish(round, _) = canary.round(true) else {
            panic!("heard")
        };
        canary.published(&name, round);
        let Round::Publish(_, _) = canary.round(true) else {
            panic!("a publish not taken is not a miss")
        };
        let Round::Publish(round, _) = canary.round(true) else {
            panic!("one miss")
        };
        canary.published(&name, round);
        assert!(matches!(canary.round(true), Round::Silent(n) if n == name));
        assert!(matches!(canary.round(true), Round::Idle));
        canary.subscribed();
        canary.published(&name, round); // sent before the new subscription
        assert!(canary.channels[0].sent.is_none());
        assert!(matches!(canary.round(true), Round::Publish(..)));
    }
}
