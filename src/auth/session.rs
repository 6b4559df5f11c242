//! The caller of a request: a user (session cookie or Bearer user token) or a service (Bearer
//! token with the `publish` scope), and browser sessions themselves. A session has a public id
//! (in `ready`, presence, `X-Herald-Session`, logs, Redis keys, channel messages) and a secret;
//! the cookie carries the secret alone, the only place it ever appears, and the public id is a
//! one-way digest of it: the store keeps the secret's SHA-256, so neither the public id nor a
//! store dump yields a credential.

use cookie::Cookie;
use http::header::{AUTHORIZATION, COOKIE};
use http::request::Parts;
use http::{HeaderMap, HeaderValue};

use super::jwt::Claims;
use super::origin;
use crate::error::{Error, Result};
use crate::model::{is_lower_hex, is_valid_id, now_ms, random_token, sha256_hex};
use crate::state::AppState;
use crate::store::{SessionRecord, MAX_SESSION_SECS};

pub const COOKIE_NAME: &str = "herald_session";
/// Bytes of a session's public id (a digest of its secret) and random bytes of its secret.
const ID_BYTES: usize = 12;
const SECRET_BYTES: usize = 32;

/// How the caller proved who they are; cookie callers must pass the Origin check on writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A browser session's cookie, with the session's record as stored.
    Cookie(Box<SessionRecord>),
    Bearer,
}

/// An authenticated user.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: String,
    /// The public id of the browser session, or the token's `sid`; `None` for a Bearer token
    /// without `sid` (each such request or stream stands alone).
    pub session: Option<String>,
    /// When the credentials end, Unix ms, `--jwt-leeway` included: a stream on them ends then.
    pub ends_ms: u64,
    pub via: Via,
}

/// The token in `Authorization: Bearer …`, if any.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Session cookies of the session shape tried per request, at most, in one store read: a site
/// that can set cookies for a parent domain (cookie tossing) can put its own `herald_session`
/// cookies before the user's, and browsers send them all, one per (domain, path) that
/// matches the URL: a handful for Herald's paths, 32 with room to spare.
const COOKIES_TRIED: usize = 32;

/// Every `herald_session` cookie value, in the order the request sends them.
fn session_cookies(parts: &Parts) -> Vec<String> {
    parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(|c| c.ok())
        .filter(|c| c.name() == COOKIE_NAME)
        .map(|c| c.value().to_owned())
        .collect()
}

/// The request sends a `herald_session` cookie.
pub fn has_session_cookie(parts: &Parts) -> bool {
    !session_cookies(parts).is_empty()
}

/// The `Cookie` headers without the session cookies, read as [`session_cookies`] reads them
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

/// The public id of the session whose cookie carries `secret`: the first 12 bytes of a SHA-256
/// of it (in another domain than [`secret_hash`]'s), so the id names the session and gives
/// nothing of the cookie away.
fn public_id(secret: &str) -> String {
    let mut id = sha256_hex(&format!("herald session id {secret}"));
    id.truncate(ID_BYTES * 2);
    id
}

/// A cookie value → (public id, secret), when it has a shape Herald issues (lower-case hex of
/// the right lengths): `<secret>`, or `<id>.<secret>` as earlier builds issued (their sessions
/// outlive an upgrade). Anything else is not a session: the browser signs in again.
fn split_cookie(value: &str) -> Option<(String, &str)> {
    match value.split_once('.') {
        None => is_lower_hex(value, SECRET_BYTES * 2).then(|| (public_id(value), value)),
        Some((id, secret)) => (is_lower_hex(id, ID_BYTES * 2)
            && is_lower_hex(secret, SECRET_BYTES * 2))
        .then(|| (id.to_owned(), secret)),
    }
}

/// Equal byte strings, compared in time independent of where they differ.
fn same_digest(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0, |d, (x, y)| d | (x ^ y)) == 0
}

/// Verify a Bearer token as a user token: `sub` must be a valid user id, and `sid`, when
/// present, a valid session id (for every endpoint alike, `POST /session` included).
pub fn user_claims(state: &AppState, token: &str) -> Result<(String, Claims)> {
    let claims = state.config.keys.verify(token)?;
    let sub = match claims.sub.clone() {
        Some(sub) if is_valid_id(&sub) => sub,
        _ => return Err(Error::Unauthorized("token has no valid sub claim")),
    };
    if claims.sid.as_deref().is_some_and(|sid| !is_valid_id(sid)) {
        return Err(Error::Unauthorized("token has an invalid sid claim"));
    }
    Ok((sub, claims))
}

