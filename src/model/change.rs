//! A user's change log: the kinds of change (the SSE event names), the log's epoch and the event
//! id `<epoch>.<seq>` that names a position in it, the badge counts, and the tray writes that
//! make changes.

use super::is_lower_hex;

/// The kind of a change, which is also its SSE event name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Notification,
    Read,
    Unread,
    Deleted,
    Seen,
    Archived,
    Unarchived,
    /// The whole notification, changed (an action taken, a snooze).
    Updated,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Notification => "notification",
            ChangeKind::Read => "read",
            ChangeKind::Unread => "unread",
            ChangeKind::Deleted => "deleted",
            ChangeKind::Seen => "seen",
            ChangeKind::Archived => "archived",
            ChangeKind::Unarchived => "unarchived",
            ChangeKind::Updated => "updated",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "notification" => ChangeKind::Notification,
            "read" => ChangeKind::Read,
            "unread" => ChangeKind::Unread,
            "deleted" => ChangeKind::Deleted,
            "seen" => ChangeKind::Seen,
            "archived" => ChangeKind::Archived,
            "unarchived" => ChangeKind::Unarchived,
            "updated" => ChangeKind::Updated,
            _ => return None,
        })
    }
}

/// The tag of one incarnation of a user's change log: 12 lowercase hex characters (48 random
/// bits), drawn when the log is first created. A log that starts again from nothing (a Redis
/// that lost its data, a restarted embedded node) gets a new one, so an event id of another
/// user or of a lost log never matches and resets instead of replaying the wrong changes.
/// Fixed size and `Copy`: carrying it costs no allocation.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Epoch([u8; Epoch::LEN]);

impl Epoch {
    /// Length of the text form, in ASCII characters.
    pub const LEN: usize = 12;

    /// A new random epoch.
    pub fn random() -> Self {
        Epoch::from_bits(rand::random())
    }

    /// The epoch of the low 48 bits of `bits`.
    pub fn from_bits(bits: u64) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; Epoch::LEN];
        for (i, c) in out.iter_mut().enumerate() {
            *c = HEX[(bits >> (4 * (Epoch::LEN - 1 - i)) & 0xf) as usize];
        }
        Epoch(out)
    }

    /// Exactly 12 lowercase ASCII hex characters; anything else is not an epoch.
    pub fn parse(s: &str) -> Option<Self> {
        let bytes: [u8; Epoch::LEN] = s.as_bytes().try_into().ok()?;
        is_lower_hex(s, Epoch::LEN).then_some(Epoch(bytes))
    }

    pub fn as_str(&self) -> &str {
        // Only ever built from ASCII hex digits (`random`, `parse`).
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Display for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Epoch({})", self.as_str())
    }
}

/// A position in a user's change log, and the SSE `id:` of the event that reached it:
/// `<epoch>.<seq>`, e.g. `3f9a0c12d4e1.17`. Seqs compare only within one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventId {
    pub epoch: Epoch,
    pub seq: u64,
}

impl EventId {
    /// A Last-Event-ID as a client sent it. `None` for anything but `<epoch>.<digits>` in
    /// ASCII, as Herald writes it (a legacy plain number, garbage, fullwidth digits, a sign, a
    /// leading zero: no id Herald sent): the stream resets.
    pub fn parse(s: &str) -> Option<Self> {
        let (epoch, seq) = s.trim_ascii().split_once('.')?;
        let canonical = seq == "0" || !seq.starts_with('0');
        if seq.is_empty() || !canonical || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(EventId {
            epoch: Epoch::parse(epoch)?,
            seq: seq.parse().ok()?,
        })
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.epoch, self.seq)
    }
}

/// A tray's badge counts: notifications not read, and not seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub unread: u64,
    pub unseen: u64,
}

impl Counts {
    /// `json` (an object) with `"unread_count"` and `"unseen_count"` added at its end: the
    /// `notification` event's data, the notification and the tray's counts beside it.
    pub fn append_to(self, json: &str) -> String {
        let body = json.strip_suffix('}').unwrap_or(json);
        let mut out = String::with_capacity(body.len() + 64);
        out.push_str(body);
        if !body.ends_with('{') {
            out.push(',');
        }
        self.close(&mut out);
        out
    }

    /// Write the two count members and the object's closing brace after `out`'s last member.
    pub fn close(self, out: &mut String) {
        use std::fmt::Write;
        let _ = write!(
            out,
            r#""unread_count":{},"unseen_count":{}}}"#,
            self.unread, self.unseen
        );
    }
}

/// One entry of a user's change log: `epoch.seq` is the SSE `id:`; `seq` is strictly
/// increasing per user within one epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The log this change belongs to.
    pub epoch: Epoch,
    pub seq: u64,
    pub kind: ChangeKind,
    /// The event's `data:` JSON (the notification, or `{"ids":[..],"unread_count":N}`).
    pub data: String,
    /// When the change was committed, in Unix milliseconds (for the delivery latency metric).
    pub at_ms: u64,
}

