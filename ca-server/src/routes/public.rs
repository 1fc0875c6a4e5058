//! Unauthenticated endpoints for gateways, browsers and monitoring.

use std::time::Duration;

use axum::extract::{Extension, Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::crl::{CachedCrl, MAX_WAIT};
use crate::error::ApiError;
use crate::listener::Peer;
use crate::AppState;

/// The routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ca.crt", get(ca_crt))
        .route("/ca.pem", get(ca_pem))
        .route("/crl", get(crl_der))
        .route("/crl.pem", get(crl_pem))
        .route("/crl/{issuer}", get(issuer_crl))
        .route("/ca/{issuer}", get(issuer_certificate))
        .route("/root.pem", get(root_pem))
        .route("/crls.pem", get(crls_pem))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
}

/// The CA certificate, DER.
#[utoipa::path(get, path = "/ca.crt", tag = "public", responses((status = 200, description = "CA certificate (DER)", content_type = "application/pkix-cert")))]
pub async fn ca_crt(State(state): State<AppState>) -> Response {
    let der = state.ca.ca_certificate().der().0.clone();
    ([(header::CONTENT_TYPE, "application/pkix-cert")], der).into_response()
}

/// The active issuer's chain, PEM: its certificate, then (under a root) the root's.
#[utoipa::path(get, path = "/ca.pem", tag = "public", responses((status = 200, description = "The active issuer's certificate, then the root's (PEM)", content_type = "application/x-pem-file")))]
pub async fn ca_pem(State(state): State<AppState>) -> Response {
    let pem = state.ca.chain_pem();
    ([(header::CONTENT_TYPE, "application/x-pem-file")], pem).into_response()
}

/// The root certificate (PEM), under a trust hierarchy.
#[utoipa::path(get, path = "/root.pem", tag = "public", responses(
    (status = 200, description = "Root certificate (PEM)", content_type = "application/x-pem-file"),
    (status = 404, description = "A self-signed CA: no root")))]
pub async fn root_pem(State(state): State<AppState>) -> Result<Response, ApiError> {
    let root = state.ca.root_certificate().ok_or_else(|| {
        ApiError::Core(ca_core::Error::NotFound(
            "this CA is self-signed: its own certificate (/ca.pem) is the trust anchor".into(),
        ))
    })?;
    Ok((
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        root.to_pem(),
    )
        .into_response())
}

/// Every CRL a gateway needs for `ssl_crl` (PEM, one after the other): each
/// issuer's latest and the root's latest imported one.
#[utoipa::path(get, path = "/crls.pem", tag = "public", responses(
    (status = 200, description = "Every issuer's CRL and the root's (PEM)", content_type = "application/x-pem-file")))]
pub async fn crls_pem(State(state): State<AppState>) -> Result<Response, ApiError> {
    let mut pem = String::new();
    for issuer in state.ca.issuers() {
        let crl = state.crl.of_issuer(issuer.number()).ok_or_else(|| {
            ApiError::Unavailable("not every issuer's CRL is published yet; retry shortly".into())
        })?;
        pem.push_str(std::str::from_utf8(&crl.pem()).unwrap_or_default());
    }
    if let Some(root_crl) = state.ca.root_crl_pem().await? {
        pem.push_str(&root_crl);
    }
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-pem-file"),
            (header::CACHE_CONTROL, "public, max-age=60"),
        ],
        pem,
    )
        .into_response())
}

/// One issuer's certificate: `/ca/{issuer-id}.crt` (DER, what caIssuers
/// points at) or `/ca/{issuer-id}.pem`.
#[utoipa::path(get, path = "/ca/{issuer}", tag = "public", params(("issuer" = String, Path, description = "issuer id with .crt (DER) or .pem")),
    responses((status = 200, description = "Issuer certificate"), (status = 404, description = "No such issuer")))]
pub async fn issuer_certificate(
    State(state): State<AppState>,
    Path(file): Path<String>,
) -> Result<Response, ApiError> {
    let (id, pem) = match (file.strip_suffix(".crt"), file.strip_suffix(".pem")) {
        (Some(id), _) => (id, false),
        (_, Some(id)) => (id, true),
        _ => (file.as_str(), false),
    };
    let issuer = state.ca.issuer_by_id(id).ok_or_else(|| no_issuer(id))?;
    let der = issuer.certificate().der();
    Ok(match pem {
        true => (
            [(header::CONTENT_TYPE, "application/x-pem-file")],
            der.to_pem(),
        )
            .into_response(),
        false => (
            [(header::CONTENT_TYPE, "application/pkix-cert")],
            der.0.clone(),
        )
            .into_response(),
    })
}

/// One issuer's CRL: `/crl/{issuer-id}` (DER, what the CDP of its
/// certificates points at) or `/crl/{issuer-id}.pem`.
#[utoipa::path(get, path = "/crl/{issuer}", tag = "public", params(("issuer" = String, Path, description = "issuer id, optionally with .pem")),
    responses((status = 200, description = "CRL"), (status = 304, description = "Not modified"), (status = 404, description = "No such issuer")))]
