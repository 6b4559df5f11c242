//! The v2 parts of a notification: its action buttons, the action a user took, the per-user
//! state Herald keeps beside the published fields (read, seen, archived, snoozed, action,
//! collapse count), and the due-time rules (`deliver_at`, `expires_at`, `snoozed_until`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Most action buttons on one notification.
pub const MAX_ACTIONS: usize = 3;
/// Longest action id and label, in characters.
pub const MAX_ACTION_CHARS: usize = 64;
/// How far ahead a due time (`deliver_at`, `expires_at`, `snoozed_until`) may lie.
pub const MAX_AHEAD: Duration = Duration::from_secs(90 * 24 * 3600);
/// Longest collapse key, in characters.
pub const MAX_COLLAPSE_KEY_CHARS: usize = 128;

/// A button on a notification: taking it (`POST /notifications/{id}/actions/{action_id}`)
/// sends `method path` to the upstream as the user, or only records it when there is no path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionSpec {
    pub id: String,
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

impl ActionSpec {
    /// Check one action (`at`: its index, for the error) and normalize its method (upper
    /// case; `POST` when a path is given without one).
    fn validate(&mut self, at: usize) -> Result<()> {
        let field = |name: &str| format!("notification.actions[{at}].{name}");
        for (name, value) in [("id", &self.id), ("label", &self.label)] {
            if !super::is_plain(value, MAX_ACTION_CHARS) {
                return Err(Error::invalid(format!(
                    "{} must be 1 to {MAX_ACTION_CHARS} characters without control characters",
                    field(name)
                )));
            }
        }
        if let Some(method) = &mut self.method {
            *method = method.to_ascii_uppercase();
            if !matches!(method.as_str(), "GET" | "POST" | "PUT" | "PATCH" | "DELETE") {
                return Err(Error::invalid(format!(
                    "{} must be GET, POST, PUT, PATCH or DELETE",
                    field("method")
                )));
            }
        }
        if let Some(path) = &self.path {
            // A space is sent as `%20`, as a browser sends it; other whitespace a browser
            // drops or mangles, so it is refused.
            let spaced = |c: char| c.is_control() || (c.is_whitespace() && c != ' ');
            let broken = match path.strip_prefix("/api/") {
                None => Some("must start with /api/"),
                Some(_) if path.len() > 2048 => Some("must be at most 2048 bytes"),
                Some(_) if path.chars().any(spaced) => {
                    Some("must not contain control characters or whitespace other than spaces")
                }
                Some(rest) if climbs(rest.split('?').next().unwrap_or(rest)) => Some(
                    "must not contain dot-segments, encoded slashes or backslashes before its query",
                ),
                Some(_) => None,
            };
            if let Some(broken) = broken {
                return Err(Error::invalid(format!("{} {broken}", field("path"))));
            }
            self.method.get_or_insert_with(|| "POST".to_owned());
        }
        Ok(())
    }
}

/// Whether the rest of an `/api/` path (after `/api/`, before any `?`) could climb above the
/// upstream's base once the upstream normalizes it: a dot-segment (`.`, `..`, also
/// percent-encoded in any case such as `%2e%2E` or `.%2e`), an encoded slash (`%2f`) or a
/// backslash (raw or `%5c`, which some servers treat as `/`) anywhere in it, or a dot-segment
/// followed by `;parameters` (`..;/`, which some servers read as `..`).
pub fn climbs(rest: &str) -> bool {
    let lower = rest.to_ascii_lowercase();
    if lower.contains('\\') || lower.contains("%2f") || lower.contains("%5c") {
        return true;
    }
    rest.split('/').any(|segment| {
        let decoded = percent_encoding::percent_decode_str(segment).collect::<Vec<u8>>();
        // Some servers (Tomcat) drop `;parameters` before normalizing: `..;x` climbs too.
        let name = decoded.split(|b| *b == b';').next().unwrap_or_default();
        name == b"." || name == b".."
    })
}

/// Check a notification's actions: at most [`MAX_ACTIONS`], ids unique, each valid.
pub fn validate_actions(actions: &mut [ActionSpec]) -> Result<()> {
    if actions.len() > MAX_ACTIONS {
        return Err(Error::invalid(format!(
            "notification.actions may hold at most {MAX_ACTIONS} actions"
        )));
    }
    for at in 0..actions.len() {
        actions[at].validate(at)?;
        if actions[..at].iter().any(|a| a.id == actions[at].id) {
            return Err(Error::invalid(format!(
                "notification.actions[{at}].id repeats another action's id"
            )));
        }
    }
    Ok(())
}

/// The action a user took on a notification, recorded once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TakenAction {
    pub id: String,
    pub at: String,
    /// The upstream's answer status; `null` when the action had no path.
    pub status: Option<u16>,
}

