//! In-process tests of who gets in: API tokens (cache, expiry, the token
//! API, per-token rate), security headers, and client-certificate login.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use ca_core::{Ca, Config, InitRequest, Role};
use ca_server::{app, AppState};
use serde_json::{json, Value};
use tower::ServiceExt;

mod common;

use common::fixture;

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
