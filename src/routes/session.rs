//! `POST /session` (user token → server-side session + cookie) and `DELETE /session` (end it
//! and every stream of it, on every node).

use http::{header, StatusCode};

use super::body::{empty, Request, Response};
use crate::auth::{self, session::Via};
use crate::error::{Error, Result};
use crate::model::random_token;
use crate::state::AppState;
use crate::store::SessionRecord;

pub async fn create(state: AppState, req: Request) -> Result<Response> {
    let (parts, _) = req.into_parts();
    let token = auth::session::bearer(&parts).ok_or(Error::Unauthorized(
        "POST /session needs Authorization: Bearer <user token>",
    ))?;
    let (user, claims) = auth::session::user_claims(&state, token)?;
    let id = random_token(32);
    state
        .store
        .put_session(
            &id,
            &SessionRecord {
                user: user.clone(),
                exp: claims.exp,
            },
        )
        .await?;
    tracing::info!(user, "session created");
    let mut response = empty(StatusCode::NO_CONTENT);
    response.headers_mut().insert(
        header::SET_COOKIE,
        auth::session::set_cookie(
            &id,
            claims.exp,
            auth::session::cookie_secure(&state, &parts),
        ),
    );
    Ok(response)
}

pub async fn delete(state: AppState, req: Request) -> Result<Response> {
    let (parts, _) = req.into_parts();
    let caller = auth::session::user(&state, &parts).await?;
    if caller.via == Via::Cookie {
        auth::origin::check(&state, &parts)?;
        state.store.delete_session(&caller.session).await?;
    }
    state.revoke_session(&caller.user, &caller.session).await?;
    tracing::info!(user = caller.user, "session ended");
    let mut response = empty(StatusCode::NO_CONTENT);
    response.headers_mut().insert(
        header::SET_COOKIE,
        auth::session::clear_cookie(auth::session::cookie_secure(&state, &parts)),
    );
    Ok(response)
}
