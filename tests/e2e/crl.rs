//! The server's CRL follows revocations by patching its kept revoked-entry
//! list, not by re-reading the store: checked on a store of 50,000 revoked
//! certificates (rows written straight into SQLite) with OpenSSL, against a
//! full rebuild by `ca-cli crl`.

use std::time::{Duration, Instant};

use crate::util::*;

/// Revoked rows written straight into the store.
const BULK: usize = 50_000;
/// Of which this many expire a few seconds after the server starts.
const EXPIRING: usize = 40;

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `openssl crl -text` of a DER CRL.
fn crl_text(der_file: &str) -> String {
    let out = tool(
        "openssl",
        &["crl", "-inform", "DER", "-in", der_file, "-noout", "-text"],
    );
    assert!(out.status.success(), "openssl crl: {}", stderr(&out));
    stdout(&out)
}

/// The revoked-certificate part of `openssl crl -text` (serials, dates,
/// reasons, invalidity dates), without the CRL number, dates and signature.
fn entries(text: &str) -> String {
    let start = text.find("Revoked Certificates:").unwrap_or(text.len());
    let rest = &text[start..];
    let end = rest.find("Signature Algorithm").unwrap_or(rest.len());
    rest[..end].to_owned()
}

/// Fetches /crl into a file and returns its text.
fn fetch(ca: &TestCa, server: &Server) -> String {
    let file = ca.path_str("served.crl");
    let out = server.curl(&["-s", "-f", "-o", &file, &server.url("/crl")]);
    assert!(out.status.success(), "GET /crl: {}", stderr(&out));
    crl_text(&file)
}

/// Polls /crl until `serial` (lower-case hex) is listed; returns the time
/// from `since` and the CRL's text.
fn wait_listed(ca: &TestCa, server: &Server, serial: &str, since: Instant) -> (Duration, String) {
    loop {
        let text = fetch(ca, server);
        if text.contains(&serial.to_uppercase()) {
            return (since.elapsed(), text);
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "{serial} not on the served CRL after 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What a full rebuild lists now: `ca-cli crl` reads every revoked row.
fn full_rebuild(ca: &TestCa) -> String {
    let file = ca.path_str("full.crl");
    ca.ok(&["crl", "--out", &file]);
    crl_text(&file)
}

#[test]
fn a_revocation_reaches_the_crl_of_a_large_store_quickly_and_as_a_full_rebuild_lists_it() {
    let ca = TestCa::init();
    let operator = ca.token("operator");
    let first = ca.issue("acme", "alice", "portal-admin", "alice.p12");
    let alice = first["serial"].as_str().unwrap().to_owned();
    let second = ca.issue("acme", "bob", "portal-admin", "bob.p12");
    let bob = second["serial"].as_str().unwrap().to_owned();

    // 50,000 revoked rows (every third with key-compromise and an
    // invalidity date), a few of which expire shortly, and 100 expired
    // ones that no CRL may list.
    let now = unix_now();
    let expiring_at = now + 6;
    sqlite(
        &ca.db(),
        &format!(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {last}) \
             INSERT INTO certificates (serial, tenant, admin, policy, state, not_before, not_after, \
                 revoked_at, reason, invalidity_date, created_at, der) \
             SELECT '1000000000000000000' || printf('%013x', i * 7919), 'bulk', 'a' || i, 'portal-admin', 1, \
                 {now} - 3600, \
                 CASE WHEN i < 100 THEN {now} - 10 WHEN i < {exp_end} THEN {expiring_at} ELSE {now} + 86400 END, \
                 {now} - 60 - i, CASE i % 3 WHEN 0 THEN 1 WHEN 1 THEN 4 ELSE NULL END, \
                 CASE WHEN i % 3 = 0 THEN {now} - 86400 ELSE NULL END, {now} - 3600, x'3000' FROM n; \
             UPDATE crl_state SET revision = revision + 1;",
            last = BULK + 100 - 1,
            exp_end = 100 + EXPIRING,
        ),
    );

    let server = Server::start(&ca);
    let text = fetch(&ca, &server);
    assert_eq!(
        text.matches("Serial Number:").count(),
        BULK,
        "the start-up CRL lists every unexpired revoked row"
    );

    // A revocation through the API (the revoke path) is listed quickly.
    let started = Instant::now();
    let (status, answer) = server.api(
        "POST",
        &format!("/v1/certificates/{alice}/revoke"),
        &operator,
        r#"{"reason":"key-compromise"}"#,
        &[],
    );
    assert_eq!(status, 200, "{answer}");
    let (took, text) = wait_listed(&ca, &server, &alice, started);
    println!("revoke -> listed on /crl with {BULK} entries: {took:?}");
    assert!(took <= Duration::from_secs(2), "took {took:?}");
    assert_eq!(text.matches("Serial Number:").count(), BULK + 1);

    // The entries the certificates expiring in between had are gone after
    // they expire; a reissue (the supersede path) is listed; and the
    // patched CRL lists exactly what a full rebuild lists.
    let wait = expiring_at + 1 - unix_now();
    if wait > 0 {
        std::thread::sleep(Duration::from_secs(wait as u64));
    }
    let started = Instant::now();
    server.reissue(&operator, "bob", "superseded");
    let (took, patched) = wait_listed(&ca, &server, &bob, started);
    println!("reissue -> old serial listed: {took:?}");
    assert_eq!(
        patched.matches("Serial Number:").count(),
        BULK + 2 - EXPIRING,
        "expired entries are dropped"
    );
    let full = full_rebuild(&ca);
    assert_eq!(
        entries(&patched),
        entries(&full),
        "the patched CRL and a full rebuild list different entries"
    );
    assert!(entries(&full).contains(&alice.to_uppercase()));

    // A CRL published by another process (here `ca-cli crl`) is served,
    // and the next revocation patches the server's list from its own
    // revision onwards.
    let third = server.issue(&operator, "carol", r#"{"policy":"portal-admin"}"#);
    let carol = third["serial"].as_str().unwrap().to_owned();
    let started = Instant::now();
    let (status, answer) = server.api(
        "POST",
        &format!("/v1/certificates/{carol}/revoke"),
        &operator,
        r#"{"reason":"cessation-of-operation"}"#,
        &[],
    );
    assert_eq!(status, 200, "{answer}");
    let (_, patched) = wait_listed(&ca, &server, &carol, started);
    assert_eq!(entries(&patched), entries(&full_rebuild(&ca)));
    let (code, log) = server.stop();
    assert_eq!(code, Some(0), "{log}");
}
