//! The tray: `GET /notifications` (newest first, `before` cursor, `unread` filter) and the
//! status writes `PATCH /notifications/{id}` and bulk `PATCH /notifications`. A caller only
//! ever reaches their own tray: every store call is keyed by the authenticated user.

use http::StatusCode;
use serde::Deserialize;

use super::body::{empty, json, read_json, Request, Response};
use crate::auth;
use crate::error::{Error, Result};
use crate::model::{validate_id, Mark, Target};
use crate::state::AppState;
use crate::store::ListQuery;

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
        unread_only: false,
    };
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
            "unread" => {
                q.unread_only = match value.as_str() {
                    "true" | "1" => true,
                    "false" | "0" | "" => false,
                    _ => return Err(Error::invalid("unread must be true or false")),
                }
            }
            _ => {}
        }
    }
    let page = state.store.list(&caller.user, &q).await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "notifications": page.notifications,
            "unread_count": page.unread_count,
            "next": page.next,
            "position": page.position.to_string(),
        }),
    ))
}

/// The status part of a PATCH body: exactly one of `read` (bool) or `deleted: true`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchOne {
    read: Option<bool>,
    deleted: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchMany {
    ids: Option<Vec<String>>,
    all: Option<bool>,
    read: Option<bool>,
    deleted: Option<bool>,
}

fn mark_of(read: Option<bool>, deleted: Option<bool>) -> Result<Mark> {
    match (read, deleted) {
        (Some(true), None) => Ok(Mark::Read),
        (Some(false), None) => Ok(Mark::Unread),
        (None, Some(true)) => Ok(Mark::Deleted),
        (None, Some(false)) => Err(Error::invalid("deleted can only be true")),
        (None, None) => Err(Error::invalid(
            "the body needs \"read\": true|false or \"deleted\": true",
        )),
        (Some(_), Some(_)) => Err(Error::invalid(
            "send either \"read\" or \"deleted\", not both",
        )),
    }
}

pub async fn patch_one(state: AppState, req: Request, id: &str) -> Result<Response> {
    let (parts, body) = req.into_parts();
    let caller = auth::session::writer(&state, &parts).await?;
    let patch: PatchOne = read_json(body, state.config.body_timeout).await?;
    let mark = mark_of(patch.read, patch.deleted)?;
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
    let mark = mark_of(patch.read, patch.deleted)?;
    let target = match (patch.ids, patch.all) {
        (Some(_), Some(true)) => {
            return Err(Error::invalid("send either \"ids\" or \"all\", not both"))
        }
        (None, Some(true)) if mark == Mark::Deleted => {
            return Err(Error::invalid("\"all\" works with \"read\" only"))
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
