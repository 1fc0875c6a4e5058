//! The hash-chained audit log: every state change recorded; edits, deletions and
//! reorderings detected by `audit verify`.

use crate::util::*;

fn actions(ca: &TestCa) -> Vec<String> {
    ca.json(&["audit", "list"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect()
}

fn prepared() -> TestCa {
    let ca = TestCa::init();
    let a = ca.issue("acme", "alice", "portal-admin", "a.p12");
    ca.json(&[
        "reissue",
        "--tenant",
        "acme",
        "--admin",
        "alice",
        "--out",
        &ca.path_str("b.p12"),
    ]);
    let b = ca.issue("acme", "bob", "portal-admin", "c.p12");
    ca.ok(&["revoke", b["serial"].as_str().unwrap()]);
    let _ = a;
    ca
}

#[test]
fn every_state_change_is_audited_and_the_chain_verifies() {
    let ca = prepared();
    assert_eq!(
        actions(&ca),
        ["init", "crl", "issue", "reissue", "crl", "issue", "revoke", "crl"]
    );
    let events = ca.json(&["audit", "list"]);
    let reissue = &events["items"][3];
    assert_eq!(
        reissue["serials"].as_array().unwrap().len(),
        2,
        "new and revoked serial: {reissue}"
    );
    assert!(reissue["actor"].as_str().unwrap().starts_with("cli:"));
    let v = ca.json(&["audit", "verify"]);
    assert_eq!(v["ok"], true);
    assert_eq!(v["events"], 8);
    let log = serde_json::to_string(&events).unwrap();
    assert!(!log.contains(PASSPHRASE));
}

#[test]
fn an_edited_event_is_detected() {
    let ca = prepared();
    sqlite(
        &ca.db(),
        "UPDATE audit_events SET subject = 'acme/mallory' WHERE seq = 3;",
    );
    let (code, err) = ca.fail(&["audit", "verify"]);
    assert_eq!(code, 6);
    assert!(err.contains("event 3") && err.contains("edited"), "{err}");
}

#[test]
fn a_deleted_event_is_detected() {
    let ca = prepared();
    sqlite(&ca.db(), "DELETE FROM audit_events WHERE seq = 4;");
    let (_, err) = ca.fail(&["audit", "verify"]);
    assert!(err.contains("event 4"), "{err}");
}

#[test]
fn a_deleted_tail_is_detected() {
    let ca = prepared();
    sqlite(&ca.db(), "DELETE FROM audit_events WHERE seq = 8;");
    let (_, err) = ca.fail(&["audit", "verify"]);
    assert!(err.contains("after event 7"), "{err}");
}

#[test]
fn reordered_events_are_detected() {
    let ca = prepared();
    // Swap the contents of events 5 and 6, keeping their numbers.
    sqlite(
        &ca.db(),
        "UPDATE audit_events SET seq = -5 WHERE seq = 5; UPDATE audit_events SET seq = 5 WHERE seq = 6; UPDATE audit_events SET seq = 6 WHERE seq = -5;",
    );
    let (_, err) = ca.fail(&["audit", "verify"]);
    assert!(err.contains("event 5"), "{err}");
}
