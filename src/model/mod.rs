//! The nouns that cross module boundaries: Notification (what a user sees in the tray), Change
//! (one numbered event in a user's change log), the event id that names a position in that log
//! (`<epoch>.<seq>`), and the validation of ids and publish input.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

mod fields;
mod json;
#[cfg(test)]
pub(crate) mod props;

pub use self::fields::{
    check_ahead, climbs, ms_to_rfc3339, parse_time, ActionSpec, ItemState, TakenAction,
    MAX_COLLAPSE_KEY_CHARS,
};
pub use self::json::{from_json, object, objects};

/// Largest notification, in bytes of its JSON as published (16 KiB, 413 beyond).
pub const MAX_NOTIFICATION_BYTES: usize = 16 * 1024;
/// Longest user id, group name, session id or tab id, in characters.
pub const MAX_ID_CHARS: usize = 128;
/// Largest JSON request body, in bytes (an HTTP body or an ingest entry): a publish to many
/// users stays well below it.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 256;
/// Longest category name in a preference, in characters.
pub const MAX_CATEGORY_CHARS: usize = 128;
/// Categories a user may hold a preference for (a user sets them: bounded like a tray).
pub const MAX_PREFERENCES: usize = 256;

/// The error for a preference beyond [`MAX_PREFERENCES`].
pub fn too_many_preferences() -> Error {
    Error::invalid(format!(
        "a user may hold preferences for at most {MAX_PREFERENCES} categories"
    ))
}

/// A notification as stored and as sent to clients. Every member is always present (`null`
/// when unset). The published fields come first and the per-recipient [`ItemState`] last, so
/// a stored notification's JSON is its published part followed by its state's suffix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub id: String,
    pub user: String,
    pub title: String,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub link: Option<String>,
    #[serde(default)]
    pub data: Option<Map<String, Value>>,
    /// Preferences cannot mute it.
    #[serde(default)]
    pub critical: bool,
    #[serde(default)]
    pub collapse_key: Option<String>,
    #[serde(default)]
    pub deliver_at: Option<String>,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub actions: Vec<ActionSpec>,
    pub created_at: String,
    #[serde(flatten)]
    pub state: ItemState,
}

/// The `notification` object of a publish request: what the publisher controls. Fields that
/// Herald sets (`id`, `user`, `created_at`, the per-recipient state) are refused when sent
/// (400 naming the field); other unknown fields are ignored, so publishers can send fields of
/// later versions.
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
    /// Delivered even to users who muted its category.
    #[serde(
        default,
        skip_serializing_if = "std::ops::Not::not",
        deserialize_with = "json::or_default"
    )]
    pub critical: bool,
    /// A new publish with this key supersedes the user's active unread one (collapse).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collapse_key: Option<String>,
    /// Not active before this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver_at: Option<String>,
    /// Removed from the tray at this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "objects"
    )]
    pub actions: Vec<ActionSpec>,
    #[serde(default, skip_serializing)]
    pub id: Reserved,
    #[serde(default, skip_serializing)]
    pub user: Reserved,
    #[serde(default, skip_serializing)]
    pub created_at: Reserved,
    #[serde(default, skip_serializing)]
    pub read_at: Reserved,
    #[serde(default, skip_serializing)]
    pub seen_at: Reserved,
    #[serde(default, skip_serializing)]
    pub archived_at: Reserved,
    #[serde(default, skip_serializing)]
    pub snoozed_until: Reserved,
    #[serde(default, skip_serializing)]
    pub count: Reserved,
    #[serde(default, skip_serializing)]
    pub replaces: Reserved,
    #[serde(default, skip_serializing)]
    pub action: Reserved,
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

/// When a published notification becomes active and when it goes, in Unix milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Schedule {
    pub deliver_ms: Option<u64>,
    pub expire_ms: Option<u64>,
}

impl Schedule {
    /// The earliest due time, if any.
    pub fn first(&self) -> Option<u64> {
        self.deliver_ms.into_iter().chain(self.expire_ms).min()
    }
}

