//! `POST /notifications/{id}/actions/{action_id}`: take one of a notification's actions, once.
//! An action with a `path` is sent to the `--upstream` as the user (the `/api/` proxy's
//! identity headers, the path mapped as the proxy maps it) and its answer status recorded; one
//! without only records. Nothing is recorded when the upstream cannot be reached (502) or does
//! not answer in time (504). Requests racing for one notification send it upstream once, and
//! none is recorded while another is being sent.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::auth_request::identity_headers;
use super::body::{discard, json, Request, Response};
use super::notifications::at_position;
use crate::auth::session::{self, Caller};
use crate::error::{Error, Result};
use crate::model::{rfc3339, ActionSpec, Notification, TakenAction};
use crate::request_id::{self, RequestId};
use crate::state::AppState;
use crate::store::ActionOutcome;
use crate::upstream::Waits;

const TAKEN: &str = "an action was already taken on this notification";
const TAKING: &str = "an action of this notification is being taken";

/// How long past `--upstream-timeout` a claim to send an action outlives a node that died
/// while sending it.
const CLAIM_SLACK: Duration = Duration::from_secs(10);
/// How often an action the upstream has seen is tried again to be recorded while Redis is
/// away.
const RECORD_RETRY: Duration = Duration::from_millis(250);

pub async fn take(state: AppState, req: Request, id: &str, action_id: &str) -> Result<Response> {
    let (parts, body) = req.into_parts();
    let caller = session::writer(&state, &parts).await?;
    discard(body, state.config.body_timeout).await?;
    let n = notification(&state, &caller.user, id).await?;
    let spec = n
        .actions
        .iter()
        .find(|a| a.id == action_id)
        .ok_or(Error::NotFound("no such action on this notification"))?;
    untaken(&n)?;
    // One request at a time takes an action of a notification (on any node), and only while
    // none is recorded: a request that lost the race gets 409 and the upstream never sees it
    // (nor is an action without a path recorded while another is being sent).
    let ttl = state.config.upstream_timeout + CLAIM_SLACK;
    let claimed_until = Instant::now() + ttl;
    if !state.store.claim_action(&caller.user, id, ttl).await? {
        return Err(Error::Conflict(TAKING));
    }
    // Its own task: a request dropped meanwhile (a reset HTTP/2 stream, the drain's end)
    // neither cuts the action off at the upstream nor leaves it unrecorded, and the claim is
    // let go of only once the action is recorded or failed (so no second one is sent while
    // the upstream may still be working on the first).
    let request_id = parts.extensions.get::<RequestId>().cloned();
    let (spec, id, action_id) = (spec.clone(), id.to_owned(), action_id.to_owned());
    let (answer, answered) = oneshot::channel();
    tokio::spawn(async move {
        let mut answer = Some(answer);
        let taken = async {
            untaken(&notification(&state, &caller.user, &id).await?)?;
            let status = match &spec.path {
                // The request id goes upstream with the action, as the `/api/` proxy passes
                // it on.
                Some(path) => {
                    Some(send(&state, &caller, &spec, path, &id, request_id.as_ref()).await?)
                }
                None => None,
            };
            loop {
                match record(&state, &caller.user, &id, &action_id, status).await {
                    // The upstream has seen the action: Redis away now is answered (503) but
                    // does not lose the record, which is tried again while the claim holds
                    // (before, the claim expired and the next take sent the action again).
                    Err(e @ Error::Unavailable(_))
                        if status.is_some() && Instant::now() + RECORD_RETRY < claimed_until =>
                    {
                        if let Some(answer) = answer.take() {
                            tracing::warn!(
                                error = %e.detail(),
                                "action sent but not recorded yet (Redis away): answered 503, \
                                 recorded once Redis is back"
                            );
                            let _ = answer.send(Err(e));
                        }
                        tokio::time::sleep(RECORD_RETRY).await;
                    }
                    recorded => return recorded,
                }
            }
        }
        .await;
        if let Err(e) = state.store.release_action(&caller.user, &id).await {
            tracing::warn!(error = %e, "action claim not released (it expires)");
        }
        match answer {
            Some(answer) => drop(answer.send(taken)),
            None if taken.is_ok() => tracing::info!("action recorded after Redis came back"),
            None => tracing::warn!("action sent but never recorded: Redis stayed away"),
        }
    });
    answered
        .await
        .map_err(|e| Error::Internal(format!("action task: {e}")))?
}

