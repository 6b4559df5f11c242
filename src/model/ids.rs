//! Ids and opaque tokens: notification ids (ULIDs drawn in creation order), the rules of
//! client-chosen ids (user ids, group names, session and tab ids), random tokens and hashes.

use super::now_ms;
use crate::error::{Error, Result};

/// Longest user id, group name, session id or tab id, in characters.
pub const MAX_ID_CHARS: usize = 128;

/// A notification id: a ULID, 26 characters of Crockford base32 that sort by creation time,
/// held inline (`Copy`, no allocation). It compares, hashes and borrows as its text, so maps
/// keyed by it answer lookups by any `&str` (a client's cursor or id, whatever its shape).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NotificationId([u8; NotificationId::LEN]);

impl NotificationId {
    /// Length of the text form, in ASCII characters.
    pub const LEN: usize = ulid::ULID_LEN;

    pub(super) fn from_ulid(ulid: ulid::Ulid) -> Self {
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

/// The lowest id made at `ms` (Unix ms) or later: ids sort by creation time, so those made
/// since `ms` are the ones from it on.
pub fn first_id_at(ms: u64) -> NotificationId {
    NotificationId::from_ulid(ulid::Ulid::from_parts(ms, 0))
}

/// A listing's `before` cursor: a notification id, in any letter case (Crockford base32 is
/// case-insensitive), as Herald writes it; `None` for text that is no notification id (a
/// mangled cursor is refused, not read as "from the newest").
pub fn cursor(s: &str) -> Option<NotificationId> {
    ulid_of(s).map(NotificationId::from_ulid)
}

/// A notification id named in a path or a bulk write, as Herald writes it (upper case) when
/// it is one in another letter case; other text as given (it names no notification).
pub fn canonical_id(s: &str) -> std::borrow::Cow<'_, str> {
    match cursor(s) {
        Some(id) if s.bytes().any(|b| b.is_ascii_lowercase()) => id.to_string().into(),
        _ => s.into(),
    }
}

/// The ULID `s` writes, in any letter case.
fn ulid_of(s: &str) -> Option<ulid::Ulid> {
    // The first character holds 3 bits: past '7' the crate would wrap the value round.
    let fits = s.as_bytes().first().is_some_and(|c| *c <= b'7');
    ulid::Ulid::from_string(s).ok().filter(|_| fits)
}

/// When an id was made (Unix ms, its ULID time); `None` for text that is not a ULID.
pub fn id_ms(id: &str) -> Option<u64> {
    ulid_of(id).map(|u| u.timestamp_ms())
}

/// A new notification id as text (see [`new_ids`]).
#[cfg(test)]
pub fn new_id() -> String {
    new_ids(1)
        .map(|id| id.to_string())
        .next()
        .unwrap_or_default()
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
    use std::time::Duration;

    use super::*;

    /// A cursor is a notification id in any letter case, as Herald writes it; nothing else.
    #[test]
    fn cursors() {
        let id = new_ids(1).next().unwrap();
        assert_eq!(cursor(id.as_str()), Some(id));
        assert_eq!(cursor(&id.as_str().to_lowercase()), Some(id));
        let (long, short) = (format!("{id}0"), &id.as_str()[1..]);
        for bad in ["garbage", "", "8ZZZZZZZZZZZZZZZZZZZZZZZZZ", &long, short] {
            assert_eq!(cursor(bad), None, "{bad}");
        }
    }

    /// The first id of a millisecond sorts after every id made before it, at or before
    /// every id made in it or later.
    #[test]
    fn first_id_at_splits_ids_by_time() {
        let ms = now_ms();
        let first = first_id_at(ms);
        let before = NotificationId::from_ulid(ulid::Ulid::from_parts(ms - 1, u128::MAX));
        let at = NotificationId::from_ulid(ulid::Ulid::from_parts(ms, rand::random()));
        assert!(before < first && first <= at);
        assert_eq!(id_ms(first.as_str()), Some(ms));
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
