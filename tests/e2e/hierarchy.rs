//! The trust hierarchy (DESIGN §2, §5, §6): an offline root signs an issuing
//! CA, the issuing CA rolls over without a flag day. Checked with OpenSSL
//! (`verify -crl_check_all`, `ocsp`), NSS `pk12util`, pkilint and nginx
//! trusting only the root.

use std::path::Path;

use crate::gateway::Nginx;
use crate::util::*;

/// A root directory and an issuing CA whose certificate it signed.
struct Hierarchy {
    ca: TestCa,
}

impl Hierarchy {
    fn root_dir(&self) -> String {
        self.ca.path_str("root")
    }

    fn root_pem(&self) -> String {
        self.ca.path_str("root/root.pem")
    }

    /// `root init`, `init --issuing`, `root sign-ca`, `ca import-cert`.
    fn new() -> Hierarchy {
        let h = Hierarchy::pending();
        h.sign_and_import("issuing1");
        h
    }

    /// `root init`, `init --issuing` (`issuing1.csr` waits for the root).
    fn pending() -> Hierarchy {
        let ca = TestCa::uninitialised();
        let h = Hierarchy { ca };
        h.ca.ok(&[
            "root",
            "init",
            "--root-dir",
            &h.root_dir(),
            "--subject",
            "CN=Portal Root CA,O=Example",
        ]);
        let csr = h.ca.path_str("issuing1.csr");
        h.ca.ok(&[
            "init",
            "--issuing",
            "--subject",
            "CN=Portal Issuing CA 1,O=Example",
            "--base-url",
            "http://127.0.0.1:8080",
            "--csr-out",
            &csr,
        ]);
        h
    }

    /// The root signs `<name>.csr`; the issuing side imports `<name>.pem`.
    fn sign_and_import(&self, name: &str) -> serde_json::Value {
        let (csr, pem) = (
            self.ca.path_str(&format!("{name}.csr")),
            self.ca.path_str(&format!("{name}.pem")),
        );
        self.ca.ok(&[
            "root",
            "sign-ca",
            "--root-dir",
            &self.root_dir(),
            "--csr",
            &csr,
            "--out",
            &pem,
        ]);
        self.ca
            .json(&["ca", "import-cert", &pem, "--chain", &self.root_pem()])
    }

    /// A root CRL, imported into the issuing side; returns its path.
    fn root_crl(&self) -> String {
        let out = self.ca.path_str("root.crl");
        self.ca.ok(&[
            "root",
            "crl",
            "--root-dir",
            &self.root_dir(),
            "--out",
            &out,
            "--pem",
        ]);
        self.ca.ok(&["ca", "import-crl", &out]);
        out
    }

    /// Issues a bundle and takes it apart: (serial, leaf.pem, key.pem, chain.pem
    /// = what the bundle carries besides the leaf).
    fn issue(&self, admin: &str) -> (String, String, String, String) {
        let p12 = self.ca.path_str(&format!("{admin}.p12"));
        let answer = self.ca.issue("acme", admin, "portal-admin", &p12);
        let pass = format!("pass:{}", answer["password"].as_str().unwrap());
        let (leaf, key, chain) = (
            self.ca.path_str(&format!("{admin}.crt")),
            self.ca.path_str(&format!("{admin}.key")),
            self.ca.path_str(&format!("{admin}.chain.pem")),
        );
        for (what, out) in [
            (&["-clcerts", "-nokeys"][..], &leaf),
            (&["-cacerts", "-nokeys"][..], &chain),
            (&["-nocerts", "-nodes"][..], &key),
        ] {
            let mut args = vec!["pkcs12", "-in", &p12, "-passin", &pass, "-out", out];
            args.extend_from_slice(what);
            let o = tool("openssl", &args);
            assert!(o.status.success(), "{}", stderr(&o));
        }
        // Strip the "Bag Attributes" text pkilint rejects (one certificate each).
        for file in [&leaf, &chain] {
            let o = tool("openssl", &["x509", "-in", file, "-out", file]);
            assert!(o.status.success(), "{}", stderr(&o));
        }
        (
            answer["serial"].as_str().unwrap().to_owned(),
            leaf,
            key,
            chain,
        )
    }
}

