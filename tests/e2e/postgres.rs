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

/// The database goes away under load (every connection cut, new ones
/// refused) and comes back: state changes fail fast with 503, `/readyz`
/// says why, OCSP and the CRL keep being served from memory, and the
/// server recovers by itself; nothing acknowledged is lost.
#[test]
fn losing_the_database_fails_fast_and_recovers_by_itself() {
    let Some(db) = PgDatabase::create("outage") else {
        return;
    };
    let ca = TestCa::init_on(&db.url);
    let (_, upstream) = via_port(&db.url, 0);
    let proxy = TcpProxy::start(&upstream);
    let (proxied, _) = via_port(&db.url, proxy.port);
    let server = Server::start_with(&ca, &[("CA_DATABASE_URL", &proxied)]);
    let token = ca.token("operator");
    let ca_pem = ca.ca_pem();

    // Two certificates whose OCSP answers are in the cache: one good, one revoked.
    let alice = server.issue(&token, "alice", "{}");
    let bob = server.issue(&token, "bob", "{}");
    let bob_serial = bob["serial"].as_str().unwrap();
    ca.ok(&["revoke", bob_serial, "--reason", "key-compromise"]);
    let alice_pem = ca.cert_pem(alice["serial"].as_str().unwrap());
    let bob_pem = ca.cert_pem(bob_serial);
    // openssl ocsp prints `<cert file>: good|revoked|unknown`.
    let status = |cert: &str| {
        let text = openssl_ocsp(&server, &ca_pem, &["-cert", cert, "-no_nonce"]);
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{cert}: ")).map(str::to_owned))
            .unwrap_or(text)
    };
    within(Duration::from_secs(3), "bob revoked in OCSP", || {
        status(&bob_pem) == "revoked"
    });
    assert_eq!(status(&alice_pem), "good");

    // Load in flight when the connection is cut.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let results: Vec<(String, Duration, Option<String>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let (server, token, stop) = (&server, &token, &stop);
                scope.spawn(move || {
                    let mut seen = Vec::new();
                    let mut i = 0;
                    // Bounded in time too: a failed assertion below must not leave them running.
                    let deadline = Instant::now() + Duration::from_secs(90);
                    while !stop.load(std::sync::atomic::Ordering::SeqCst)
                        && Instant::now() < deadline
                    {
                        i += 1;
                        let started = Instant::now();
                        let (code, body) = server.post(
                            token,
                            &format!("/v1/tenants/load/admins/w{w}-{i}/certificates"),
                            "{}",
                        );
                        let serial = serde_json::from_str::<serde_json::Value>(&body)
                            .ok()
                            .and_then(|v| v["serial"].as_str().map(str::to_owned));
                        seen.push((code, started.elapsed(), serial));
                    }
                    seen
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(800));
        proxy.cut();

        // Fails fast, says why.
        let started = Instant::now();
        let (code, _) = server.post(&token, "/v1/tenants/acme/admins/carol/certificates", "{}");
        let took = started.elapsed();
        assert_eq!(code, "503", "an issuance without a database");
        assert!(took < Duration::from_secs(6), "503 took {took:?}");
        let ready = server.curl(&["-s", "-w", "\n%{http_code}", &server.url("/readyz")]);
        let text = stdout(&ready);
        assert!(
            text.ends_with("503") && text.contains("database cannot be reached"),
            "{text}"
        );
        // What gateways need keeps working from memory.
        assert_eq!(status(&alice_pem), "good", "cached OCSP answer");
        assert_eq!(status(&bob_pem), "revoked", "cached OCSP answer");
        assert_eq!(http_code(&server.url("/crl"), &[]), "200");

        std::thread::sleep(Duration::from_secs(2));
        proxy.restore();
        within(Duration::from_secs(20), "ready again", || {
            http_code(&server.url("/readyz"), &[]) == "200"
        });
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });

    let carol = server.issue(&token, "carol", "{}");
    assert!(carol["serial"].is_string(), "recovered without a restart");
    let mut codes: Vec<&str> = results.iter().map(|(c, _, _)| c.as_str()).collect();
    codes.sort_unstable();
    codes.dedup();
    assert!(
        codes.iter().all(|c| *c == "201" || *c == "503"),
        "answers under the outage: {codes:?}"
    );
    assert!(
        codes.contains(&"503") && codes.contains(&"201"),
        "{codes:?}"
    );
    let slowest = results.iter().map(|(_, d, _)| *d).max().unwrap();
    assert!(
        slowest < Duration::from_secs(10),
        "a request hung for {slowest:?}"
    );
    // Every acknowledged issuance is in the database.
    for serial in results.iter().filter_map(|(_, _, s)| s.as_deref()) {
        assert_eq!(
            db.query(&format!(
                "SELECT count(*) FROM certificates WHERE serial = '{serial}'"
            ))
            .trim(),
            "1",
            "{serial} was acknowledged"
        );
    }
    let audit = ca.run(&["audit", "verify"]);
    assert!(audit.status.success(), "{}", stderr(&audit));
    drop(server);
}