/// The user making the request (Bearer first, then the session cookie), or 401.
pub async fn user(state: &AppState, parts: &Parts) -> Result<Caller> {
    if let Some(token) = bearer(parts) {
        let (user, claims) = user_claims(state, token)?;
        return Ok(Caller {
            user,
            session: claims.sid.clone(),
            ends_ms: state.config.keys.ends_ms(&claims),
            via: Via::Bearer,
        });
    }
    let values = session_cookies(parts);
    if values.is_empty() {
        return Err(Error::Unauthorized(
            "missing credentials: send a session cookie or a Bearer token",
        ));
    }
    // The first live one counts, so a tossed cookie sent before the user's locks no one out.
    let mut tried: Vec<(String, &str)> = Vec::new();
    for pair in values.iter().filter_map(|v| split_cookie(v)) {
        if !tried.contains(&pair) {
            tried.push(pair);
            if tried.len() == COOKIES_TRIED {
                break;
            }
        }
    }
    let ids: Vec<&str> = tried.iter().map(|(id, _)| id.as_str()).collect();
    let records = state.store.sessions(&ids).await?;
    tried
        .into_iter()
        .zip(records)
        .find_map(|((id, secret), record)| {
            let record = record?;
            let matches =
                record.is_live() && same_digest(&record.secret_hash, &secret_hash(secret));
            matches.then(|| Caller {
                user: record.user.clone(),
                session: Some(id),
                ends_ms: record.ends_ms,
                via: Via::Cookie(Box::new(record)),
            })
        })
        .ok_or(Error::Unauthorized("session expired or ended"))
}

