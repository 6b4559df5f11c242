//! The change log: a user's head (epoch, seq, counts) and the replay after a position.

use super::RedisStore;
use crate::error::{Error, Result};
use crate::model::{Change, ChangeKind, Epoch, EventId};
use crate::store::keys::UserKeys;
use crate::store::{Head, Replay, ReplayWindow, LOG_CAPACITY};

impl RedisStore {
    /// `SET NX GET` the epoch, so a user without a log gets one that the first commit keeps.
    pub async fn head(&self, user: &str) -> Result<Head> {
        Ok(self.open_at(user, None).await?.0)
    }

    pub async fn replay(&self, user: &str, after: EventId, print: u64) -> Result<Replay> {
        let read = self.read_head(user, None, Some(after), Some(print));
        // No epoch (the log is gone): the position means nothing here.
        Ok(match read.await? {
            (Some(_), Some(replay)) => replay,
            _ => Replay::Reset,
        })
    }

    /// The head (creating the epoch when the user has none) and, with `after`, the replay
    /// from it: one script, so one round trip and one instant.
    pub async fn open_at(
        &self,
        user: &str,
        after: Option<EventId>,
    ) -> Result<(Head, Option<Replay>)> {
        let (head, replay) = self
            .read_head(user, Some(Epoch::random()), after, None)
            .await?;
        let head = head.ok_or_else(|| Error::Internal("head.lua kept no epoch".into()))?;
        Ok((head, replay))
    }

    /// `head.lua`: the head (`None` when the user has no epoch and `fresh` is `None`) and,
    /// with `after`, the replay after it (`Reset` for a position of another epoch). With
    /// `handed_out` (`after` is a position this store gave a stream, not one a client sent,
    /// and the [`Change::print`] of its change, 0 if unknown), `after` beyond the head or
    /// another change at its seq shows the log went back, and the log takes a new epoch.
    async fn read_head(
        &self,
        user: &str,
        fresh: Option<Epoch>,
        after: Option<EventId>,
        handed_out: Option<u64>,
    ) -> Result<(Option<Head>, Option<Replay>)> {
        let k = UserKeys::new(user);
        let rotate_to = handed_out.map(|_| Epoch::random());
        let out: Vec<String> = self
            .tray(&self.scripts.head, &k)
            .arg(fresh.as_ref().map_or("", Epoch::as_str))
            .arg(after.map_or(String::new(), |a| a.seq.to_string()))
            .arg(LOG_CAPACITY)
            .arg(match (&after, handed_out) {
                (Some(a), Some(_)) => a.epoch.as_str(),
                _ => "",
            })
            .arg(rotate_to.as_ref().map_or("", Epoch::as_str))
            .arg(match handed_out {
                Some(print) if print != 0 => format!("{print:016x}"),
                _ => String::new(),
            })
            .invoke_async(&mut self.conn())
            .await?;
        let shape = || Error::Internal("head script returned an unexpected shape".into());
        let [epoch, seq, unread, unseen, entries @ ..] = out.as_slice() else {
            return Err(shape());
        };
        if epoch.is_empty() {
            return Ok((None, None));
        }
        let epoch = Epoch::parse(epoch)
            .ok_or_else(|| Error::Internal(format!("{} is not an epoch: {epoch:?}", k.epoch())))?;
        let head = Head {
            epoch,
            seq: seq.parse().map_err(|_| shape())?,
            unread_count: unread.parse().map_err(|_| shape())?,
            unseen_count: unseen.parse().map_err(|_| shape())?,
        };
        // A position of another epoch (or of a log created just now) means nothing here.
        let replay = after.map(|after| {
            if after.epoch == head.epoch {
                replay_from(after.seq, &head, entries)
            } else {
                Replay::Reset
            }
        });
        Ok((Some(head), replay))
    }
}

/// The replay after `after` from the log entries `head.lua` read with `head`: every change
/// from `after + 1` to the head, each once and in order, or `Reset` when the log no longer
/// holds them all (trimmed, or a seq missing: written by a node of another log layout).
fn replay_from(after: u64, head: &Head, entries: &[String]) -> Replay {
    let changes: Vec<Change> = entries
        .iter()
        .filter_map(|entry| parse_change(head.epoch, entry))
        .filter(|c| c.seq > after)
        .collect();
    let whole = changes.iter().zip(after + 1..).all(|(c, seq)| c.seq == seq)
        && changes.last().map_or(after, |c| c.seq) == head.seq;
    match crate::store::replay_window(after, head.seq, changes.first().map(|c| c.seq)) {
        ReplayWindow::Nothing => Replay::Changes(Vec::new()),
        ReplayWindow::From(_) if whole => Replay::Changes(changes),
        ReplayWindow::From(_) | ReplayWindow::Reset => Replay::Reset,
    }
}

/// One `changes` entry: `seq<TAB>kind<TAB>commit ms<TAB>data`.
fn parse_change(epoch: Epoch, entry: &str) -> Option<Change> {
    let mut parts = entry.splitn(4, '\t');
    let seq = parts.next()?.parse().ok()?;
    let kind = ChangeKind::parse(parts.next()?)?;
    let at_ms = parts.next()?.parse().unwrap_or(0);
    Some(Change {
        epoch,
        seq,
        kind,
        data: parts.next()?.to_owned(),
        at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(seq: u64) -> Head {
        Head {
            epoch: Epoch::parse("0123456789ab").unwrap(),
            seq,
            unread_count: 0,
            unseen_count: 0,
        }
    }

    fn entries(seqs: &[u64]) -> Vec<String> {
        seqs.iter()
            .map(|s| format!("{s}\tnotification\t1700000000000\t{{\"n\":{s}}}"))
            .collect()
    }

    fn seqs(replay: Replay) -> Option<Vec<u64>> {
        match replay {
            Replay::Changes(changes) => Some(changes.iter().map(|c| c.seq).collect()),
            Replay::Reset => None,
        }
    }

    #[test]
    fn a_replay_is_every_change_after_the_position() {
        let read = entries(&[3, 4, 5, 6]);
        assert_eq!(seqs(replay_from(4, &head(6), &read)), Some(vec![5, 6]));
        assert_eq!(
            seqs(replay_from(2, &head(6), &read)),
            Some(vec![3, 4, 5, 6])
        );
        assert_eq!(seqs(replay_from(6, &head(6), &read)), Some(vec![]));
    }

    /// Trimmed past the position, a seq missing (logged by a node of the old layout during a
    /// rolling upgrade), or an entry that does not parse: never a replay with a hole.
    #[test]
    fn a_replay_with_a_hole_resets() {
        assert_eq!(
            seqs(replay_from(1, &head(6), &entries(&[3, 4, 5, 6]))),
            None
        );
        assert_eq!(seqs(replay_from(2, &head(6), &entries(&[3, 5, 6]))), None);
        assert_eq!(seqs(replay_from(2, &head(6), &entries(&[3, 4, 5]))), None);
        let mut broken = entries(&[3, 4, 5, 6]);
        broken[1] = "4\tno-such-kind\t0\t{}".into();
        assert_eq!(seqs(replay_from(2, &head(6), &broken)), None);
        assert_eq!(seqs(replay_from(7, &head(6), &[])), None);
    }
}
