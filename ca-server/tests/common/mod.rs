//! The in-process fixture shared by the API test binaries: a fresh CA in a
//! temporary directory, an admin token, and helpers that call `app(state)`.

#![allow(dead_code)]

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use ca_core::{Ca, Config, InitRequest, ListFilter, Role};
use ca_server::{app, AppState};
use serde_json::{json, Value};
use tower::ServiceExt;

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub state: AppState,
    pub admin: String,
}

pub async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().join("ca-data"),
        ..Config::default()
    };
    let request = InitRequest {
        subject: "CN=Test CA,O=Example".into(),
        key: ca_core::KeyAlgorithm::EcdsaP256,
        validity: "1y".parse().unwrap(),
        base_url: "http://127.0.0.1:1".into(),
        passphrase: zeroize::Zeroizing::new(b"test passphrase long".to_vec()),
        pin: None,
    };
    let ca = Ca::init(&config, request, "test").await.unwrap();
    let admin = ca
        .create_token(Role::Admin, None, "t", "test")
        .await
        .unwrap()
        .token
        .to_string();
    let state = AppState::new(ca);
    state.warm_up().await.unwrap();
    Fixture { dir, state, admin }
}

impl Fixture {
    pub async fn token(&self, role: Role, tenant: Option<&str>) -> String {
        self.state
            .ca
            .create_token(role, tenant, "t", "test")
            .await
            .unwrap()
            .token
            .to_string()
    }

    pub async fn call(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (status, _, bytes) = self
            .raw(
                method,
                uri,
                token,
                body.map(|b| b.to_string().into_bytes()),
                &[],
            )
            .await;
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }

    pub async fn raw(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let request = request
            .body(body.map(Body::from).unwrap_or_else(Body::empty))
            .unwrap();
        let response = app(self.state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
            .await
            .unwrap()
            .to_vec();
        (status, headers, bytes)
    }

    /// Everything a caller could change: certificates, audit chain head, CRL state.
    pub async fn snapshot(&self) -> String {
        let filter = ListFilter {
            limit: 1000,
            ..Default::default()
        };
        let certs: Vec<String> = self
            .state
            .ca
            .list(&filter)
            .await
            .unwrap()
            .iter()
            .map(|r| format!("{} {:?} {:?}", r.serial, r.revoked_at, r.reason))
            .collect();
        let head = self.state.ca.store().audit_head().await.unwrap();
        let crl = self.state.ca.crl_status().await.unwrap();
        format!(
            "{certs:?} {head:?} {} {}",
            crl.revision, crl.published_number
        )
    }

    pub async fn issue(&self, tenant: &str, admin: &str) -> String {
        let (status, v) = self
            .call(
                "POST",
                &format!("/v1/tenants/{tenant}/admins/{admin}/certificates"),
                Some(&self.admin),
                Some(json!({})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        v["serial"].as_str().unwrap().to_owned()
    }
}

/// POSTs `{}` to `uri` on its own app instance (for concurrent requests); returns the status.
pub async fn post_status(state: AppState, token: &str, uri: String) -> StatusCode {
    let request = Request::builder()
        .method("POST")
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::from("{}"))
        .unwrap();
    app(state).oneshot(request).await.unwrap().status()
}
