//! Ingest paths besides `POST /publish`: the Redis stream `herald:ingest` ([`Ingest`]) and,
//! with the `kafka` feature, Kafka topics ([`Kafka`]). Both hand each record's body to the
//! same publish service as the HTTP endpoint, so a record is validated exactly like a request;
//! what they share lives here: reading a body ([`parse`]) and the rule for what a retry may fix
//! ([`give_up`]: an outage is waited out, a failure about one record's data is retried
//! [`MAX_ATTEMPTS`] times, then dead-lettered).

#[cfg(feature = "kafka")]
mod kafka;
mod redis;

use std::time::Duration;

#[cfg(feature = "kafka")]
pub use kafka::{produce as kafka_produce, Kafka};
pub use redis::Ingest;

use crate::error::Error;
use crate::model::MAX_BODY_BYTES;
use crate::publish::PublishRequest;
use crate::shutdown::Shutdown;

/// A dead letter that can't keep the whole body keeps this much of it, in bytes: always in
/// the Redis dead stream (cut on a character boundary), in Kafka when the record is too large
/// to produce again.
const DEAD_COPY_BYTES: usize = 4096;

/// A record's body as a publish request, or why it can never be one (the dead-letter reason).
/// Validation of the request itself is the publish service's.
pub fn parse(raw: &[u8]) -> Result<PublishRequest, String> {
    if raw.len() > MAX_BODY_BYTES {
        return Err(format!("the body exceeds {MAX_BODY_BYTES} bytes"));
    }
    crate::model::from_json(raw)
}

/// The `reason` label (`herald_publish_errors_total`) of a body [`parse`] refused: the error
/// code `POST /publish` would answer.
fn unparsable(raw: &[u8]) -> &'static str {
    if raw.len() > MAX_BODY_BYTES {
        "too_large"
    } else {
        "invalid_request"
    }
}

/// At most `max` bytes of `s`, cut on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Attempts at a record whose publish fails with something other than an outage (a key of
/// the wrong type, a script error: `Error::is_outage`) before it is dead-lettered, so it
/// blocks the records behind it for seconds, not for good.
const MAX_ATTEMPTS: u32 = 5;

/// After attempt `attempt` (from 1) failed with `e`: `None` to try again, or the dead-letter
/// reason. An outage is waited out however long it lasts; nothing is dead-lettered for it.
fn give_up(e: &Error, attempt: u32) -> Option<String> {
    if e.is_outage() || (e.is_temporary() && attempt < MAX_ATTEMPTS) {
        return None;
    }
    // A dead letter's reason: what failed (a publish cut short says how far it got, not the
    // HTTP answer's wording).
    let detail = match e {
        Error::PartlyStored { stored, source } => format!(
            "{} (after storing it for {} of the named users)",
            source.detail(),
            stored.len()
        ),
        e => e.detail(),
    };
    Some(match e.is_temporary() {
        true => format!("{detail} (gave up after {attempt} attempts)"),
        false => detail,
    })
}

/// Wait `delay` unless shutdown comes first; true on shutdown.
async fn pause(shutdown: &Shutdown, delay: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = shutdown.wait() => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dead letter's copy is cut at the limit, never inside a character.
    #[test]
    fn truncate_keeps_characters_whole() {
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(truncate("abcdef", 4), "abcd");
        assert_eq!(truncate("aé", 2), "a");
    }

    /// Too large and not JSON are reasons; a JSON object is a request for the service to check.
    #[test]
    fn parse_reasons() {
        assert!(parse(b"{").unwrap_err().starts_with("invalid JSON body"));
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        assert!(parse(&big).unwrap_err().contains("exceeds"));
        let ok = parse(br#"{"users":["a"],"notification":{"title":"t"}}"#).unwrap();
        assert_eq!(ok.users, ["a"]);
    }
}
