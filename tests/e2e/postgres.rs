//! The PostgreSQL store (DESIGN: `postgres://…` for several server replicas
//! on one database), driven through the real binaries and checked with
//! OpenSSL and with PostgreSQL itself.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::util::*;

/// Polls `check` every 25 ms until it holds; returns how long that took.
fn within(limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(25));
    }
    started.elapsed()
}

#[test]
fn two_replicas_on_one_postgres_database() {
    let Some(db) = PgDatabase::create("replicas") else {
        return;
    };
    let ca = TestCa::init_on(&db.url);
    // The schema is in PostgreSQL, and nothing was written to SQLite.
    assert_eq!(
        db.query("SELECT count(*) FROM audit_head").trim(),
        "1",
        "migrations ran on PostgreSQL"
    );
    assert!(
        !ca.db().exists(),
        "no SQLite file beside a postgres:// store"
    );

    // The CLI issues into PostgreSQL; OpenSSL opens the bundle and chains it.
    let alice = ca.issue("acme", "alice", "portal-admin", "alice.p12");
    let alice_serial = alice["serial"].as_str().unwrap().to_owned();
    let out = tool(
        "openssl",
        &[
            "pkcs12",
            "-in",
            &ca.path_str("alice.p12"),
            "-passin",
            &format!("pass:{}", alice["password"].as_str().unwrap()),
            "-noout",
        ],
    );
    assert!(out.status.success(), "openssl pkcs12: {}", stderr(&out));
    let ca_pem = ca.ca_pem();
    let alice_pem = ca.cert_pem(&alice_serial);

    let created = ca.json(&["token", "create", "--role", "operator", "--name", "e2e"]);
    let operator = created["token"].as_str().unwrap().to_owned();
    let operator_id = created["id"].as_str().unwrap().to_owned();
    let a = Server::start(&ca);
    let b = Server::start(&ca);

    // Concurrent issuance through both replicas: group commits on PostgreSQL,
    // every certificate answered once and stored once.
    let serials: BTreeSet<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..16)
            .map(|i| {
                let (server, token) = (if i % 2 == 0 { &a } else { &b }, &operator);
                scope.spawn(move || {
                    let v = server.issue(token, &format!("user{i}"), "{}");
                    v["serial"].as_str().unwrap().to_owned()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    assert_eq!(serials.len(), 16);
    assert_eq!(
        db.query("SELECT count(*) FROM certificates WHERE tenant = 'acme'")
            .trim(),
        "17"
    );

    // One active certificate per admin and policy, across replicas: of two
    // racing issuances for one admin, one wins and the other is a 409.
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let racers: Vec<_> = [&a, &b]
            .into_iter()
            .map(|server| {
                let token = &operator;
                scope.spawn(move || {
                    server
                        .api(
                            "POST",
                            "/v1/tenants/acme/admins/carol/certificates",
                            token,
                            "{}",
                            &[],
                        )
                        .0
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let mut sorted = statuses.clone();
    sorted.sort();
    assert_eq!(sorted, vec![201, 409], "{statuses:?}");

    // A CSR signed by replica B.
    let (_, csr) = ca.new_csr("robot", P256, "/CN=robot");
    let body = serde_json::json!({
        "policy": "automation-csr",
        "csr": std::fs::read_to_string(&csr).unwrap(),
    })
    .to_string();
    let (status, signed) = b.api(
        "POST",
        "/v1/tenants/acme/admins/robot/csr",
        &operator,
        &body,
        &[],
    );
    assert_eq!(status, 201, "{signed}");

    // Reissue on replica A: replica B's OCSP says revoked within a second
    // (B has its good answer cached, pre-signed and as a remembered state),
    // and B's CRL lists the old serial.
    let ocsp_url = b.url("/ocsp");
    let ask_b = |extra: &[&str]| {
        let mut args = vec![
            "ocsp", "-issuer", &ca_pem, "-cert", &alice_pem, "-url", &ocsp_url, "-CAfile", &ca_pem,
        ];
        args.extend_from_slice(extra);
        stdout(&tool("openssl", &args))
    };
    for extra in [&["-no_nonce"][..], &[]] {
        let text = ask_b(extra);
        assert!(text.contains(": good"), "{text}");
    }
    let started = Instant::now();
    let reissued = a.reissue(&operator, "alice", "key-compromise");
    assert_eq!(reissued["revoked"], serde_json::json!([alice_serial]));
    let took = within(
        Duration::from_secs(1),
        "revocation on A seen by B's OCSP",
        || ask_b(&["-no_nonce"]).contains(": revoked") && ask_b(&[]).contains(": revoked"),
    );
    println!(
        "reissue on A -> revoked in B's OCSP: {took:?} (from the response: {:?})",
        started.elapsed()
    );
    let crl_pem = ca.path_str("b.crl.pem");
    within(
        Duration::from_secs(2),
        "B's CRL lists the old serial",
        || {
            b.curl(&["-s", "-o", &crl_pem, &b.url("/crl.pem")]);
            !verify_with_crl(&ca_pem, &crl_pem, &alice_pem).0
        },
    );
    let (ok, text) = verify_with_crl(&ca_pem, &crl_pem, &alice_pem);
    assert!(!ok && text.contains("certificate revoked"), "{text}");
    let new_pem = ca.cert_pem(reissued["serial"].as_str().unwrap());
    let (ok, text) = verify_with_crl(&ca_pem, &crl_pem, &new_pem);
    assert!(ok, "the reissued certificate verifies: {text}");

    // A token revoked with the CLI stops working on both replicas.
    ca.ok(&["token", "revoke", &operator_id]);
    for server in [&a, &b] {
        within(Duration::from_secs(1), "revoked token refused", || {
            server.api("GET", "/v1/certificates", &operator, "", &[]).0 == 401
        });
    }

    // The audit chain written by three processes verifies.
    let report = ca.json(&["audit", "verify"]);
    assert_eq!(report["ok"], serde_json::json!(true), "{report}");
}
