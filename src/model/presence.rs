//! A live stream as presence reports it, the order streams are counted in for the per-user
//! stream limit and for replacing a session's stream, and its opening time.

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

    /// Whether this stream is among the user's first `max` live streams (`entries`, on every
    /// node), in opening order (to the microsecond: [`presence_since`]); a stream that a
    /// newer one of its unit replaces (this one, or any other: say, the stream of a node
    /// that crashed, reopened elsewhere and not yet known dead) doesn't count.
    pub fn within_limit(&self, entries: &[PresenceEntry], max: usize) -> bool {
        let older = entries.iter().filter(|e| {
            e.stream != self.stream
                && (&e.since, &e.stream) < (&self.since, &self.stream)
                && !self.replaces(e)
                && !entries.iter().any(|newer| newer.replaces(e))
        });
        older.count() < max
    }
}

/// A stream's opening time in its presence entry: RFC 3339 with microseconds, so streams
/// opened one after the other within a millisecond (on two nodes) keep their order for the
/// stream limit (`PresenceEntry::within_limit`); shown with milliseconds ([`shown_since`]).
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

    /// The limit counts the streams opened before this one, on any node, except the older
    /// ones of its own unit (which it replaces); a newer one never pushes it out.
    #[test]
    fn the_stream_limit_counts_older_streams_of_other_units() {
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
        let others = [entry("a.1", None, t1), me.clone(), entry("c.3", None, t3)];
        assert!(me.within_limit(&others, 2));
        assert!(!me.within_limit(&others, 1));
        // the older stream of its own session does not count
        let own = [entry("a.1", Some("s"), t1), me.clone()];
        assert!(me.within_limit(&own, 1));
        // nor does one that another session's newer stream replaces (a crashed node's,
        // reopened elsewhere), but that newer one does
        let reopened = [
            entry("a.1", Some("r"), t1),
            entry("c.1", Some("r"), t1),
            me.clone(),
        ];
        assert!(me.within_limit(&reopened, 2));
        assert!(!me.within_limit(&reopened, 1));
        // a tie: the smaller key opened first
        let tie = [entry("a.9", None, t2), me.clone()];
        assert!(!me.within_limit(&tie, 1));
        // within one millisecond the microseconds order them, whatever the keys (a stream
        // opened right after another on a node of a smaller name was let in as the earlier)
        let opened = |us: u64| presence_since(UNIX_EPOCH + Duration::from_micros(us));
        let (first, next) = (
            entry("z.1", None, &opened(1_000_100)),
            entry("a.2", None, &opened(1_000_900)),
        );
        assert!(!next.within_limit(&[first.clone(), next.clone()], 1));
        assert!(first.within_limit(&[first.clone(), next.clone()], 1));
        assert_eq!(shown_since(&first.since), "1970-01-01T00:00:01.000Z");
        assert_eq!(shown_since(t1), t1);
    }
}
