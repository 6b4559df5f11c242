//! JWTs signed with the test [`SECRET`]: user, session and service tokens.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};

use super::SECRET;

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn sign(claims: Value) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

pub fn user_token(user: &str) -> String {
    sign(json!({"sub": user, "exp": now() + 3600}))
}

pub fn session_token(user: &str, sid: &str) -> String {
    sign(json!({"sub": user, "sid": sid, "exp": now() + 3600}))
}

pub fn service_token() -> String {
    sign(json!({"scope": "publish", "exp": now() + 3600}))
}
