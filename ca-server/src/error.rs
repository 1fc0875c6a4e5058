//! The one error type of the API and its one mapping to HTTP. Internal details
//! are logged, never returned.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ca_core::{Error, ErrorView};

/// Everything a handler can fail with.
#[derive(Debug)]
pub enum ApiError {
    /// A CA error.
    Core(Error),
    /// The body is not JSON.
    MalformedJson(String),
    /// The body is JSON of the wrong shape or with bad values.
    InvalidBody(String),
    /// The body exceeds the limit (named in the message, e.g. "1 MiB").
    TooLarge(&'static str),
    /// Not ready yet (no CRL loaded).
    Unavailable(String),
    /// Over an abuse limit; retry after this long.
    RateLimited {
        /// What was exceeded.
        message: String,
        /// Seconds until a retry can succeed (`Retry-After`).
        retry_after: u64,
    },
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError::Core(e)
    }
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Core(e) => match e {
                Error::InvalidInput(_) | Error::Policy(_) => StatusCode::UNPROCESSABLE_ENTITY,
                Error::NotFound(_) => StatusCode::NOT_FOUND,
                Error::Conflict(_) | Error::AlreadyDone { .. } => StatusCode::CONFLICT,
                Error::Unauthenticated(_) | Error::TokenExpired(_) => StatusCode::UNAUTHORIZED,
                Error::Forbidden(_) => StatusCode::FORBIDDEN,
                Error::Unavailable(_) | Error::SignerUnavailable(_) | Error::NotReady(_) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                Error::StorageFull(_) => StatusCode::INSUFFICIENT_STORAGE,
                Error::Key(_)
                | Error::Config(_)
                | Error::Store(_)
                | Error::Crypto(_)
                | Error::Io { .. }
                | Error::AuditBroken(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::MalformedJson(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidBody(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    pub(crate) fn view(&self) -> ErrorView {
        match self {
            ApiError::Core(e) if self.status() == StatusCode::INTERNAL_SERVER_ERROR => {
                ErrorView::new(
                    "internal_error",
                    "internal error; the server log has the details",
                )
                .with_code_hint(e.code())
            }
            ApiError::Core(Error::Unavailable(_)) => ErrorView::new(
                "unavailable",
                "the database cannot be reached right now; nothing was changed: retry shortly (GET /readyz says when the CA is back)",
            ),
            ApiError::Core(Error::StorageFull(_)) => ErrorView::new(
                "storage_full",
                "the CA cannot write: its disk is full or read-only; nothing was changed: retry once the operator has freed space",
            ),
            ApiError::Core(e) => ErrorView::from_error(e),
            ApiError::MalformedJson(m) => ErrorView::new(
                "malformed_json",
                format!("request body is not valid JSON: {m}"),
            ),
            ApiError::InvalidBody(m) => {
                ErrorView::new("invalid_input", format!("invalid request body: {m}"))
            }
            ApiError::TooLarge(limit) => ErrorView::new(
                "payload_too_large",
                format!("request body exceeds the {limit} limit"),
            ),
            ApiError::Unavailable(m) => ErrorView::new("unavailable", m.clone()),
            ApiError::RateLimited { message, .. } => {
                ErrorView::new("rate_limited", message.clone())
            }
        }
    }
}

trait Hint {
    fn with_code_hint(self, code: &str) -> Self;
}

impl Hint for ErrorView {
    /// Keeps the generic message but lets operators grep logs by the internal code.
    fn with_code_hint(mut self, code: &str) -> Self {
        self.error.message.push_str(&format!(" (kind: {code})"));
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = ?self, "request failed");
        }
        let mut response = (status, Json(self.view())).into_response();
        if matches!(
            status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::INSUFFICIENT_STORAGE
        ) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("2"));
        }
        if let ApiError::RateLimited { retry_after, .. } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(retry_after));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
