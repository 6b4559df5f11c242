//! The notification: as stored and sent to clients ([`Notification`]), as a publisher sends it
//! ([`NotificationInput`], checked against the rules of a publish), and its limits.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::fields::{self, ActionSpec, ItemState, MAX_COLLAPSE_KEY_CHARS};
use super::is_plain;
use super::json::{self, objects, RawJson, RawObject};
use crate::error::{Error, Result};

/// Largest notification, in bytes of its JSON as published (16 KiB, 413 beyond).
pub const MAX_NOTIFICATION_BYTES: usize = 16 * 1024;
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
    pub data: Option<RawJson>,
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
    pub data: Option<RawObject>,
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

/// A link a page can put in `href` without running anything: an absolute `http(s)://` URL
/// with a host, or a same-site path (`/…`, but not `//host` or `/\host`, which browsers read as
/// another host). `javascript:`, `data:` and other schemes are refused.
pub(super) fn is_safe_link(link: &str) -> bool {
    if link.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return false;
    }
    if let Some(path) = link.strip_prefix('/') {
        return !path.starts_with(['/', '\\']);
    }
    // As written, not only as parsed: `https:host` and `https:\\host` parse as
    // `https://host/`, but are not what was sent.
    let lower = link.get(..8).unwrap_or(link).to_ascii_lowercase();
    let slashes = lower.starts_with("http://") || lower.starts_with("https://");
    slashes
        && url::Url::parse(link)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
}

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

#[cfg(test)]
mod tests {
    use super::*;

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
            "https:evil.example",
            "https:\\\\evil.example",
            "https:/evil.example",
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

    /// The size limit applies to the notification as published: 16 KiB of its own JSON
    /// pass, whatever Herald adds per recipient; one byte more is refused.
    #[test]
    fn size_limit_counts_the_published_json() {
        let now = SystemTime::now();
        let sized = |extra: usize| {
            let mut n: NotificationInput =
                serde_json::from_value(serde_json::json!({"title": "t", "body": ""})).unwrap();
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
}
