//! `GET /auth`, for nginx `auth_request`: 204 with the caller's identity headers
//! (`X-Herald-User`, `X-Herald-Session`), or 401/403. The identity headers are written here
//! for the `/api/` proxy too.

use http::header::{HeaderMap, HeaderValue};
use http::StatusCode;

use super::body::{empty, Request, Response};
use crate::auth::origin;
use crate::auth::session::{self, Caller};
use crate::error::{Error, Result};
use crate::state::AppState;

pub const USER_HEADER: &str = "x-herald-user";
pub const SESSION_HEADER: &str = "x-herald-session";

/// `X-Herald-User` (the user id as UTF-8 bytes; ids never start or end with whitespace, so
/// the value arrives unchanged) and, when there is a session, `X-Herald-Session` (its public
/// id, never the cookie).
pub(super) fn identity_headers(headers: &mut HeaderMap, caller: &Caller) -> Result<()> {
    let value = |s: &str| {
        HeaderValue::from_bytes(s.as_bytes())
            .map_err(|_| Error::Unauthorized("identity is not a valid header value"))
    };
    headers.insert(USER_HEADER, value(&caller.user)?);
    if let Some(session) = &caller.session {
        headers.insert(SESSION_HEADER, value(session)?);
    }
    Ok(())
}

/// `GET /auth`: 204 with the identity headers, or 401. When the proxy names the original
/// method (`X-Original-Method`), a cookie-authenticated write must pass the Origin rule (403).
pub async fn auth(state: AppState, req: Request) -> Result<Response> {
    let parts = req.into_parts().0;
    let caller = session::user(&state, &parts).await?;
    let original = parts
        .headers
        .get("x-original-method")
        .and_then(|m| m.to_str().ok());
    if original.is_some_and(|m| !origin::is_safe(m)) {
        session::check_write(&state, &caller, &parts)?;
    }
    let mut response = empty(StatusCode::NO_CONTENT);
    identity_headers(response.headers_mut(), &caller)?;
    Ok(response)
}
