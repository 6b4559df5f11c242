//! The batch announcement: a `publish.lua` call for many users on one Redis server announces
//! every user's `notification` change in one message on [`BATCH_CHANNEL`] instead of one on
//! each user's channel (those were a fifth of a group publish's Redis time, and every node
//! parsed one message per member). The message carries the notification's shared tail once
//! and, per user, what differs; a node writes each user's change data from it, byte for byte
//! as logged (and the `deleted` of the notifications the publish pushed out of a full tray).

use std::borrow::Cow;
use std::fmt::Write;

use crate::model::{status_data, Change, ChangeKind, Counts, Epoch, FRESH_STATE};

/// The channel of batch announcements, which every node of a one-server deployment
/// subscribes to for as long as it runs (a cluster has no batch channel: a call there
/// touches one slot, so a group's calls seldom hold more than one or two users).
pub const BATCH_CHANNEL: &str = "herald:batch";

/// A batch message: `g<TAB>ms<TAB>tail`, then per user a line
/// `<LF>epoch<TAB>seq<TAB>count<TAB>replaced id<TAB>unread<TAB>unseen<TAB>id<TAB>dropped ids
/// (comma-separated)<TAB>user JSON`.
pub struct Batch<'a> {
    at_ms: u64,
    tail: &'a str,
    lines: &'a str,
}

/// One user's change in a [`Batch`], not yet written out.
pub struct Announced<'a> {
    /// The recipient's user id (borrowed unless its JSON string has escapes).
    pub user: Cow<'a, str>,
    epoch: Epoch,
    seq: u64,
    /// The collapse count and the id it replaced (empty when none).
    count: u64,
    replaces: &'a str,
    counts: Counts,
    id: &'a str,
    /// The ids `--max-per-user` pushed out, comma-separated (empty when none).
    dropped: &'a str,
    user_json: &'a str,
}

impl<'a> Batch<'a> {
    /// `None` when `payload` is not a batch message.
    pub fn parse(payload: &'a str) -> Option<Self> {
        let (header, lines) = payload.split_once('\n')?;
        let mut parts = header.splitn(3, '\t');
        if parts.next()? != "g" {
            return None;
        }
        Some(Batch {
            at_ms: parts.next()?.parse().ok()?,
            tail: parts.next()?,
            lines,
        })
    }

    /// Every user's change, in commit order; `None` for an unreadable line.
    pub fn users(&self) -> impl Iterator<Item = Option<Announced<'a>>> + 'a {
        self.lines.split('\n').map(|line| {
            let mut parts = line.splitn(9, '\t');
            let number = |part: Option<&str>| part?.parse::<u64>().ok();
            let (epoch, seq) = (Epoch::parse(parts.next()?)?, number(parts.next())?);
            let count = number(parts.next())?;
            let replaces = parts.next()?;
            let counts = Counts {
                unread: number(parts.next())?,
                unseen: number(parts.next())?,
            };
            let (id, dropped, user_json) = (parts.next()?, parts.next()?, parts.next()?);
            let user = match serde_json::from_str::<&str>(user_json) {
                Ok(plain) => Cow::Borrowed(plain),
                Err(_) => Cow::Owned(serde_json::from_str(user_json).ok()?),
            };
            Some(Announced {
                user,
                epoch,
                seq,
                count,
                replaces,
                counts,
                id,
                dropped,
                user_json,
            })
        })
    }

    /// The change `user` was announced, with its data as `publish.lua` logged it.
    pub fn change(&self, user: &Announced<'_>) -> Change {
        let mut data = String::with_capacity(
            self.tail.len() + FRESH_STATE.len() + user.user_json.len() + user.id.len() + 110,
        );
        for part in [
            r#"{"id":""#,
            user.id,
            r#"","user":"#,
            user.user_json,
            self.tail,
            FRESH_STATE,
        ] {
            data.push_str(part);
        }
        let _ = write!(data, r#","count":{},"replaces":"#, user.count);
        if user.replaces.is_empty() {
            data.push_str("null,");
        } else {
            let _ = write!(data, r#""{}","#, user.replaces);
        }
        user.counts.close(&mut data);
        Change {
            epoch: user.epoch,
            seq: user.seq,
            kind: ChangeKind::Notification,
            data,
            at_ms: self.at_ms,
        }
    }

    /// The `deleted` change logged right after `user`'s notification when the publish pushed
    /// the oldest out of a full tray; `None` when it pushed none out.
    pub fn dropped(&self, user: &Announced<'_>) -> Option<Change> {
        if user.dropped.is_empty() {
            return None;
        }
        let ids: Vec<String> = user.dropped.split(',').map(str::to_owned).collect();
        Some(Change {
            epoch: user.epoch,
            seq: user.seq + 1,
            kind: ChangeKind::Deleted,
            data: status_data(&ids, user.counts),
            at_ms: self.at_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each line gives the user and the change as `publish.lua` logs it; a broken line (or
    /// one whose numbers are not numbers) is `None` without spoiling the others.
    #[test]
    fn a_batch_writes_each_users_change() {
        let payload = "g\t17\t,\"title\":\"t\",\"created_at\":\"c\"\n\
                       3f9a0c12d4e1\t4\t1\t\t2\t3\tN1\t\t\"a\\\"b\"\n\
                       broken\n\
                       3f9a0c12d4e1\t5\t1\t\tx\t3\tN1\t\t\"a\"\n\
                       3f9a0c12d4e2\t9\t2\tN0\t1\t1\tN2\tM1,M2\t\"c\"";
        let batch = Batch::parse(payload).unwrap();
        let users: Vec<_> = batch.users().collect();
        assert_eq!(users.len(), 4);
        assert!(users[1].is_none() && users[2].is_none());
        let a = users[0].as_ref().unwrap();
        assert_eq!(a.user, "a\"b");
        let change = batch.change(a);
        assert_eq!((change.seq, change.at_ms), (4, 17));
        assert_eq!(change.epoch.as_str(), "3f9a0c12d4e1");
        assert_eq!(
            change.data,
            format!(
                "{{\"id\":\"N1\",\"user\":\"a\\\"b\",\"title\":\"t\",\"created_at\":\"c\"{FRESH_STATE},\
                 \"count\":1,\"replaces\":null,\"unread_count\":2,\"unseen_count\":3}}"
            )
        );
        let c = users[3].as_ref().unwrap();
        assert!(matches!(c.user, Cow::Borrowed("c")));
        let data = batch.change(c).data;
        assert!(data.contains(r#""count":2,"replaces":"N0","unread_count":1"#));
        // c's publish pushed two out: their `deleted` is the next seq, with the same counts
        assert!(batch.dropped(a).is_none());
        let deleted = batch.dropped(c).unwrap();
        assert_eq!((deleted.seq, deleted.kind), (10, ChangeKind::Deleted));
        assert_eq!(
            deleted.data,
            r#"{"ids":["M1","M2"],"unread_count":1,"unseen_count":1}"#
        );
        assert!(Batch::parse("c\t1\tx\n").is_none());
    }
}
