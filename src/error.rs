//! The one error type of request handling, with its status and stable code (the HTTP layer's
//! `routes::body::error_response` turns it into the JSON error body); and `StartupError`, the
//! one-line start-up failure. The `message` is for humans and never carries internals
//! (sources go to the log).

use http::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(&'static str),
    /// The request conflicts with the resource's state (an action already taken).
    #[error("{0}")]
    Conflict(&'static str),
    /// With the methods the path does answer, for the `Allow` header.
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    #[error("{what} exceeds {limit} bytes")]
    TooLarge { what: &'static str, limit: usize },
    /// The request line and headers together: 431.
    #[error("the request head is too large: at most {limit} bytes and 100 headers")]
    HeadTooLarge { limit: usize },
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    #[error("this user has too many open streams")]
    TooManyStreams,
    #[error("too many requests; slow down")]
    RateLimited,
    /// The client closed its connection before the answer (nginx's 499): nobody reads it.
    #[error("the client closed the connection before the answer")]
    ClientClosed,
    #[error("the upstream could not be reached")]
    BadGateway(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the upstream did not answer in time")]
    GatewayTimeout,
    #[error("storage or broker unavailable; try again")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("internal error")]
    Internal(String),
    /// A publish stopped by a store failure after storing some recipients: the failure's
    /// status and code (503 `unavailable` for an outage), and the error object also carries
    /// `stored` (named user → id), so a retry can skip them.
    #[error("the publish did not complete; `stored` lists the named users known to be stored")]
    PartlyStored {
        stored: std::collections::BTreeMap<String, String>,
        #[source]
        source: Box<Error>,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A start-up failure: one line that names the flag or address; the process exits with 2.
/// Also what a sub-command (`herald token`, `herald publish`) fails with.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartupError(pub String);

impl Error {
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidRequest(message.into())
    }

    /// A failure of the store or broker that a retry may get past (the work is not done yet),
    /// as opposed to a request that will never be accepted.
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            Error::Unavailable(_) | Error::PartlyStored { .. } | Error::Internal(_)
        )
    }

    /// An outage of the store or broker (Redis unreachable or too slow): only waiting helps,
    /// and everything waits alike. Other temporary failures may be about one record's data
    /// and are retried a bounded number of times by ingest.
    pub fn is_outage(&self) -> bool {
        match self {
            Error::Unavailable(_) => true,
            Error::PartlyStored { source, .. } => source.is_outage(),
            _ => false,
        }
    }

    /// What went wrong, with the detail an `internal` error keeps out of its HTTP message
    /// (for logs and dead letters).
    pub fn detail(&self) -> String {
        match self {
            Error::Internal(detail) => format!("internal error: {detail}"),
            Error::PartlyStored { source, .. } => format!("{self}: {}", source.detail()),
            e => e.to_string(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::HeadTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Error::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Error::TooManyStreams | Error::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Error::ClientClosed => StatusCode::from_u16(499).expect("a valid status"),
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::PartlyStored { source, .. } => source.status(),
            Error::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Error::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidRequest(_) => "invalid_request",
            Error::Unauthorized(_) => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::NotFound(_) => "not_found",
            Error::Conflict(_) => "conflict",
            Error::MethodNotAllowed(_) => "method_not_allowed",
            Error::TooLarge { .. } | Error::HeadTooLarge { .. } => "too_large",
            Error::RequestTimeout => "request_timeout",
            Error::TooManyStreams => "too_many_streams",
            Error::RateLimited => "rate_limited",
            Error::ClientClosed => "client_closed",
            Error::Unavailable(_) => "unavailable",
            Error::PartlyStored { source, .. } => source.code(),
            Error::BadGateway(_) => "bad_gateway",
            Error::GatewayTimeout => "gateway_timeout",
            Error::Internal(_) => "internal",
        }
    }
}

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        if e.code()
            .is_some_and(|code| refuses_the_data(code, e.detail().unwrap_or("")))
        {
            Error::Internal(format!("Redis refused: {e}"))
        } else {
            Error::Unavailable(Box::new(e))
        }
    }
}

/// Whether a Redis error reply (`code`, then its `detail`) is about the data, which every
/// retry gets again: a key of another type, or a tray script that failed on what it read (a
/// Lua error). Anything else is the server's state, which passes: `READONLY` in a failover,
/// `OOM`, `LOADING`, `TRYAGAIN`, a tray script's `LATE`…
pub fn refuses_the_data(code: &str, detail: &str) -> bool {
    code == "WRONGTYPE" || (code == "ERR" && detail.starts_with("user_script:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only replies about the data are refusals; the server's passing states are outages.
    #[test]
    fn data_refusals_and_outages() {
        assert!(refuses_the_data(
            "WRONGTYPE",
            "Operation against a key holding the wrong kind of value"
        ));
        assert!(refuses_the_data(
            "ERR",
            "user_script:12: attempt to index a nil value"
        ));
        for (code, detail) in [
            (
                "READONLY",
                "You can't write against a read only replica. script: …",
            ),
            ("OOM", "command not allowed when used memory > 'maxmemory'"),
            ("LOADING", "Redis is loading the dataset in memory"),
            ("LATE", "tray write arrived after its deadline"),
            ("ERR", "max number of clients reached"),
        ] {
            assert!(!refuses_the_data(code, detail), "{code}");
        }
    }

    /// A partial publish answers with its cause's status: 503 for an outage, 500 otherwise.
    #[test]
    fn a_partial_publish_has_its_causes_status() {
        let partly = |source| Error::PartlyStored {
            stored: Default::default(),
            source: Box::new(source),
        };
        let outage = partly(Error::Unavailable("down".into()));
        assert_eq!(
            (outage.status().as_u16(), outage.code()),
            (503, "unavailable")
        );
        assert!(outage.is_outage());
        let refused = partly(Error::Internal("WRONGTYPE".into()));
        assert_eq!(
            (refused.status().as_u16(), refused.code()),
            (500, "internal")
        );
        assert!(!refused.is_outage());
    }
}