/// What Herald keeps per recipient beside the published fields: the last members of the
/// notification JSON, in this order (the Redis scripts write the same suffix; see
/// `store/redis/scripts/common.lua`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemState {
    pub read_at: Option<String>,
    /// When the user first saw it (opened the tray, or read it).
    pub seen_at: Option<String>,
    pub archived_at: Option<String>,
    pub snoozed_until: Option<String>,
    pub action: Option<TakenAction>,
    /// How many publishes this notification stands for (collapse).
    pub count: u64,
    /// The id of the notification it superseded (collapse).
    pub replaces: Option<String>,
}

impl Default for ItemState {
    fn default() -> Self {
        ItemState {
            read_at: None,
            seen_at: None,
            archived_at: None,
            snoozed_until: None,
            action: None,
            count: 1,
            replaces: None,
        }
    }
}

impl ItemState {
    /// Whether this is a new notification's state (nothing happened to it yet).
    pub fn is_fresh(&self) -> bool {
        *self == ItemState::default()
    }

    /// These members as the end of a notification JSON: `,"read_at":…,"replaces":…}`.
    pub fn json_suffix(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_default();
        format!(",{}", json.strip_prefix('{').unwrap_or(&json))
    }
}

/// An RFC 3339 time (any offset) as Unix milliseconds; 400 naming `field` otherwise.
pub fn parse_time(field: &str, text: &str) -> Result<u64> {
    use time::format_description::well_known::Rfc3339;
    let t = time::OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|_| Error::invalid(format!("{field} must be an RFC 3339 time")))?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| Error::invalid(format!("{field} must be after 1970")))
}

/// A due time must lie after `now` and at most [`MAX_AHEAD`] beyond it.
pub fn check_ahead(field: &str, at_ms: u64, now: SystemTime) -> Result<()> {
    let now_ms = super::unix_ms(now);
    if at_ms <= now_ms {
        return Err(Error::invalid(format!("{field} must lie in the future")));
    }
    if at_ms > now_ms + MAX_AHEAD.as_millis() as u64 {
        return Err(Error::invalid(format!(
            "{field} may lie at most 90 days ahead"
        )));
    }
    Ok(())
}

/// Unix milliseconds as Herald writes times (RFC 3339, UTC, milliseconds).
pub fn ms_to_rfc3339(ms: u64) -> String {
    super::rfc3339(UNIX_EPOCH + Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The state suffix is what serde writes for those members at the end of an object.
    #[test]
    fn suffix_of_a_fresh_state() {
        assert_eq!(
            ItemState::default().json_suffix(),
            r#","read_at":null,"seen_at":null,"archived_at":null,"snoozed_until":null,"action":null,"count":1,"replaces":null}"#
        );
    }

    /// Times with offsets parse; garbage and dates without zone do not.
    #[test]
    fn times_parse_with_any_offset() {
        assert_eq!(parse_time("t", "1970-01-01T00:00:01Z").unwrap(), 1000);
        assert_eq!(
            parse_time("t", "1970-01-01T01:00:01.5+01:00").unwrap(),
            1500
        );
        for bad in ["", "tomorrow", "1970-01-01T00:00:01", "1970-01-01"] {
            assert!(parse_time("t", bad).is_err(), "{bad}");
        }
    }

    /// At most three actions, unique ids, paths under /api/; the method defaults to POST.
    #[test]
    fn action_rules() {
        let action = |id: &str, path: Option<&str>| ActionSpec {
            id: id.into(),
            label: "L".into(),
            method: None,
            path: path.map(str::to_owned),
        };
        let mut ok = vec![action("a", Some("/api/x")), action("b", None)];
        validate_actions(&mut ok).unwrap();
        assert_eq!(ok[0].method.as_deref(), Some("POST"));
        assert_eq!(ok[1].method, None);
        let mut four = vec![
            action("a", None),
            action("b", None),
            action("c", None),
            action("d", None),
        ];
        assert!(validate_actions(&mut four).is_err());
        let mut twice = vec![action("a", None), action("a", None)];
        assert!(validate_actions(&mut twice).is_err());
        let mut outside = vec![action("a", Some("/admin"))];
        let err = validate_actions(&mut outside).unwrap_err().to_string();
        assert!(err.contains("notification.actions[0].path"), "{err}");
        // a path the upstream could never be sent (it would climb above its base)
        for climbing in [
            "/api/../admin",
            "/api/%2e%2e/x",
            "/api/./x",
            "/api/x%2Fy",
            "/api/x\\y",
        ] {
            let mut bad = vec![action("a", Some(climbing))];
            assert!(validate_actions(&mut bad).is_err(), "{climbing}");
        }
        let mut query = vec![action("a", Some("/api/x?next=../y"))];
        validate_actions(&mut query).unwrap();
    }
}