impl NotificationInput {
    /// Check the input against the rules, at `now`; normalizes the due times (to UTC, in
    /// milliseconds) and the actions' methods, and returns the schedule.
    pub fn validate(&mut self, now: SystemTime) -> Result<Schedule> {
        let reserved = [
            ("id", self.id),
            ("user", self.user),
            ("created_at", self.created_at),
            ("read_at", self.read_at),
            ("seen_at", self.seen_at),
            ("archived_at", self.archived_at),
            ("snoozed_until", self.snoozed_until),
            ("count", self.count),
            ("replaces", self.replaces),
            ("action", self.action),
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
        // The rule of a preference's category, so every category can be muted.
        if let Some(category) = &self.category {
            if !is_plain(category, MAX_CATEGORY_CHARS) {
                return Err(Error::invalid(format!(
                    "notification.category must be 1 to {MAX_CATEGORY_CHARS} characters \
                     without control characters"
                )));
            }
        }
        if let Some(key) = &self.collapse_key {
            if !is_plain(key, MAX_COLLAPSE_KEY_CHARS) {
                return Err(Error::invalid(format!(
                    "notification.collapse_key must be 1 to {MAX_COLLAPSE_KEY_CHARS} characters \
                     without control characters"
                )));
            }
        }
        fields::validate_actions(&mut self.actions)?;
        let due = |field: &str, value: &mut Option<String>| -> Result<Option<u64>> {
            let Some(text) = value else { return Ok(None) };
            let name = format!("notification.{field}");
            let ms = fields::parse_time(&name, text)?;
            fields::check_ahead(&name, ms, now)?;
            *text = fields::ms_to_rfc3339(ms);
            Ok(Some(ms))
        };
        let schedule = Schedule {
            deliver_ms: due("deliver_at", &mut self.deliver_at)?,
            expire_ms: due("expires_at", &mut self.expires_at)?,
        };
        if let (Some(deliver), Some(expire)) = (schedule.deliver_ms, schedule.expire_ms) {
            if expire <= deliver {
                return Err(Error::invalid(
                    "notification.expires_at must lie after notification.deliver_at",
                ));
            }
        }
        if self.json_size() > MAX_NOTIFICATION_BYTES {
            return Err(Error::TooLarge {
                what: "notification",
                limit: MAX_NOTIFICATION_BYTES,
            });
        }
        Ok(schedule)
    }

    /// The length of this notification's compact JSON as published (the members sent, as
    /// normalized), counted without building it: what the 16 KiB limit applies to. The
    /// members Herald adds (id, user, creation time, the recipient's state) are not counted.
    pub fn json_size(&self) -> usize {
        struct Count(usize);
        impl std::io::Write for Count {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0 += bytes.len();
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut count = Count(0);
        serde_json::to_writer(&mut count, self).expect("a notification serializes");
        count.0
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

/// What every recipient of one publish shares, built once per publish: the publisher's fields,
/// the creation time, the schedule, and the notification's published part as JSON from
/// `"title"` on (its tail, without the closing brace). A recipient's notification JSON is
/// `{"id":<id>,"user":<user>` followed by the tail and the recipient's [`ItemState`] suffix,
/// byte for byte what serde writes for the whole [`Notification`] (the struct lists `id` and
/// `user` first and the state last); the memory store keeps one `Arc<Template>` per publish
/// for every tray it went to, and the Redis store sends the tail once per script call, which
/// splices in the same way (`publish.lua`).
#[derive(Debug)]
pub struct Template {
    input: NotificationInput,
    created_at: String,
    schedule: Schedule,
    tail: String,
}

/// What serde writes for a notification before its tail when `id` and `user` are empty.
const EMPTY_HEAD: &str = r#"{"id":"","user":"""#;

impl Template {
    /// The shared part of a publish of `input` made at `now` (`input` already validated, with
    /// its `schedule`).
    pub fn new(input: &NotificationInput, schedule: Schedule, now: SystemTime) -> Result<Self> {
        let created_at = rfc3339(now);
        let state = ItemState::default();
        let whole = Template::build(input, &created_at, "", "", state.clone());
        let json = serde_json::to_string(&whole).map_err(|e| Error::Internal(e.to_string()))?;
        let tail = json
            .strip_prefix(EMPTY_HEAD)
            .and_then(|rest| rest.strip_suffix(state.json_suffix().as_str()))
            .ok_or_else(|| Error::Internal(format!("unexpected notification JSON: {json}")))?
            .to_owned();
        Ok(Template {
            input: input.clone(),
            created_at,
            schedule,
            tail,
        })
    }

    fn build(
        input: &NotificationInput,
        created_at: &str,
        id: &str,
        user: &str,
        state: ItemState,
    ) -> Notification {
        Notification {
            id: id.to_owned(),
            user: user.to_owned(),
            title: input.title.clone(),
            body: input.body.clone(),
            source: input.source.clone(),
            category: input.category.clone(),
            link: input.link.clone(),
            data: input.data.clone(),
            critical: input.critical,
            collapse_key: input.collapse_key.clone(),
            deliver_at: input.deliver_at.clone(),
            expires_at: input.expires_at.clone(),
            actions: input.actions.clone(),
            created_at: created_at.to_owned(),
            state,
        }
    }

    /// The notification JSON after `"user":<user>` up to its state: `,"title":…,"created_at":…`.
    pub fn tail(&self) -> &str {
        &self.tail
    }

    /// The JSON of this notification for one recipient, with its state.
    pub fn json(&self, id: &str, user: &str, state: &ItemState) -> String {
        let suffix = if state.is_fresh() {
            std::borrow::Cow::Borrowed(FRESH_SUFFIX)
        } else {
            std::borrow::Cow::Owned(state.json_suffix())
        };
        let mut out = String::with_capacity(self.json_len(id, user) + suffix.len());
        out.push_str(r#"{"id":"#);
        push_json_str(&mut out, id);
        out.push_str(r#","user":"#);
        push_json_str(&mut out, user);
        out.push_str(&self.tail);
        out.push_str(&suffix);
        out
    }

    /// The length of [`Self::json`] in bytes for a fresh state ([`ItemState::default`]),
    /// without building it.
    pub fn json_len(&self, id: &str, user: &str) -> usize {
        r#"{"id":,"user":"#.len()
            + json_str_len(id)
            + json_str_len(user)
            + self.tail.len()
            + FRESH_SUFFIX_LEN
    }

    /// The notification as stored for `user`, with its state.
    pub fn notification(&self, id: &str, user: &str, state: &ItemState) -> Notification {
        Template::build(&self.input, &self.created_at, id, user, state.clone())
    }

    pub fn category(&self) -> Option<&str> {
        self.input.category.as_deref()
    }

    pub fn collapse_key(&self) -> Option<&str> {
        self.input.collapse_key.as_deref()
    }

    pub fn schedule(&self) -> Schedule {
        self.schedule
    }

    /// The category a recipient's muting applies to: `None` when the notification has no
    /// category or is `critical` (which preferences cannot mute).
    pub fn mutable_category(&self) -> Option<&str> {
        match (&self.input.category, self.input.critical) {
            (Some(category), false) => Some(category),
            _ => None,
        }
    }
}

/// A fresh state's members up to its collapse count (`count` and `replaces` follow).
macro_rules! fresh_state {
    () => {
        r#","read_at":null,"seen_at":null,"archived_at":null,"snoozed_until":null,"action":null"#
    };
}
pub const FRESH_STATE: &str = fresh_state!();
/// A fresh state's suffix ([`ItemState::default`]), written once.
const FRESH_SUFFIX: &str = concat!(fresh_state!(), r#","count":1,"replaces":null}"#);
const FRESH_SUFFIX_LEN: usize = FRESH_SUFFIX.len();

/// A category name in a preference: 1 to [`MAX_CATEGORY_CHARS`] characters, no control
/// characters.
pub fn validate_category(category: &str) -> Result<()> {
    if is_plain(category, MAX_CATEGORY_CHARS) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "category must be 1 to {MAX_CATEGORY_CHARS} characters without control characters"
        )))
    }
}

/// Whether serde_json escapes this byte inside a string (its compact formatter escapes `"`,
/// `\` and the control characters below 0x20, nothing else).
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Append `s` as a JSON string, exactly as serde_json writes it.
pub fn push_json_str(out: &mut String, s: &str) {
    if s.bytes().any(needs_escape) {
        // Rare (ids carry no control characters): serde's own escaping.
        out.push_str(&serde_json::Value::from(s).to_string());
    } else {
        out.push('"');
        out.push_str(s);
        out.push('"');
    }
}

/// The length of `s` as a JSON string (quotes included), as [`push_json_str`] writes it.
pub fn json_str_len(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\x08' | b'\x0c' | b'\n' | b'\r' | b'\t' => 2,
            b if b < 0x20 => 6,
            _ => 1,
        })
        .sum::<usize>()
}

/// A notification id: a ULID, 26 characters of Crockford base32 that sort by creation time,
/// held inline (`Copy`, no allocation). It compares, hashes and borrows as its text, so maps
/// keyed by it answer lookups by any `&str` (a client's cursor or id, whatever its shape).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NotificationId([u8; NotificationId::LEN]);

impl NotificationId {
    /// Length of the text form, in ASCII characters.
    pub const LEN: usize = ulid::ULID_LEN;

