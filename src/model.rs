//! The nouns that cross module boundaries: Notification (what a user sees in the tray), Change
//! (one numbered event in a user's change log), the event id that names a position in that log
//! (`<epoch>.<seq>`), and the validation of ids and publish input.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Largest serialized notification, in bytes (spec: 16 KiB, 413 beyond).
pub const MAX_NOTIFICATION_BYTES: usize = 16 * 1024;
/// Longest user id, group name, session id or tab id, in characters.
pub const MAX_ID_CHARS: usize = 128;
/// Largest JSON request body, in bytes (an HTTP body or an ingest entry): a publish to many
/// users stays well below it.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 256;

/// A notification as stored and as sent to clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub id: String,
    pub user: String,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Map<String, Value>>,
    pub created_at: String,
    pub read_at: Option<String>,
}

/// The `notification` object of a publish request: what the publisher controls. Fields that
/// Herald sets (`id`, `user`, `created_at`, `read_at`) are refused when sent (400 naming the
/// field); other unknown fields are ignored, so publishers can send fields of later versions.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NotificationInput {
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Map<String, Value>>,
    #[serde(default, skip_serializing)]
    pub id: Reserved,
    #[serde(default, skip_serializing)]
    pub user: Reserved,
    #[serde(default, skip_serializing)]
    pub created_at: Reserved,
    #[serde(default, skip_serializing)]
    pub read_at: Reserved,
}

/// A field of the notification that only Herald sets: remembers whether a publisher sent it
/// (with any value, `null` included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reserved(pub bool);

impl<'de> Deserialize<'de> for Reserved {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| Reserved(true))
    }
}

impl NotificationInput {
    pub fn validate(&self) -> Result<()> {
        let reserved = [
            ("id", self.id),
            ("user", self.user),
            ("created_at", self.created_at),
            ("read_at", self.read_at),
        ];
        if let Some((field, _)) = reserved.iter().find(|(_, sent)| sent.0) {
            return Err(Error::invalid(format!(
                "notification.{field} is set by Herald and may not be sent"
            )));
        }
        let chars = self.title.chars().count();
        if chars == 0 || chars > MAX_TITLE_CHARS {
            return Err(Error::invalid(format!(
                "notification.title must be 1 to {MAX_TITLE_CHARS} characters"
            )));
        }
        if let Some(link) = &self.link {
            if !is_safe_link(link) {
                return Err(Error::invalid(
                    "notification.link must be an http:// or https:// URL or a path starting with /",
                ));
            }
        }
        Ok(())
    }

    /// The stored notification for `user` (the size limit is [`notification_json`]'s check).
    pub fn to_notification(&self, id: String, user: &str, now: SystemTime) -> Notification {
        Notification {
            id,
            user: user.to_owned(),
            title: self.title.clone(),
            body: self.body.clone(),
            source: self.source.clone(),
            category: self.category.clone(),
            link: self.link.clone(),
            data: self.data.clone(),
            created_at: rfc3339(now),
            read_at: None,
        }
    }
}

/// A link a page can put in `href` without running anything: an absolute `http(s)` URL with a
/// host, or a same-site path (`/…`, but not `//host` or `/\host`, which browsers read as
/// another host). `javascript:`, `data:` and other schemes are refused.
fn is_safe_link(link: &str) -> bool {
    if link.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return false;
    }
    if let Some(path) = link.strip_prefix('/') {
        return !path.starts_with(['/', '\\']);
    }
    url::Url::parse(link)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
}

/// Serialize a notification, enforcing [`MAX_NOTIFICATION_BYTES`].
pub fn notification_json(n: &Notification) -> Result<String> {
    let json = serde_json::to_string(n).map_err(|e| Error::Internal(e.to_string()))?;
    if json.len() > MAX_NOTIFICATION_BYTES {
        return Err(Error::TooLarge {
            what: "notification",
            limit: MAX_NOTIFICATION_BYTES,
        });
    }
    Ok(json)
}

/// The kind of a change, which is also its SSE event name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Notification,
    Read,
    Unread,
    Deleted,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Notification => "notification",
            ChangeKind::Read => "read",
            ChangeKind::Unread => "unread",
            ChangeKind::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "notification" => ChangeKind::Notification,
            "read" => ChangeKind::Read,
            "unread" => ChangeKind::Unread,
            "deleted" => ChangeKind::Deleted,
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
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let bytes: [u8; Epoch::LEN / 2] = rand::random();
        let mut out = [0u8; Epoch::LEN];
        for (i, b) in bytes.iter().enumerate() {
            out[2 * i] = HEX[(b >> 4) as usize];
            out[2 * i + 1] = HEX[(b & 0xf) as usize];
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
    /// ASCII (a legacy plain number, garbage, fullwidth digits, a sign): the stream resets.
    pub fn parse(s: &str) -> Option<Self> {
        let (epoch, seq) = s.trim_ascii().split_once('.')?;
        if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
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

/// The status change a tray write asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Read,
    Unread,
    Deleted,
}

impl Mark {
    pub fn kind(self) -> ChangeKind {
        match self {
            Mark::Read => ChangeKind::Read,
            Mark::Unread => ChangeKind::Unread,
            Mark::Deleted => ChangeKind::Deleted,
        }
    }
}

/// Which notifications a tray write applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Ids(Vec<String>),
    All,
}

