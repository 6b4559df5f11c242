//! Request ids: every HTTP request is named by one, taken from the client's (or proxy's)
//! `X-Request-Id` when it is sane, generated otherwise. The server puts it on the request's
//! log span, in the response, and in what Herald sends upstream; a stream keeps it for its
//! own log lines. Sane means 1 to [`MAX_CHARS`] visible ASCII characters (`!` to `~`): it
//! travels unchanged in a header and in a log line, and can't forge one.

use std::fmt;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};

/// The header that carries it, both ways.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");
/// Longest id taken from a request, in characters (longer ones are replaced).
pub const MAX_CHARS: usize = 128;

/// One request's id; cloning is a refcount bump (it rides in request extensions and streams).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(Arc<str>);

impl RequestId {
    /// The id a request carries in `X-Request-Id` if it is sane, else a new one.
    pub fn of(header: Option<&HeaderValue>) -> RequestId {
        header
            .and_then(|v| v.to_str().ok())
            .filter(|v| is_sane(v))
            .map(|v| RequestId(v.into()))
            .unwrap_or_else(RequestId::generate)
    }

    /// 16 random hex digits (64 bits: unique enough to find one request in a day's logs).
    pub fn generate() -> RequestId {
        RequestId(format!("{:016x}", rand::random::<u64>()).into())
    }

    #[cfg(test)]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// As a header value (always valid: sane or generated ids are visible ASCII).
    pub fn header_value(&self) -> HeaderValue {
        HeaderValue::from_str(&self.0).expect("request ids are visible ASCII")
    }

    /// The log span of work done for this request (`request{request_id=…}`). At error level
    /// so that it is never filtered out while any line of that request is logged.
    pub fn span(&self) -> tracing::Span {
        tracing::error_span!("request", request_id = %self)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_sane(id: &str) -> bool {
    (1..=MAX_CHARS).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(value: &str) -> RequestId {
        RequestId::of(Some(&HeaderValue::from_str(value).unwrap()))
    }

    /// A sane incoming id is kept as it is: a UUID, a trace header, 128 characters.
    #[test]
    fn sane_ids_are_kept() {
        let uuid = "0f8fad5b-d9cb-469f-a165-70867728950e";
        assert_eq!(of(uuid).as_str(), uuid);
        assert_eq!(
            of("Root=1-5759e988;Parent=53995c3f").as_str(),
            "Root=1-5759e988;Parent=53995c3f"
        );
        let long = "a".repeat(MAX_CHARS);
        assert_eq!(of(&long).as_str(), long);
    }

    /// Spaces, control-free but odd bytes, empty or over-long ids are replaced by new ones.
    #[test]
    fn insane_ids_are_replaced() {
        for bad in ["", "two words", &"a".repeat(MAX_CHARS + 1), "tab\there"] {
            let id = of(bad);
            assert_ne!(id.as_str(), bad);
            assert_eq!(id.as_str().len(), 16, "{bad:?}");
        }
        let non_ascii = HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap();
        assert_eq!(RequestId::of(Some(&non_ascii)).as_str().len(), 16);
    }

    /// Without a header an id is generated: 16 hex digits, a new one each time.
    #[test]
    fn missing_ids_are_generated() {
        let (a, b) = (RequestId::of(None), RequestId::of(None));
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a.as_str().len(), 16);
        assert_ne!(a, b);
    }
}
