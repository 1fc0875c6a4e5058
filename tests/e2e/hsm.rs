//! The CA key in a PKCS#11 token, proved with SoftHSM2 and OpenSC's
//! `pkcs11-tool`: one lifecycle body run with the key file and with the
//! token, what only a token has (the key never in the data directory), and
//! its failures (wrong PIN, module, label, key; the token removed while the
//! server runs, and back).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::gateway::extract;

use crate::util::*;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "4711-user-pin";

/// Where the CA key lives in a test.
#[derive(Debug, Clone, Copy, PartialEq)]
enum KeySource {
    File,
    Pkcs11,
}

/// A SoftHSM2 configuration of its own, in the test's temp directory.
struct SoftHsm {
    conf: PathBuf,
    tokens: PathBuf,
}

impl SoftHsm {
    /// A fresh token store with one token labelled `ca`.
    fn new(dir: &Path) -> SoftHsm {
        let tokens = dir.join("softhsm-tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        let hsm = SoftHsm { conf, tokens };
        hsm.init_token("ca");
        hsm
    }

    fn init_token(&self, label: &str) {
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &self.conf)
            .args(["--init-token", "--free", "--label", label])
            .args(["--pin", PIN, "--so-pin", "so-pin-1234"])
            .output()
            .expect("softhsm2-util (install softhsm2: see .ci/run)");
        assert!(out.status.success(), "softhsm2-util: {}", stderr(&out));
    }

    /// `pkcs11-tool --list-objects --type privkey` of the `ca` token.
    fn private_keys(&self) -> String {
        let out = Command::new("pkcs11-tool")
            .env("SOFTHSM2_CONF", &self.conf)
            .args([
                "--module",
                MODULE,
                "--token-label",
                "ca",
                "--login",
                "--pin",
                PIN,
            ])
            .args(["--list-objects", "--type", "privkey"])
            .output()
            .expect("pkcs11-tool (install opensc: see .ci/run)");
        assert!(out.status.success(), "pkcs11-tool: {}", stderr(&out));
        stdout(&out)
    }
}

/// A CA whose key is where `source` says, with its certificates pointing at `base_url`.
fn new_ca(source: KeySource, base_url: &str, key: &str) -> (TestCa, Option<SoftHsm>) {
    let mut ca = TestCa {
        dir: tempfile::tempdir().unwrap(),
        database_url: None,
        env: Vec::new(),
    };
    let hsm = (source == KeySource::Pkcs11).then(|| {
        let hsm = SoftHsm::new(ca.dir.path());
        for (k, v) in [
            ("SOFTHSM2_CONF", hsm.conf.to_str().unwrap()),
            ("CA_KEY_SOURCE", "pkcs11"),
            ("CA_KEY_MODULE", MODULE),
            ("CA_KEY_TOKEN_LABEL", "ca"),
            ("CA_PKCS11_PIN", PIN),
        ] {
            ca.env.push((k.into(), v.into()));
        }
        hsm
    });
    ca.ok(&[
        "init",
        "--subject",
        "CN=Portal Admin CA,O=Example",
        "--key",
        key,
        "--base-url",
        base_url,
    ]);
    (ca, hsm)
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Fails if any file in the data directory holds a plaintext private key:
/// PEM of any kind, or the DER of an unencrypted PKCS#8 / SEC1 EC key.
fn assert_no_plaintext_key(data_dir: &Path) {
    // PKCS#8 PrivateKeyInfo: version 0, then AlgorithmIdentifier id-ecPublicKey / rsaEncryption.
    const PKCS8_EC: &[u8] = &[0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48];
    const PKCS8_RSA: &[u8] = &[0x02, 0x01, 0x00, 0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48];
    for file in files(data_dir) {
        let bytes = std::fs::read(&file).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("PRIVATE KEY-----"),
            "{} holds a PEM private key",
            file.display()
        );
        for needle in [PKCS8_EC, PKCS8_RSA] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} holds what looks like a PKCS#8 private key",
                file.display()
            );
        }
    }
}

