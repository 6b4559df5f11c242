//! The tray: `GET /notifications` (newest first, `before` cursor, filters `unread`, `unseen`,
//! `archived`, `snoozed`, `category`), `GET /notifications/counts`, and the writes
//! `PATCH /notifications/{id}` and bulk `PATCH /notifications` (read, seen, deleted, archived,
//! snoozed). A caller only ever reaches their own tray: every store call is keyed by the
//! authenticated user.

use std::time::SystemTime;

use http::{HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

use super::body::{empty, json, read_json, Request, Response};
use crate::auth;
use crate::error::{Error, Result};
use crate::model::{
    canonical_id, check_ahead, cursor, parse_time, validate_category, validate_id, EventId, Mark,
    Notification, Target,
};
use crate::state::AppState;
use crate::store::{Archived, ListQuery};

/// Largest page, and the default one.
pub const MAX_LIMIT: usize = 200;
pub const DEFAULT_LIMIT: usize = 50;
/// Most ids one bulk write may name.
pub const MAX_BULK_IDS: usize = 1000;
/// Most categories one listing may filter by.
pub const MAX_CATEGORIES: usize = 64;

/// The body of `GET /notifications`, written straight from the page (through a
/// `serde_json::Value`, each notification's `data` would be parsed again: see `RawJson`).
#[derive(Serialize)]
struct Listing<'a> {
    next: Option<&'a str>,
    notifications: &'a [Notification],
    position: String,
    unread_count: u64,
    unseen_count: u64,
}

pub async fn list(state: AppState, req: Request) -> Result<Response> {
    let query = super::query_pairs(&req);
    let categories = super::query_list(&req, "category");
    let (parts, _) = req.into_parts();
    let caller = auth::session::user(&state, &parts).await?;
    let (query, categories) = (query?, categories?);
    let mut q = ListQuery {
        limit: DEFAULT_LIMIT,
        ..ListQuery::default()
    };
    for (key, value) in query {
        match key.as_str() {
            // An empty value is no value, as for every parameter here; given twice, the last
            // one counts.
            "limit" if value.is_empty() => q.limit = DEFAULT_LIMIT,
            "limit" => {
                q.limit = value
                    .parse()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| {
                        Error::invalid(format!("limit must be an integer from 1 to {MAX_LIMIT}"))
                    })?
            }
            "before" if value.is_empty() => q.before = None,
            "before" => {
                let id = cursor(&value).ok_or_else(|| {
                    Error::invalid("before must be a notification id (from a listing's next)")
                })?;
                q.before = Some(id.to_string());
            }
            "unread" => q.unread = flag("unread", &value)?,
            "unseen" => q.unseen = flag("unseen", &value)?,
            "archived" => {
                q.archived = match value.as_str() {
                    "exclude" | "" => Archived::Exclude,
                    "only" => Archived::Only,
                    "include" => Archived::Include,
                    _ => return Err(Error::invalid("archived must be exclude, only or include")),
                }
            }
            "snoozed" => {
                q.snoozed = match value.as_str() {
                    "exclude" | "" => false,
                    "only" => true,
                    _ => return Err(Error::invalid("snoozed must be exclude or only")),
                }
            }
            _ => {}
        }
    }
    // A comma list (a category with a comma in it is named as `%2C`).
    for category in categories {
        validate_category(&category)?;
        q.categories.push(category);
    }
    if q.categories.len() > MAX_CATEGORIES {
        return Err(Error::invalid(format!(
            "category may name at most {MAX_CATEGORIES} categories"
        )));
    }
    let page = state.store.list(&caller.user, &q).await?;
    let listing = Listing {
        next: page.next.as_deref(),
        notifications: &page.notifications,
        position: page.position.to_string(),
        unread_count: page.unread_count,
        unseen_count: page.unseen_count,
    };
    let mut response = json(StatusCode::OK, &listing);
    // Who asked, as `/auth` says it: the browser client compares the session of its cookie
    // with the shared stream's (a tab that signed in again needs a stream on the new one).
    super::auth_request::identity_headers(response.headers_mut(), &caller)?;
    Ok(response)
}