/// What a tray write did: how many of the named ids exist, which ones changed state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marked {
    pub found: usize,
    pub changed: Vec<String>,
}

/// One live stream, as `GET /presence/{user}` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceEntry {
    /// Unique stream key (node + local id); not shown to clients.
    #[serde(skip_serializing, default)]
    pub stream: String,
    /// The session's public id; `null` for a Bearer stream without `sid`.
    pub session: Option<String>,
    pub node: String,
    pub since: String,
}

/// `data:` of a status change event.
pub fn status_data(ids: &[String], unread_count: u64) -> String {
    serde_json::json!({"ids": ids, "unread_count": unread_count}).to_string()
}

/// A user id, group name or client-chosen id: 1–128 characters, no control characters, no
/// leading or trailing whitespace. Such an id travels unchanged in an HTTP header (parsers trim
/// the edges of header values, so `"alice "` would reach a backend as `alice`).
pub fn validate_id(what: &str, s: &str) -> Result<()> {
    let edge_space = s.starts_with(char::is_whitespace) || s.ends_with(char::is_whitespace);
    if !is_plain(s, MAX_ID_CHARS) || edge_space {
        return Err(Error::invalid(format!(
            "{what} must be 1 to {MAX_ID_CHARS} characters without control characters or \
             leading/trailing whitespace"
        )));
    }
    Ok(())
}

/// 1 to `max_chars` characters, none of them a control character: the rule every client-chosen
/// string shares (ids add "no leading or trailing whitespace", see [`validate_id`]).
pub fn is_plain(s: &str, max_chars: usize) -> bool {
    let n = s.chars().count();
    n > 0 && n <= max_chars && !s.chars().any(char::is_control)
}

pub fn is_valid_id(s: &str) -> bool {
    validate_id("id", s).is_ok()
}

/// A new notification id: a ULID, unique and sorting by creation time.
pub fn new_id() -> String {
    // One process-wide generator keeps ids from the same millisecond in creation order.
    static GENERATOR: std::sync::Mutex<ulid::Generator> =
        std::sync::Mutex::new(ulid::Generator::new());
    let next = GENERATOR.lock().map(|mut g| g.generate());
    match next {
        Ok(Ok(id)) => id.to_string(),
        _ => ulid::Ulid::new().to_string(),
    }
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

pub fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

pub fn now_secs() -> u64 {
    now_ms() / 1000
}

/// Random opaque token of `bytes` random bytes, hex encoded (session ids, node ids, dev secrets).
pub fn random_token(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex(&buf)
}

/// SHA-256 of `text`, lower-case hex (session secrets at rest, idempotency keys in Redis keys).
pub fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex(&Sha256::digest(text.as_bytes()))
}

/// Exactly `len` lower-case ASCII hex digits (the only form Herald writes tokens and tags in).
pub fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids with control characters or over 128 characters are refused.
    #[test]
    fn id_rules() {
        assert!(is_valid_id("alice"));
        assert!(is_valid_id(&"é".repeat(128)));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("a\nb"));
        assert!(!is_valid_id(&"a".repeat(129)));
    }

    /// Ids that would change in a header (edge whitespace, whitespace only) are refused.
    #[test]
    fn edge_whitespace_refused() {
        assert!(is_valid_id("alice smith"));
        for bad in ["alice ", " alice", "   ", "\u{a0}alice", "alice\u{3000}"] {
            assert!(!is_valid_id(bad), "{bad:?}");
        }
    }

    /// Links: http(s) URLs and same-site paths pass; scripts, other schemes and
    /// protocol-relative forms do not.
    #[test]
    fn link_rules() {
        for good in [
            "https://ci.example/42",
            "http://a.b/c?d#e",
            "/tray/1",
            "/",
            "HTTPS://X.Y",
        ] {
            assert!(is_safe_link(good), "{good}");
        }
        for bad in [
            "javascript:alert(1)",
            "JavaScript:alert(1)",
            " javascript:alert(1)",
            "data:text/html,x",
            "//evil.example",
            "/\\evil.example",
            "ftp://x.y",
            "relative/path",
            "http://",
            "",
        ] {
            assert!(!is_safe_link(bad), "{bad}");
        }
    }

    /// Fields Herald sets are refused by name when a publisher sends them, even as null.
    #[test]
    fn reserved_fields_are_refused() {
        for field in ["id", "user", "created_at", "read_at"] {
            let input: NotificationInput =
                serde_json::from_value(serde_json::json!({"title": "t", field: null})).unwrap();
            let err = input.validate().unwrap_err().to_string();
            assert!(err.contains(&format!("notification.{field}")), "{err}");
        }
        let input: NotificationInput =
            serde_json::from_value(serde_json::json!({"title": "t", "future": 1})).unwrap();
        assert!(input.validate().is_ok());
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

    /// Legacy plain numbers, garbage and non-ASCII look-alikes are not event ids.
    #[test]
    fn foreign_event_ids_do_not_parse() {
        for bad in [
            "17",
            "",
            ".17",
            "3f9a0c12d4e1.",
            "3f9a0c12d4e1.+17",
            "3f9a0c12d4e1.-1",
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
    }

    /// Ids created later sort after ids created earlier.
    #[test]
    fn ids_sort_by_creation() {
        let a = new_id();
        std::thread::sleep(Duration::from_millis(2));
        let b = new_id();
        assert!(a < b);
    }
}