/// issue → reissue → CSR → CRL (`openssl verify -crl_check`) → OCSP
/// (`openssl ocsp`, pre-signed and with a nonce), through both binaries.
fn lifecycle(source: KeySource) {
    let port = free_port();
    let base_url = format!("http://127.0.0.1:{port}");
    let (ca, hsm) = new_ca(source, &base_url, "ecdsa-p256");
    let ca_pem = ca.ca_pem();

    // The CLI: issue, reissue (old one revoked, CRL republished), sign a CSR.
    let first = ca.issue("acme", "alice", "portal-admin", "alice.p12");
    let alice_old = ca.cert_pem(first["serial"].as_str().unwrap());
    let out = ca.path_str("alice-new.p12");
    let second = ca.json(&[
        "reissue",
        "--tenant",
        "acme",
        "--admin",
        "alice",
        "--reason",
        "key-compromise",
        "--out",
        &out,
    ]);
    let alice_new = ca.cert_pem(second["serial"].as_str().unwrap());
    let (_, csr) = ca.new_csr("robot", P256, "/CN=robot");
    let robot = ca.path_str("robot.pem");
    ca.ok(&[
        "sign-csr",
        "--tenant",
        "acme",
        "--admin",
        "robot",
        "--policy",
        "automation-csr",
        "--csr",
        &csr,
        "--out",
        &robot,
    ]);
    let crl = ca.crl_pem();
    let (ok, text) = verify_with_crl(&ca_pem, &crl, &alice_old);
    assert!(
        !ok && text.contains("certificate revoked"),
        "{source:?}: {text}"
    );
    for good in [&alice_new, &robot] {
        let (ok, text) = verify_with_crl(&ca_pem, &crl, good);
        assert!(ok, "{source:?}: {text}");
    }

    // The server: issue, reissue, CSR over the API; OCSP and CRL.
    let operator = ca.token("operator");
    let server = Server::start_on(&ca, port, &[]);
    let issued = server.issue(&operator, "bob", "{}");
    let (bob_old, _) = extract(&ca, &issued, "bob-old");
    let reissued = server.reissue(&operator, "bob", "superseded");
    let (bob_new, _) = extract(&ca, &reissued, "bob-new");
    let (_, csr) = ca.new_csr("robot2", P256, "/CN=robot2");
    let body = serde_json::json!({
        "policy": "automation-csr",
        "csr": std::fs::read_to_string(&csr).unwrap(),
    })
    .to_string();
    let (status, answer) = server.api(
        "POST",
        "/v1/tenants/acme/admins/robot2/csr",
        &operator,
        &body,
        &[],
    );
    assert_eq!(status, 201, "{answer}");
    let robot2 = ca.path_str("robot2.pem");
    std::fs::write(&robot2, answer["certificate"].as_str().unwrap()).unwrap();

    for (cert, expect) in [
        (&bob_old, ": revoked"),
        (&bob_new, ": good"),
        (&alice_old, ": revoked"),
        (&robot2, ": good"),
    ] {
        // With a nonce (signed live), then without (pre-signed), twice.
        for extra in [&[][..], &["-no_nonce"], &["-no_nonce"]] {
            let mut args = vec!["-cert", cert.as_str()];
            args.extend_from_slice(extra);
            let text = openssl_ocsp(&server, &ca_pem, &args);
            assert!(
                text.contains(expect) && text.contains("Response verify OK"),
                "{source:?} {cert} {extra:?}: {text}"
            );
        }
    }
    // The server's CRL (republished within a second of the reissue).
    let server_crl = ca.path_str("server-crl.pem");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = server.curl(&["-s", "-f", "-o", &server_crl, &server.url("/crl.pem")]);
        assert!(out.status.success());
        let (ok, _) = verify_with_crl(&ca_pem, &server_crl, &bob_old);
        if !ok || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, text) = verify_with_crl(&ca_pem, &server_crl, &bob_old);
    assert!(
        !ok && text.contains("certificate revoked"),
        "{source:?}: {text}"
    );
    for good in [&bob_new, &robot2, &alice_new] {
        let (ok, text) = verify_with_crl(&ca_pem, &server_crl, good);
        assert!(ok, "{source:?}: {text}");
    }
    let (code, log) = server.stop();
    assert_eq!(code, Some(0), "{log}");

    // No file in the data directory holds a private key in the clear; with
    // the token, none holds one at all.
    assert_no_plaintext_key(&ca.data_dir());
    if let Some(hsm) = hsm {
        assert!(!ca.data_dir().join("ca.key").exists());
        for file in files(&ca.data_dir()) {
            let text = String::from_utf8_lossy(&std::fs::read(&file).unwrap()).into_owned();
            assert!(
                !text.contains("ca-core-encrypted-key"),
                "{} holds an (encrypted) key although every key is in the token",
                file.display()
            );
        }
        // The CA key and the OCSP responder key are in the token, sensitive
        // and never extractable.
        let listing = hsm.private_keys();
        let keys: Vec<&str> = listing.split("Private Key Object").skip(1).collect();
        assert!(keys.len() >= 2, "CA and responder keys: {listing}");
        assert!(listing.contains("label:      Portal Admin CA"), "{listing}");
        assert!(listing.contains("label:      ocsp-responder"), "{listing}");
        for key in keys {
            let access = key
                .lines()
                .find(|l| l.trim_start().starts_with("Access:"))
                .unwrap_or_else(|| panic!("no Access line: {key}"));
            assert!(
                access.contains("sensitive") && access.contains("never extractable"),
                "{access}"
            );
            assert!(
                !access
                    .replace("never extractable", "")
                    .contains("extractable"),
                "{access}"
            );
        }
    }
}

