//! Extractors: the caller (bearer token or TLS client certificate, under the
//! abuse limits), and a JSON body that fails in our error shape.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use ca_core::Principal;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::listener::Peer;
use crate::AppState;

/// The authenticated caller.
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let peer = parts.extensions.get::<Peer>();
        // In-process callers (tests) have no peer address and are not counted.
        let address = peer.map(|p| crate::limits::address_key(p.address.ip()));
        if let (Some(limiter), Some(address)) = (&state.limits.auth_failures, address) {
            limiter
                .check(&address)
                .map_err(|wait| ApiError::RateLimited {
                    message: "too many failed authentications from this address; retry later"
                        .into(),
                    retry_after: wait.as_secs(),
                })?;
        }
        let principal = match authenticate(parts, state, peer).await {
            Ok(principal) => principal,
            Err(e) => {
                if let (Some(limiter), Some(address), ApiError::Core(core)) =
                    (&state.limits.auth_failures, address, &e)
                {
                    if matches!(
                        core,
                        ca_core::Error::Unauthenticated(_) | ca_core::Error::TokenExpired(_)
                    ) {
                        let _ = limiter.take(&address);
                    }
                }
                return Err(e);
            }
        };
        if let Some(limiter) = &state.limits.token_requests {
            limiter
                .take(&principal.actor())
                .map_err(|wait| ApiError::RateLimited {
                    message: "this token is over its request rate; retry later".into(),
                    retry_after: wait.as_secs(),
                })?;
        }
        Ok(Auth(principal))
    }
}

/// A bearer token when one is sent; otherwise the TLS client certificate.
async fn authenticate(
    parts: &Parts,
    state: &AppState,
    peer: Option<&Peer>,
) -> Result<Principal, ApiError> {
    let missing = || {
        ca_core::Error::Unauthenticated(
            "missing API token: send Authorization: Bearer <token> (or a client certificate, when the server accepts them)".into(),
        )
    };
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return match peer.and_then(|p| p.certificate.as_deref()) {
            Some(der) => Ok(state.ca.authenticate_certificate(der).await?),
            None => Err(missing().into()),
        };
    };
    let text = value.to_str().map_err(|_| missing())?;
    let token = text
        .strip_prefix("Bearer ")
        .or_else(|| text.strip_prefix("bearer "))
        .ok_or_else(missing)?
        .trim();
    Ok(state.ca.authenticate(token).await?)
}

/// A JSON body; an empty body reads as `{}`. Syntax errors are 400, wrong
/// shapes or values 422, bodies over the limit 413.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let body = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge("1 MiB")
            } else {
                ApiError::MalformedJson(rejection.body_text())
            }
        })?;
        let parsed = parse_json(&body).map(JsonBody);
        // Bodies may carry a bundle password: wipe what we hold of them.
        crate::secret::wipe(body);
        parsed
    }
}

/// A JSON body as every route reads it: blank reads as `{}`, syntax errors
/// are 400, wrong shapes or values 422.
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let bytes: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::InvalidBody(e.to_string()),
        _ => ApiError::MalformedJson(e.to_string()),
    })
}
