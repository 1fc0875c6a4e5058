//! Bad input gets a clear error, the right exit code, no panic, and changes nothing.

use crate::util::*;

#[test]
fn bad_names_are_refused_naming_the_rule() {
    let ca = TestCa::init();
    let before = ca.state();
    let long = "x".repeat(65);
    for (tenant, admin) in [
        ("", "alice"),
        ("acme", ""),
        (long.as_str(), "alice"),
        ("acme", "al ice"),
        ("ac/me", "alice"),
        ("acme", "alice;drop"),
        ("acme", "ünï"),
    ] {
        let (code, err) = ca.fail(&[
            "issue", "--tenant", tenant, "--admin", admin, "--out", "x.p12",
        ]);
        assert_eq!(code, 2, "{tenant}/{admin}: {err}");
        assert!(err.contains("A-Z a-z 0-9 . _ @ -"), "{err}");
    }
    let (code, err) = ca.fail(&[
        "--json", "issue", "--tenant", "a b", "--admin", "x", "--out", "x.p12",
    ]);
    assert_eq!(code, 2);
    let v: serde_json::Value = serde_json::from_str(err.trim()).unwrap();
    assert_eq!(v["error"]["code"], "invalid_input");
    assert!(v["error"]["message"].as_str().unwrap().contains("tenant"));
    assert!(!ca.path("x.p12").exists());
    assert_eq!(ca.state(), before);
}

