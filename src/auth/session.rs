//! The caller of a request: a user (session cookie or Bearer user token) or a service (Bearer
//! token with the `publish` scope), and the `herald_session` cookie itself.

use cookie::{Cookie, SameSite};
use http::header::{AUTHORIZATION, COOKIE};
use http::request::Parts;
use http::HeaderValue;

use super::jwt::Claims;
use crate::error::{Error, Result};
use crate::model::{is_valid_id, now_secs};
use crate::server::ConnInfo;
use crate::state::AppState;

pub const COOKIE_NAME: &str = "herald_session";

/// How the caller proved who they are; cookie callers must pass the Origin check on writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Cookie,
    Bearer,
}

/// An authenticated user.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: String,
    /// The browser session, the token's `sid`, or the connection for a Bearer token without one.
    pub session: String,
    /// Unix seconds at which the credentials end.
    pub exp: u64,
    pub via: Via,
}

/// The token in `Authorization: Bearer …`, if any.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The `herald_session` cookie value, if any.
pub fn session_cookie(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(|c| c.ok())
        .find(|c| c.name() == COOKIE_NAME)
        .map(|c| c.value().to_owned())
}

/// Verify a Bearer token as a user token: `sub` must be a valid user id.
pub fn user_claims(state: &AppState, token: &str) -> Result<(String, Claims)> {
    let claims = state.config.keys.verify(token)?;
    match claims.sub.clone() {
        Some(sub) if is_valid_id(&sub) => Ok((sub, claims)),
        _ => Err(Error::Unauthorized("token has no valid sub claim")),
    }
}

/// The user making the request (Bearer first, then the session cookie), or 401.
pub async fn user(state: &AppState, parts: &Parts) -> Result<Caller> {
    if let Some(token) = bearer(parts) {
        let (user, claims) = user_claims(state, token)?;
        let session = match claims.sid {
            Some(sid) if is_valid_id(&sid) => sid,
            Some(_) => return Err(Error::Unauthorized("token has an invalid sid claim")),
            None => parts
                .extensions
                .get::<ConnInfo>()
                .map_or_else(|| "conn".to_owned(), |c| c.id.clone()),
        };
        return Ok(Caller {
            user,
            session,
            exp: claims.exp,
            via: Via::Bearer,
        });
    }
    let Some(id) = session_cookie(parts) else {
        return Err(Error::Unauthorized(
            "missing credentials: send a session cookie or a Bearer token",
        ));
    };
    match state.store.session(&id).await? {
        Some(record) if record.exp > now_secs() => Ok(Caller {
            user: record.user,
            session: id,
            exp: record.exp,
            via: Via::Cookie,
        }),
        _ => Err(Error::Unauthorized("session expired or ended")),
    }
}

/// A service allowed to publish (Bearer token whose scope includes `publish`), or 401/403.
pub fn service(state: &AppState, parts: &Parts) -> Result<Claims> {
    let token = bearer(parts).ok_or(Error::Unauthorized("a service token is required"))?;
    let claims = state.config.keys.verify(token)?;
    if !claims.has_scope("publish") {
        return Err(Error::Forbidden("the token lacks the publish scope"));
    }
    Ok(claims)
}

/// Whether cookies get `Secure`: always, except in `--dev` over plain http (as seen through a
/// trusted proxy's `X-Forwarded-Proto`).
pub fn cookie_secure(state: &AppState, parts: &Parts) -> bool {
    if !state.config.dev {
        return true;
    }
    parts.extensions.get::<ConnInfo>().is_some_and(|conn| {
        crate::forwarded::client(&state.config.trusted_proxies, conn.peer, &parts.headers).https
    })
}

/// `Set-Cookie` for a new session ending at `exp` (Unix seconds).
pub fn set_cookie(id: &str, exp: u64, secure: bool) -> HeaderValue {
    let max_age = exp.saturating_sub(now_secs()) as i64;
    let cookie = Cookie::build((COOKIE_NAME, id.to_owned()))
        .http_only(true)
        .same_site(SameSite::Lax)
        .path("/")
        .secure(secure)
        .max_age(cookie::time::Duration::seconds(max_age));
    HeaderValue::from_str(&cookie.to_string()).expect("cookie is valid header text")
}

/// `Set-Cookie` that clears the session cookie.
pub fn clear_cookie(secure: bool) -> HeaderValue {
    let cookie = Cookie::build((COOKIE_NAME, ""))
        .http_only(true)
        .same_site(SameSite::Lax)
        .path("/")
        .secure(secure)
        .max_age(cookie::time::Duration::ZERO);
    HeaderValue::from_str(&cookie.to_string()).expect("cookie is valid header text")
}