/// The Origin rule for writes, in one place: a cookie caller must pass it (403); a Bearer
/// caller is exempt (browsers never attach a Bearer token by themselves).
pub fn check_write(state: &AppState, caller: &Caller, parts: &Parts) -> Result<()> {
    if matches!(caller.via, Via::Cookie(_)) {
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

/// Start a browser session for `user` ending at `ends_ms` (Unix milliseconds, at most
/// [`MAX_SESSION_SECS`] ahead). Beyond the per-user cap the oldest sessions end, with their
/// streams on every node. Returns the cookie value and the session's end.
pub async fn start(state: &AppState, user: &str, ends_ms: u64) -> Result<(String, u64)> {
    let ends_ms = ends_ms.min(now_ms().saturating_add(MAX_SESSION_SECS * 1000));
    let secret = random_token(SECRET_BYTES);
    let id = public_id(&secret);
    let record = SessionRecord {
        user: user.to_owned(),
        ends_ms,
        secret_hash: secret_hash(&secret),
    };
    let evicted = state.store.put_session(&id, &record).await?;
    // User ids appear in logs at debug level only.
    tracing::info!(session = id, "session created");
    tracing::debug!(user, session = id, "session created for");
    for old in evicted {
        tracing::info!(session = old, "oldest session ended: too many sessions");
        tracing::debug!(user, session = old, "oldest session ended for");
        state.revoke_session(user, &old).await?;
    }
    Ok((secret, ends_ms))
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

/// Whether cookies get `Secure`: always, except in `--dev` (whatever the scheme: a
/// development set-up may be plain http, or https through a proxy Herald does not trust).
pub fn cookie_secure(state: &AppState) -> bool {
    !state.config.dev
}

/// `Set-Cookie` for a session cookie `value` ending at `ends_ms` (Unix milliseconds).
/// `Max-Age` counts whole seconds left, rounded down, so the browser drops the cookie at the
/// session's end at the latest (rounded up, it kept sending a dead cookie for up to a
/// second); at least 1, for a session of less than a second (0 would drop the cookie at once;
/// the session still ends on time, and the cookie is refused from then on).
pub fn set_cookie(value: &str, ends_ms: u64, secure: bool) -> HeaderValue {
    let left = ends_ms.saturating_sub(now_ms()) / 1000;
    cookie_header(value, secure, left.clamp(1, MAX_SESSION_SECS))
}

/// `Set-Cookie` that clears the session cookie.
pub fn clear_cookie(secure: bool) -> HeaderValue {
    cookie_header("", secure, 0)
}

/// The attributes in the documented order (`HttpOnly; SameSite=Lax; Path=/`), which the cookie
/// crate's formatting would not keep (it puts `Secure` before `Path`).
fn cookie_header(value: &str, secure: bool, max_age: u64) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let cookie =
        format!("{COOKIE_NAME}={value}; HttpOnly; SameSite=Lax; Path=/{secure}; Max-Age={max_age}");
    HeaderValue::from_str(&cookie).expect("cookie is valid header text")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `<64 hex>` is a session cookie whose id is derived from it, and so is `<24 hex>.<64 hex>`
    /// (issued by earlier builds); no other shape is.
    #[test]
    fn cookie_shape() {
        let (id, secret) = (random_token(ID_BYTES), random_token(SECRET_BYTES));
        let derived = public_id(&secret);
        assert_eq!(derived.len(), ID_BYTES * 2);
        assert!(!secret.contains(&derived) && derived != public_id(&id));
        assert_eq!(split_cookie(&secret), Some((derived, secret.as_str())));
        let value = format!("{id}.{secret}");
        assert_eq!(split_cookie(&value), Some((id.clone(), secret.as_str())));
        for bad in [
            secret[1..].to_owned(),
            secret.to_uppercase(),
            format!("{id}.{}", &secret[1..]),
            format!("{id}.{}", secret.to_uppercase()),
            format!("{secret}."),
        ] {
            assert_eq!(split_cookie(&bad), None, "{bad}");
        }
    }

    /// `Set-Cookie` names its attributes in the documented order, `Secure` after `Path`.
    #[test]
    fn cookie_attributes() {
        let secure = set_cookie("v", now_ms() + 60_000, true);
        let secure = secure.to_str().unwrap();
        assert!(secure
            .starts_with("herald_session=v; HttpOnly; SameSite=Lax; Path=/; Secure; Max-Age="));
        let max_age: u64 = secure.rsplit('=').next().unwrap().parse().unwrap();
        assert!((59..=60).contains(&max_age), "{secure}");
        let cleared = clear_cookie(false);
        assert_eq!(
            cleared,
            "herald_session=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0"
        );
        assert!(Cookie::parse(secure).is_ok());
    }

    /// The cookie's `Max-Age` ends it at the session's end at the latest: whole seconds left,
    /// rounded down; at least 1 for a session of less than a second.
    #[test]
    fn cookie_outlives_no_session() {
        let max_age = |ends_ms| -> u64 {
            let header = set_cookie("v", ends_ms, false);
            let header = header.to_str().unwrap().to_owned();
            header.rsplit('=').next().unwrap().parse().unwrap()
        };
        let before = now_ms();
        let ends_ms = before + 59_500;
        let age = max_age(ends_ms);
        assert!(age * 1000 <= ends_ms - before, "{age} at {before} ms");
        assert!(age >= 58, "{age}");
        assert_eq!(max_age(now_ms() + 300), 1);
        assert_eq!(max_age(now_ms().saturating_sub(1)), 1);
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

    /// Property tests (issue 13): session cookie values, `Cookie` and `Authorization` headers
    /// of any text.
    mod props {
        use proptest::prelude::*;

        use super::*;
        use crate::model::props::any_text;

        fn parts(name: http::HeaderName, values: &[String]) -> Parts {
            let mut builder = http::Request::builder();
            for value in values {
                builder = builder.header(name.clone(), value.as_str());
            }
            builder
                .body(())
                .expect("printable header values")
                .into_parts()
                .0
        }

        /// One `name=value` pair (or a bare word) as browsers and others send them.
        fn pair() -> impl Strategy<Value = String> {
            let name = prop_oneof![
                3 => "(herald_session|a|b_[a-z]{0,3})",
                1 => "( ?herald_session ?|Herald_Session|herald_sessio|herald_session2|herald%5Fsession)",
                1 => "[ -:<-~]{0,8}",
            ];
            let value = prop_oneof!["[0-9a-f.]{0,12}", "[ -:<-~]{0,12}"];
            (name, prop::option::weighted(0.9, value)).prop_map(|(name, value)| match value {
                Some(value) => format!("{name}={value}"),
                None => name,
            })
        }

        /// `Cookie` header values: pairs joined with `;` (spaced or not), one or more headers.
        fn cookie_headers() -> impl Strategy<Value = Vec<String>> {
            let header = (prop::collection::vec(pair(), 0..5), "(; |;|;;| ; )")
                .prop_map(|(pairs, sep)| pairs.join(&sep));
            prop::collection::vec(header, 1..3)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// A session cookie value is exactly `<64 lower hex>` or `<24 lower hex>.<64 lower
            /// hex>`; anything else is no session (401 `session expired or ended`), never a panic.
            #[test]
            fn cookie_values_split_only_in_their_shape(value in prop_oneof![
                any_text(),
                "[0-9a-fA-F]{23,25}\\.[0-9a-f.]{63,65}",
                "[0-9a-f]{24}[.\u{2024}][0-9a-f]{64}",
                "[0-9a-fA-F.]{63,65}",
            ]) {
                let b = value.as_bytes();
                let hex = |s: &[u8]| s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
                let issued = b.len() == 64 && hex(b);
                let older = b.len() == 89 && b[24] == b'.' && hex(&b[..24]) && hex(&b[25..]);
                match split_cookie(&value) {
                    Some((id, secret)) if issued => {
                        prop_assert_eq!(secret, value.as_str());
                        prop_assert_eq!(id, public_id(secret));
                    }
                    Some((id, secret)) => {
                        prop_assert!(older, "{:?}", value);
                        prop_assert_eq!(format!("{id}.{secret}"), value);
                    }
                    None => prop_assert!(!issued && !older, "{:?}", value),
                }
            }

            /// `Cookie` headers of any shape: the session cookies are the
            /// `herald_session=` pairs in order, never a panic; once stripped (the proxy's
            /// copy) they are gone, and every other pair is kept in order.
            #[test]
            fn session_cookies_found_then_stripped(values in cookie_headers()) {
                let request = parts(COOKIE, &values);
                let found = session_cookies(&request);
                let all: Vec<String> = values
                    .iter()
                    .flat_map(|v| v.split(';'))
                    .map(str::trim)
                    .filter_map(|p| p.split_once('='))
                    .filter(|(name, _)| name.trim() == COOKIE_NAME)
                    .map(|(_, value)| value.trim().to_owned())
                    .collect();
                prop_assert_eq!(found, all, "{:?}", values);

                let mut headers = request.headers.clone();
                strip_session_cookie(&mut headers);
                let mut stripped = http::Request::new(()).into_parts().0;
                stripped.headers = headers.clone();
                prop_assert!(session_cookies(&stripped).is_empty());
                let kept: Vec<&str> = headers
                    .get_all(COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split("; "))
                    .collect();
                let others: Vec<&str> = values
                    .iter()
                    .flat_map(|v| v.split(';'))
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .filter(|p| p.split('=').next().is_none_or(|n| n.trim() != COOKIE_NAME))
                    .collect();
                prop_assert_eq!(kept, others, "{:?}", values);
            }

            /// `Authorization` of any text: a Bearer token (trimmed) or none, never a panic.
            #[test]
            fn bearer_tokens(
                value in prop_oneof![
                    "[ -~]{0,30}",
                    "(Bearer|bearer|BEARER|Basic|Bearer:|Bearerx)[ \t]{0,2}[ -~]{0,20}",
                ],
                scheme in "(Bearer|bearer|BEARER|bEaReR)",
                token in "[A-Za-z0-9._~+/=-]{1,40}",
                pad in "[ \t]{0,2}",
            ) {
                let request = parts(AUTHORIZATION, std::slice::from_ref(&value));
                if let Some(found) = bearer(&request) {
                    prop_assert!(value.to_ascii_lowercase().starts_with("bearer "), "{:?}", value);
                    prop_assert_eq!(found, found.trim());
                    prop_assert!(value.trim_end().ends_with(found), "{:?}", value);
                }
                let request = parts(AUTHORIZATION, &[format!("{scheme} {pad}{token}")]);
                prop_assert_eq!(bearer(&request), Some(token.as_str()));
            }
        }
    }
}