impl Change {
    /// What tells this change from another logged at its position: the first 8 bytes of the
    /// SHA-1 of `kind<TAB>ms<TAB>data`, the log entry after its seq (`head.lua` computes the
    /// same with `redis.sha1hex`). A Redis Cluster primary that hung until its replica took
    /// over may have logged other changes at the positions the new primary hands out, also
    /// committed in the same millisecond.
    pub fn print(&self) -> u64 {
        use sha1::Digest;
        let mut sha = sha1::Sha1::new();
        for part in [
            self.kind.as_str(),
            "\t",
            &self.at_ms.to_string(),
            "\t",
            &self.data,
        ] {
            sha.update(part.as_bytes());
        }
        let digest = sha.finalize();
        u64::from_be_bytes(digest[..8].try_into().expect("8 of 20 bytes"))
    }
}

/// The change a tray write asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Read,
    Unread,
    Deleted,
    Seen,
    Archived,
    Unarchived,
    /// Snooze until this time (Unix ms; already checked to lie ahead).
    Snooze(u64),
    Unsnooze,
}

impl Mark {
    /// The script's name for this change (and the event of a status change).
    pub fn as_str(self) -> &'static str {
        match self {
            Mark::Read => "read",
            Mark::Unread => "unread",
            Mark::Deleted => "deleted",
            Mark::Seen => "seen",
            Mark::Archived => "archived",
            Mark::Unarchived => "unarchived",
            Mark::Snooze(_) => "snooze",
            Mark::Unsnooze => "unsnooze",
        }
    }

    /// The event of a status change: one event names every changed id. `None` for a snooze
    /// change, which sends each changed notification whole (`updated`, or `notification`
    /// when it is active again).
    pub fn status_kind(self) -> Option<ChangeKind> {
        Some(match self {
            Mark::Read => ChangeKind::Read,
            Mark::Unread => ChangeKind::Unread,
            Mark::Deleted => ChangeKind::Deleted,
            Mark::Seen => ChangeKind::Seen,
            Mark::Archived => ChangeKind::Archived,
            Mark::Unarchived => ChangeKind::Unarchived,
            Mark::Snooze(_) | Mark::Unsnooze => return None,
        })
    }
}

/// Which notifications a tray write applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Ids(Vec<String>),
    All,
}

/// What a tray write did: how many of the named ids exist, which ones changed state, and
/// where the user's change log stood after it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marked {
    pub found: usize,
    pub changed: Vec<String>,
    /// The log's head once the write was done (`None` when the user has no log yet): a
    /// stream at or past it shows the write.
    pub position: Option<EventId>,
}

/// `data:` of a status change event.
pub fn status_data(ids: &[String], counts: Counts) -> String {
    serde_json::json!({"ids": ids, "unread_count": counts.unread, "unseen_count": counts.unseen})
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epoch_from_bits_is_their_low_48_in_hex() {
        assert_eq!(Epoch::from_bits(0x0123_4567_89ab).as_str(), "0123456789ab");
        assert_eq!(Epoch::from_bits(u64::MAX).as_str(), "ffffffffffff");
        assert!(Epoch::parse(Epoch::random().as_str()).is_some());
    }

    /// An event id is written `<epoch>.<seq>` and parses back to itself.
    #[test]
    fn event_id_round_trips() {
        let id = EventId {
            epoch: Epoch::random(),
            seq: 17,
        };
        let text = id.to_string();
        assert_eq!(text.len(), Epoch::LEN + 3);
        assert!(text.ends_with(".17"));
        assert_eq!(EventId::parse(&text), Some(id));
        assert_eq!(EventId::parse(&format!(" {text}\t")), Some(id));
    }

    /// Legacy plain numbers, garbage, non-ASCII look-alikes and padded seqs (no id Herald
    /// wrote) are not event ids; `.0`, an empty log's position, is.
    #[test]
    fn foreign_event_ids_do_not_parse() {
        for bad in [
            "17",
            "",
            ".17",
            "3f9a0c12d4e1.",
            "3f9a0c12d4e1.+17",
            "3f9a0c12d4e1.-1",
            "3f9a0c12d4e1.01",
            "3f9a0c12d4e1.00",
            "3f9a0c12d4e1.0001",
            "3F9A0C12D4E1.17",
            "3f9a0c12d4e.17",
            "3f9a0c12d4e1a.17",
            "3f9a0c12d4e1.1.7",
            "3f9a0c12d4e1.99999999999999999999",
            "3f9a0c12d4e1.\u{ff11}\u{ff17}",
            "３f9a0c12d4e1.17",
            "\u{3000}3f9a0c12d4e1.17",
            "not-a-number",
        ] {
            assert_eq!(EventId::parse(bad), None, "{bad:?}");
        }
        assert_eq!(EventId::parse("3f9a0c12d4e1.0").map(|id| id.seq), Some(0));
    }
}
