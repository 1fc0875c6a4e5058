//! reissue, revoke and the CRL, proved with `openssl verify -crl_check`, `openssl crl` and pkilint.

use crate::util::*;

fn verify(ca: &TestCa, crl: &str, cert: &str) -> (bool, String) {
    verify_with_crl(&ca.ca_pem(), crl, cert)
}

#[test]
fn reissue_revokes_the_old_certificate_in_the_same_step() {
    let ca = TestCa::init();
    let old = ca.issue("acme", "alice", "portal-admin", "old.p12");
    let old_serial = old["serial"].as_str().unwrap().to_owned();
    let old_pem = ca.cert_pem(&old_serial);
    let (ok, text) = verify(&ca, &ca.crl_pem(), &old_pem);
    assert!(ok, "{text}");

    let new_out = ca.path_str("new.p12");
    let new = ca.json(&[
        "reissue",
        "--tenant",
        "acme",
        "--admin",
        "alice",
        "--reason",
        "key-compromise",
        "--out",
        &new_out,
    ]);
    assert_eq!(new["revoked"], serde_json::json!([old_serial]));
    assert_eq!(
        new["policy"], "portal-admin",
        "policy taken from the active certificate"
    );
    let new_pem = ca.cert_pem(new["serial"].as_str().unwrap());

    let old_now = ca.json(&["show", &old_serial]);
    assert_eq!(old_now["status"], "revoked");
    assert_eq!(old_now["reason"], "key-compromise");

    let crl = ca.crl_pem();
    let (ok, text) = verify(&ca, &crl, &old_pem);
    assert!(!ok && text.contains("certificate revoked"), "{text}");
    let (ok, text) = verify(&ca, &crl, &new_pem);
    assert!(ok, "{text}");
    let text = stdout(&tool("openssl", &["crl", "-in", &crl, "-noout", "-text"]));
    assert!(
        text.contains(&old_serial.to_uppercase()) && text.contains("Key Compromise"),
        "{text}"
    );
    assert!(
        text.contains("X509v3 CRL Number") && text.contains("X509v3 Authority Key Identifier"),
        "{text}"
    );
    let findings = pkilint_errors("lint_crl", &["-t", "CRL", "-p", "PKIX"], &crl);
    assert!(findings.is_empty(), "pkilint: {findings:?}");
    let out = tool(
        "openssl",
        &[
            "crl",
            "-in",
            &crl,
            "-noout",
            "-verify",
            "-CAfile",
            &ca.ca_pem(),
        ],
    );
    assert!(stderr(&out).contains("verify OK"), "{}", stderr(&out));

    // Exactly one active certificate remains.
    let active = ca.json(&[
        "list", "--tenant", "acme", "--admin", "alice", "--status", "active",
    ]);
    assert_eq!(active["items"].as_array().unwrap().len(), 1);
}

#[test]
fn reissue_defaults_to_superseded_and_needs_a_policy_when_ambiguous() {
    let ca = TestCa::init();
    let a = ca.issue("acme", "alice", "portal-admin", "a.p12");
    let v = ca.json(&[
        "reissue",
        "--tenant",
        "acme",
        "--admin",
        "alice",
        "--out",
        &ca.path_str("b.p12"),
    ]);
    assert_eq!(
        ca.json(&["show", a["serial"].as_str().unwrap()])["reason"],
        "superseded"
    );
    assert_eq!(v["revoked"].as_array().unwrap().len(), 1);

    ca.issue("acme", "alice", "portal-admin-legacy", "c.p12");
    let before = ca.state();
    let (code, err) = ca.fail(&[
        "reissue", "--tenant", "acme", "--admin", "alice", "--out", "d.p12",
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("several policies") && err.contains("portal-admin-legacy"),
        "{err}"
    );
    let (code, err) = ca.fail(&[
        "reissue", "--tenant", "acme", "--admin", "nobody", "--out", "d.p12",
    ]);
    assert_eq!(code, 4);
    assert!(err.contains("no active certificate"), "{err}");
    assert_eq!(ca.state(), before);
}

#[test]
fn crl_numbers_strictly_increase_and_list_every_revoked_certificate() {
    let ca = TestCa::init();
    let mut serials = Vec::new();
    for (i, reason) in [
        "unspecified",
        "key-compromise",
        "affiliation-changed",
        "cessation-of-operation",
        "privilege-withdrawn",
        "certificate-hold",
        "ca-compromise",
        "superseded",
    ]
    .iter()
    .enumerate()
    {
        let v = ca.issue(
            "acme",
            &format!("admin{i}"),
            "portal-admin",
            &format!("{i}.p12"),
        );
        let serial = v["serial"].as_str().unwrap().to_owned();
        let r = ca.json(&["revoke", &serial, "--reason", reason]);
        assert_eq!(r["status"], "revoked");
        assert_eq!(r["reason"], *reason);
        serials.push(serial);
    }
    let first = ca.json(&["crl"])["crl_number"].as_u64().unwrap();
    let second = ca.json(&["crl"])["crl_number"].as_u64().unwrap();
    assert!(second > first);
    let crl = ca.crl_pem();
    let text = stdout(&tool("openssl", &["crl", "-in", &crl, "-noout", "-text"]));
    for s in &serials {
        assert!(text.contains(&s.to_uppercase()), "{s} missing from CRL");
    }
    for name in [
        "Key Compromise",
        "Affiliation Changed",
        "Cessation Of Operation",
        "Privilege Withdrawn",
        "Certificate Hold",
        "CA Compromise",
        "Superseded",
    ] {
        assert!(text.contains(name), "reason {name} missing:\n{text}");
    }
    let der = ca.path_str("crl.der");
    ca.ok(&["crl", "--out", &der]);
    let out = tool(
        "openssl",
        &["crl", "-inform", "DER", "-in", &der, "-noout", "-crlnumber"],
    );
    assert!(stdout(&out).contains("crlNumber="), "{}", stdout(&out));
    assert!(pkilint_errors("lint_crl", &["-t", "CRL", "-p", "PKIX"], &crl).is_empty());
}

#[test]
fn revoke_with_invalidity_date_and_without_the_key() {
    let ca = TestCa::init();
    let v = ca.issue("acme", "alice", "portal-admin", "a.p12");
    let serial = v["serial"].as_str().unwrap();
    // Without the CA key the revocation still happens; the CRL waits for `crl`.
    let out = ca
        .command(&[
            "revoke",
            serial,
            "--reason",
            "key-compromise",
            "--invalidity-date",
            "2026-01-02T03:04:05Z",
        ])
        .env_remove("CA_KEY_PASSPHRASE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("CRL not republished"),
        "{}",
        stdout(&out)
    );
    let text = stdout(&tool(
        "openssl",
        &["crl", "-in", &ca.crl_pem(), "-noout", "-text"],
    ));
    assert!(
        text.contains("Invalidity Date") && text.contains("Jan  2 03:04:05 2026"),
        "{text}"
    );
}