/// `GET /notifications/counts`.
pub async fn counts(state: AppState, req: Request) -> Result<Response> {
    let caller = auth::session::user(&state, &req.into_parts().0).await?;
    let counts = state.store.counts(&caller.user).await?;
    let by_category: serde_json::Map<String, serde_json::Value> = counts
        .by_category
        .iter()
        .map(|(category, c)| {
            let value = serde_json::json!({"unread": c.unread, "unseen": c.unseen});
            (category.clone(), value)
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "unread": counts.counts.unread,
            "unseen": counts.counts.unseen,
            "by_category": by_category,
            "position": counts.position.to_string(),
        }),
    ))
}

/// A boolean query parameter.
fn flag(name: &str, value: &str) -> Result<bool> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" | "" => Ok(false),
        _ => Err(Error::invalid(format!("{name} must be true or false"))),
    }
}

/// The change part of a PATCH body: exactly one of `read` (bool), `seen: true`,
/// `deleted: true`, `archived` (bool) or `snoozed_until` (an RFC 3339 time, or `null`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Change {
    read: Option<bool>,
    seen: Option<bool>,
    deleted: Option<bool>,
    archived: Option<bool>,
    /// `Some(Value::Null)` when sent as `null`, `None` when not sent.
    #[serde(default, deserialize_with = "present")]
    snoozed_until: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchMany {
    ids: Option<Vec<String>>,
    all: Option<bool>,
    read: Option<bool>,
    seen: Option<bool>,
    deleted: Option<bool>,
    archived: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    snoozed_until: Option<serde_json::Value>,
}

/// A member that was sent, whatever its value (`null` included).
fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

impl Change {
    fn mark(&self) -> Result<Mark> {
        let sent = [
            self.read.is_some(),
            self.seen.is_some(),
            self.deleted.is_some(),
            self.archived.is_some(),
            self.snoozed_until.is_some(),
        ];
        match sent.iter().filter(|s| **s).count() {
            0 => {
                return Err(Error::invalid(
                    "the body needs one of \"read\", \"seen\", \"deleted\", \"archived\" or \
                     \"snoozed_until\"",
                ))
            }
            1 => {}
            _ => return Err(Error::invalid(
                "send one of \"read\", \"seen\", \"deleted\", \"archived\" or \"snoozed_until\"",
            )),
        }
        Ok(match (self.read, self.seen, self.deleted, self.archived) {
            (Some(true), ..) => Mark::Read,
            (Some(false), ..) => Mark::Unread,
            (_, Some(true), ..) => Mark::Seen,
            (_, Some(false), ..) => return Err(Error::invalid("seen can only be true")),
            (_, _, Some(true), _) => Mark::Deleted,
            (_, _, Some(false), _) => return Err(Error::invalid("deleted can only be true")),
            (_, _, _, Some(true)) => Mark::Archived,
            (_, _, _, Some(false)) => Mark::Unarchived,
            (None, None, None, None) => match &self.snoozed_until {
                Some(serde_json::Value::String(until)) => {
                    let at = parse_time("snoozed_until", until)?;
                    check_ahead("snoozed_until", at, SystemTime::now())?;
                    Mark::Snooze(at)
                }
                _ if self.snoozed_until == Some(serde_json::Value::Null) => Mark::Unsnooze,
                _ => {
                    return Err(Error::invalid(
                        "snoozed_until must be an RFC 3339 time or null",
                    ))
                }
            },
        })
    }
}

/// `X-Herald-Position` on a tray write's answer: where the user's change log stood once the
/// write was done, so a client can tell when its stream shows it (`<epoch>.<seq>`, an event
/// id; the browser client resolves a write once its stream has reached it).
pub const POSITION_HEADER: &str = "x-herald-position";

/// `response` with the [`POSITION_HEADER`] `position` (a tray write's head, when known).
pub(super) fn at_position(mut response: Response, position: Option<EventId>) -> Response {
    let value = position.and_then(|p| HeaderValue::from_str(&p.to_string()).ok());
    if let Some(value) = value {
        response.headers_mut().insert(POSITION_HEADER, value);
    }
    response
}

