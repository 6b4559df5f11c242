//! What every recipient of one publish shares ([`Template`]), and the JSON string writing that
//! splices a recipient's id, user and state into it byte for byte as serde would.

use std::time::SystemTime;

use super::fields::ItemState;
use super::json::RawObject;
use super::{rfc3339, Notification, NotificationInput, Schedule};
use crate::error::{Error, Result};

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
            data: input.data.as_ref().map(RawObject::raw),
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

#[cfg(test)]
mod tests {
    use super::super::new_ids;
    use super::*;

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
}