#[test]
fn lifecycle_with_the_key_file() {
    lifecycle(KeySource::File);
}

#[test]
fn lifecycle_with_the_key_in_a_pkcs11_token() {
    lifecycle(KeySource::Pkcs11);
}

#[test]
fn token_keys_of_every_supported_type_sign_what_openssl_verifies() {
    for key in ["ecdsa-p384", "rsa-2048", "rsa-3072"] {
        let (ca, _hsm) = new_ca(KeySource::Pkcs11, "http://127.0.0.1:8080", key);
        let ca_pem = ca.ca_pem();
        let text = ca.ok(&["ca-cert"]);
        assert!(text.contains("BEGIN CERTIFICATE"));
        let v = ca.issue("acme", "alice", "portal-admin", "a.p12");
        let cert = ca.cert_pem(v["serial"].as_str().unwrap());
        let (ok, text) = verify_with_crl(&ca_pem, &ca.crl_pem(), &cert);
        assert!(ok, "{key}: {text}");
        let out = tool("openssl", &["x509", "-in", &ca_pem, "-noout", "-text"]);
        let text = stdout(&out);
        let expected = if key.starts_with("rsa") {
            format!("({} bit)", &key[4..])
        } else {
            "(384 bit)".to_owned()
        };
        assert!(text.contains(&expected), "{key}: {text}");
    }
}

/// Starts `ca-server` expecting it to refuse; returns (exit code, log).
fn server_refuses(ca: &TestCa, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(bin("ca-server"));
    cmd.env("CA_DATA_DIR", ca.data_dir())
        .env("CA_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env_remove("CA_CONFIG")
        .envs(ca.env.iter().map(|(k, v)| (k, v)))
        .envs(env.iter().copied());
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ca-server started although it should have refused");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        format!("{}{}", stdout(&out), stderr(&out)),
    )
}