pub async fn patch_one(state: AppState, req: Request, id: &str) -> Result<Response> {
    let (parts, body) = req.into_parts();
    let caller = auth::session::writer(&state, &parts).await?;
    let patch: Change = read_json(body, state.config.body_timeout).await?;
    let mark = patch.mark()?;
    let not_found = || Error::NotFound("no such notification");
    let marked = state
        .store
        .mark(&caller.user, &Target::Ids(vec![id.to_owned()]), mark)
        .await?;
    if marked.found == 0 {
        return Err(not_found());
    }
    if mark == Mark::Deleted {
        return Ok(at_position(empty(StatusCode::NO_CONTENT), marked.position));
    }
    let n = state
        .store
        .get(&caller.user, id)
        .await?
        .ok_or_else(not_found)?;
    Ok(at_position(json(StatusCode::OK, &n), marked.position))
}

pub async fn patch_many(state: AppState, req: Request) -> Result<Response> {
    let (parts, body) = req.into_parts();
    let caller = auth::session::writer(&state, &parts).await?;
    let patch: PatchMany = read_json(body, state.config.body_timeout).await?;
    let change = Change {
        read: patch.read,
        seen: patch.seen,
        deleted: patch.deleted,
        archived: patch.archived,
        snoozed_until: patch.snoozed_until,
    };
    let mark = change.mark()?;
    let target = match (patch.ids, patch.all) {
        (Some(_), Some(true)) => {
            return Err(Error::invalid("send either \"ids\" or \"all\", not both"))
        }
        (None, Some(true)) => Target::All,
        (Some(ids), None | Some(false)) => {
            if ids.len() > MAX_BULK_IDS {
                return Err(Error::invalid(format!(
                    "at most {MAX_BULK_IDS} ids per request"
                )));
            }
            let mut unique: Vec<String> = Vec::with_capacity(ids.len());
            for id in ids {
                validate_id("each id", &id)?;
                let id = canonical_id(&id).into_owned();
                if !unique.contains(&id) {
                    unique.push(id);
                }
            }
            Target::Ids(unique)
        }
        (None, _) => {
            return Err(Error::invalid(
                "the body needs \"ids\": [...] or \"all\": true",
            ))
        }
    };
    let marked = state.store.mark(&caller.user, &target, mark).await?;
    let body = serde_json::json!({"updated": marked.changed.len()});
    Ok(at_position(json(StatusCode::OK, &body), marked.position))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Property tests (issue 13): PATCH bodies of any shape.
    mod props {
        use proptest::prelude::*;
        use serde_json::{json, Map, Value};

        use super::*;
        use crate::model::props::{body_bytes, json_value, with_offset};
        use crate::model::{from_json, now_ms};

        const MINUTE: i64 = 60_000;
        const DAY: i64 = 24 * 60 * MINUTE;

        /// A `snoozed_until` value: a time in the past, inside the 90 days or beyond (a
        /// minute clear of each edge, so the clock cannot move a case across one), at any
        /// offset; or something else.
        fn snooze_value() -> impl Strategy<Value = Value> {
            let now = now_ms();
            let ahead = prop_oneof![
                -10 * DAY..-MINUTE,
                MINUTE..90 * DAY - MINUTE,
                90 * DAY + MINUTE..200 * DAY
            ];
            prop_oneof![
                4 => (ahead, -1439i32..=1439).prop_map(move |(ahead, offset)| {
                    json!(with_offset(now.saturating_add_signed(ahead), offset))
                }),
                1 => Just(Value::Null),
                1 => json_value(),
            ]
        }

        /// A PATCH body: some of the five members (each maybe of the wrong type), sometimes
        /// an unknown one.
        fn change_body() -> impl Strategy<Value = Map<String, Value>> {
            let flag = || {
                prop_oneof![
                    4 => any::<bool>().prop_map(Value::Bool),
                    1 => Just(Value::Null),
                    1 => json_value(),
                ]
            };
            (
                prop::option::weighted(0.3, flag()),
                prop::option::weighted(0.3, flag()),
                prop::option::weighted(0.3, flag()),
                prop::option::weighted(0.3, flag()),
                prop::option::weighted(0.3, snooze_value()),
                prop::option::weighted(0.05, ("(ids|all|unread|x)", json_value())),
            )
                .prop_map(|(read, seen, deleted, archived, snoozed_until, other)| {
                    let mut body = Map::new();
                    for (name, value) in [
                        ("read", read),
                        ("seen", seen),
                        ("deleted", deleted),
                        ("archived", archived),
                        ("snoozed_until", snoozed_until),
                    ] {
                        if let Some(value) = value {
                            body.insert(name.to_owned(), value);
                        }
                    }
                    if let Some((name, value)) = other {
                        body.insert(name, value);
                    }
                    body
                })
        }

        /// What the spec says a body means: exactly one of `read` (bool), `seen: true`,
        /// `deleted: true`, `archived` (bool) or `snoozed_until` (a time within 90 days, or
        /// `null`); `None` for a 400.
        fn meaning(body: &Map<String, Value>) -> Option<Mark> {
            let sent: Vec<(&str, &Value)> = body
                .iter()
                .filter(|(name, value)| name.as_str() == "snoozed_until" || !value.is_null())
                .map(|(name, value)| (name.as_str(), value))
                .collect();
            let [(name, value)] = sent[..] else {
                return None;
            };
            match (name, value) {
                ("read", Value::Bool(true)) => Some(Mark::Read),
                ("read", Value::Bool(false)) => Some(Mark::Unread),
                ("seen", Value::Bool(true)) => Some(Mark::Seen),
                ("deleted", Value::Bool(true)) => Some(Mark::Deleted),
                ("archived", Value::Bool(true)) => Some(Mark::Archived),
                ("archived", Value::Bool(false)) => Some(Mark::Unarchived),
                ("snoozed_until", Value::Null) => Some(Mark::Unsnooze),
                ("snoozed_until", Value::String(s)) => {
                    let at = parse_time("t", s).ok()?;
                    let now = now_ms();
                    (at > now && at <= now + 90 * DAY as u64).then_some(Mark::Snooze(at))
                }
                _ => None,
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// A PATCH body of any shape means what the spec says, or is a 400; never a panic.
            #[test]
            fn patch_bodies_mean_one_change(body in change_body()) {
                let bytes = serde_json::to_vec(&body).expect("a JSON object serializes");
                let known = ["read", "seen", "deleted", "archived", "snoozed_until"];
                let well_typed = body.iter().all(|(name, value)| {
                    known.contains(&name.as_str())
                        && (name == "snoozed_until" || value.is_boolean() || value.is_null())
                });
                let result = match from_json::<Change>(&bytes) {
                    Ok(change) => {
                        prop_assert!(well_typed, "{:?} parsed", body);
                        change.mark()
                    }
                    Err(message) => {
                        prop_assert!(!well_typed, "{:?}: {}", body, message);
                        prop_assert!(message.starts_with("invalid JSON body"), "{}", message);
                        return Ok(());
                    }
                };
                match result {
                    Ok(mark) => prop_assert_eq!(Some(mark), meaning(&body), "{:?}", body),
                    Err(e) => {
                        prop_assert!(matches!(e, Error::InvalidRequest(_)), "{e:?}");
                        prop_assert_eq!(meaning(&body), None, "{:?} refused", body);
                    }
                }
            }

            /// Any bytes as a PATCH body (one or many): parsed, or refused with a message
            /// that names the body; never a panic.
            #[test]
            fn any_patch_bytes_parse_or_are_refused(bytes in body_bytes()) {
                let one = from_json::<Change>(&bytes);
                let many = from_json::<PatchMany>(&bytes).map(|_| ());
                if let Ok(change) = &one {
                    let _ = change.mark();
                }
                for message in [one.err(), many.err()].into_iter().flatten() {
                    prop_assert!(message.starts_with("invalid JSON body"), "{}", message);
                }
            }
        }
    }
}