#[test]
fn wrong_or_missing_passphrase_and_missing_data_dir() {
    let ca = TestCa::init();
    let before = ca.state();
    let out = ca
        .command(&[
            "issue", "--tenant", "acme", "--admin", "alice", "--out", "a.p12",
        ])
        .env("CA_KEY_PASSPHRASE", "not the passphrase")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert!(
        stderr(&out).contains("wrong passphrase"),
        "{}",
        stderr(&out)
    );
    let out = ca
        .command(&["crl"])
        .env_remove("CA_KEY_PASSPHRASE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert!(
        stderr(&out).contains("CA_KEY_PASSPHRASE"),
        "{}",
        stderr(&out)
    );
    // Passphrase from a file works.
    std::fs::write(ca.path("pass"), format!("{PASSPHRASE}\n")).unwrap();
    let out = ca
        .command(&["--passphrase-file", &ca.path_str("pass"), "crl"])
        .env_remove("CA_KEY_PASSPHRASE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let after_crl = ca.state();
    assert_ne!(after_crl, before, "the CRL is audited");

    let out = ca
        .command(&["list"])
        .arg("--data-dir")
        .arg(ca.path("missing"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(stderr(&out).contains("ca-cli init"), "{}", stderr(&out));

    // Init with a short passphrase or none is refused and creates nothing.
    let dir = ca.path("fresh");
    let out = ca
        .command(&[
            "init",
            "--subject",
            "CN=x",
            "--base-url",
            "http://x.example",
        ])
        .arg("--data-dir")
        .arg(&dir)
        .env("CA_KEY_PASSPHRASE", "short")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert!(!dir.join("ca.key").exists());
}

#[test]
fn bad_values_name_what_was_wrong() {
    let ca = TestCa::init();
    let a = ca.issue("acme", "alice", "portal-admin", "a.p12");
    let serial = a["serial"].as_str().unwrap().to_owned();
    let before = ca.state();
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec![
                "issue", "--tenant", "acme", "--admin", "bob", "--policy", "nope", "--out", "b.p12",
            ],
            2,
            "known policies are",
        ),
        (
            vec![
                "issue",
                "--tenant",
                "acme",
                "--admin",
                "bob",
                "--policy",
                "automation-csr",
                "--out",
                "b.p12",
            ],
            2,
            "sign-csr",
        ),
        (
            vec!["revoke", "00112233445566778899aabbccddeeff"],
            4,
            "no certificate with serial",
        ),
        (vec!["revoke", "not-hex"], 2, "invalid serial"),
        (
            vec!["revoke", &serial, "--reason", "lost-it"],
            2,
            "key-compromise",
        ),
        (vec!["show", "abc"], 2, "32 hex digits"),
        (
            vec!["issue", "--tenant", "_ca", "--admin", "x", "--out", "r.p12"],
            2,
            "reserved",
        ),
        (
            vec!["list", "--status", "gone"],
            2,
            "active, revoked or expired",
        ),
        (vec!["list", "--expiring-within", "soon"], 2, "397d"),
        (
            vec![
                "reissue", "--tenant", "acme", "--admin", "alice", "--reason", "whatever", "--out",
                "c.p12",
            ],
            2,
            "unknown revocation reason",
        ),
        (
            vec!["init", "--subject", "CN=x", "--base-url", "ftp://nope"],
            3,
            "already exists",
        ),
    ];
    for (args, code, needle) in cases {
        let (got, err) = ca.fail(&args);
        assert_eq!(got, code, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one-line reason: {err}");
    }
    assert_eq!(ca.state(), before);

    ca.ok(&["revoke", &serial]);
    let before = ca.state();
    let (code, err) = ca.fail(&["revoke", &serial, "--reason", "key-compromise"]);
    assert_eq!(code, 3);
    assert!(err.contains("already revoked"), "{err}");
    assert_eq!(ca.state(), before);
}

#[test]
fn bad_csrs_are_refused() {
    let ca = TestCa::init();
    let before = ca.state();
    std::fs::write(
        ca.path("garbage.csr"),
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    )
    .unwrap();
    let (code, err) = ca.fail(&[
        "sign-csr",
        "--tenant",
        "acme",
        "--admin",
        "r",
        "--policy",
        "automation-csr",
        "--csr",
        &ca.path_str("garbage.csr"),
        "--out",
        "x.pem",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("not a PEM or DER"), "{err}");

    // A CSR whose signature does not verify: flip a byte of the signature.
    let (_, csr) = ca.new_csr("good", P256, "/CN=r");
    let der = ca.path_str("good.der");
    tool(
        "openssl",
        &["req", "-in", &csr, "-outform", "DER", "-out", &der],
    );
    let mut bytes = std::fs::read(&der).unwrap();
    let last = bytes.len() - 5;
    bytes[last] ^= 0x01;
    std::fs::write(&der, &bytes).unwrap();
    let (code, err) = ca.fail(&[
        "sign-csr",
        "--tenant",
        "acme",
        "--admin",
        "r",
        "--policy",
        "automation-csr",
        "--csr",
        &der,
        "--out",
        "x.pem",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("signature does not verify"), "{err}");
    assert!(!ca.path("x.pem").exists());
    assert_eq!(ca.state(), before);
}

#[test]
fn policy_check_reports_file_line_and_what_is_allowed() {
    let ca = TestCa::init();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let ok = ca.json(&["policy", "check", shipped.to_str().unwrap()]);
    let names: Vec<_> = ok["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    for n in [
        "portal-admin",
        "portal-admin-legacy",
        "automation-csr",
        "ocsp-responder",
    ] {
        assert!(names.contains(&n.to_owned()), "{names:?}");
    }
    let dir = ca.path("bad-policies");
    std::fs::create_dir_all(&dir).unwrap();
    let base = "name = \"NAME\"\nkey = \"ecdsa-p256\"\nvalidity = \"30d\"\nsubject.common_name = \"{admin}\"\n";
    std::fs::write(
        dir.join("unknown.toml"),
        format!("{}colour = \"red\"\n", base.replace("NAME", "unknown")),
    )
    .unwrap();
    std::fs::write(
        dir.join("duration.toml"),
        base.replace("NAME", "duration").replace("30d", "a month"),
    )
    .unwrap();
    std::fs::write(
        dir.join("keytype.toml"),
        base.replace("NAME", "keytype")
            .replace("ecdsa-p256", "dsa-1024"),
    )
    .unwrap();
    std::fs::write(
        dir.join("template.toml"),
        base.replace("NAME", "template")
            .replace("{admin}", "{email}"),
    )
    .unwrap();
    let (code, err) = ca.fail(&["policy", "check", dir.to_str().unwrap()]);
    assert_eq!(code, 2);
    for needle in [
        "unknown.toml:5:",
        "colour",
        "duration.toml:3:",
        "397d",
        "keytype.toml:2:",
        "rsa-2048",
        "template.toml:4:",
        "{tenant}, {admin}",
    ] {
        assert!(err.contains(needle), "missing {needle}: {err}");
    }
}
