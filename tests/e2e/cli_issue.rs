//! init, issue, PKCS#12 profiles, certificate contents, CSR signing, listing.

use crate::util::*;

#[test]
fn init_creates_an_encrypted_key_and_a_ca_certificate_and_refuses_to_overwrite() {
    let ca = TestCa::init();
    let key = ca.data_dir().join("ca.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let key_text = std::fs::read_to_string(&key).unwrap();
    assert!(
        !key_text.contains("PRIVATE KEY"),
        "the CA key must not be stored in plaintext"
    );

    let pem = ca.ca_pem();
    let text = stdout(&tool("openssl", &["x509", "-in", &pem, "-noout", "-text"]));
    assert!(
        text.contains("X509v3 Basic Constraints: critical") && text.contains("CA:TRUE"),
        "{text}"
    );
    assert!(text.contains("Certificate Sign, CRL Sign"), "{text}");
    assert!(text.contains("NIST CURVE: P-256"), "{text}");
    assert!(pkilint_errors("lint_pkix_cert", &[], &pem).is_empty());

    let before = std::fs::read(ca.data_dir().join("ca.pem")).unwrap();
    let (code, err) = ca.fail(&[
        "init",
        "--subject",
        "CN=Other",
        "--base-url",
        "http://x.example",
    ]);
    assert_eq!(code, 3);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read(ca.data_dir().join("ca.pem")).unwrap(), before);
}

#[test]
fn init_supports_every_key_type() {
    for (key, expect) in [
        ("ecdsa-p384", "NIST CURVE: P-384"),
        ("rsa-2048", "Public-Key: (2048 bit)"),
        ("rsa-3072", "Public-Key: (3072 bit)"),
        ("rsa-4096", "Public-Key: (4096 bit)"),
    ] {
        let ca = TestCa::init_with(&["--key", key]);
        let text = stdout(&tool(
            "openssl",
            &["x509", "-in", &ca.ca_pem(), "-noout", "-text"],
        ));
        assert!(text.contains(expect), "{key}: {text}");
        // The CA signs leaves and CRLs with this key type too.
        let issued = ca.issue("acme", "alice", "portal-admin", "a.p12");
        let leaf = ca.cert_pem(issued["serial"].as_str().unwrap());
        let out = tool(
            "openssl",
            &[
                "verify",
                "-crl_check",
                "-CAfile",
                &ca.ca_pem(),
                "-CRLfile",
                &ca.crl_pem(),
                &leaf,
            ],
        );
        assert!(out.status.success(), "{key}: {}", stderr(&out));
    }
}

