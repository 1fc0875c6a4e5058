//! In-process API tests (`app(state).oneshot`): issuance and its JSON
//! contract, the authorization matrix, error shapes and body limits, the
//! OpenAPI document, idempotency and concurrent writers.

use axum::http::{header, StatusCode};
use ca_core::{ListFilter, Role};
use serde_json::{json, Value};

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
