//! The nouns that cross module boundaries: Notification (what a user sees in the tray), Change
//! (one numbered event in a user's change log), the event id that names a position in that log
//! (`<epoch>.<seq>`), and the validation of ids and publish input. One file per noun; this one
//! re-exports them and keeps the clock helpers they share.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod change;
mod fields;
mod ids;
mod json;
mod notification;
mod presence;
#[cfg(test)]
pub(crate) mod props;
mod template;

pub use self::change::{
    status_data, Change, ChangeKind, Counts, Epoch, EventId, Mark, Marked, Target,
};
pub use self::fields::{
    check_ahead, climbs, ms_to_rfc3339, parse_time, ActionSpec, ItemState, TakenAction, MAX_AHEAD,
};
#[cfg(test)]
pub use self::ids::new_id;
pub use self::ids::{
    canonical_id, cursor, first_id_at, id_ms, is_lower_hex, is_plain, is_valid_id, new_ids,
    random_token, sha256_hex, validate_id, NotificationId,
};
pub use self::json::{from_json, object, without_position};
pub use self::notification::{
    too_many_preferences, validate_category, Notification, NotificationInput, Schedule,
    MAX_PREFERENCES,
};
pub use self::presence::{presence_since, shown_since, PresenceEntry};
pub use self::template::{push_json_str, Template, FRESH_STATE};

/// Largest JSON request body, in bytes (an HTTP body or an ingest entry): a publish to many
/// users stays well below it.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

pub fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

pub fn now_secs() -> u64 {
    now_ms() / 1000
}