pub async fn issuer_crl(
    State(state): State<AppState>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (id, pem) = match file.strip_suffix(".pem") {
        Some(id) => (id, true),
        None => (file.as_str(), false),
    };
    let issuer = state.ca.issuer_by_id(id).ok_or_else(|| no_issuer(id))?;
    let crl = state.crl.of_issuer(issuer.number());
    serve_cached_crl(crl, &headers, pem)
}

fn no_issuer(id: &str) -> ApiError {
    // The id is echoed only when it looks like one (hex), never arbitrary input.
    let shown = if id.len() <= 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        id
    } else {
        "(not an issuer id)"
    };
    ApiError::Core(ca_core::Error::NotFound(format!(
        "no issuer {shown} with unexpired certificates; see /ca.pem for the active one"
    )))
}

/// Answers a CRL request, honouring `If-None-Match` and `If-Modified-Since`.
///
/// A conditional request that would get 304 and carries `Prefer: wait=N`
/// (RFC 7240 §4.3) is held until a newer CRL is served or N seconds (at most
/// 55) pass: a long-poll, so a watching gateway learns of a revocation the
/// moment its CRL is published and costs nothing meanwhile. The held answer
/// says `Preference-Applied: wait=N` (§3); a 304 without it means the wait was
/// not granted (all long-poll slots taken) and the client should poll.
async fn serve_crl(
    state: &AppState,
    peer: Option<&Peer>,
    headers: &HeaderMap,
    pem: bool,
) -> Result<Response, ApiError> {
    let mut crl = state
        .crl
        .current()
        .ok_or_else(|| ApiError::Unavailable("no CRL published yet; retry shortly".into()))?;
    let mut applied = None;
    if not_modified(&crl, headers) {
        let wait = preferred_wait(headers);
        // In-process callers (tests) have no peer; they share one slot group.
        let address = peer.map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |p| p.address.ip());
        let slot = wait.and_then(|_| state.crl.wait_slot(address));
        if let (Some(wait), Some(slot)) = (wait, slot) {
            applied =
                Some(HeaderValue::from_str(&format!("wait={}", wait.as_secs())).expect("ascii"));
            if let Some(newer) = state.crl.newer_than(&crl.etag, wait, slot).await {
                crl = newer;
            }
        }
    }
    let now = ca_core::now().unix_timestamp();
    let cache_headers = cache_headers(&crl, now);
    let mut response = if not_modified(&crl, headers) {
        (StatusCode::NOT_MODIFIED, cache_headers).into_response()
    } else {
        let (content_type, body) = if pem {
            ("application/x-pem-file", crl.pem())
        } else {
            ("application/pkix-crl", crl.der.clone())
        };
        (cache_headers, [(header::CONTENT_TYPE, content_type)], body).into_response()
    };
    if let Some(applied) = applied {
        response
            .headers_mut()
            .insert(HeaderName::from_static("preference-applied"), applied);
    }
    Ok(response)
}

/// Answers a request for one issuer's CRL (`/crl/{issuer-id}`), honouring
/// `If-None-Match` and `If-Modified-Since`; long-polls are for `/crl`, the
/// active issuer's, which is the one that changes on every revocation made now.
fn serve_cached_crl(
    crl: Option<std::sync::Arc<CachedCrl>>,
    headers: &HeaderMap,
    pem: bool,
) -> Result<Response, ApiError> {
    let crl =
        crl.ok_or_else(|| ApiError::Unavailable("no CRL published yet; retry shortly".into()))?;
    let now = ca_core::now().unix_timestamp();
    let cache_headers = cache_headers(&crl, now);
    if not_modified(&crl, headers) {
        return Ok((StatusCode::NOT_MODIFIED, cache_headers).into_response());
    }
    let (content_type, body) = if pem {
        ("application/x-pem-file", crl.pem())
    } else {
        ("application/pkix-crl", crl.der.clone())
    };
    Ok((cache_headers, [(header::CONTENT_TYPE, content_type)], body).into_response())
}

/// The `wait` preference of `Prefer` headers (RFC 7240 §2, §4.3), at most
/// [`MAX_WAIT`]; `None` when absent, zero or not a number — a preference the
/// server does not understand is ignored (§2), so such a GET is answered at once.
fn preferred_wait(headers: &HeaderMap) -> Option<Duration> {
    let seconds = headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|preference| {
            // A preference is `token [= word] *( ";" parameter )`.
            let preference = preference.split(';').next()?.trim();
            let (name, value) = preference.split_once('=')?;
            if !name.trim().eq_ignore_ascii_case("wait") {
                return None;
            }
            value.trim().trim_matches('"').parse::<u64>().ok()
        })?;
    (seconds > 0).then(|| Duration::from_secs(seconds).min(MAX_WAIT))
}

