//! The caller of a request: a user (session cookie or Bearer user token) or a service (Bearer
//! token with the `publish` scope), and browser sessions themselves. A session has a public id
//! (in `ready`, presence, `X-Herald-Session`, logs, Redis keys, channel messages) and a secret;
//! the cookie carries both as `<id>.<secret>` and is the only place the secret ever appears:
//! the store keeps its SHA-256, so neither the public id nor a store dump yields a credential.

use cookie::{Cookie, SameSite};
use http::header::{AUTHORIZATION, COOKIE};
use http::request::Parts;
use http::{HeaderMap, HeaderValue};

use super::jwt::Claims;
use super::origin;
use crate::error::{Error, Result};
use crate::forwarded::ConnInfo;
use crate::model::{is_lower_hex, is_valid_id, now_secs, random_token, sha256_hex};
use crate::state::AppState;
use crate::store::SessionRecord;

pub const COOKIE_NAME: &str = "herald_session";
/// Longest session, in seconds (400 days, the cap browsers put on a cookie's `Max-Age`): a
/// token whose `exp` lies further ahead gets a session that ends here.
pub const MAX_SESSION_SECS: u64 = 400 * 24 * 3600;
/// Random bytes of a session's public id and of its secret.
const ID_BYTES: usize = 12;
const SECRET_BYTES: usize = 32;

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
    /// The public id of the browser session, or the token's `sid`; `None` for a Bearer token
    /// without `sid` (each such request or stream stands alone).
    pub session: Option<String>,
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

/// The `Cookie` headers without the session cookie, read as [`session_cookie`] reads it
/// (the cookie crate); every other pair passes through unchanged.
pub fn strip_session_cookie(headers: &mut HeaderMap) {
    let is_session = |pair: &str| match Cookie::parse(pair) {
        Ok(cookie) => cookie.name() == COOKIE_NAME,
        // A bare name is no cookie to the crate, but it still names ours: never forward it.
        Err(_) => pair == COOKIE_NAME,
    };
    let kept: Vec<String> = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && !is_session(pair))
        .map(str::to_owned)
        .collect();
    headers.remove(COOKIE);
    if let Ok(value) = HeaderValue::from_str(&kept.join("; ")) {
        if !kept.is_empty() {
            headers.insert(COOKIE, value);
        }
    }
}

/// The SHA-256 of a session secret, hex: what the store keeps instead of the secret.
pub fn secret_hash(secret: &str) -> String {
    sha256_hex(secret)
}

/// `<id>.<secret>` → (id, secret), when both have the shape Herald issues (lower-case hex of
/// the right length). Anything else, including the cookie format before public ids, is not a
/// session: the browser signs in again.
fn split_cookie(value: &str) -> Option<(&str, &str)> {
    let (id, secret) = value.split_once('.')?;
    (is_lower_hex(id, ID_BYTES * 2) && is_lower_hex(secret, SECRET_BYTES * 2))
        .then_some((id, secret))
}

/// Equal byte strings, compared in time independent of where they differ.
fn same_digest(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0, |d, (x, y)| d | (x ^ y)) == 0
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
        let session = match claims.sid.clone() {
            Some(sid) if is_valid_id(&sid) => Some(sid),
            Some(_) => return Err(Error::Unauthorized("token has an invalid sid claim")),
            None => None,
        };
        return Ok(Caller {
            user,
            session,
            exp: claims.expires(),
            via: Via::Bearer,
        });
    }
    let Some(value) = session_cookie(parts) else {
        return Err(Error::Unauthorized(
            "missing credentials: send a session cookie or a Bearer token",
        ));
    };
    let ended = || Error::Unauthorized("session expired or ended");
    let (id, secret) = split_cookie(&value).ok_or_else(ended)?;
    match state.store.session(id).await? {
        Some(record)
            if record.is_live() && same_digest(&record.secret_hash, &secret_hash(secret)) =>
        {
            Ok(Caller {
                user: record.user,
                session: Some(id.to_owned()),
                exp: record.exp,
                via: Via::Cookie,
            })
        }
        _ => Err(ended()),
    }
}

