//! Least privilege and bounded memory under hostile callers (in-process):
//! each test names the rule it holds, and fails when the rule is removed.

mod common;

use axum::http::StatusCode;
use ca_core::{ListFilter, Role};
use common::{fixture, Fixture};
use serde_json::{json, Value};

const ISSUE: &str = "/v1/tenants/acme/admins/alice/certificates";
const REISSUE: &str = "/v1/tenants/acme/admins/alice/reissue";

/// Active certificates of acme/alice, as (serial, policy).
async fn active(f: &Fixture) -> Vec<(String, String)> {
    let filter = ListFilter {
        tenant: Some("acme".into()),
        admin: Some("alice".into()),
        status: Some(ca_core::CertificateStatus::Active),
        limit: 100,
        ..Default::default()
    };
    f.state
        .ca
        .list(&filter)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.serial.to_hex(), r.policy))
        .collect()
}

#[tokio::test]
async fn a_renewer_replaces_and_never_adds() {
    let f = fixture().await;
    let renewer = f.token(Role::Renewer, None).await;
    let operator = f.token(Role::Operator, None).await;

    // No certificate yet: a renewer cannot obtain a first one through reissue.
    let before = f.snapshot().await;
    let (status, v) = f
        .call(
            "POST",
            REISSUE,
            Some(&renewer),
            Some(json!({"policy": "portal-admin"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "forbidden");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("an operator must issue it"),
        "{v}"
    );
    let (status, _) = f.call("POST", REISSUE, Some(&renewer), None).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "nothing active, no policy named"
    );
    assert_eq!(
        f.snapshot().await,
        before,
        "a refused reissue changes nothing"
    );

    // Active under portal-admin: naming another policy must not add a second one.
    let (status, v) = f
        .call(
            "POST",
            ISSUE,
            Some(&operator),
            Some(json!({"policy": "portal-admin"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let first = v["serial"].as_str().unwrap().to_owned();
    let before = f.snapshot().await;
    for token in [&renewer, &operator, &f.admin] {
        let (status, v) = f
            .call(
                "POST",
                REISSUE,
                Some(token),
                Some(json!({"policy": "portal-admin-legacy"})),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(&first),
            "{v}"
        );
    }
    assert_eq!(f.snapshot().await, before);
    assert_eq!(
        active(&f).await,
        vec![(first.clone(), "portal-admin".to_owned())]
    );

    // What a renewer is for: replace the active one under its own policy.
    let (status, v) = f
        .call(
            "POST",
            REISSUE,
            Some(&renewer),
            Some(json!({"policy": "portal-admin"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["revoked"], json!([first]));
    let second = v["serial"].as_str().unwrap().to_owned();
    assert_eq!(active(&f).await, vec![(second, "portal-admin".to_owned())]);

    // Callers who may issue get a first certificate from a reissue (documented).
    let (status, v) = f
        .call(
            "POST",
            "/v1/tenants/acme/admins/bob/reissue",
            Some(&operator),
            Some(json!({"policy": "portal-admin"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["revoked"], json!([]));
}

/// The check-then-act window: the active certificate is revoked between a
/// replace-only reissue's preparation and its commit. The store refuses.
#[tokio::test]
async fn a_replace_only_reissue_is_checked_again_when_committed() {
    let f = fixture().await;
    let serial = f.issue("acme", "alice").await;
    let ca = &f.state.ca;
    let request = ca_core::IssueRequest {
        tenant: "acme".into(),
        admin: "alice".into(),
        policy: None,
        password: None,
    };
    let prepared = ca
        .prepare_reissue(
            &request,
            ca_core::RevocationReason::Superseded,
            ca_core::ReissueMode::ReplaceOnly,
        )
        .await
        .unwrap();
    ca.revoke(
        &ca_core::Serial::parse(&serial).unwrap(),
        ca_core::RevocationReason::Unspecified,
        None,
        "test",
    )
    .await
    .unwrap();
    let Err(err) = ca.commit(prepared, "token:renewer").await else {
        panic!("a reissue with nothing left to replace was committed");
    };
    assert!(matches!(err, ca_core::Error::Forbidden(_)), "{err}");
    assert!(
        active(&f).await.is_empty(),
        "no first certificate for a renewer"
    );
}

#[tokio::test]
async fn the_cas_own_certificates_are_not_revocable() {
    let f = fixture().await;
    let operator = f.token(Role::Operator, None).await;
    let (status, v) = f
        .call("GET", "/v1/certificates?tenant=_ca", Some(&f.admin), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let responder = v["items"][0]["serial"].as_str().unwrap().to_owned();
    let before = f.snapshot().await;
    for token in [&operator, &f.admin] {
        let (status, v) = f
            .call(
                "POST",
                &format!("/v1/certificates/{responder}/revoke"),
                Some(token),
                Some(json!({"reason": "key-compromise"})),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("ocsp-signer rotate"),
            "{v}"
        );
    }
    assert_eq!(f.snapshot().await, before);
}

#[tokio::test]
async fn idempotency_keys_belong_to_their_tenant_and_token() {
    let f = fixture().await;
    let acme = f.token(Role::Operator, Some("acme")).await;
    let other = f.token(Role::Operator, Some("other")).await;
    f.issue("acme", "alice").await;
    f.issue("other", "bob").await;
    let reissue = |token: String, tenant: &'static str, admin: &'static str, key: &'static str| {
        let f = &f;
        async move {
            let (status, _, body) = f
                .raw(
                    "POST",
                    &format!("/v1/tenants/{tenant}/admins/{admin}/reissue"),
                    Some(&token),
                    Some(b"{}".to_vec()),
                    &[("idempotency-key", key)],
                )
                .await;
            (status, serde_json::from_slice::<Value>(&body).unwrap())
        }
    };
    // acme uses a key; tenant other's token learns nothing from it (no 422)…
    assert_eq!(
        reissue(acme.clone(), "acme", "alice", "k-1").await.0,
        StatusCode::CREATED
    );
    let (status, v) = reissue(other.clone(), "other", "bob", "k-1").await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    // …and cannot claim acme's next key first.
    assert_eq!(
        reissue(other.clone(), "other", "bob", "k-2").await.0,
        StatusCode::CREATED
    );
    let (status, v) = reissue(acme.clone(), "acme", "alice", "k-2").await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    // The same caller's retry is still recognised.
    let (status, v) = reissue(acme, "acme", "alice", "k-2").await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"]["code"], "already_delivered");
}

#[tokio::test]
async fn names_made_only_of_dots_are_refused() {
    let f = fixture().await;
    let before = f.snapshot().await;
    for uri in [
        "/v1/tenants/%2e%2e/admins/x/certificates",
        "/v1/tenants/%2E/admins/x/certificates",
        "/v1/tenants/acme/admins/%2e%2e/certificates",
        "/v1/tenants/acme/admins/.../certificates",
    ] {
        let (status, v) = f.call("POST", uri, Some(&f.admin), Some(json!({}))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{uri}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not only dots"),
            "{v}"
        );
    }
    assert_eq!(f.snapshot().await, before);
}

#[tokio::test]
async fn short_caller_passwords_are_refused_and_change_nothing() {
    let f = fixture().await;
    let before = f.snapshot().await;
    let (status, v) = f
        .call(
            "POST",
            ISSUE,
            Some(&f.admin),
            Some(json!({"password": "8chars!!"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("min_password_length"),
        "{v}"
    );
    assert_eq!(f.snapshot().await, before);
    let (status, headers, _) = f
        .raw(
            "POST",
            ISSUE,
            Some(&f.admin),
            Some(br#"{"password":"a long enough one"}"#.to_vec()),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        headers["cache-control"], "no-store",
        "bundles are never cached"
    );
}

/// Invented methods (hyper accepts any token) must not mint metric series.
#[tokio::test]
async fn invented_methods_add_no_metric_series() {
    let f = fixture().await;
    f.raw("XM0", "/healthz", None, None, &[]).await;
    // The first scrape adds /metrics' own series; measure from the second.
    metrics_text(&f).await;
    let baseline = metrics_text(&f).await.lines().count();
    for i in 1..400 {
        f.raw(&format!("XM{i}"), "/healthz", None, None, &[]).await;
    }
    let text = metrics_text(&f).await;
    assert!(!text.contains("XM"), "raw methods leak into labels");
    assert!(text.contains("method=\"other\""), "{text}");
    // Only values changed: not one series more.
    assert_eq!(text.lines().count(), baseline, "{text}");
}

/// Builds an OCSP request for `leaf` (SHA-1 CertID, no nonce), DER.
fn ocsp_request(leaf: &openssl::x509::X509, issuer: &openssl::x509::X509) -> Vec<u8> {
    use openssl::hash::MessageDigest;
    use openssl::ocsp::{OcspCertId, OcspRequest};
    let id = OcspCertId::from_cert(MessageDigest::sha1(), leaf, issuer).unwrap();
    let mut request = OcspRequest::new().unwrap();
    request.add_id(id).unwrap();
    request.to_der().unwrap()
}

/// `der` with a request extension appended: a distinct, equally valid request.
fn padded(der: &[u8], index: u32, junk: usize) -> Vec<u8> {
    use der::{Decode, Encode};
    let mut request = x509_ocsp::OcspRequest::from_der(der).unwrap();
    let oid = der::asn1::ObjectIdentifier::new(&format!("1.3.6.1.4.1.55555.{index}")).unwrap();
    let extension = x509_cert::ext::Extension {
        extn_id: oid,
        critical: false,
        extn_value: der::asn1::OctetString::new(vec![0x5a; junk]).unwrap(),
    };
    request
        .tbs_request
        .request_extensions
        .get_or_insert_with(Vec::new)
        .push(extension);
    request.to_der().unwrap()
}

async fn metrics_text(f: &Fixture) -> String {
    String::from_utf8(f.raw("GET", "/metrics", None, None, &[]).await.2).unwrap()
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from\n{text}"))
}

async fn leaf_and_issuer(f: &Fixture, serial: &str) -> (openssl::x509::X509, openssl::x509::X509) {
    let (_, shown) = f
        .call(
            "GET",
            &format!("/v1/certificates/{serial}"),
            Some(&f.admin),
            None,
        )
        .await;
    let leaf = openssl::x509::X509::from_pem(shown["pem"].as_str().unwrap().as_bytes()).unwrap();
    let (_, _, ca_pem) = f.raw("GET", "/ca.pem", None, None, &[]).await;
    (leaf, openssl::x509::X509::from_pem(&ca_pem).unwrap())
}

fn ocsp_status(
    body: &[u8],
    leaf: &openssl::x509::X509,
    issuer: &openssl::x509::X509,
) -> openssl::ocsp::OcspCertStatus {
    use openssl::hash::MessageDigest;
    use openssl::ocsp::{OcspCertId, OcspResponse};
    let response = OcspResponse::from_der(body).unwrap();
    let basic = response.basic().unwrap();
    let id = OcspCertId::from_cert(MessageDigest::sha1(), leaf, issuer).unwrap();
    basic.find_status(&id).unwrap().status
}

/// 1,500 distinct padded requests for a revoked serial: every one answered,
/// none kept. Before the fix each was cached under its own bytes.
#[tokio::test]
async fn padded_ocsp_requests_are_answered_but_never_cached() {
    use openssl::ocsp::OcspCertStatus;
    let f = fixture().await;
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
    let (leaf, issuer) = leaf_and_issuer(&f, &serial).await;
    let plain = ocsp_request(&leaf, &issuer);
    let ocsp = [("content-type", "application/ocsp-request")];
    let (_, _, body) = f
        .raw("POST", "/ocsp", None, Some(plain.clone()), &ocsp)
        .await;
    assert_eq!(ocsp_status(&body, &leaf, &issuer), OcspCertStatus::REVOKED);
    for i in 0..1500 {
        let request = padded(&plain, i, 2000);
        let (status, _, body) = f.raw("POST", "/ocsp", None, Some(request), &ocsp).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ocsp_status(&body, &leaf, &issuer), OcspCertStatus::REVOKED);
    }
    let text = String::from_utf8(f.raw("GET", "/metrics", None, None, &[]).await.2).unwrap();
    assert_eq!(
        metric(&text, "ca_ocsp_cache_entries"),
        1,
        "only the plain request is kept"
    );
    assert!(metric(&text, "ca_ocsp_cache_bytes") < 4096, "{text}");

    // Past a few KiB a body is refused unread (413), by POST and by GET.
    let (status, _, _) = f
        .raw(
            "POST",
            "/ocsp",
            None,
            Some(padded(&plain, 1, 60_000)),
            &ocsp,
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    use base64::Engine as _;
    let long = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(padded(&plain, 2, 8000));
    let (status, _, body) = f
        .raw("GET", &format!("/ocsp/{long}"), None, None, &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        openssl::ocsp::OcspResponse::from_der(&body)
            .unwrap()
            .status(),
        openssl::ocsp::OcspResponseStatus::MALFORMED_REQUEST
    );
}

/// A flood of one unknown serial costs one store read; an issuance makes
/// the responder look again.
#[tokio::test]
async fn unknown_serials_cost_one_store_read_until_something_is_issued() {
    let f = fixture().await;
    let serial = f.issue("acme", "alice").await;
    let (leaf, issuer) = leaf_and_issuer(&f, &serial).await;
    // The same CertID with another (random, unissued) serial.
    let mut request = ocsp_request(&leaf, &issuer);
    let at = request
        .windows(16)
        .position(|w| w == hex::decode(&serial).unwrap())
        .unwrap();
    request[at + 15] ^= 0x01;
    let ocsp = [("content-type", "application/ocsp-request")];
    let start = metric(&metrics_text(&f).await, "ca_ocsp_store_reads_total");
    for _ in 0..200 {
        let (status, _, _) = f
            .raw("POST", "/ocsp", None, Some(request.clone()), &ocsp)
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(
        metric(&metrics_text(&f).await, "ca_ocsp_store_reads_total"),
        start + 1
    );
    f.issue("acme", "bob").await;
    f.raw("POST", "/ocsp", None, Some(request.clone()), &ocsp)
        .await;
    assert_eq!(
        metric(&metrics_text(&f).await, "ca_ocsp_store_reads_total"),
        start + 2,
        "an issuance drops the unknown serials"
    );
}