/// `openssl verify -CAfile root -untrusted issuing… -crl_check_all -CRLfile crls`.
fn verify_chain(root: &str, untrusted: &[&str], crls: &str, leaf: &str) -> (bool, String) {
    let mut args = vec!["verify", "-purpose", "sslclient", "-CAfile", root];
    for u in untrusted {
        args.extend_from_slice(&["-untrusted", u]);
    }
    args.extend_from_slice(&["-crl_check_all", "-CRLfile", crls, leaf]);
    let out = tool("openssl", &args);
    (
        out.status.success(),
        format!("{}{}", stdout(&out), stderr(&out)),
    )
}

fn concat(ca: &TestCa, name: &str, files: &[&str]) -> String {
    let text: String = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    let path = ca.path_str(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn pem_count(text: &str, label: &str) -> usize {
    text.matches(&format!("-----BEGIN {label}-----")).count()
}

#[test]
fn an_issuing_ca_waits_for_its_certificate_and_refuses_anything_but_the_right_one() {
    let ca = TestCa::uninitialised();
    let root_dir = ca.path_str("root");
    ca.ok(&[
        "root",
        "init",
        "--root-dir",
        &root_dir,
        "--subject",
        "CN=Portal Root CA,O=Example",
    ]);
    let csr = ca.path_str("issuing.csr");
    let created = ca.json(&[
        "init",
        "--issuing",
        "--subject",
        "CN=Portal Issuing CA 1,O=Example",
        "--base-url",
        "http://127.0.0.1:8080",
        "--csr-out",
        &csr,
    ]);
    assert_eq!(created["state"], "pending");
    // The CSR is a real PKCS#10 request whose signature verifies.
    let out = tool("openssl", &["req", "-in", &csr, "-noout", "-verify"]);
    assert!(
        format!("{}{}", stdout(&out), stderr(&out)).contains("verify OK"),
        "{}",
        stderr(&out)
    );

    // Nothing is issued before the certificate is there (exit 5, the reason named).
    let (code, message) = ca.fail(&[
        "issue",
        "--tenant",
        "acme",
        "--admin",
        "alice",
        "--out",
        &ca.path_str("a.p12"),
    ]);
    assert_eq!(code, 5, "{message}");
    assert!(message.contains("ca import-cert"), "{message}");
    assert!(!ca.path("a.p12").exists());

    // ca-server starts and says why it is not ready.
    let port = free_port();
    let log = std::fs::File::create(ca.path("pending.log")).unwrap();
    let mut server = std::process::Command::new(bin("ca-server"))
        .env("CA_DATA_DIR", ca.data_dir())
        .env("CA_LISTEN", format!("127.0.0.1:{port}"))
        .env("CA_KEY_PASSPHRASE", PASSPHRASE)
        .env_remove("CA_CONFIG")
        .env_remove("CA_DATABASE_URL")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let readyz = format!("http://127.0.0.1:{port}/readyz");
    let mut body = String::new();
    for _ in 0..200 {
        let out = tool("curl", &["-s", "-w", "\n%{http_code}", &readyz]);
        body = stdout(&out);
        if body.ends_with("503") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = server.kill();
    let _ = server.wait();
    assert!(body.ends_with("503"), "{body}");
    assert!(body.contains("waits for its certificate"), "{body}");

    // A certificate for another key: refused, naming why.
    let (_other_key, other_csr) = ca.new_csr("other", P256, "/CN=Other CA");
    let wrong = ca.path_str("wrong.pem");
    ca.ok(&[
        "root",
        "sign-ca",
        "--root-dir",
        &root_dir,
        "--csr",
        &other_csr,
        "--out",
        &wrong,
    ]);
    let root_pem = ca.path_str("root/root.pem");
    let (code, message) = ca.fail(&["ca", "import-cert", &wrong, "--chain", &root_pem]);
    assert_eq!(code, 2, "{message}");
    assert!(
        message.contains("not for the pending issuing CA's key"),
        "{message}"
    );

    // The right certificate with another root as --chain: refused.
    let issuing = ca.path_str("issuing.pem");
    ca.ok(&[
        "root",
        "sign-ca",
        "--root-dir",
        &root_dir,
        "--csr",
        &csr,
        "--out",
        &issuing,
    ]);
    let other_root = ca.path_str("other-root");
    ca.ok(&[
        "root",
        "init",
        "--root-dir",
        &other_root,
        "--subject",
        "CN=Someone Else's Root",
    ]);
    let other_root_pem = format!("{other_root}/root.pem");
    let (code, message) = ca.fail(&["ca", "import-cert", &issuing, "--chain", &other_root_pem]);
    assert_eq!(code, 2, "{message}");
    assert!(message.contains("does not chain to the root"), "{message}");
    // The leaf itself as "root": not self-signed.
    let (code, message) = ca.fail(&["ca", "import-cert", &issuing, "--chain", &issuing]);
    assert_eq!(code, 2, "{message}");
    assert!(message.contains("not a self-signed root"), "{message}");
    // Still pending after every refusal.
    let (code, _) = ca.fail(&["ca-cert"]);
    assert_eq!(code, 5);

    let imported = ca.json(&["ca", "import-cert", &issuing, "--chain", &root_pem]);
    assert_eq!(imported["state"], "active", "{imported}");
    assert!(imported["crl_number"].as_u64().is_some(), "{imported}");
    // Importing again: nothing is pending any more.
    let (code, message) = ca.fail(&["ca", "import-cert", &issuing, "--chain", &root_pem]);
    assert_eq!(code, 3, "{message}");
}

#[test]
fn leaves_of_an_issuing_ca_verify_through_the_chain_and_lint_clean() {
    let h = Hierarchy::new();
    let root_crl = h.root_crl();
    let (serial, leaf, _key, chain) = h.issue("alice");
    let issuing = h.ca.path_str("issuing1.pem");

    // The bundle carries the issuing CA, not the root.
    let chain_text = std::fs::read_to_string(&chain).unwrap();
    assert_eq!(pem_count(&chain_text, "CERTIFICATE"), 1, "{chain_text}");
    let bundled = tool("openssl", &["x509", "-in", &chain, "-noout", "-subject"]);
    assert!(
        stdout(&bundled).contains("Portal Issuing CA 1"),
        "{}",
        stdout(&bundled)
    );

    // CDP and caIssuers point at the issuer's own URLs.
    let id = h.ca.json(&["ca", "issuers"])["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ext = tool(
        "openssl",
        &[
            "x509",
            "-in",
            &leaf,
            "-noout",
            "-ext",
            "crlDistributionPoints,authorityInfoAccess",
        ],
    );
    let ext = stdout(&ext);
    assert!(ext.contains(&format!("/crl/{id}")), "{ext}");
    assert!(ext.contains(&format!("/ca/{id}.crt")), "{ext}");

    let crl = h.ca.path_str("issuing1.crl");
    h.ca.ok(&["crl", "--out", &crl, "--pem"]);
    let crls = concat(&h.ca, "crls.pem", &[&crl, &root_crl]);
    let (ok, text) = verify_chain(&h.root_pem(), &[&issuing], &crls, &leaf);
    assert!(ok, "{text}");
    // Without the issuing CA the chain does not reach the root.
    let (ok, text) = verify_chain(&h.root_pem(), &[], &crls, &leaf);
    assert!(!ok, "{text}");

    // pkilint: root, issuing CA, leaf, both CRLs.
    for cert in [h.root_pem(), issuing.clone(), leaf.clone()] {
        let findings = pkilint_errors("lint_pkix_cert", &[], &cert);
        assert!(findings.is_empty(), "{cert}: {findings:?}");
    }
    for crl in [&crl, &root_crl] {
        let findings = pkilint_errors("lint_crl", &["-t", "CRL", "-p", "PKIX"], crl);
        assert!(findings.is_empty(), "{crl}: {findings:?}");
    }

    // NSS imports the bundle with its chain: the issuing CA is listed too.
    let nssdb = h.ca.path_str("nssdb");
    std::fs::create_dir_all(&nssdb).unwrap();
    let db = format!("sql:{nssdb}");
    let out = tool("certutil", &["-N", "--empty-password", "-d", &db]);
    assert!(out.status.success(), "{}", stderr(&out));
    let answer =
        h.ca.issue("acme", "nss", "portal-admin", &h.ca.path_str("nss.p12"));
    let out = tool(
        "pk12util",
        &[
            "-i",
            &h.ca.path_str("nss.p12"),
            "-d",
            &db,
            "-W",
            answer["password"].as_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = stdout(&tool("certutil", &["-L", "-d", &db]));
    assert!(listed.contains("Portal Issuing CA 1"), "{listed}");
    assert!(listed.contains("nss (acme)"), "{listed}");

    // Revoked: refused through the chain.
    h.ca.ok(&["revoke", &serial, "--reason", "key-compromise"]);
    h.ca.ok(&["crl", "--out", &crl, "--pem"]);
    let crls = concat(&h.ca, "crls.pem", &[&crl, &root_crl]);
    let (ok, text) = verify_chain(&h.root_pem(), &[&issuing], &crls, &leaf);
    assert!(!ok && text.contains("revoked"), "{text}");
    // A root CRL revoking the issuing CA refuses every leaf under it.
    let (_, _, _, _) = h.issue("bob");
    let bob = h.ca.path_str("bob.crt");
    let issuing_serial = stdout(&tool(
        "openssl",
        &["x509", "-in", &issuing, "-noout", "-serial"],
    ))
    .trim()
    .trim_start_matches("serial=")
    .to_lowercase();
    h.ca.ok(&[
        "root",
        "revoke-ca",
        "--root-dir",
        &h.root_dir(),
        &issuing_serial,
        "--reason",
        "ca-compromise",
    ]);
    let root_crl = h.root_crl();
    let crls = concat(&h.ca, "crls.pem", &[&crl, &root_crl]);
    let (ok, text) = verify_chain(&h.root_pem(), &[&issuing], &crls, &bob);
    assert!(!ok && text.contains("revoked"), "{text}");
}

#[test]
fn the_server_serves_the_chain_the_root_and_every_crl() {
    let h = Hierarchy::new();
    h.root_crl();
    let server = Server::start(&h.ca);
    let id = h.ca.json(&["ca", "issuers"])["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let get = |path: &str| stdout(&server.curl(&["-s", "-f", &server.url(path)]));
    let chain = get("/ca.pem");
    assert_eq!(pem_count(&chain, "CERTIFICATE"), 2, "{chain}");
    let issuing = std::fs::read_to_string(h.ca.path("issuing1.pem")).unwrap();
    let root = std::fs::read_to_string(h.root_pem()).unwrap();
    assert!(
        chain.starts_with(issuing.trim()),
        "issuing CA first: {chain}"
    );
    assert!(
        chain.trim_end().ends_with(root.trim()),
        "root last: {chain}"
    );
    assert_eq!(get("/root.pem").trim(), root.trim());
    assert_eq!(get(&format!("/ca/{id}.pem")).trim(), issuing.trim());
    let crls = get("/crls.pem");
    assert_eq!(pem_count(&crls, "X509 CRL"), 2, "{crls}");
    let crls_file = h.ca.path_str("served-crls.pem");
    std::fs::write(&crls_file, &crls).unwrap();
    let (_, leaf, _, _) = h.issue("alice");
    let (ok, text) = verify_chain(
        &h.root_pem(),
        &[&h.ca.path_str("issuing1.pem")],
        &crls_file,
        &leaf,
    );
    assert!(ok, "{text}");
    // /crl/{id} is the issuer's CRL (DER), verified by OpenSSL against the issuing CA.
    let der = h.ca.path_str("issuer.crl");
    let out = server.curl(&["-s", "-f", "-o", &der, &server.url(&format!("/crl/{id}"))]);
    assert!(out.status.success());
    let out = tool(
        "openssl",
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            &der,
            "-noout",
            "-CAfile",
            &h.ca.path_str("issuing1.pem"),
        ],
    );
    assert!(stderr(&out).contains("verify OK"), "{}", stderr(&out));
    let missing = http_code(&server.url("/crl/0000000000000000"), &[]);
    assert_eq!(missing, "404");
}

#[test]
fn a_rollover_keeps_old_certificates_valid_revocable_and_answered() {
    let h = Hierarchy::new();
    let (alice, alice_leaf, alice_key, alice_chain) = h.issue("alice");
    let (bob, bob_leaf, bob_key, bob_chain) = h.issue("bob");
    let old_id = h.ca.json(&["ca", "issuers"])["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The gateway pins the root and pulls every CRL in one file.
    h.root_crl();
    let gateway_crls = h.ca.path_str("gateway-crls.pem");
    let pull = |server: &Server| {
        h.ca.json(&[
            "crl",
            "pull",
            "--url",
            &server.url("/crls.pem"),
            "--ca",
            &h.root_pem(),
            "--out",
            &gateway_crls,
        ])
    };
    let before = Server::start(&h.ca);
    let pulled = pull(&before);
    assert_eq!(pulled["changed"], true, "{pulled}");
    let text = std::fs::read_to_string(&gateway_crls).unwrap();
    assert_eq!(pem_count(&text, "X509 CRL"), 2, "{text}");
    // Against another root, every CRL is refused and the file is kept.
    let stranger = h.ca.path_str("stranger");
    h.ca.ok(&[
        "root",
        "init",
        "--root-dir",
        &stranger,
        "--subject",
        "CN=Stranger Root",
    ]);
    let (code, message) = h.ca.fail(&[
        "crl",
        "pull",
        "--url",
        &before.url("/crls.pem"),
        "--ca",
        &format!("{stranger}/root.pem"),
        "--out",
        &gateway_crls,
    ]);
    assert_eq!(code, 2, "{message}");
    assert_eq!(std::fs::read_to_string(&gateway_crls).unwrap(), text);
    drop(before);

    // A rollover must stay under the same root.
    let new_csr = h.ca.path_str("issuing2.csr");
    h.ca.ok(&[
        "ca",
        "rollover",
        "--subject",
        "CN=Portal Issuing CA 2,O=Example",
        "--csr-out",
        &new_csr,
    ]);
    // Until the import, issuance continues from the old issuer.
    let (_, early_leaf, _, _) = h.issue("early");
    let issuer = tool(
        "openssl",
        &["x509", "-in", &early_leaf, "-noout", "-issuer"],
    );
    assert!(
        stdout(&issuer).contains("Portal Issuing CA 1"),
        "{}",
        stdout(&issuer)
    );
    let imported = h.sign_and_import("issuing2");
    assert_eq!(imported["retired"], 1, "{imported}");
    let new_id = imported["issuer"].as_str().unwrap().to_owned();
    assert_ne!(new_id, old_id);

    let (carol, carol_leaf, carol_key, carol_chain) = h.issue("carol");
    let (dave, dave_leaf, dave_key, dave_chain) = h.issue("dave");
    let issuer = tool(
        "openssl",
        &["x509", "-in", &carol_leaf, "-noout", "-issuer"],
    );
    assert!(
        stdout(&issuer).contains("Portal Issuing CA 2"),
        "{}",
        stdout(&issuer)
    );
    let ext = stdout(&tool(
        "openssl",
        &[
            "x509",
            "-in",
            &carol_leaf,
            "-noout",
            "-ext",
            "crlDistributionPoints",
        ],
    ));
    assert!(ext.contains(&format!("/crl/{new_id}")), "{ext}");

    // Revoke one of each issuer.
    h.ca.ok(&["revoke", &bob, "--reason", "key-compromise"]);
    h.ca.ok(&["revoke", &dave, "--reason", "key-compromise"]);
    h.root_crl();

    let server = Server::start(&h.ca);
    let crls = stdout(&server.curl(&["-s", "-f", &server.url("/crls.pem")]));
    assert_eq!(
        pem_count(&crls, "X509 CRL"),
        3,
        "old, new and root CRL: {crls}"
    );
    // The same pull, unchanged, now verifies the new issuer's CRL too: it
    // fetched the new issuing CA from /ca/{id}.crt and checked it chains to the root.
    let pulled = pull(&server);
    assert_eq!(pulled["changed"], true, "{pulled}");
    let crls = std::fs::read_to_string(&gateway_crls).unwrap();
    assert_eq!(pem_count(&crls, "X509 CRL"), 3, "{crls}");
    let crls_file = h.ca.path_str("crls.pem");
    std::fs::write(&crls_file, &crls).unwrap();

    // Each issuer's CRL has its own numbers and lists its own revocation
    // only: bob (old issuer), not dave (new issuer), and the other way round.
    let fetch_crl = |id: &str, name: &str, lists: &str, not: &str| {
        let path = h.ca.path_str(name);
        let out = server.curl(&["-s", "-f", "-o", &path, &server.url(&format!("/crl/{id}"))]);
        assert!(out.status.success(), "/crl/{id}");
        let text = stdout(&tool(
            "openssl",
            &["crl", "-inform", "DER", "-in", &path, "-noout", "-text"],
        ))
        .to_uppercase();
        assert!(text.contains(&lists.to_uppercase()), "{name}: {text}");
        assert!(!text.contains(&not.to_uppercase()), "{name}: {text}");
        path
    };
    let old_crl = fetch_crl(&old_id, "old.crl", &bob, &dave);
    let new_crl = fetch_crl(&new_id, "new.crl", &dave, &bob);
    for crl in [&old_crl, &new_crl] {
        let pem = format!("{crl}.pem");
        let o = tool(
            "openssl",
            &["crl", "-inform", "DER", "-in", crl, "-out", &pem],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let findings = pkilint_errors("lint_crl", &["-t", "CRL", "-p", "PKIX"], &pem);
        assert!(findings.is_empty(), "{crl}: {findings:?}");
    }

    // OpenSSL: both issuers' leaves verify to the root; the revoked ones do not.
    let (old_pem, new_pem) = (h.ca.path_str("issuing1.pem"), h.ca.path_str("issuing2.pem"));
    let untrusted = [old_pem.as_str(), new_pem.as_str()];
    for (leaf, good) in [
        (&alice_leaf, true),
        (&carol_leaf, true),
        (&bob_leaf, false),
        (&dave_leaf, false),
    ] {
        let (ok, text) = verify_chain(&h.root_pem(), &untrusted, &crls_file, leaf);
        assert_eq!(ok, good, "{leaf}: {text}");
    }

    // OCSP answers for both issuers, each signed by its own delegated responder.
    let url = server.url("/ocsp");
    let ocsp = |issuer: &str, leaf: &str| {
        let out = tool(
            "openssl",
            &[
                "ocsp",
                "-url",
                &url,
                "-issuer",
                issuer,
                "-cert",
                leaf,
                "-CAfile",
                &h.root_pem(),
                "-verify_other",
                issuer,
            ],
        );
        format!("{}{}", stdout(&out), stderr(&out))
    };
    let text = ocsp(&old_pem, &alice_leaf);
    assert!(
        text.contains(": good") && text.contains("Response verify OK"),
        "{text}"
    );
    let text = ocsp(&old_pem, &bob_leaf);
    assert!(text.contains(": revoked"), "{text}");
    let text = ocsp(&new_pem, &carol_leaf);
    assert!(
        text.contains(": good") && text.contains("Response verify OK"),
        "{text}"
    );
    let text = ocsp(&new_pem, &dave_leaf);
    assert!(text.contains(": revoked"), "{text}");
    // A serial of one issuer asked under the other is unknown, not good
    // (with -serial, OpenSSL names the -issuer certificate in the CertID).
    let serial = format!("0x{alice}");
    let out = tool(
        "openssl",
        &[
            "ocsp",
            "-url",
            &url,
            "-issuer",
            &new_pem,
            "-serial",
            &serial,
            "-CAfile",
            &h.root_pem(),
            "-verify_other",
            &new_pem,
        ],
    );
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains(": unknown"), "{text}");
    // A CertID mixing the old issuer's name with the new one's key: unauthorized.
    let text = ocsp(&new_pem, &alice_leaf);
    assert!(text.contains("unauthorized"), "{text}");

    // nginx trusting only the root, with every CRL: old and new let in, revoked refused.
    let portal = h.ca.path("nginx/conf/portal");
    std::fs::create_dir_all(&portal).unwrap();
    std::fs::copy(h.root_pem(), portal.join("root.pem")).unwrap();
    std::fs::write(portal.join("crls.pem"), &crls).unwrap();
    let nginx = Nginx::start(
        &h.ca,
        "portal-hierarchy.conf",
        None,
        Path::new(&h.root_pem()),
    );
    let with_chain = |leaf: &str, chain: &str, name: &str| {
        concat(&h.ca, &format!("{name}.full.pem"), &[leaf, chain])
    };
    let alice_full = with_chain(&alice_leaf, &alice_chain, "alice");
    let carol_full = with_chain(&carol_leaf, &carol_chain, "carol");
    let bob_full = with_chain(&bob_leaf, &bob_chain, "bob");
    let dave_full = with_chain(&dave_leaf, &dave_chain, "dave");
    assert_eq!(
        nginx.get(&alice_full, &alice_key),
        200,
        "{}",
        nginx.error_log()
    );
    assert_eq!(
        nginx.get(&carol_full, &carol_key),
        200,
        "{}",
        nginx.error_log()
    );
    assert_eq!(nginx.get(&bob_full, &bob_key), 400, "{}", nginx.error_log());
    assert_eq!(
        nginx.get(&dave_full, &dave_key),
        400,
        "{}",
        nginx.error_log()
    );
    assert!(
        nginx.error_log().contains("revoked"),
        "{}",
        nginx.error_log()
    );
    let _ = carol;
}

/// The issuer name of the leaf in an API answer's bundle.
fn issuer_of(ca: &TestCa, answer: &serde_json::Value, name: &str) -> String {
    use base64::Engine;
    let p12 = ca.path_str(&format!("{name}.p12"));
    let der = base64::engine::general_purpose::STANDARD
        .decode(answer["pkcs12"].as_str().unwrap())
        .unwrap();
    std::fs::write(&p12, der).unwrap();
    let pass = format!("pass:{}", answer["password"].as_str().unwrap());
    let leaf = ca.path_str(&format!("{name}.crt"));
    let out = tool(
        "openssl",
        &[
            "pkcs12", "-in", &p12, "-passin", &pass, "-clcerts", "-nokeys", "-out", &leaf,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&tool(
        "openssl",
        &["x509", "-in", &leaf, "-noout", "-issuer"],
    ))
}

/// Polls `check` every 100 ms for up to 10 s.
fn soon(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "not within 10 s: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn a_running_server_follows_the_import_and_a_rollover_without_a_restart() {
    let h = Hierarchy::pending();
    let server = Server::start_pending(&h.ca);
    let body = r#"{"policy":"portal-admin"}"#;
    let path = "/v1/tenants/acme/admins/alice/certificates";
    let (status, answer) = server.api("POST", path, "no-token-yet", body, &[]);
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"]["code"], "not_ready", "{answer}");

    // The import reaches the running server: ready, and it issues.
    h.sign_and_import("issuing1");
    let operator = h.ca.token("operator");
    let readyz = server.url("/readyz");
    let ready = || {
        let out = server.curl(&["-s", "-o", "/dev/null", "-w", "%{http_code}", &readyz]);
        stdout(&out) == "200"
    };
    soon("/readyz 200 after the import", ready);
    let alice = server.issue(&operator, "alice", body);
    assert!(issuer_of(&h.ca, &alice, "alice").contains("Portal Issuing CA 1"));

    // A rollover's import: new certificates come from the new issuer, with
    // the same server process; the old issuer's CRL is still served.
    let new_csr = h.ca.path_str("issuing2.csr");
    h.ca.ok(&[
        "ca",
        "rollover",
        "--subject",
        "CN=Portal Issuing CA 2,O=Example",
        "--csr-out",
        &new_csr,
    ]);
    let old_id = h.ca.json(&["ca", "issuers"])["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let imported = h.sign_and_import("issuing2");
    let new_id = imported["issuer"].as_str().unwrap().to_owned();
    let mut n = 0;
    soon("a certificate from the new issuer", || {
        n += 1;
        let admin = format!("carol{n}");
        let answer = server.issue(&operator, &admin, body);
        issuer_of(&h.ca, &answer, &admin).contains("Portal Issuing CA 2")
    });
    for id in [&old_id, &new_id] {
        let out = server.curl(&[
            "-s",
            "-f",
            "-o",
            "/dev/null",
            &server.url(&format!("/crl/{id}")),
        ]);
        assert!(out.status.success(), "/crl/{id}: {}", stderr(&out));
    }
    // Alice (old issuer) is still revocable through the same server.
    let (status, answer) = server.api(
        "POST",
        &format!(
            "/v1/certificates/{}/revoke",
            alice["serial"].as_str().unwrap()
        ),
        &operator,
        r#"{"reason":"key-compromise"}"#,
        &[],
    );
    assert_eq!(status, 200, "{answer}");
    assert!(server.log_text().contains("the active issuer changed"));

    // The console's status page has one row per issuer, each with its CRL.
    let cookie = crate::console::cookie_pair(&crate::console::sign_in(&server, &operator));
    let (code, page) = crate::console::get(&server, &cookie, "/ui/status");
    assert_eq!(code, "200", "{page}");
    for (id, state) in [(&new_id, "active"), (&old_id, "retired")] {
        let row = page
            .split("<tr ")
            .find(|row| row.contains(&format!("id=\"issuer-{id}\"")))
            .unwrap_or_else(|| panic!("no row for issuer {id}: {page}"));
        assert!(row.contains(&format!("<td>{state}</td>")), "{row}");
        assert!(row.contains(&format!("href=\"/crl/{id}\"")), "{row}");
    }
}