/// The Origin rule for writes, in one place: a cookie caller must pass it (403); a Bearer
/// caller is exempt (browsers never attach a Bearer token by themselves).
pub fn check_write(state: &AppState, caller: &Caller, parts: &Parts) -> Result<()> {
    if caller.via == Via::Cookie {
        origin::check(state, parts)?;
    }
    Ok(())
}

/// The caller of a write request: [`user`], then [`check_write`].
pub async fn writer(state: &AppState, parts: &Parts) -> Result<Caller> {
    let caller = user(state, parts).await?;
    check_write(state, &caller, parts)?;
    Ok(caller)
}

/// Start a browser session for `user` ending at `exp` (at most [`MAX_SESSION_SECS`] ahead).
/// Beyond the per-user cap the oldest sessions end, with their streams on every node.
/// Returns the cookie value and the session's end.
pub async fn start(state: &AppState, user: &str, exp: u64) -> Result<(String, u64)> {
    let exp = exp.min(now_secs().saturating_add(MAX_SESSION_SECS));
    let (id, secret) = (random_token(ID_BYTES), random_token(SECRET_BYTES));
    let record = SessionRecord {
        user: user.to_owned(),
        exp,
        secret_hash: secret_hash(&secret),
    };
    let evicted = state.store.put_session(&id, &record).await?;
    tracing::info!(user, session = id, "session created");
    for old in evicted {
        tracing::info!(
            user,
            session = old,
            "oldest session ended: too many sessions"
        );
        state.revoke_session(user, &old).await?;
    }
    Ok((format!("{id}.{secret}"), exp))
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
    parts
        .extensions
        .get::<ConnInfo>()
        .is_some_and(|conn| conn.https(&state.config.trusted_proxies, &parts.headers))
}

/// `Set-Cookie` for a session cookie `value` ending at `exp` (Unix seconds).
pub fn set_cookie(value: &str, exp: u64, secure: bool) -> HeaderValue {
    let max_age = exp.saturating_sub(now_secs()).min(MAX_SESSION_SECS) as i64;
    cookie_header(value, secure, cookie::time::Duration::seconds(max_age))
}

/// `Set-Cookie` that clears the session cookie.
pub fn clear_cookie(secure: bool) -> HeaderValue {
    cookie_header("", secure, cookie::time::Duration::ZERO)
}

fn cookie_header(value: &str, secure: bool, max_age: cookie::time::Duration) -> HeaderValue {
    let cookie = Cookie::build((COOKIE_NAME, value.to_owned()))
        .http_only(true)
        .same_site(SameSite::Lax)
        .path("/")
        .secure(secure)
        .max_age(max_age);
    HeaderValue::from_str(&cookie.to_string()).expect("cookie is valid header text")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only `<24 hex>.<64 hex>` is a session cookie; the old 64-hex format is not.
    #[test]
    fn cookie_shape() {
        let (id, secret) = (random_token(ID_BYTES), random_token(SECRET_BYTES));
        let value = format!("{id}.{secret}");
        assert_eq!(split_cookie(&value), Some((id.as_str(), secret.as_str())));
        assert_eq!(split_cookie(&secret), None);
        assert_eq!(split_cookie(&format!("{id}.{}", &secret[1..])), None);
        assert_eq!(
            split_cookie(&format!("{id}.{}", secret.to_uppercase())),
            None
        );
    }

    /// The proxy's copy of `Cookie` loses the session cookie (also a bare name) and keeps the rest.
    #[test]
    fn session_cookie_stripped() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("a=1; herald_session=x.y"));
        headers.append(COOKIE, HeaderValue::from_static(" herald_session ; b=2"));
        strip_session_cookie(&mut headers);
        assert_eq!(headers.get_all(COOKIE).iter().count(), 1);
        assert_eq!(headers[COOKIE], "a=1; b=2");
        let mut only = HeaderMap::new();
        only.insert(COOKIE, HeaderValue::from_static("herald_session=x.y"));
        strip_session_cookie(&mut only);
        assert!(only.get(COOKIE).is_none());
    }

    /// The stored digest matches its secret and no other.
    #[test]
    fn digest_compare() {
        let h = secret_hash("a");
        assert!(same_digest(&h, &secret_hash("a")));
        assert!(!same_digest(&h, &secret_hash("b")));
        assert!(!same_digest(&h, &h[1..]));
    }
}
