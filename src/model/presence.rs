//! A live stream as presence reports it, which streams count for the per-user stream limit,
//! the order in which a session's newer stream replaces its older one, and its opening time.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::rfc3339;

/// One live stream, as `GET /presence/{user}` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceEntry {
    /// Unique stream key (node + local id); not shown to clients.
    #[serde(skip_serializing, default)]
    pub stream: String,
    /// The session's public id; `null` for a Bearer stream without `sid`.
    pub session: Option<String>,
    /// The stream's `?tab=` (with the session, the unit a newer stream replaces); stored,
    /// not part of `GET /presence/{user}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tab: Option<String>,
    pub node: String,
    pub since: String,
}

impl PresenceEntry {
    /// Whether this entry is a stream that replaces `other`'s: the same (session, tab) unit,
    /// opened later (a tie goes to the greater stream key, so every node picks the same one).
    pub fn replaces(&self, other: &PresenceEntry) -> bool {
        self.session.is_some()
            && self.stream != other.stream
            && (&self.session, &self.tab) == (&other.session, &other.tab)
            && (&self.since, &self.stream) > (&other.since, &other.stream)
    }

    /// Whether this stream fits in the user's limit of `max` streams beside `before`: the
    /// user's live streams recorded before this one's entry, read in the same step as it was
    /// written, so that of streams opened at once on several nodes, the last recorded sees
    /// all the others (and no more than `max` open). A stream that a newer one of its unit
    /// replaces (this one, or another: say, the stream of a node that crashed, reopened
    /// elsewhere and not yet known dead) doesn't count.
    pub fn fits_after(&self, before: &[PresenceEntry], max: usize) -> bool {
        let counted = before.iter().filter(|e| {
            e.stream != self.stream
                && !self.replaces(e)
                && !before.iter().any(|newer| newer.replaces(e))
        });
        counted.count() < max
    }
}

/// A stream's opening time in its presence entry: RFC 3339 with microseconds, so streams of
/// a unit opened one after the other within a millisecond (on two nodes) keep their order
/// for which replaces which ([`PresenceEntry::replaces`]); shown with milliseconds
/// ([`shown_since`]).
pub fn presence_since(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

/// A presence entry's `since` as `GET /presence` shows it: RFC 3339 with milliseconds, like
/// every other time of the API (an entry written by an older node already is).
pub fn shown_since(since: &str) -> String {
    humantime::parse_rfc3339(since).map_or_else(|_| since.to_owned(), rfc3339)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    /// A later stream of the same (session, tab) replaces an earlier one; a tie in the
    /// millisecond goes to the greater key; no session, another tab: never.
    #[test]
    fn a_presence_entry_replaces_an_earlier_one_of_its_unit() {
        let entry =
            |stream: &str, session: Option<&str>, tab: Option<&str>, since: &str| PresenceEntry {
                stream: stream.into(),
                session: session.map(Into::into),
                tab: tab.map(Into::into),
                node: "n".into(),
                since: since.into(),
            };
        let (t1, t2) = ("2026-01-01T00:00:00.001Z", "2026-01-01T00:00:00.002Z");
        let old = entry("a.1", Some("s"), None, t1);
        assert!(entry("b.1", Some("s"), None, t2).replaces(&old));
        assert!(!old.replaces(&entry("b.1", Some("s"), None, t2)));
        assert!(entry("b.1", Some("s"), None, t1).replaces(&old));
        assert!(!entry("a.0", Some("s"), None, t1).replaces(&old));
        assert!(!old.replaces(&old));
        assert!(!entry("b.1", Some("s"), Some("t"), t2).replaces(&old));
        assert!(!entry("b.1", Some("x"), None, t2).replaces(&old));
        let bare = entry("a.1", None, None, t1);
        assert!(!entry("b.1", None, None, t2).replaces(&bare));
    }

    /// The limit counts the streams recorded before this one, on any node, whenever they
    /// opened, except the older ones of its own unit (which it replaces) and those a newer
    /// stream of their unit replaces.
    #[test]
    fn the_stream_limit_counts_the_streams_recorded_before() {
        let entry = |stream: &str, session: Option<&str>, since: &str| PresenceEntry {
            stream: stream.into(),
            session: session.map(Into::into),
            tab: None,
            node: "n".into(),
            since: since.into(),
        };
        let (t1, t2, t3) = (
            "2026-01-01T00:00:00.001Z",
            "2026-01-01T00:00:00.002Z",
            "2026-01-01T00:00:00.003Z",
        );
        let me = entry("b.2", Some("s"), t2);
        // recorded before it, one of them opened later by another node's clock: both count
        let before = [entry("a.1", None, t1), entry("c.3", None, t3)];
        assert!(me.fits_after(&before, 3));
        assert!(!me.fits_after(&before, 2));
        // the older stream of its own session does not count
        assert!(me.fits_after(&[entry("a.1", Some("s"), t1)], 1));
        // nor does one that another session's newer stream replaces (a crashed node's,
        // reopened elsewhere), but that newer one does
        let reopened = [entry("a.1", Some("r"), t1), entry("c.1", Some("r"), t3)];
        assert!(me.fits_after(&reopened, 2));
        assert!(!me.fits_after(&reopened, 1));
        // nothing before it: it fits
        assert!(me.fits_after(&[], 1));
    }

    /// `since` keeps microseconds, shown with milliseconds.
    #[test]
    fn since_is_shown_to_the_millisecond() {
        let first = presence_since(UNIX_EPOCH + Duration::from_micros(1_000_100));
        let t1 = "2026-01-01T00:00:00.001Z";
        assert_eq!(shown_since(&first), "1970-01-01T00:00:01.000Z");
        assert_eq!(shown_since(t1), t1);
    }
}
