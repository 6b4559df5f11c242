//! The tray: `GET /notifications` (newest first, `before` cursor, `unread` and `unseen`
//! filters), `GET /notifications/counts`, and the status writes `PATCH /notifications/{id}` and
//! bulk `PATCH /notifications`. A caller only
//! ever reaches their own tray: every store call is keyed by the authenticated user.

use http::StatusCode;
use serde::Deserialize;

use super::body::{empty, json, read_json, Request, Response};
use crate::auth;
use crate::error::{Error, Result};
use crate::model::{validate_id, Mark, Target};
use crate::state::AppState;
use crate::store::{Filter, ListQuery};

/// Largest page, and the default one.
pub const MAX_LIMIT: usize = 200;
pub const DEFAULT_LIMIT: usize = 50;
/// Most ids one bulk write may name.
pub const MAX_BULK_IDS: usize = 1000;

pub async fn list(state: AppState, req: Request) -> Result<Response> {
    let query = super::query_pairs(&req);
    let (parts, _) = req.into_parts();
    let caller = auth::session::user(&state, &parts).await?;
    let mut q = ListQuery {
        limit: DEFAULT_LIMIT,
        before: None,
        filter: Filter::All,
    };
    let (mut unread, mut unseen) = (false, false);
    for (key, value) in query {
        match key.as_str() {
            "limit" => {
                q.limit = value
                    .parse()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| {
                        Error::invalid(format!("limit must be an integer from 1 to {MAX_LIMIT}"))
                    })?
            }
            "before" if !value.is_empty() => {
                validate_id("before", &value)?;
                q.before = Some(value);
            }
            "unread" => unread = flag("unread", &value)?,
            "unseen" => unseen = flag("unseen", &value)?,
            _ => {}
        }
    }
    // Unseen notifications are unread too: `unseen` narrows `unread`.
    q.filter = match (unread, unseen) {
        (_, true) => Filter::Unseen,
        (true, false) => Filter::Unread,
        (false, false) => Filter::All,
    };
    let page = state.store.list(&caller.user, &q).await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "notifications": page.notifications,
            "unread_count": page.unread_count,
            "unseen_count": page.unseen_count,
            "next": page.next,
            "position": page.position.to_string(),
        }),
    ))
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

/// The status part of a PATCH body: exactly one of `read` (bool), `seen: true` or
/// `deleted: true`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Status {
    read: Option<bool>,
    seen: Option<bool>,
    deleted: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchMany {
    ids: Option<Vec<String>>,
    all: Option<bool>,
    read: Option<bool>,
    seen: Option<bool>,
    deleted: Option<bool>,
}

impl Status {
    fn mark(&self) -> Result<Mark> {
        match (self.read, self.seen, self.deleted) {
            (Some(true), None, None) => Ok(Mark::Read),
            (Some(false), None, None) => Ok(Mark::Unread),
            (None, Some(true), None) => Ok(Mark::Seen),
            (None, None, Some(true)) => Ok(Mark::Deleted),
            (None, Some(false), None) => Err(Error::invalid("seen can only be true")),
            (None, None, Some(false)) => Err(Error::invalid("deleted can only be true")),
            (None, None, None) => Err(Error::invalid(
                "the body needs \"read\": true|false, \"seen\": true or \"deleted\": true",
            )),
            _ => Err(Error::invalid(
                "send one of \"read\", \"seen\" or \"deleted\"",
            )),
        }
    }
}

pub async fn patch_one(state: AppState, req: Request, id: &str) -> Result<Response> {
    let (parts, body) = req.into_parts();
    let caller = auth::session::writer(&state, &parts).await?;
    let patch: Status = read_json(body, state.config.body_timeout).await?;
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
        return Ok(empty(StatusCode::NO_CONTENT));
    }
    let n = state
        .store
        .get(&caller.user, id)
        .await?
        .ok_or_else(not_found)?;
    Ok(json(StatusCode::OK, &n))
}

pub async fn patch_many(state: AppState, req: Request) -> Result<Response> {
    let (parts, body) = req.into_parts();
    let caller = auth::session::writer(&state, &parts).await?;
    let patch: PatchMany = read_json(body, state.config.body_timeout).await?;
    let status = Status {
        read: patch.read,
        seen: patch.seen,
        deleted: patch.deleted,
    };
    let mark = status.mark()?;
    let target = match (patch.ids, patch.all) {
        (Some(_), Some(true)) => {
            return Err(Error::invalid("send either \"ids\" or \"all\", not both"))
        }
        (None, Some(true)) if mark == Mark::Deleted => {
            return Err(Error::invalid(
                "\"all\" works with \"read\" and \"seen\" only",
            ))
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
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"updated": marked.changed.len()}),
    ))
}
