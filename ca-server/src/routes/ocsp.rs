//! OCSP over HTTP (RFC 6960 Appendix A, RFC 5019): POST and GET.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::AppState;

const OCSP_RESPONSE: &str = "application/ocsp-response";

/// The routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ocsp", post(ocsp_post))
        .route("/ocsp/{*request}", get(ocsp_get))
}

/// OCSP request in the body (`application/ocsp-request`).
#[utoipa::path(post, path = "/ocsp", tag = "public",
    request_body(content = Vec<u8>, content_type = "application/ocsp-request", description = "DER OCSPRequest"),
    responses((status = 200, description = "DER OCSPResponse: successful (good/revoked/unknown), malformedRequest, unauthorized or internalError", content_type = "application/ocsp-response")))]
pub async fn ocsp_post(State(state): State<AppState>, body: Bytes) -> Response {
    let answer = state.ocsp.answer(&state.ca, body).await;
    // POST answers are not for shared caches (RFC 5019 §5).
    (
        [
            (header::CONTENT_TYPE, OCSP_RESPONSE),
            (header::CACHE_CONTROL, "no-store"),
        ],
        answer.der.clone(),
    )
        .into_response()
}

/// OCSP request as base64 in the path (RFC 5019 §5): cacheable, with validators.
#[utoipa::path(get, path = "/ocsp/{request}", tag = "public",
    params(("request" = String, Path, description = "base64 (URL-encoded) DER OCSPRequest")),
    responses((status = 200, description = "DER OCSPResponse", content_type = "application/ocsp-response"),
        (status = 304, description = "Not modified (If-None-Match)")))]
pub async fn ocsp_get(
    State(state): State<AppState>,
    Path(request): Path<String>,
    headers: HeaderMap,
) -> Response {
    let der = match ca_core::ocsp::decode_get_path(&request) {
        Ok(der) => der,
        Err(failure) => {
            state
                .ocsp
                .counters
                .malformed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return (
                [
                    (header::CONTENT_TYPE, OCSP_RESPONSE),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                failure.response(),
            )
                .into_response();
        }
    };
    let answer = state.ocsp.answer(&state.ca, Bytes::from(der)).await;
    let mut response_headers = HeaderMap::new();
    response_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(OCSP_RESPONSE),
    );
    match (answer.cacheable, answer.validity, &answer.etag) {
        (true, Some((this_update, next_update)), Some(etag)) => {
            let now = ca_core::now().unix_timestamp();
            // Bounded by nextUpdate (RFC 5019 §6.2), and by 60 s so a revocation
            // is not hidden behind an HTTP cache for long.
            let max_age = (next_update - now).clamp(0, 60);
            let date = |t: i64| {
                httpdate::fmt_http_date(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64),
                )
            };
            let value = |s: String| HeaderValue::from_str(&s).expect("ascii header");
            response_headers.insert(
                header::CACHE_CONTROL,
                value(format!(
                    "public, max-age={max_age}, no-transform, must-revalidate"
                )),
            );
            response_headers.insert(header::LAST_MODIFIED, value(date(this_update)));
            response_headers.insert(header::EXPIRES, value(date(now + max_age)));
            response_headers.insert(header::ETAG, value(etag.clone()));
            let matches = headers
                .get(header::IF_NONE_MATCH)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
            if matches {
                return (StatusCode::NOT_MODIFIED, response_headers).into_response();
            }
        }
        _ => {
            response_headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
    }
    (response_headers, answer.der.clone()).into_response()
}