/// ETag, Last-Modified and a max-age that never reaches past nextUpdate. The
/// age is also capped at 60 s so that a revocation reaches caching gateways quickly.
fn cache_headers(crl: &CachedCrl, now: i64) -> [(header::HeaderName, HeaderValue); 3] {
    let max_age = (crl.next_update - now).clamp(0, 60);
    let last_modified = httpdate::fmt_http_date(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(crl.this_update.max(0) as u64),
    );
    [
        (
            header::ETAG,
            HeaderValue::from_str(&crl.etag).expect("ascii"),
        ),
        (
            header::LAST_MODIFIED,
            HeaderValue::from_str(&last_modified).expect("ascii"),
        ),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_str(&format!("public, max-age={max_age}")).expect("ascii"),
        ),
    ]
}

fn not_modified(crl: &CachedCrl, headers: &HeaderMap) -> bool {
    if let Some(tags) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        // RFC 9110 §13.1.2: If-None-Match takes precedence over If-Modified-Since.
        return tags
            .split(',')
            .map(str::trim)
            .any(|t| t == "*" || t == crl.etag || t.strip_prefix("W/") == Some(&crl.etag));
    }
    if let Some(since) = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
    {
        let since = since
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        // HTTP dates have one-second resolution and two CRLs can be published within
        // one second, so "equal" is no proof of "unchanged": only a copy strictly
        // newer than our thisUpdate is. The ETag is the exact validator.
        return crl.this_update < since;
    }
    false
}

/// The current CRL, DER.
///
/// A conditional GET with `Prefer: wait=N` (RFC 7240) that would be answered
/// 304 is held until a newer CRL is published (then 200 with it) or N seconds
/// pass (at most 55; then 304). Held answers carry `Preference-Applied`.
#[utoipa::path(get, path = "/crl", tag = "public",
    params(
        ("If-None-Match" = Option<String>, Header, description = "ETag of the CRL the client has"),
        ("Prefer" = Option<String>, Header, description = "`wait=N` (RFC 7240): with a matching If-None-Match, hold the request up to N seconds (at most 55) until a newer CRL is published"),
    ),
    responses(
    (status = 200, description = "CRL (DER)", content_type = "application/pkix-crl"),
    (status = 304, description = "Not modified (If-None-Match / If-Modified-Since); after a long-poll's wait ran out it carries `Preference-Applied: wait=N`, without it the wait was not granted (long-poll slots taken: poll instead)")))]
pub async fn crl_der(
    State(state): State<AppState>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    serve_crl(&state, peer.as_deref(), &headers, false).await
}

/// The current CRL, PEM (long-poll as for `/crl`).
#[utoipa::path(get, path = "/crl.pem", tag = "public",
    params(
        ("If-None-Match" = Option<String>, Header, description = "ETag of the CRL the client has"),
        ("Prefer" = Option<String>, Header, description = "`wait=N` (RFC 7240), as for /crl"),
    ),
    responses(
    (status = 200, description = "CRL (PEM)", content_type = "application/x-pem-file"),
    (status = 304, description = "Not modified (see /crl for long-polls)")))]
pub async fn crl_pem(
    State(state): State<AppState>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    serve_crl(&state, peer.as_deref(), &headers, true).await
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "public", responses((status = 200, description = "The process is up")))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Readiness: the store answers, the CA key is loaded, a CRL is being served.
#[utoipa::path(get, path = "/readyz", tag = "public", responses(
    (status = 200, description = "Ready"), (status = 503, description = "Not ready, with the reason")))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let store = state.ca.crl_status().await;
    let key = state.ca.check_key().await;
    let checks = serde_json::json!({
        "store": store.is_ok(),
        "ca_key": key.is_ok(),
        "crl": state.crl.current().is_some(),
    });
    let mut reasons = Vec::new();
    if let Err(e) = &store {
        reasons.push(match e {
            ca_core::Error::Unavailable(_) => {
                "the database cannot be reached (OCSP answers from its cache, the last CRL is still served; state changes get 503 until it is back)".to_owned()
            }
            // Other store errors stay in the log (they may hold URLs).
            _ => "the store answers with errors; see the server log".to_owned(),
        });
    }
    // Why the CA key cannot sign (its token removed, a refused PIN): what an
    // operator needs first.
    if let Err(e) = &key {
        reasons.push(e.to_string());
    }
    if state.crl.current().is_none() {
        reasons.push("no CRL published yet".to_owned());
    }
    let ready = reasons.is_empty();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = serde_json::json!({ "ready": ready, "checks": checks, "reasons": reasons });
    if let Err(e) = &key {
        body["reason"] = e.to_string().into();
    }
    (status, Json(body)).into_response()
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "public", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let crl = state
        .crl
        .current()
        .map(|c| (c.number, c.this_update, c.next_update));
    let now = ca_core::now().unix_timestamp();
    let mut text = state.metrics.render(crl, now);
    text.push_str(&state.ocsp.render_metrics(now));
    text.push_str(&crate::metrics::render_crl_bytes(&state.ca, &state.crl));
    text.push_str(&format!(
        "# HELP ca_crl_waiting Long-polls on /crl held now (Prefer: wait).\n# TYPE ca_crl_waiting gauge\nca_crl_waiting {}\n",
        state.crl.waiting()
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "public", responses((status = 200, description = "OpenAPI 3 document")))]
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi::document())
}
