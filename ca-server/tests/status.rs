//! In-process tests of what gateways fetch: the CRL (validators,
//! conditional GETs, long polls and their caps) and OCSP's fast path.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use ca_server::{app, AppState};
use serde_json::json;
use tower::ServiceExt;

mod common;

use common::fixture;

#[tokio::test]
async fn crl_carries_validators_and_answers_conditional_gets() {
    let f = fixture().await;
    let (status, headers, der) = f.raw("GET", "/crl", None, None, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/pkix-crl");
    assert!(der.starts_with(&[0x30]));
    let etag = headers[header::ETAG].to_str().unwrap().to_owned();
    let modified = headers[header::LAST_MODIFIED].to_str().unwrap().to_owned();
    let cache = headers[header::CACHE_CONTROL].to_str().unwrap();
    let max_age: i64 = cache.rsplit('=').next().unwrap().parse().unwrap();
    assert!(max_age > 0 && max_age <= 60, "{cache}");
    let (status, _, body) = f
        .raw("GET", "/crl", None, None, &[("if-none-match", &etag)])
        .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    let (status, _, _) = f
        .raw(
            "GET",
            "/crl.pem",
            None,
            None,
            &[("if-modified-since", &modified)],
        )
        .await;
    // A same-second Last-Modified cannot prove "unchanged": full answer.
    assert_eq!(status, StatusCode::OK);
    let later = httpdate::fmt_http_date(
        httpdate::parse_http_date(&modified).unwrap() + std::time::Duration::from_secs(1),
    );
    let (status, _, _) = f
        .raw(
            "GET",
            "/crl.pem",
            None,
            None,
            &[("if-modified-since", &later)],
        )
        .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    let (status, headers, pem) = f
        .raw(
            "GET",
            "/crl.pem",
            None,
            None,
            &[("if-none-match", "\"crl-0\"")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8(pem)
        .unwrap()
        .starts_with("-----BEGIN X509 CRL-----"));
    assert_eq!(headers[header::ETAG].to_str().unwrap(), etag);

    // After a revocation and a refresh, the validators change.
    let serial = f.issue("acme", "alice").await;
    let (status, _) = f
        .call(
            "POST",
            &format!("/v1/certificates/{serial}/revoke"),
            Some(&f.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    f.state.warm_up().await.unwrap();
    let (status, headers, _) = f
        .raw("GET", "/crl", None, None, &[("if-none-match", &etag)])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(headers[header::ETAG].to_str().unwrap(), etag);
}

/// OCSP's fast path (answered before the router) against OpenSSL's own OCSP
/// code: POST and GET (percent-encoded), the body limit, what falls through to
/// the router, and the metrics and cache it shares with the rest.
#[tokio::test]
async fn ocsp_fast_path_answers_like_the_router_and_is_counted() {
    use openssl::hash::MessageDigest;
    use openssl::ocsp::{
        OcspCertId, OcspCertStatus, OcspRequest, OcspResponse, OcspResponseStatus,
    };
    use openssl::x509::X509;

    let f = fixture().await;
    let serial = f.issue("acme", "alice").await;
    let (_, shown) = f
        .call(
            "GET",
            &format!("/v1/certificates/{serial}"),
            Some(&f.admin),
            None,
        )
        .await;
    let leaf = X509::from_pem(shown["pem"].as_str().unwrap().as_bytes()).unwrap();
    let (_, _, ca_pem) = f.raw("GET", "/ca.pem", None, None, &[]).await;
    let issuer = X509::from_pem(&ca_pem).unwrap();
    let id = OcspCertId::from_cert(MessageDigest::sha1(), &leaf, &issuer).unwrap();
    let mut request = OcspRequest::new().unwrap();
    request.add_id(id).unwrap();
    let der = request.to_der().unwrap();
    let status_of = |body: &[u8]| {
        let response = OcspResponse::from_der(body).unwrap();
        assert_eq!(response.status(), OcspResponseStatus::SUCCESSFUL);
        let basic = response.basic().unwrap();
        let id = OcspCertId::from_cert(MessageDigest::sha1(), &leaf, &issuer).unwrap();
        basic.find_status(&id).unwrap().status
    };

    let ocsp_type = [("content-type", "application/ocsp-request")];
    let (status, headers, body) = f
        .raw("POST", "/ocsp", None, Some(der.clone()), &ocsp_type)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/ocsp-response");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(status_of(&body), OcspCertStatus::GOOD);

    // GET with '+', '/' and '=' percent-encoded, as RFC 5019 clients send them.
    use base64::Engine as _;
    let encoded: String = base64::engine::general_purpose::STANDARD
        .encode(&der)
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    let (status, headers, get_body) = f
        .raw("GET", &format!("/ocsp/{encoded}"), None, None, &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CACHE_CONTROL]
        .to_str()
        .unwrap()
        .starts_with("public, max-age="));
    assert_eq!(get_body, body, "GET and POST share the pre-signed answer");
    let etag = headers[header::ETAG].to_str().unwrap().to_owned();
    let (status, _, _) = f
        .raw(
            "GET",
            &format!("/ocsp/{encoded}"),
            None,
            None,
            &[("if-none-match", &etag)],
        )
        .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);

    // A revocation through the API reaches the fast path at once.
    let (status, v) = f
        .call(
            "POST",
            &format!("/v1/certificates/{serial}/revoke"),
            Some(&f.admin),
            Some(json!({"reason": "key-compromise"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (_, _, body) = f
        .raw("POST", "/ocsp", None, Some(der.clone()), &ocsp_type)
        .await;
    assert_eq!(status_of(&body), OcspCertStatus::REVOKED);

    // Garbage is an OCSP malformedRequest, not an HTTP error.
    let (status, _, body) = f.raw("GET", "/ocsp/%FF%FE", None, None, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        OcspResponse::from_der(&body).unwrap().status(),
        OcspResponseStatus::MALFORMED_REQUEST
    );
    // Over the body limit: 413, as on every other route.
    let big = vec![0x30; ca_server::BODY_LIMIT + 1];
    let (status, _, _) = f.raw("POST", "/ocsp", None, Some(big), &ocsp_type).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // What the fast path does not claim goes through the router.
    let (status, _, _) = f.raw("PUT", "/ocsp", None, None, &[]).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _, _) = f.raw("GET", "/ocsp/", None, None, &[]).await;
    assert!(status.is_client_error(), "{status}");

    let (_, _, metrics) = f.raw("GET", "/metrics", None, None, &[]).await;
    let metrics = String::from_utf8(metrics).unwrap();
    for line in [
        "ca_http_requests_total{method=\"POST\",route=\"/ocsp\",status=\"200\"} 2",
        "ca_http_requests_total{method=\"POST\",route=\"/ocsp\",status=\"413\"} 1",
        "ca_http_requests_total{method=\"GET\",route=\"/ocsp/{*request}\",status=\"200\"} 2",
        "ca_http_requests_total{method=\"GET\",route=\"/ocsp/{*request}\",status=\"304\"} 1",
        "ca_http_request_duration_seconds_count{route=\"/ocsp\"} 4",
        "ca_ocsp_responses_total{kind=\"malformed_request\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
}

/// A CRL GET as a gateway at `address` sends it (the listener adds the peer).
async fn crl_get(
    state: &AppState,
    address: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap) {
    let mut request = Request::builder().method("GET").uri("/crl");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let mut request = request.body(Body::empty()).unwrap();
    request.extensions_mut().insert(ca_server::Peer {
        address: address.parse().unwrap(),
        tls: false,
        certificate: None,
    });
    let response = app(state.clone()).oneshot(request).await.unwrap();
    (response.status(), response.headers().clone())
}

#[tokio::test]
async fn a_crl_long_poll_is_answered_when_a_newer_crl_is_published() {
    let f = fixture().await;
    let (_, headers, _) = f.raw("GET", "/crl", None, None, &[]).await;
    let etag = headers[header::ETAG].to_str().unwrap().to_owned();
    let state = f.state.clone();
    let tag = etag.clone();
    let started = std::time::Instant::now();
    let held = tokio::spawn(async move {
        crl_get(
            &state,
            "192.0.2.1:1000",
            &[("if-none-match", &tag), ("prefer", "wait=20")],
        )
        .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !held.is_finished(),
        "the long-poll is held while nothing changes"
    );
    assert_eq!(f.state.crl.waiting(), 1);
    let serial = f.issue("acme", "alice").await;
    let (status, _) = f
        .call(
            "POST",
            &format!("/v1/certificates/{serial}/revoke"),
            Some(&f.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    f.state.warm_up().await.unwrap();
    let (status, headers) = held.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_ne!(headers[header::ETAG].to_str().unwrap(), etag);
    assert_eq!(headers["preference-applied"], "wait=20");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(f.state.crl.waiting(), 0, "the slot is given back");
}

#[tokio::test]
async fn a_crl_long_poll_ends_with_304_after_its_wait_and_plain_gets_are_unchanged() {
    let f = fixture().await;
    let (_, headers, _) = f.raw("GET", "/crl", None, None, &[]).await;
    let etag = headers[header::ETAG].to_str().unwrap().to_owned();
    let started = std::time::Instant::now();
    let (status, headers) = crl_get(
        &f.state,
        "192.0.2.1:1000",
        &[
            ("if-none-match", &etag),
            ("prefer", "respond-async, wait=1"),
        ],
    )
    .await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(headers["preference-applied"], "wait=1");
    assert!(
        took >= std::time::Duration::from_millis(900) && took < std::time::Duration::from_secs(5),
        "{took:?}"
    );
    // Waits the server does not understand are ignored (RFC 7240 §2): answered at once.
    for prefer in ["wait=abc", "wait=-1", "wait=0", "wait", "handling=lenient"] {
        let started = std::time::Instant::now();
        let (status, headers) = crl_get(
            &f.state,
            "192.0.2.1:1000",
            &[("if-none-match", &etag), ("prefer", prefer)],
        )
        .await;
        assert_eq!(status, StatusCode::NOT_MODIFIED, "{prefer}");
        assert!(headers.get("preference-applied").is_none(), "{prefer}");
        assert!(
            started.elapsed() < std::time::Duration::from_millis(500),
            "{prefer}"
        );
    }
    // A request for a CRL the client does not have is never held.
    let (status, headers) = crl_get(
        &f.state,
        "192.0.2.1:1000",
        &[("if-none-match", "\"crl-0\""), ("prefer", "wait=30")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.get("preference-applied").is_none());
    // Waits above 55 s are cut to 55 s.
    let state = f.state.clone();
    let tag = etag.clone();
    let held = tokio::spawn(async move {
        crl_get(
            &state,
            "192.0.2.1:1000",
            &[("if-none-match", &tag), ("prefer", "wait=3600")],
        )
        .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    f.state.crl.close();
    let (status, headers) = held.await.unwrap();
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(headers["preference-applied"], "wait=55");
}

#[tokio::test]
async fn crl_long_polls_are_capped_per_address_and_released_at_shutdown() {
    let f = fixture().await;
    let (_, headers, _) = f.raw("GET", "/crl", None, None, &[]).await;
    let etag = headers[header::ETAG].to_str().unwrap().to_owned();
    let hold = |address: &'static str| {
        let (state, tag) = (f.state.clone(), etag.clone());
        tokio::spawn(async move {
            crl_get(
                &state,
                address,
                &[("if-none-match", &tag), ("prefer", "wait=30")],
            )
            .await
        })
    };
    // One peer fills its share (8) ...
    let held: Vec<_> = (0..8).map(|_| hold("198.51.100.7:4000")).collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(f.state.crl.waiting(), 8);
    // ... then its next long-poll is answered at once, without Preference-Applied,
    let started = std::time::Instant::now();
    let (status, headers) = crl_get(
        &f.state,
        "198.51.100.7:4001",
        &[("if-none-match", &etag), ("prefer", "wait=30")],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(headers.get("preference-applied").is_none());
    assert!(started.elapsed() < std::time::Duration::from_millis(500));
    // ... while another address is still held.
    let other = hold("203.0.113.9:5000");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!other.is_finished());
    assert_eq!(f.state.crl.waiting(), 9);
    let (_, _, metrics) = f.raw("GET", "/metrics", None, None, &[]).await;
    assert!(String::from_utf8(metrics)
        .unwrap()
        .contains("ca_crl_waiting 9"));
    // Shutdown answers every held long-poll at once.
    let started = std::time::Instant::now();
    f.state.crl.close();
    for handle in held.into_iter().chain([other]) {
        let (status, headers) = handle.await.unwrap();
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert_eq!(headers["preference-applied"], "wait=30");
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert_eq!(f.state.crl.waiting(), 0);
}