async fn notification(state: &AppState, user: &str, id: &str) -> Result<Notification> {
    (state.store.get(user, id).await?).ok_or(Error::NotFound("no such notification"))
}

/// 409 once an action of `n` is recorded.
fn untaken(n: &Notification) -> Result<()> {
    match n.state.action {
        Some(_) => Err(Error::Conflict(TAKEN)),
        None => Ok(()),
    }
}

/// Record the action taken (with the upstream's status, when it was sent).
async fn record(
    state: &AppState,
    user: &str,
    id: &str,
    action_id: &str,
    status: Option<u16>,
) -> Result<Response> {
    let taken = TakenAction {
        id: action_id.to_owned(),
        at: rfc3339(std::time::SystemTime::now()),
        status,
    };
    match state.store.take_action(user, id, &taken).await? {
        ActionOutcome::Taken(n, at) => Ok(at_position(json(StatusCode::OK, &n), Some(at))),
        ActionOutcome::Conflict => Err(Error::Conflict(TAKEN)),
        ActionOutcome::Missing => Err(Error::NotFound("no such notification")),
    }
}

/// Send the action to the upstream as the user; its answer status (any status: the backend
/// has seen the action).
async fn send(
    state: &AppState,
    caller: &Caller,
    spec: &ActionSpec,
    path: &str,
    id: &str,
    request_id: Option<&RequestId>,
) -> Result<u16> {
    let upstream = state.upstream.as_ref().ok_or_else(|| {
        Error::invalid("this action has a path, but no --upstream is configured to send it to")
    })?;
    let (rest, query) = upstream_target(path);
    let body = serde_json::json!({"notification": id, "action": spec.id}).to_string();
    // Its length set, so the client sends the body with any method (it leaves a GET's out
    // otherwise).
    let length = HeaderValue::from(body.len());
    let mut request = http::Request::builder()
        .method(spec.method.as_deref().unwrap_or("POST"))
        .uri(upstream.target(&rest, query.as_deref())?)
        .body(
            Full::new(Bytes::from(body))
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .map_err(|e| Error::Internal(format!("action request: {e}")))?;
    let headers = request.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CONTENT_LENGTH, length);
    identity_headers(headers, caller)?;
    if let Some(request_id) = request_id {
        headers.insert(request_id::HEADER, request_id.header_value());
    }
    let response = upstream.send(request, Waits::of(&state.config)).await?;
    Ok(response.status().as_u16())
}

/// WHATWG URL's special-query percent-encode set (an `http(s)` URL's query).
const NOT_IN_QUERY: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'\'');
/// WHATWG URL's path percent-encode set.
const NOT_IN_PATH: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// An action's `path` as published (`/api/x?q`) → the rest after `/api/` and the query, as a
/// browser would send that URL to the `/api/` proxy: percent-encoded where a browser encodes
/// (non-ASCII, `"`, `{`…; existing escapes kept), without a `#fragment`, which a browser
/// never sends.
fn upstream_target(path: &str) -> (String, Option<String>) {
    let path = path.split('#').next().unwrap_or_default();
    let (path, query) = match path.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path, None),
    };
    let rest = path.strip_prefix("/api/").unwrap_or(path);
    (
        utf8_percent_encode(rest, NOT_IN_PATH).to_string(),
        query.map(|q| utf8_percent_encode(q, NOT_IN_QUERY).to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An action's path reaches the upstream as a browser would send it to the proxy.
    #[test]
    fn action_paths_are_encoded_as_a_browser_would() {
        let target = upstream_target;
        assert_eq!(target("/api/builds/42"), ("builds/42".into(), None));
        assert_eq!(target("/api/\u{fc}"), ("%C3%BC".into(), None));
        assert_eq!(
            target("/api/a{b}/\"c\"/^/%20?q=\u{e9} x&r=/?'#frag"),
            (
                "a%7Bb%7D/%22c%22/%5E/%20".into(),
                Some("q=%C3%A9%20x&r=/?%27".into())
            )
        );
        assert_eq!(target("/api/x#f?y"), ("x".into(), None));
    }
}