    fn from_ulid(ulid: ulid::Ulid) -> Self {
        let mut text = [0u8; Self::LEN];
        ulid.array_to_str(&mut text);
        NotificationId(text)
    }

    /// An id read back from a store: 26 ASCII letters and digits, as Herald writes them.
    pub fn parse(s: &str) -> Option<Self> {
        let text: [u8; Self::LEN] = s.as_bytes().try_into().ok()?;
        text.iter()
            .all(u8::is_ascii_alphanumeric)
            .then_some(NotificationId(text))
    }

    pub fn as_str(&self) -> &str {
        // Only ever built from ASCII (`from_ulid`, `parse`).
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl PartialOrd for NotificationId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for NotificationId {
    /// The order of the text (`str` compares bytes), without reading the bytes as UTF-8.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

impl std::hash::Hash for NotificationId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl std::borrow::Borrow<str> for NotificationId {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for NotificationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for NotificationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NotificationId({})", self.as_str())
    }
}

/// `count` new notification ids in creation order, drawn under one lock: a fresh ULID (this
/// millisecond, random bits), or one past the last id handed out when that is not above it,
/// then counting up. Ids of this process keep sorting in the order they were made, as a
/// monotonic ULID generator's do, at one lock per publish instead of one per recipient.
pub fn new_ids(count: usize) -> impl ExactSizeIterator<Item = NotificationId> {
    static LAST: std::sync::Mutex<u128> = std::sync::Mutex::new(0);
    let fresh = ulid::Ulid::from_parts(now_ms(), rand::random()).0;
    let first = {
        let mut last = LAST
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let first = fresh.max(last.saturating_add(1));
        *last = first.saturating_add(count.saturating_sub(1) as u128);
        first
    };
    (0..count).map(move |i| NotificationId::from_ulid(ulid::Ulid(first.saturating_add(i as u128))))
}

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
    /// node), in opening order (to the microsecond: [`presence_since`]); the older streams of
    /// its own unit, which it ends, don't count.
    pub fn within_limit(&self, entries: &[PresenceEntry], max: usize) -> bool {
        let older = entries.iter().filter(|e| {
            e.stream != self.stream
                && !self.replaces(e)
                && (&e.since, &e.stream) < (&self.since, &self.stream)
        });
        older.count() < max
    }
}

/// `data:` of a status change event.
pub fn status_data(ids: &[String], counts: Counts) -> String {
    serde_json::json!({"ids": ids, "unread_count": counts.unread, "unseen_count": counts.unseen})
        .to_string()
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

/// When an id was made (Unix ms, its ULID time); `None` for text that is not a ULID.
pub fn id_ms(id: &str) -> Option<u64> {
    ulid::Ulid::from_string(id).ok().map(|u| u.timestamp_ms())
}

/// A new notification id as text (see [`new_ids`]).
#[cfg(test)]
pub fn new_id() -> String {
    new_ids(1)
        .map(|id| id.to_string())
        .next()
        .unwrap_or_default()
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
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

    #[test]
    fn an_epoch_from_bits_is_their_low_48_in_hex() {
        assert_eq!(Epoch::from_bits(0x0123_4567_89ab).as_str(), "0123456789ab");
        assert_eq!(Epoch::from_bits(u64::MAX).as_str(), "ffffffffffff");
        assert!(Epoch::parse(Epoch::random().as_str()).is_some());
    }

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
        for field in [
            "id",
            "user",
            "created_at",
            "read_at",
            "count",
            "action",
            "snoozed_until",
        ] {
            let input: NotificationInput =
                serde_json::from_value(serde_json::json!({"title": "t", field: null})).unwrap();
            let mut input = input;
            let err = input.validate(SystemTime::now()).unwrap_err().to_string();
            assert!(err.contains(&format!("notification.{field}")), "{err}");
        }
        let mut input: NotificationInput =
            serde_json::from_value(serde_json::json!({"title": "t", "future": 1})).unwrap();
        assert!(input.validate(SystemTime::now()).is_ok());
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

    fn input(v: serde_json::Value) -> NotificationInput {
        serde_json::from_value(v).unwrap()
    }

    /// A recipient's JSON from the template is byte for byte serde's JSON of the whole
    /// notification, for optional fields present or not and for ids that need escaping; its
    /// announced length is its length.
    #[test]
    fn template_json_is_what_serde_writes() {
        let now = SystemTime::now();
        let inputs = [
            input(serde_json::json!({"title": "t"})),
            input(serde_json::json!({
                "title": "\"q\" \\ \u{1} é 🎉", "body": "a\nb", "source": "ci", "category": "c",
                "link": "https://x.example/?a=1&b=\"", "data": {"z": [1, 2.5, null], "a": {"b": false}},
            })),
            input(serde_json::json!({"title": "t", "data": {}})),
            input(serde_json::json!({
                "title": "t", "collapse_key": "k", "critical": true,
                "actions": [{"id": "a", "label": "A", "method": "POST", "path": "/api/x"}],
            })),
        ];
        let users = ["alice", "a\"b", "c\\d", "ünï", "x\u{7f}y", "tab\there"];
        for input in &inputs {
            let template = Template::new(input, Schedule::default(), now).unwrap();
            for user in users {
                let id = new_ids(1).next().unwrap();
                let fresh = ItemState::default();
                let json = template.json(id.as_str(), user, &fresh);
                let n = template.notification(id.as_str(), user, &fresh);
                assert_eq!(json, serde_json::to_string(&n).unwrap());
                assert_eq!(template.json_len(id.as_str(), user), json.len());
                assert_eq!(n.created_at, rfc3339(now));
                assert_eq!(serde_json::from_str::<Notification>(&json).unwrap(), n);
                let later = ItemState {
                    read_at: Some(rfc3339(now)),
                    count: 3,
                    replaces: Some(id.to_string()),
                    ..ItemState::default()
                };
                let json = template.json(id.as_str(), user, &later);
                let n = template.notification(id.as_str(), user, &later);
                assert_eq!(json, serde_json::to_string(&n).unwrap());
            }
        }
    }

    /// The size limit applies to the notification as published: 16 KiB of its own JSON
    /// pass, whatever Herald adds per recipient; one byte more is refused.
    #[test]
    fn size_limit_counts_the_published_json() {
        let now = SystemTime::now();
        let sized = |extra: usize| {
            let mut n = input(serde_json::json!({"title": "t", "body": ""}));
            let bare = n.json_size();
            n.body = Some("b".repeat(MAX_NOTIFICATION_BYTES - bare + extra));
            assert_eq!(
                n.json_size(),
                serde_json::to_vec(&n).unwrap().len(),
                "counted as written"
            );
            n.validate(now)
        };
        assert!(sized(0).is_ok());
        assert!(matches!(sized(1), Err(Error::TooLarge { .. })));
    }

    /// One draw of ids is strictly increasing, and the next draw continues above it.
    #[test]
    fn drawn_ids_keep_creation_order() {
        let first: Vec<NotificationId> = new_ids(1000).collect();
        let second: Vec<NotificationId> = new_ids(3).collect();
        assert!(first.windows(2).all(|w| w[0] < w[1]));
        assert!(first.last() < second.first());
        assert!(first
            .iter()
            .all(|id| NotificationId::parse(id.as_str()) == Some(*id)));
        assert_eq!(NotificationId::parse("not an id"), None);
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
