//! OCSP over HTTP (RFC 6960 Appendix A, RFC 5019): POST and GET.

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use ca_core::ocsp::OcspFailure;

use crate::AppState;

const OCSP_RESPONSE: &str = "application/ocsp-response";

/// The routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ocsp", post(ocsp_post))
        .route("/ocsp/{*request}", get(ocsp_get))
        .layer(axum::extract::DefaultBodyLimit::max(
            ca_core::ocsp::MAX_REQUEST_LEN,
        ))
}

/// OCSP request in the body (`application/ocsp-request`).
#[utoipa::path(post, path = "/ocsp", tag = "public",
    request_body(content = Vec<u8>, content_type = "application/ocsp-request", description = "DER OCSPRequest"),
    responses((status = 200, description = "DER OCSPResponse: successful (good/revoked/unknown), malformedRequest, unauthorized or internalError", content_type = "application/ocsp-response")))]
pub async fn ocsp_post(State(state): State<AppState>, body: Bytes) -> Response {
    post_response(&state, body).await
}

/// What a 413 says about the OCSP request limit.
const OCSP_LIMIT: &str =
    "4 KiB OCSP request (an RFC 5019 request is about 100 bytes; send one CertID per request)";

/// The answer to a POSTed request.
pub(crate) async fn post_response(state: &AppState, body: Bytes) -> Response {
    if body.len() > ca_core::ocsp::MAX_REQUEST_LEN {
        return crate::ApiError::TooLarge(OCSP_LIMIT).into_response();
    }
    let answer = state.ocsp.answer(&state.ca, body).await;
    // POST answers are not for shared caches (RFC 5019 §5).
    let mut response = (
        status_of(&answer),
        [
            (header::CONTENT_TYPE, OCSP_RESPONSE),
            (header::CACHE_CONTROL, "no-store"),
        ],
        answer.der.clone(),
    )
        .into_response();
    if answer.try_later {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// 200 for every OCSP answer but `tryLater` (the responder key's token is
/// unavailable), which is 503 with its DER body and Retry-After.
fn status_of(answer: &crate::ocsp::Answer) -> StatusCode {
    if answer.try_later {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
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
    get_response(&state, &request, &headers).await
}

/// The answer to a GET of `/ocsp/{request}` (`request` URL-decoded).
pub(crate) async fn get_response(state: &AppState, request: &str, headers: &HeaderMap) -> Response {
    let Ok(der) = ca_core::ocsp::decode_get_path(request) else {
        return malformed(state);
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
    if answer.try_later {
        response_headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    (status_of(&answer), response_headers, answer.der.clone()).into_response()
}

/// The unsigned `malformedRequest` answer to a GET path that is no request.
fn malformed(state: &AppState) -> Response {
    state
        .ocsp
        .counters
        .malformed
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    (
        [
            (header::CONTENT_TYPE, OCSP_RESPONSE),
            (header::CACHE_CONTROL, "no-store"),
        ],
        OcspFailure::Malformed.response(),
    )
        .into_response()
}

/// The route a request would match in the router, if it is one the OCSP fast
/// path answers: `POST /ocsp`, or `GET /ocsp/{request}` with a request.
pub(crate) fn fast_route(request: &Request) -> Option<&'static str> {
    let path = request.uri().path();
    match *request.method() {
        Method::POST if path == "/ocsp" => Some("/ocsp"),
        Method::GET if path.len() > "/ocsp/".len() && path.starts_with("/ocsp/") => {
            Some("/ocsp/{*request}")
        }
        _ => None,
    }
}

/// Answers a request [`fast_route`] claimed, without the router: gateways ask
/// on every login, and routing, extractors and the middleware stack cost as
/// much as serving a pre-signed answer. Logged and counted like any route.
pub(crate) async fn fast(state: AppState, request: Request, route: &'static str) -> Response {
    let start = std::time::Instant::now();
    let (parts, body) = request.into_parts();
    let response = if parts.method == Method::POST {
        // Read no more than an OCSP request can be: an unauthenticated peer
        // never makes the server buffer a 1 MiB body here.
        match axum::body::to_bytes(body, ca_core::ocsp::MAX_REQUEST_LEN).await {
            Ok(body) => post_response(&state, body).await,
            Err(_) => crate::ApiError::TooLarge(OCSP_LIMIT).into_response(),
        }
    } else {
        let encoded = &parts.uri.path()["/ocsp/".len()..];
        match percent_encoding::percent_decode_str(encoded).decode_utf8() {
            Ok(decoded) => get_response(&state, &decoded, &parts.headers).await,
            Err(_) => malformed(&state),
        }
    };
    crate::record(&state, &parts.method, route, response.status(), start, None);
    response
}
