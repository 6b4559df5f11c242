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
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    #[error("this user has too many open streams")]
    TooManyStreams,
    #[error("too many requests; slow down")]
    RateLimited,
    #[error("the upstream could not be reached")]
    BadGateway(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the upstream did not answer in time")]
    GatewayTimeout,
    #[error("storage or broker unavailable; try again")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("internal error")]
    Internal(String),
    /// A publish stopped by a store failure after storing some recipients: 503 `unavailable`,
    /// and the error object also carries `stored` (named user → id), so a retry can skip them.
    #[error("storage unavailable part-way; `stored` lists the users already stored")]
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

    pub fn status(&self) -> StatusCode {
        match self {
            Error::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Error::TooManyStreams | Error::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Error::Unavailable(_) | Error::PartlyStored { .. } => StatusCode::SERVICE_UNAVAILABLE,
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
            Error::TooLarge { .. } => "too_large",
            Error::RequestTimeout => "request_timeout",
            Error::TooManyStreams => "too_many_streams",
            Error::RateLimited => "rate_limited",
            Error::Unavailable(_) | Error::PartlyStored { .. } => "unavailable",
            Error::BadGateway(_) => "bad_gateway",
            Error::GatewayTimeout => "gateway_timeout",
            Error::Internal(_) => "internal",
        }
    }
}

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        Error::Unavailable(Box::new(e))
    }
}
