//! `POST /session` (user token → server-side session + cookie) and `DELETE /session` (end it
//! and every stream of it, on every node).

use http::{header, StatusCode};

use super::body::{discard, empty, error_response, Request, Response};
use crate::auth::{self, session::Via};
use crate::error::{Error, Result};
use crate::state::AppState;

pub async fn create(state: AppState, req: Request) -> Result<Response> {
    let (parts, body) = req.into_parts();
    let token = auth::session::bearer(&parts).ok_or(Error::Unauthorized(
        "POST /session needs Authorization: Bearer <user token>",
    ))?;
    let (user, claims) = auth::session::user_claims(&state, token)?;
    discard(body, state.config.body_timeout).await?;
    // The session lasts as long as the token is accepted: to its `exp` plus `--jwt-leeway`
    // (the skew between the issuer's clock and this one), to the millisecond. A token that
    // ran out since it was verified makes none.
    let ends_ms = state.config.keys.ends_ms(&claims);
    if ends_ms <= crate::model::now_ms() {
        return Err(Error::Unauthorized("invalid or expired token"));
    }
    let (cookie, ends_ms) = auth::session::start(&state, &user, ends_ms).await?;
    let mut response = empty(StatusCode::NO_CONTENT);
    response.headers_mut().insert(
        header::SET_COOKIE,
        auth::session::set_cookie(&cookie, ends_ms, auth::session::cookie_secure(&state)),
    );
    Ok(response)
}

/// Ends the caller's session: a cookie session for good; for a Bearer token with `sid`, that
/// session's streams (the token itself stays valid until its `exp`). A Bearer token without
/// `sid` has no session: nothing to end.
pub async fn delete(state: AppState, req: Request) -> Result<Response> {
    let (parts, _) = req.into_parts();
    let secure = auth::session::cookie_secure(&state);
    let caller = match auth::session::writer(&state, &parts).await {
        // A cookie whose session already ended (expired, signed out, the oldest beyond the
        // cap): still 401, and the browser drops it.
        Err(e @ Error::Unauthorized(_))
            if auth::session::bearer(&parts).is_none()
                && auth::session::has_session_cookie(&parts) =>
        {
            return Ok(signed_out(error_response(e), secure));
        }
        caller => caller?,
    };
    if let Some(session) = &caller.session {
        // Streams first, then the session's mark: if telling the other nodes fails (503),
        // the session is still there for the client's retry to end. The other way round, the
        // retry found no session (401) and the other nodes' streams of it went on. Then the
        // end again: a stream opening meanwhile on any node subscribes before it checks the
        // mark, so if it found none it hears this second announcement (`sse::stream`). The
        // mark also tells a node that could not hear either (cut off from Redis) once it is
        // back. A token stays valid: for its `sid` the mark is the logout's time, and only
        // streams opened before it end.
        let at = crate::model::presence_since(std::time::SystemTime::now());
        state.revoke_session(&caller.user, session).await?;
        match caller.via {
            Via::Cookie(_) => state.store.end_session(&caller.user, session).await?,
            Via::Bearer => {
                let until = caller.ends_ms.div_ceil(1000);
                let store = &state.store;
                store
                    .end_token_session(&caller.user, session, &at, until)
                    .await?;
            }
        }
        state.revoke_session(&caller.user, session).await?;
        tracing::info!(session, "session ended");
        tracing::debug!(user = caller.user, session, "session ended for");
    }
    Ok(signed_out(empty(StatusCode::NO_CONTENT), secure))
}

/// A sign-out's answer: the cookie cleared, and the browser's HTTP cache of this origin
/// too, which may hold the user's JSON answers (`Cache-Control: private, no-cache` lets it
/// keep them, so that pages using the client stay in the back/forward cache).
fn signed_out(mut response: Response, secure: bool) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::SET_COOKIE, auth::session::clear_cookie(secure));
    headers.insert(
        header::HeaderName::from_static("clear-site-data"),
        header::HeaderValue::from_static("\"cache\""),
    );
    response
}