#[test]
fn issued_certificate_has_the_designed_profile_and_lints_clean() {
    let ca = TestCa::init();
    let v = ca.issue("acme", "alice@example.com", "portal-admin", "a.p12");
    let serial = v["serial"].as_str().unwrap();
    assert_eq!(serial.len(), 32);
    assert!(serial
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert_eq!(v["status"], "active");
    assert_eq!(v["tenant"], "acme");
    assert_eq!(v["policy"], "portal-admin");
    assert_eq!(v["password"].as_str().unwrap().len(), 20);

    let pem = ca.cert_pem(serial);
    let text = stdout(&tool("openssl", &["x509", "-in", &pem, "-noout", "-text"]));
    for expected in [
        "X509v3 Key Usage: critical",
        "Digital Signature",
        "TLS Web Client Authentication",
        "CA:FALSE",
        "URI:http://127.0.0.1:8080/crl",
        "OCSP - URI:http://127.0.0.1:8080/ocsp",
        "CA Issuers - URI:http://127.0.0.1:8080/ca.crt",
        "X509v3 Subject Key Identifier",
        "X509v3 Authority Key Identifier",
        "CN = alice@example.com",
        "OU = acme",
    ] {
        assert!(text.contains(expected), "missing {expected}:\n{text}");
    }
    let serial_line = stdout(&tool(
        "openssl",
        &["x509", "-in", &pem, "-noout", "-serial"],
    ));
    assert_eq!(
        serial_line.trim().to_lowercase(),
        format!("serial={serial}")
    );
    let findings = pkilint_errors("lint_pkix_cert", &[], &pem);
    assert!(findings.is_empty(), "pkilint: {findings:?}");
    let out = tool(
        "openssl",
        &[
            "verify",
            "-purpose",
            "sslclient",
            "-CAfile",
            &ca.ca_pem(),
            &pem,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

fn check_bundle(ca: &TestCa, file: &str, password: &str, expect_info: &[&str]) {
    let p12 = ca.path_str(file);
    let pass = format!("pass:{password}");
    // OpenSSL 3 without -legacy.
    let info = tool(
        "openssl",
        &["pkcs12", "-info", "-in", &p12, "-passin", &pass, "-nodes"],
    );
    assert!(info.status.success(), "openssl pkcs12: {}", stderr(&info));
    let text = format!("{}{}", stdout(&info), stderr(&info));
    for e in expect_info {
        assert!(text.contains(e), "openssl pkcs12 -info lacks {e}:\n{text}");
    }
    assert!(text.contains("friendlyName: alice (acme)"), "{text}");
    assert!(text.contains("localKeyID"), "{text}");
    assert!(
        text.contains("subject=CN = Portal Admin CA, O = Example"),
        "CA chain missing:\n{text}"
    );
    assert!(text.contains("PRIVATE KEY"), "{text}");

    // NSS, what Chrome on Linux uses.
    let nss = ca.path(&format!("nss-{file}"));
    std::fs::create_dir_all(&nss).unwrap();
    let db = format!("sql:{}", nss.display());
    let out = tool("certutil", &["-N", "--empty-password", "-d", &db]);
    assert!(out.status.success(), "certutil -N: {}", stderr(&out));
    let out = tool("pk12util", &["-i", &p12, "-d", &db, "-W", password]);
    assert!(
        out.status.success(),
        "pk12util: {} {}",
        stdout(&out),
        stderr(&out)
    );
    let listed = stdout(&tool("certutil", &["-L", "-d", &db]));
    assert!(listed.contains("alice (acme)"), "{listed}");

    // Python cryptography.
    let script = "import sys\nfrom cryptography.hazmat.primitives.serialization import pkcs12\n\
        k,c,chain=pkcs12.load_key_and_certificates(open(sys.argv[1],'rb').read(), sys.argv[2].encode())\n\
        assert k is not None and c is not None and len(chain)==1\nprint(c.subject.rfc4514_string())";
    let out = tool("python3", &["-c", script, &p12, password]);
    assert!(out.status.success(), "cryptography: {}", stderr(&out));
    assert!(stdout(&out).contains("CN=alice"), "{}", stdout(&out));

    // Java (keytool, the same PKCS12KeyStore that JSSE clients use). Java 17
    // refuses every non-ASCII PKCS#12 password itself ("Password is not
    // ASCII" in its PBE key; the same for a bundle OpenSSL writes), so only
    // ASCII passwords — all generated ones — are checked there.
    if password.is_ascii() {
        check_bundle_in_java(&p12, password);
    }

    // A wrong password is refused.
    let out = tool(
        "openssl",
        &[
            "pkcs12",
            "-info",
            "-in",
            &p12,
            "-passin",
            "pass:wrong-password",
            "-noout",
        ],
    );
    assert!(!out.status.success());
}

fn check_bundle_in_java(p12: &str, password: &str) {
    let out = std::process::Command::new("keytool")
        .args([
            "-list",
            "-v",
            "-storetype",
            "PKCS12",
            "-keystore",
            p12,
            "-storepass",
            password,
        ])
        .env("LC_ALL", "C.UTF-8")
        .output()
        .expect("keytool (apt-get install openjdk-17-jre-headless)");
    let listed = stdout(&out);
    assert!(out.status.success(), "keytool: {listed} {}", stderr(&out));
    assert!(listed.contains("Alias name: alice (acme)"), "{listed}");
    assert!(listed.contains("Entry type: PrivateKeyEntry"), "{listed}");
    assert!(listed.contains("Certificate chain length: 2"), "{listed}");
}

#[test]
fn modern_bundle_opens_in_openssl_nss_and_cryptography() {
    let ca = TestCa::init();
    let v = ca.issue("acme", "alice", "portal-admin", "alice.p12");
    check_bundle(
        &ca,
        "alice.p12",
        v["password"].as_str().unwrap(),
        &["MAC: sha256", "PBES2, PBKDF2, AES-256-CBC"],
    );
    assert_eq!(v["out"].as_str().unwrap(), ca.path_str("alice.p12"));
}

#[test]
fn legacy_bundle_opens_without_the_legacy_provider() {
    let ca = TestCa::init();
    let v = ca.issue("acme", "alice", "portal-admin-legacy", "alice.p12");
    check_bundle(
        &ca,
        "alice.p12",
        v["password"].as_str().unwrap(),
        &["MAC: sha1", "pbeWithSHA1And3-KeyTripleDES-CBC"],
    );
    let pem = ca.cert_pem(v["serial"].as_str().unwrap());
    let text = stdout(&tool("openssl", &["x509", "-in", &pem, "-noout", "-text"]));
    assert!(text.contains("Public-Key: (2048 bit)"), "{text}");
}

/// A non-ASCII password (what a person may choose through --password-file)
/// reads the same in every consumer: OpenSSL, NSS and Python `cryptography`
/// turn it into the UTF-16 BMPString of RFC 7292 App. B.1 themselves, so a
/// legacy bundle that encoded it any other way would fail in all of them.
/// (Java 17 takes no non-ASCII PKCS#12 password at all; see `check_bundle`.)
#[test]
fn legacy_bundle_with_a_non_ascii_password_opens_everywhere() {
    let ca = TestCa::init();
    let password = "pässwörd ünïcødé €uro ß";
    std::fs::write(ca.path("pw"), format!("{password}\n")).unwrap();
    let (out, pw) = (ca.path_str("alice.p12"), ca.path_str("pw"));
    let v = ca.json(&[
        "issue",
        "--tenant",
        "acme",
        "--admin",
        "alice",
        "--policy",
        "portal-admin-legacy",
        "--out",
        &out,
        "--password-file",
        &pw,
    ]);
    assert_eq!(v["password"], password);
    check_bundle(
        &ca,
        "alice.p12",
        password,
        &["MAC: sha1", "pbeWithSHA1And3-KeyTripleDES-CBC"],
    );
}

#[test]
fn password_file_supplies_the_bundle_password() {
    let ca = TestCa::init();
    std::fs::write(ca.path("pw"), "my chosen bundle password\n").unwrap();
    let out = ca.path_str("a.p12");
    let pw = ca.path_str("pw");
    let v = ca.json(&[
        "issue",
        "--tenant",
        "acme",
        "--admin",
        "alice",
        "--out",
        &out,
        "--password-file",
        &pw,
    ]);
    assert_eq!(v["password"], "my chosen bundle password");
    assert_eq!(v["policy"], "portal-admin", "default policy");
    let o = tool(
        "openssl",
        &[
            "pkcs12",
            "-in",
            &out,
            "-passin",
            "pass:my chosen bundle password",
            "-noout",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn second_issue_is_a_conflict_that_changes_nothing() {
    let ca = TestCa::init();
    ca.issue("acme", "alice", "portal-admin", "a.p12");
    let before = ca.state();
    let (code, err) = ca.fail(&[
        "issue", "--tenant", "acme", "--admin", "alice", "--out", "b.p12",
    ]);
    assert_eq!(code, 3);
    assert!(err.contains("reissue"), "{err}");
    assert!(!ca.path("b.p12").exists(), "no bundle for a refused issue");
    assert_eq!(ca.state(), before);
    // Another policy or another admin is fine.
    ca.issue("acme", "alice", "portal-admin-legacy", "c.p12");
    ca.issue("acme", "bob", "portal-admin", "d.p12");
}

#[test]
fn sign_csr_checks_the_signature_and_replaces_the_subject() {
    let ca = TestCa::init();
    let (key, csr) = ca.new_csr("client", P256, "/CN=evil.example.com/O=Someone Else");
    let cert = ca.path_str("client.pem");
    let v = ca.json(&[
        "sign-csr",
        "--tenant",
        "acme",
        "--admin",
        "robot-1",
        "--policy",
        "automation-csr",
        "--csr",
        &csr,
        "--out",
        &cert,
    ]);
    assert_eq!(v["policy"], "automation-csr");
    let text = stdout(&tool(
        "openssl",
        &[
            "x509",
            "-in",
            &cert,
            "-noout",
            "-subject",
            "-ext",
            "extendedKeyUsage",
        ],
    ));
    assert!(
        text.contains("CN = robot-1")
            && text.contains("O = Example Corp")
            && !text.contains("evil"),
        "{text}"
    );
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    // The certificate carries the CSR's key.
    let a = stdout(&tool(
        "openssl",
        &["x509", "-in", &cert, "-noout", "-pubkey"],
    ));
    let b = stdout(&tool("openssl", &["pkey", "-in", &key, "-pubout"]));
    assert_eq!(a, b);
    assert!(pkilint_errors("lint_pkix_cert", &[], &cert).is_empty());

    // RSA CSRs are accepted by this policy too.
    let (_, csr2) = ca.new_csr("rsa", &["-newkey", "rsa:2048"], "/CN=x");
    ca.json(&[
        "sign-csr",
        "--tenant",
        "acme",
        "--admin",
        "robot-2",
        "--policy",
        "automation-csr",
        "--csr",
        &csr2,
        "--out",
        &ca.path_str("rsa.pem"),
    ]);
}

#[test]
fn list_show_and_ca_cert_speak_the_json_contract() {
    let ca = TestCa::init();
    let a = ca.issue("acme", "alice", "portal-admin", "a.p12");
    let b = ca.issue("acme", "bob", "portal-admin", "b.p12");
    ca.issue("other", "carol", "portal-admin", "c.p12");
    let list = ca.json(&["list", "--tenant", "acme"]);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(list["next_cursor"].is_null());
    for item in items {
        for field in [
            "serial",
            "tenant",
            "admin",
            "policy",
            "status",
            "not_before",
            "not_after",
            "revoked_at",
            "reason",
        ] {
            assert!(item.get(field).is_some(), "missing {field} in {item}");
        }
    }
    // Pagination.
    let page1 = ca.json(&["list", "--limit", "2"]);
    let cursor = page1["next_cursor"].as_str().unwrap().to_owned();
    let page2 = ca.json(&["list", "--limit", "2", "--cursor", &cursor]);
    assert_eq!(
        page1["items"].as_array().unwrap().len() + page2["items"].as_array().unwrap().len(),
        3
    );
    assert!(page2["next_cursor"].is_null());
    // Expiring within: 397-day certificates expire within 400d, not within 30d.
    assert_eq!(
        ca.json(&["list", "--expiring-within", "30d"])["items"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        ca.json(&["list", "--expiring-within", "400d"])["items"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    let serial = a["serial"].as_str().unwrap();
    let shown = ca.json(&["show", serial, "--pem"]);
    assert_eq!(shown["admin"], "alice");
    assert!(shown["pem"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    // Upper case and colon-separated serials (as openssl prints them) are accepted.
    let upper = b["serial"].as_str().unwrap().to_uppercase();
    assert_eq!(ca.json(&["show", &upper])["admin"], "bob");
    let human = ca.ok(&["show", serial]);
    assert!(human.contains("status:     active"), "{human}");

    let der = ca.path_str("ca.der");
    ca.ok(&["ca-cert", "--der", "--out", &der]);
    let out = tool(
        "openssl",
        &["x509", "-inform", "DER", "-in", &der, "-noout", "-subject"],
    );
    assert!(stdout(&out).contains("Portal Admin CA"));
    assert!(ca
        .ok(&["ca-cert"])
        .starts_with("-----BEGIN CERTIFICATE-----"));
}
