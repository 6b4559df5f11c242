//! The one error type of request handling, and its mapping to a status and the JSON error body
//! `{"error":{"code","message"}}`. Only this file builds error responses; the `message` is for
//! humans and never carries internals (sources go to the log).

use http::{header, StatusCode};

use crate::routes::body::{full, Response};

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

    pub fn status(&self) -> StatusCode {
        match self {
            Error::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
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

    /// The response for this error; our own faults are logged at error, client mistakes at debug.
    pub fn into_response(self) -> Response {
        match &self {
            Error::Unavailable(source) => tracing::warn!(error = %source, "backend unavailable"),
            Error::BadGateway(source) => tracing::warn!(error = %source, "upstream unreachable"),
            Error::Internal(detail) => tracing::error!(%detail, "internal error"),
            Error::PartlyStored { stored, source } => {
                tracing::warn!(error = %source, stored = stored.len(), "publish interrupted")
            }
            other => tracing::debug!(code = other.code(), message = %other, "request rejected"),
        }
        let mut body =
            serde_json::json!({"error": {"code": self.code(), "message": self.to_string()}});
        if let Error::PartlyStored { stored, .. } = &self {
            body["error"]["stored"] = serde_json::json!(stored);
        }
        let mut response = full(self.status(), body.to_string());
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        if let Error::TooLarge { .. } | Error::RequestTimeout = self {
            // The rest of the body is left unread, so this connection cannot be reused.
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
        }
        if let Error::MethodNotAllowed(allow) = self {
            response
                .headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static(allow));
        }
        if let Error::Unauthorized(_) = self {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        Error::Unavailable(Box::new(e))
    }
}