#[test]
fn bad_token_settings_are_refused_clearly_and_change_nothing() {
    let (ca, hsm) = new_ca(KeySource::Pkcs11, "http://127.0.0.1:8080", "ecdsa-p256");
    let hsm = hsm.unwrap();
    ca.issue("acme", "alice", "portal-admin", "a.p12");
    let before = ca.state();
    let issue = |env: &[(&str, &str)], remove: &[&str]| {
        let out = ca.path_str("x.p12");
        let mut cmd = ca.command(&["issue", "--tenant", "acme", "--admin", "bob", "--out", &out]);
        cmd.envs(env.iter().copied());
        for name in remove {
            cmd.env_remove(name);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{}", stdout(&out));
        (out.status.code().unwrap_or(-1), stderr(&out))
    };

    // Wrong PIN: exit 5, naming the token; one login attempt, so the right
    // PIN still works afterwards (SoftHSM2 would lock after a few tries).
    for _ in 0..3 {
        let (code, err) = issue(&[("CA_PKCS11_PIN", "0000")], &[]);
        assert_eq!(code, 5, "{err}");
        assert!(err.contains("token \"ca\" refused the PIN"), "{err}");
        assert!(!err.contains("0000"), "the PIN is never shown: {err}");
    }
    let (code, log) = server_refuses(&ca, &[("CA_PKCS11_PIN", "0000")]);
    assert_ne!(code, Some(0));
    assert!(log.contains("token \"ca\" refused the PIN"), "{log}");
    // No PIN at all.
    let (code, err) = issue(&[], &["CA_PKCS11_PIN"]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("CA_PKCS11_PIN"), "{err}");

    // Missing or wrong module: the key is named.
    let (code, err) = issue(&[("CA_KEY_MODULE", "/nonexistent/libpkcs11.so")], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("key.module") && err.contains("/nonexistent/libpkcs11.so"),
        "{err}"
    );
    let (code, err) = issue(&[], &["CA_KEY_MODULE"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("key.module: required"), "{err}");

    // Missing label, or a label no token has (the tokens present are named).
    let (code, err) = issue(&[], &["CA_KEY_TOKEN_LABEL"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("key.token_label: required"), "{err}");
    let (code, err) = issue(&[("CA_KEY_TOKEN_LABEL", "nope")], &[]);
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains("no token labelled \"nope\"") && err.contains("\"ca\""),
        "{err}"
    );

    // Another token without the CA key: refused naming both tokens, by the
    // CLI and at server start-up.
    hsm.init_token("other");
    let (code, err) = issue(&[("CA_KEY_TOKEN_LABEL", "other")], &[]);
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains("is not in token \"other\"")
            && err.contains("generated in token \"ca\"")
            && err.contains("Portal Admin CA"),
        "{err}"
    );
    let (code, log) = server_refuses(&ca, &[("CA_KEY_TOKEN_LABEL", "other")]);
    assert_ne!(code, Some(0));
    assert!(log.contains("is not in token \"other\""), "{log}");

    // A token-backed CA opened as a file CA, and the other way round.
    let (code, err) = issue(&[], &["CA_KEY_SOURCE"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("key.module is set but key.source is \"file\""),
        "{err}"
    );
    let (code, err) = issue(
        &[],
        &["CA_KEY_SOURCE", "CA_KEY_MODULE", "CA_KEY_TOKEN_LABEL"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("key.source") && err.contains("PKCS#11 token"),
        "{err}"
    );

    assert_eq!(ca.state(), before, "nothing changed");
    ca.issue("acme", "bob", "portal-admin", "b.p12");
}

#[test]
fn token_removed_while_serving_is_503_and_recovers_without_restart() {
    let (ca, hsm) = new_ca(KeySource::Pkcs11, "http://127.0.0.1:8080", "ecdsa-p256");
    let hsm = hsm.unwrap();
    let operator = ca.token("operator");
    let server = Server::start(&ca);
    let ca_pem = ca.ca_pem();
    let issued = server.issue(&operator, "alice", "{}");
    let (alice, _) = extract(&ca, &issued, "alice");
    let text = openssl_ocsp(&server, &ca_pem, &["-cert", &alice, "-no_nonce"]);
    assert!(text.contains(": good"), "{text}");
    let before = ca.state();

    // SoftHSM2 "removed": its token directory gone. The next signature
    // fails (CKR_OBJECT_HANDLE_INVALID from SoftHSM2), and from then on
    // every request that signs gets 503 and /readyz says why.
    let away = hsm.tokens.with_extension("away");
    std::fs::rename(&hsm.tokens, &away).unwrap();
    let path = "/v1/tenants/acme/admins/bob/certificates";
    let (status, answer) = server.api("POST", path, &operator, "{}", &[]);
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"]["code"], "signer_unavailable", "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("token \"ca\""),
        "{answer}"
    );
    let readyz = stdout(&server.curl(&["-s", "-w", "\n%{http_code}", &server.url("/readyz")]));
    assert!(readyz.ends_with("\n503"), "{readyz}");
    assert!(
        readyz.contains("\"ca_key\":false") && readyz.contains("token \\\"ca\\\""),
        "{readyz}"
    );
    // OCSP with a nonce cannot be signed: tryLater, HTTP 503.
    let request = ca.path_str("req.der");
    let out = tool(
        "openssl",
        &[
            "ocsp", "-issuer", &ca_pem, "-cert", &alice, "-reqout", &request,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let response = ca.path_str("resp.der");
    let code = stdout(&server.curl(&[
        "-s",
        "-o",
        &response,
        "-w",
        "%{http_code}",
        "-H",
        "Content-Type: application/ocsp-request",
        "--data-binary",
        &format!("@{request}"),
        &server.url("/ocsp"),
    ]));
    assert_eq!(code, "503");
    let out = tool(
        "openssl",
        &["ocsp", "-respin", &response, "-resp_text", "-noverify"],
    );
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("trylater (3)"), "{text}");
    // Pre-signed answers (signed before) are still served.
    let text = openssl_ocsp(&server, &ca_pem, &["-cert", &alice, "-no_nonce"]);
    assert!(
        text.contains(": good") && text.contains("Response verify OK"),
        "{text}"
    );

    // Back: the server re-opens the token by itself (no restart).
    std::fs::rename(&away, &hsm.tokens).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_code(&server.url("/readyz"), &[]) != "200" {
        assert!(Instant::now() < deadline, "{}", server.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        ca.state(),
        before,
        "nothing changed while the token was away"
    );
    server.issue(&operator, "bob", "{}");
    let text = openssl_ocsp(&server, &ca_pem, &["-cert", &alice]);
    assert!(
        text.contains(": good") && text.contains("Response verify OK"),
        "{text}"
    );
    // The background loop notices and logs the recovery at its next tick,
    // which may come after the requests above were already served.
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = server.log_text();
        if log.contains("CA key available again") || Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        log.contains("CA key unavailable") && log.contains("CA key available again"),
        "{log}"
    );
    assert!(!log.contains(PIN), "the PIN is never logged");
}

#[test]
fn ocsp_responder_key_may_stay_a_file_encrypted_with_the_passphrase() {
    let mut ca = TestCa {
        dir: tempfile::tempdir().unwrap(),
        database_url: None,
        env: Vec::new(),
    };
    let hsm = SoftHsm::new(ca.dir.path());
    for (k, v) in [
        ("SOFTHSM2_CONF", hsm.conf.to_str().unwrap()),
        ("CA_KEY_SOURCE", "pkcs11"),
        ("CA_KEY_MODULE", MODULE),
        ("CA_KEY_TOKEN_LABEL", "ca"),
        ("CA_PKCS11_PIN", PIN),
        ("CA_OCSP_KEY_SOURCE", "file"),
    ] {
        ca.env.push((k.into(), v.into()));
    }
    // The responder key file needs the passphrase: refused without it.
    let out = ca
        .command(&[
            "init",
            "--subject",
            "CN=Portal Admin CA",
            "--base-url",
            "http://x.test",
        ])
        .env_remove("CA_KEY_PASSPHRASE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("ocsp.key_source"), "{}", stderr(&out));
    ca.ok(&[
        "init",
        "--subject",
        "CN=Portal Admin CA",
        "--base-url",
        "http://x.test",
    ]);
    let operator = ca.token("operator");
    let server = Server::start(&ca);
    let ca_pem = ca.ca_pem();
    let issued = server.issue(&operator, "alice", "{}");
    let (alice, _) = extract(&ca, &issued, "alice");
    let text = openssl_ocsp(&server, &ca_pem, &["-cert", &alice]);
    assert!(
        text.contains(": good") && text.contains("Response verify OK"),
        "{text}"
    );
    server.stop();
    // Only the CA key is in the token; the responder's is encrypted in the store.
    let listing = hsm.private_keys();
    assert_eq!(
        listing.matches("Private Key Object").count(),
        1,
        "{listing}"
    );
    assert_no_plaintext_key(&ca.data_dir());
}

/// The trust hierarchy through the same seam: the offline root's key and the
/// issuing CA's key both generated in a token, neither ever in a file.
#[test]
fn a_root_and_its_issuing_ca_keep_their_keys_in_a_token() {
    let mut ca = TestCa::uninitialised();
    let hsm = SoftHsm::new(ca.dir.path());
    for (k, v) in [
        ("SOFTHSM2_CONF", hsm.conf.to_str().unwrap()),
        ("CA_KEY_SOURCE", "pkcs11"),
        ("CA_KEY_MODULE", MODULE),
        ("CA_KEY_TOKEN_LABEL", "ca"),
        ("CA_PKCS11_PIN", PIN),
    ] {
        ca.env.push((k.into(), v.into()));
    }
    let root_dir = ca.dir.path().join("root");
    let root = root_dir.to_str().unwrap();
    ca.ok(&[
        "root",
        "init",
        "--root-dir",
        root,
        "--subject",
        "CN=Token Root CA",
    ]);
    assert!(root_dir.join("root.token.json").exists());
    assert!(!root_dir.join("root.key").exists());
    let csr = ca.path_str("issuing.csr");
    ca.ok(&[
        "init",
        "--issuing",
        "--subject",
        "CN=Token Issuing CA",
        "--base-url",
        "http://127.0.0.1:8080",
        "--csr-out",
        &csr,
    ]);
    let issuing = ca.path_str("issuing.pem");
    ca.ok(&[
        "root",
        "sign-ca",
        "--root-dir",
        root,
        "--csr",
        &csr,
        "--out",
        &issuing,
    ]);
    let root_pem = format!("{root}/root.pem");
    ca.ok(&["ca", "import-cert", &issuing, "--chain", &root_pem]);
    let answer = ca.issue("acme", "alice", "portal-admin", "alice.p12");
    let leaf = ca.cert_pem(answer["serial"].as_str().unwrap());
    let out = tool(
        "openssl",
        &[
            "verify",
            "-purpose",
            "sslclient",
            "-CAfile",
            &root_pem,
            "-untrusted",
            &issuing,
            &leaf,
        ],
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    // Both keys (and the issuing CA's OCSP responder, later) live in the token.
    let keys = hsm.private_keys();
    assert!(keys.contains("root Token Root CA"), "{keys}");
    assert!(keys.contains("Token Issuing CA"), "{keys}");
    assert!(keys.contains("never extractable"), "{keys}");
    assert_no_plaintext_key(&ca.data_dir());
    assert_no_plaintext_key(&root_dir);
}
