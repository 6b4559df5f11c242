//! Times for the v2 due-time fields (`deliver_at`, `expires_at`, `snoozed_until`): RFC 3339
//! strings relative to now, parsing the times Herald writes, and the check that a 400 names
//! the field it refuses.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::assert_error;

/// One day, in seconds (for the 90-days-ahead rule).
pub const DAY: u64 = 24 * 3600;

/// Now, in Unix seconds with the fraction (a JWT NumericDate that may carry one).
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// `secs` seconds from now, RFC 3339 UTC with milliseconds.
pub fn in_secs(secs: u64) -> String {
    humantime::format_rfc3339_millis(SystemTime::now() + Duration::from_secs(secs)).to_string()
}

/// `secs` seconds ago, RFC 3339 UTC with milliseconds.
pub fn secs_ago(secs: u64) -> String {
    humantime::format_rfc3339_millis(SystemTime::now() - Duration::from_secs(secs)).to_string()
}

/// An RFC 3339 UTC time, as a JSON string (panics on anything else).
pub fn time_of(value: &Value) -> SystemTime {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {value}"));
    humantime::parse_rfc3339_weak(text)
        .unwrap_or_else(|e| panic!("not an RFC 3339 time: {text}: {e}"))
}

/// A `400 invalid_request` whose message names `field`.
pub fn assert_names(status: u16, body: &Value, field: &str) {
    assert_error(status, body, 400, "invalid_request");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(field),
        "the message should name {field}: {body}"
    );
}

/// The `unread_count` and `unseen_count` of a body or an event's data.
pub fn counts_of(value: &Value) -> (Option<u64>, Option<u64>) {
    (
        value["unread_count"].as_u64(),
        value["unseen_count"].as_u64(),
    )
}
