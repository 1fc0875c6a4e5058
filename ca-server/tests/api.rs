//! In-process API tests (`app(state).oneshot`): routing, auth matrix, error
//! shapes, body limits and CRL caching headers.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use ca_core::{Ca, Config, InitRequest, ListFilter, Role};
use ca_server::{app, AppState};
use serde_json::{json, Value};
use tower::ServiceExt;

mod common;

use common::{fixture, post_status};

#[tokio::test]
async fn issue_returns_bundle_password_and_the_json_contract() {
    let f = fixture().await;
    let (status, v) = f
        .call(
            "POST",
            "/v1/tenants/acme/admins/alice/certificates",
            Some(&f.admin),
            Some(json!({"policy": "portal-admin"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    for field in [
        "serial",
        "not_after",
        "pkcs12",
        "password",
        "tenant",
        "admin",
        "policy",
        "status",
    ] {
        assert!(v.get(field).is_some(), "missing {field}: {v}");
    }
    assert_eq!(v["password"].as_str().unwrap().len(), 20);
    let (status, v) = f
        .call(
            "POST",
            "/v1/tenants/acme/admins/alice/certificates",
            Some(&f.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(v["error"]["code"], "conflict");
    assert!(v["error"]["message"].as_str().unwrap().contains("reissue"));
}

#[tokio::test]
async fn authorization_matrix_refuses_and_changes_nothing() {
    let f = fixture().await;
    let serial = f.issue("acme", "alice").await;
    let revoked_token = f.token(Role::Operator, None).await;
    let id = ca_core::token_id(&revoked_token).unwrap().to_owned();
    f.state.ca.revoke_token(&id, "test").await.unwrap();
    let renewer = f.token(Role::Renewer, None).await;
    let auditor = f.token(Role::Auditor, None).await;
    let other_tenant = f.token(Role::Operator, Some("other")).await;
    let other_renewer = f.token(Role::Renewer, Some("other")).await;

    let routes: Vec<(&str, String, Value)> = vec![
        (
            "POST",
            "/v1/tenants/acme/admins/bob/certificates".into(),
            json!({}),
        ),
        (
            "POST",
            "/v1/tenants/acme/admins/alice/reissue".into(),
            json!({}),
        ),
        (
            "POST",
            "/v1/tenants/acme/admins/bob/csr".into(),
            json!({"policy": "automation-csr", "csr": "x"}),
        ),
        (
            "POST",
            format!("/v1/certificates/{serial}/revoke"),
            json!({}),
        ),
    ];
    let before = f.snapshot().await;
    for (method, uri, body) in &routes {
        for (token, expected) in [
            (None, StatusCode::UNAUTHORIZED),
            (Some("garbage"), StatusCode::UNAUTHORIZED),
            (
                Some("cat_0123456789abcdef_forged"),
                StatusCode::UNAUTHORIZED,
            ),
            (Some(revoked_token.as_str()), StatusCode::UNAUTHORIZED),
            (Some(auditor.as_str()), StatusCode::FORBIDDEN),
            (Some(other_tenant.as_str()), StatusCode::FORBIDDEN),
        ] {
            let (status, v) = f.call(method, uri, token, Some(body.clone())).await;
            assert_eq!(status, expected, "{method} {uri} with {token:?}: {v}");
            assert!(v["error"]["code"].is_string(), "{v}");
        }
        let renewer_expected = if uri.ends_with("/reissue") {
            None
        } else {
            Some(StatusCode::FORBIDDEN)
        };
        if let Some(expected) = renewer_expected {
            let (status, _) = f
                .call(method, uri, Some(&renewer), Some(body.clone()))
                .await;
            assert_eq!(status, expected, "renewer {method} {uri}");
        }
        if uri.ends_with("/reissue") {
            let (status, _) = f
                .call(method, uri, Some(&other_renewer), Some(body.clone()))
                .await;
            assert_eq!(status, StatusCode::FORBIDDEN, "renewer of another tenant");
        }
    }
    assert_eq!(
        f.snapshot().await,
        before,
        "a refused request changed the store or CRL"
    );

    // Reads: scoped tokens see only their tenant; audit is for admin and auditor.
    let (status, _) = f
        .call(
            "GET",
            &format!("/v1/certificates/{serial}"),
            Some(&other_tenant),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, v) = f
        .call("GET", "/v1/certificates", Some(&other_tenant), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["items"].as_array().unwrap().len(), 0);
    let (status, _) = f
        .call(
            "GET",
            "/v1/certificates?tenant=acme",
            Some(&other_tenant),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = f.call("GET", "/v1/audit", Some(&renewer), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, v) = f.call("GET", "/v1/audit", Some(&auditor), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!v["items"].as_array().unwrap().is_empty());
    // The renewer may reissue; the scoped operator may act on its own tenant.
    let (status, v) = f
        .call(
            "POST",
            "/v1/tenants/acme/admins/alice/reissue",
            Some(&renewer),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let (status, v) = f
        .call(
            "POST",
            "/v1/tenants/other/admins/x/certificates",
            Some(&other_tenant),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
}

/// (method, uri, body, expected status, expected error code)
type Case = (
    &'static str,
    String,
    Option<Vec<u8>>,
    StatusCode,
    &'static str,
);

#[tokio::test]
async fn bad_requests_get_the_error_shape_and_change_nothing() {
    let f = fixture().await;
    let serial = f.issue("acme", "alice").await;
    let before = f.snapshot().await;
    let issue = "/v1/tenants/acme/admins/bob/certificates";
    let cases: Vec<Case> = vec![
        (
            "POST",
            issue.into(),
            Some(b"{not json".to_vec()),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            "POST",
            issue.into(),
            Some(br#"{"policy": 5}"#.to_vec()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
        ),
        (
            "POST",
            issue.into(),
            Some(br#"{"colour": "red"}"#.to_vec()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
        ),
        (
            "POST",
            issue.into(),
            Some(br#"{"policy": "nope"}"#.to_vec()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_policy",
        ),
        (
            "POST",
            issue.into(),
            Some(vec![b' '; (1 << 20) + 10]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            "POST",
            "/v1/tenants/ac%20me/admins/bob/certificates".into(),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
        ),
        (
            "POST",
            format!("/v1/tenants/acme/admins/{}/certificates", "x".repeat(65)),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
        ),
        (
            "POST",
            "/v1/tenants/acme/admins/bob/csr".into(),
            Some(br#"{"policy":"automation-csr","csr":"garbage"}"#.to_vec()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
        ),
        (
            "POST",
            "/v1/certificates/zz/revoke".into(),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
        ),
        (
            "POST",
            "/v1/certificates/00112233445566778899aabbccddeeff/revoke".into(),
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "POST",
            format!("/v1/certificates/{serial}/revoke"),
            Some(br#"{"reason":"lost"}"#.to_vec()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
        ),
        (
            "POST",
            "/v1/tenants/acme/admins/alice/reissue".into(),
            Some(br#"{"reason":"lost"}"#.to_vec()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
        ),
        (
            "GET",
            "/v1/certificates?status=gone".into(),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
        ),
        (
            "GET",
            "/v1/certificates?limit=0".into(),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
        ),
        (
            "GET",
            "/v1/nothing".into(),
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    for (method, uri, body, status, code) in cases {
        let (got, _, bytes) = f.raw(method, &uri, Some(&f.admin), body, &[]).await;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert_eq!(got, status, "{method} {uri}: {v}");
        assert_eq!(v["error"]["code"], code, "{method} {uri}: {v}");
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    assert_eq!(f.snapshot().await, before);
}

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

#[tokio::test]
async fn public_endpoints_and_openapi_cover_every_route() {
    let f = fixture().await;
    let (status, headers, der) = f.raw("GET", "/ca.crt", None, None, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/pkix-cert");
    assert_eq!(der, f.state.ca.ca_certificate().der().0);
    let (_, _, pem) = f.raw("GET", "/ca.pem", None, None, &[]).await;
    assert!(String::from_utf8(pem)
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    let (status, v) = f.call("GET", "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    f.issue("acme", "alice").await;
    let (_, _, text) = f.raw("GET", "/metrics", None, None, &[]).await;
    let text = String::from_utf8(text).unwrap();
    for metric in [
        "ca_http_requests_total{",
        "ca_http_request_duration_seconds_bucket{",
        "ca_certificates_issued_total{operation=\"issue\",policy=\"portal-admin\"} 1",
        "ca_crl_number ",
        "ca_crl_age_seconds ",
    ] {
        assert!(text.contains(metric), "missing {metric}:\n{text}");
    }
    // The CRL gauge is the size of what /crl serves.
    let (_, _, crl) = f.raw("GET", "/crl", None, None, &[]).await;
    let issuer = f.state.ca.issuers().first().unwrap().id().to_owned();
    let gauge = format!("ca_crl_bytes{{issuer=\"{issuer}\"}} {}\n", crl.len());
    assert!(text.contains(&gauge), "missing {gauge}:\n{text}");
    let (status, doc) = f.call("GET", "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/ca.crt",
        "/ca.pem",
        "/crl",
        "/crl.pem",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/v1/tenants/{tenant}/admins/{admin}/certificates",
        "/v1/tenants/{tenant}/admins/{admin}/reissue",
        "/v1/tenants/{tenant}/admins/{admin}/csr",
        "/v1/certificates/{serial}/revoke",
        "/v1/certificates",
        "/v1/certificates/{serial}",
        "/v1/audit",
        "/v1/tokens",
        "/v1/tokens/{id}",
    ] {
        assert!(paths.contains_key(path), "OpenAPI lacks {path}");
    }
}

#[tokio::test]
async fn idempotent_reissue_never_issues_twice() {
    let f = fixture().await;
    let first = f.issue("acme", "alice").await;
    let body = json!({"reason": "superseded"});
    let key = [("idempotency-key", "renew-alice-2026-11")];
    let (status, _, bytes) = f
        .raw(
            "POST",
            "/v1/tenants/acme/admins/alice/reissue",
            Some(&f.admin),
            Some(body.to_string().into_bytes()),
            &key,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["revoked"], json!([first]));
    let new_serial = v["serial"].as_str().unwrap().to_owned();
    let before = f.snapshot().await;
    let (status, _, bytes) = f
        .raw(
            "POST",
            "/v1/tenants/acme/admins/alice/reissue",
            Some(&f.admin),
            Some(body.to_string().into_bytes()),
            &key,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["error"]["code"], "already_delivered");
    assert_eq!(v["error"]["serial"], new_serial.as_str());
    // Same key, different request.
    let other = json!({"reason": "key-compromise"}).to_string().into_bytes();
    let (status, _, _) = f
        .raw(
            "POST",
            "/v1/tenants/acme/admins/alice/reissue",
            Some(&f.admin),
            Some(other),
            &key,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(f.snapshot().await, before);
}

#[tokio::test]
async fn concurrent_reissues_leave_exactly_one_active_certificate() {
    let f = fixture().await;
    f.issue("acme", "alice").await;
    let mut handles = Vec::new();
    for _ in 0..8 {
        let state = f.state.clone();
        let token = f.admin.clone();
        handles.push(tokio::spawn(async move {
            post_status(
                state,
                &token,
                "/v1/tenants/acme/admins/alice/reissue".into(),
            )
            .await
        }));
    }
    let mut created = 0;
    for h in handles {
        let status = h.await.unwrap();
        assert!(
            status == StatusCode::CREATED || status == StatusCode::CONFLICT,
            "{status}"
        );
        created += usize::from(status == StatusCode::CREATED);
    }
    assert!(created >= 1);
    let filter = ListFilter {
        tenant: Some("acme".into()),
        admin: Some("alice".into()),
        status: Some(ca_core::CertificateStatus::Active),
        limit: 100,
        ..Default::default()
    };
    assert_eq!(f.state.ca.list(&filter).await.unwrap().len(), 1);
}

#[tokio::test]
async fn concurrent_issues_commit_together_and_conflicts_stay_isolated() {
    let f = fixture().await;
    let mut handles = Vec::new();
    for i in 0..20 {
        let state = f.state.clone();
        let token = f.admin.clone();
        handles.push(tokio::spawn(async move {
            // Two requests per admin: exactly one may win.
            let uri = format!("/v1/tenants/acme/admins/admin{}/certificates", i % 10);
            post_status(state, &token, uri).await
        }));
    }
    let mut statuses = Vec::new();
    for h in handles {
        statuses.push(h.await.unwrap());
    }
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        10,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count(),
        10,
        "{statuses:?}"
    );
    let filter = ListFilter {
        tenant: Some("acme".into()),
        limit: 100,
        ..Default::default()
    };
    assert_eq!(f.state.ca.list(&filter).await.unwrap().len(), 10);
    // Every committed issuance is in the audit chain, which still verifies.
    let report = f.state.ca.verify_audit().await.unwrap();
    let issues = f
        .state
        .ca
        .audit_events(0, 1000)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.action == "issue")
        .count();
    assert_eq!(issues, 10);
    assert!(report.events >= 10);
}

#[tokio::test]
async fn csr_signing_returns_the_certificate_pem() {
    let f = fixture().await;
    let dir = tempfile::tempdir().unwrap();
    let (key, csr) = (dir.path().join("k.pem"), dir.path().join("r.csr"));
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=robot",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr)
        .output()
        .expect("openssl");
    assert!(out.status.success());
    let body = json!({"policy": "automation-csr", "csr": std::fs::read_to_string(&csr).unwrap()});
    let (status, v) = f
        .call(
            "POST",
            "/v1/tenants/acme/admins/robot/csr",
            Some(&f.admin),
            Some(body.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert!(
        v["certificate"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----"),
        "{v}"
    );
    assert_eq!(v["policy"], "automation-csr");
    let serial = v["serial"].as_str().unwrap();
    assert_eq!(serial.len(), 32);

    // A second CSR for the same admin and policy meets the first one.
    let (status, again) = f
        .call(
            "POST",
            "/v1/tenants/acme/admins/robot/csr",
            Some(&f.admin),
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    let message = again["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(serial) && message.contains("reissue"),
        "{message}"
    );
}

#[tokio::test]
async fn revoked_tokens_stop_working_though_they_were_cached() {
    let f = fixture().await;
    let token = f.token(Role::Auditor, None).await;
    let id = ca_core::token_id(&token).unwrap().to_owned();
    let (status, _) = f.call("GET", "/v1/certificates", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK);
    // Revoked through this process: refused at once.
    f.state.ca.revoke_token(&id, "test").await.unwrap();
    let (status, _) = f.call("GET", "/v1/certificates", Some(&token), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Revoked by another process (a CLI): refused after the next store poll.
    let other = f.token(Role::Auditor, None).await;
    let (status, _) = f.call("GET", "/v1/certificates", Some(&other), None).await;
    assert_eq!(status, StatusCode::OK);
    let config = Config {
        data_dir: f.dir.path().join("ca-data"),
        ..Config::default()
    };
    let cli = Ca::open(&config, None).await.unwrap();
    cli.revoke_token(ca_core::token_id(&other).unwrap(), "test")
        .await
        .unwrap();
    f.state.ca.refresh_token_cache().await.unwrap();
    let (status, _) = f.call("GET", "/v1/certificates", Some(&other), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
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

/// `audit verify` while a server appends (found by the chaos campaign): events
/// committed after the head was read are newer, not a broken chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_passes_while_the_chain_grows() {
    let f = fixture().await;
    let writer = {
        let state = f.state.clone();
        let token = f.admin.clone();
        tokio::spawn(async move {
            for i in 0..60 {
                let status = post_status(
                    state.clone(),
                    &token,
                    format!("/v1/tenants/acme/admins/grow{i}/certificates"),
                )
                .await;
                assert_eq!(status, StatusCode::CREATED);
            }
        })
    };
    let mut runs = 0;
    while !writer.is_finished() {
        f.state.ca.verify_audit().await.unwrap();
        runs += 1;
    }
    writer.await.unwrap();
    assert!(runs > 5, "verify ran {runs} times during the writes");
    f.state.ca.verify_audit().await.unwrap();
}

#[tokio::test]
async fn only_admin_may_use_the_token_api_and_every_change_is_audited() {
    let f = fixture().await;
    let body = json!({"role": "renewer", "tenant": "acme", "name": "nightly", "expires_in": "90d"});
    for role in [Role::Operator, Role::Renewer, Role::Auditor] {
        let token = f.token(role, None).await;
        let before = f.snapshot().await;
        for (method, uri, body) in [
            ("POST", "/v1/tokens", Some(body.clone())),
            ("GET", "/v1/tokens", None),
            ("DELETE", "/v1/tokens/0123456789abcdef", None),
        ] {
            let (status, v) = f.call(method, uri, Some(&token), body).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{role} {method} {uri}: {v}");
        }
        assert_eq!(f.snapshot().await, before, "{role} changed something");
    }
    let (status, _) = f.call("GET", "/v1/tokens", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, headers, bytes) = f
        .raw(
            "POST",
            "/v1/tokens",
            Some(&f.admin),
            Some(body.to_string().into_bytes()),
            &[],
        )
        .await;
    let created: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        headers[header::CACHE_CONTROL],
        "no-store",
        "the secret must not be cached"
    );
    assert_eq!(
        (created["role"].as_str(), created["tenant"].as_str()),
        (Some("renewer"), Some("acme"))
    );
    assert!(created["expires_at"].is_string(), "{created}");
    let secret = created["token"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    let (status, _) = f.call("GET", "/v1/certificates", Some(&secret), None).await;
    assert_eq!(status, StatusCode::OK, "the new token works");

    let (status, list) = f.call("GET", "/v1/tokens", Some(&f.admin), None).await;
    assert_eq!(status, StatusCode::OK);
    let listed = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id.as_str())
        .unwrap();
    assert!(
        listed.get("token").is_none() && !list.to_string().contains(&secret),
        "no secrets in lists"
    );

    for (bad, why) in [
        (json!({"role": "root"}), "role"),
        (json!({}), "role"),
        (
            json!({"role": "auditor", "expires_in": "soon"}),
            "expires_in",
        ),
        (json!({"role": "auditor", "tenant": "acme"}), "tenant"),
        (json!({"role": "auditor", "colour": "red"}), "colour"),
    ] {
        let (status, v) = f
            .call("POST", "/v1/tokens", Some(&f.admin), Some(bad.clone()))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(why), "{v}");
    }

    let uri = format!("/v1/tokens/{id}");
    let (status, v) = f.call("DELETE", &uri, Some(&f.admin), None).await;
    assert_eq!(
        (status, v["revoked"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{v}"
    );
    let (status, _) = f.call("GET", "/v1/certificates", Some(&secret), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "revoked at once");
    let (status, _) = f.call("DELETE", &uri, Some(&f.admin), None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = f
        .call(
            "DELETE",
            "/v1/tokens/0123456789abcdef",
            Some(&f.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let admin_id = ca_core::token_id(&f.admin).unwrap();
    let events = f.state.ca.audit_events(0, 1000).await.unwrap();
    for action in ["token-create", "token-revoke"] {
        assert!(
            events.iter().any(|e| e.action == action
                && e.subject == id
                && e.actor == format!("token:{admin_id}")),
            "no {action} event by the admin: {events:?}"
        );
    }
}

#[tokio::test]
async fn an_expired_token_is_refused_at_once_with_token_expired() {
    let f = fixture().await;
    // The cache is in use (as in a running server) and holds the token before it expires.
    f.state.ca.refresh_token_cache().await.unwrap();
    let (status, v) = f
        .call(
            "POST",
            "/v1/tokens",
            Some(&f.admin),
            Some(json!({"role": "auditor", "expires_in": "1s"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let token = v["token"].as_str().unwrap().to_owned();
    let (status, _) = f.call("GET", "/v1/audit", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (status, v) = f.call("GET", "/v1/audit", Some(&token), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["error"]["code"], "token_expired");
}

#[tokio::test]
async fn a_token_over_its_request_rate_gets_429_with_retry_after() {
    let mut f = fixture().await;
    f.state = f.state.clone().with_limits(ca_core::Limits {
        auth_failures_per_minute: 20,
        token_requests_per_minute: 3,
    });
    let other = f.token(Role::Auditor, None).await;
    for _ in 0..3 {
        let (status, _) = f
            .call("GET", "/v1/certificates", Some(&f.admin), None)
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, headers, body) = f
        .raw("GET", "/v1/certificates", Some(&f.admin), None, &[])
        .await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let retry: u64 = headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    let (status, _) = f.call("GET", "/v1/certificates", Some(&other), None).await;
    assert_eq!(status, StatusCode::OK, "other tokens are not affected");
}

#[tokio::test]
async fn security_headers_are_on_every_answer_and_ocsp_bodies_are_small_capped() {
    let f = fixture().await;
    let (_, headers, _) = f.raw("GET", "/healthz", None, None, &[]).await;
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert!(
        headers.get(header::STRICT_TRANSPORT_SECURITY).is_none(),
        "no HSTS without TLS"
    );
    let (_, headers, _) = f
        .raw("GET", "/v1/certificates", Some(&f.admin), None, &[])
        .await;
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    let (_, headers, _) = f.raw("GET", "/v1/certificates", None, None, &[]).await;
    assert_eq!(headers[header::CACHE_CONTROL], "no-store", "errors too");

    // Over TLS (the listener marks the connection): HSTS, also on the OCSP fast path.
    let mut request = Request::builder()
        .method("POST")
        .uri("/ocsp")
        .body(Body::from(vec![0u8; 100]))
        .unwrap();
    request.extensions_mut().insert(ca_server::Peer {
        address: "127.0.0.1:1".parse().unwrap(),
        tls: true,
        certificate: None,
    });
    let response = app(f.state.clone()).oneshot(request).await.unwrap();
    assert_eq!(
        response.headers()[header::STRICT_TRANSPORT_SECURITY],
        "max-age=31536000"
    );
    assert_eq!(
        response.headers()[header::X_CONTENT_TYPE_OPTIONS],
        "nosniff"
    );

    let (status, _, _) = f
        .raw(
            "POST",
            "/ocsp",
            None,
            Some(vec![0u8; 5 << 10]),
            &[("content-type", "application/ocsp-request")],
        )
        .await;
    assert_eq!(
        status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "OCSP bodies are capped at 4 KiB"
    );
}

/// A P-256 key's CSR (PEM), made with OpenSSL.
fn p256_csr() -> Vec<u8> {
    use openssl::{ec, hash, nid, pkey, x509};
    let group = ec::EcGroup::from_curve_name(nid::Nid::X9_62_PRIME256V1).unwrap();
    let key = pkey::PKey::from_ec_key(ec::EcKey::generate(&group).unwrap()).unwrap();
    let mut request = x509::X509ReqBuilder::new().unwrap();
    request.set_pubkey(&key).unwrap();
    request.sign(&key, hash::MessageDigest::sha256()).unwrap();
    request.build().to_pem().unwrap()
}

#[tokio::test]
async fn client_certificates_log_in_with_their_policys_role_and_tenant_until_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().join("ca-data"),
        ..Config::default()
    };
    let passphrase = b"test passphrase long".to_vec();
    let request = InitRequest {
        subject: "CN=Test CA,O=Example".into(),
        key: ca_core::KeyAlgorithm::EcdsaP256,
        validity: "1y".parse().unwrap(),
        base_url: "https://127.0.0.1:1".into(),
        passphrase: zeroize::Zeroizing::new(passphrase.clone()),
        pin: None,
    };
    drop(Ca::init(&config, request, "test").await.unwrap());
    // A renewer policy scoped to the certificate's own tenant, next to the shipped ones.
    let scoped = "name = \"scoped-renewer\"\nkind = \"csr\"\nkey = [\"ecdsa-p256\"]\nvalidity = \"30d\"\nsubject.common_name = \"{admin}\"\napi_role = \"renewer\"\napi_tenant = \"{tenant}\"\n";
    std::fs::write(config.data_dir.join("policies/scoped-renewer.toml"), scoped).unwrap();
    let ca = Ca::open(&config, Some(&passphrase)).await.unwrap();
    let mut certificates = Vec::new();
    for (tenant, policy) in [
        ("acme", "scoped-renewer"),
        ("acme", "automation-renewer"),
        ("acme", "automation-csr"),
    ] {
        let prepared = ca
            .prepare_sign_csr(tenant, policy, policy, &p256_csr())
            .await
            .unwrap();
        certificates.push(ca.commit(prepared, "test").await.unwrap().record);
    }
    let state = AppState::new(ca);
    state.warm_up().await.unwrap();
    let call = |der: Vec<u8>, method: &'static str, uri: &'static str| {
        let state = state.clone();
        async move {
            let mut request = Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::from("{}"))
                .unwrap();
            request.extensions_mut().insert(ca_server::Peer {
                address: "127.0.0.1:1".parse().unwrap(),
                tls: true,
                certificate: Some(der.into()),
            });
            app(state).oneshot(request).await.unwrap().status()
        }
    };
    let (scoped, global, no_role) = (&certificates[0], &certificates[1], &certificates[2]);
    assert_eq!(
        call(scoped.der.clone(), "GET", "/v1/certificates?tenant=acme").await,
        StatusCode::OK
    );
    assert_eq!(
        call(scoped.der.clone(), "GET", "/v1/certificates?tenant=other").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(global.der.clone(), "GET", "/v1/certificates?tenant=other").await,
        StatusCode::OK
    );
    assert_eq!(
        call(global.der.clone(), "POST", "/v1/certificates/00/revoke").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(no_role.der.clone(), "GET", "/v1/certificates").await,
        StatusCode::UNAUTHORIZED
    );
    let mut tampered = global.der.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert_eq!(
        call(tampered, "GET", "/v1/certificates").await,
        StatusCode::UNAUTHORIZED
    );

    state
        .ca
        .revoke(
            &global.serial,
            ca_core::RevocationReason::KeyCompromise,
            None,
            "test",
        )
        .await
        .unwrap();
    assert_eq!(
        call(global.der.clone(), "GET", "/v1/certificates").await,
        StatusCode::UNAUTHORIZED
    );
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
