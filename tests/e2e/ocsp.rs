//! The OCSP responder, proved with `openssl ocsp`, Python `cryptography`,
//! pkilint and nginx (`ssl_ocsp on`).

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::gateway::{extract, Nginx};
use crate::util::*;

/// Runs `openssl ocsp` against the server; returns its combined output.
pub(crate) fn openssl_ocsp(server: &Server, ca_pem: &str, extra: &[&str]) -> String {
    let url = server.url("/ocsp");
    let mut args = vec!["ocsp", "-url", &url, "-issuer", ca_pem, "-CAfile", ca_pem];
    args.extend_from_slice(extra);
    let out = tool("openssl", &args);
    format!("{}{}", stdout(&out), stderr(&out))
}

fn post_ocsp(server: &Server, request: &Path, response: &Path) {
    let out = server.curl(&[
        "-s",
        "-f",
        "-X",
        "POST",
        "-H",
        "Content-Type: application/ocsp-request",
        "--data-binary",
        &format!("@{}", request.display()),
        "-o",
        response.to_str().unwrap(),
        &server.url("/ocsp"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
}

fn response_text(response: &Path) -> String {
    let out = tool(
        "openssl",
        &[
            "ocsp",
            "-respin",
            response.to_str().unwrap(),
            "-resp_text",
            "-noverify",
        ],
    );
    format!("{}{}", stdout(&out), stderr(&out))
}

#[test]
fn good_revoked_unknown_with_nonce_and_revocation_within_a_second() {
    let ca = TestCa::init();
    let operator = ca.token("operator");
    let server = Server::start(&ca);
    let ca_pem = ca.ca_pem();
    let issued = server.issue(&operator, "alice", "{}");
    let (old_cert, _) = extract(&ca, &issued, "old");

    // Good, with a nonce (openssl's default) that must be echoed and verify.
    let text = openssl_ocsp(&server, &ca_pem, &["-cert", &old_cert]);
    assert!(
        text.contains(": good") && text.contains("Response verify OK"),
        "{text}"
    );
    assert!(!text.contains("WARNING: no nonce"), "{text}");
    // Good from the pre-signed path (no nonce), twice.
    for _ in 0..2 {
        let text = openssl_ocsp(&server, &ca_pem, &["-cert", &old_cert, "-no_nonce"]);
        assert!(
            text.contains(": good") && text.contains("Response verify OK"),
            "{text}"
        );
    }
    // Unknown for a serial this CA never issued.
    let text = openssl_ocsp(
        &server,
        &ca_pem,
        &["-serial", "0x0123456789abcdef0123456789abcdef"],
    );
    assert!(
        text.contains(": unknown") && text.contains("Response verify OK"),
        "{text}"
    );

    // Reissue: the old serial is revoked in OCSP at once, even from the cache.
    let started = Instant::now();
    server.reissue(&operator, "alice", "key-compromise");
    let text = openssl_ocsp(&server, &ca_pem, &["-cert", &old_cert, "-no_nonce"]);
    let elapsed = started.elapsed();
    println!("reissue response -> OCSP revoked: {elapsed:?}");
    assert!(
        text.contains(": revoked") && text.contains("Reason: keyCompromise"),
        "{text}"
    );
    assert!(text.contains("Revocation Time"), "{text}");
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
    // And signed live for a nonce: the state remembered from the first
    // nonce request above was dropped with the revocation.
    let text = openssl_ocsp(&server, &ca_pem, &["-cert", &old_cert]);
    assert!(
        text.contains(": revoked") && text.contains("Response verify OK"),
        "{text}"
    );
    let metrics = stdout(&server.curl(&["-s", &server.url("/metrics")]));
    assert!(
        metrics.contains("ca_ocsp_responses_total{kind=\"cache_hit\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ca_ocsp_responder_expires_in_seconds"),
        "{metrics}"
    );
}

#[test]
fn a_revocation_by_the_cli_reaches_cached_ocsp_answers() {
    let ca = TestCa::init();
    let v = ca.issue("acme", "bob", "portal-admin", "bob.p12");
    let serial = v["serial"].as_str().unwrap().to_owned();
    let cert = ca.cert_pem(&serial);
    let ca_pem = ca.ca_pem();
    let server = Server::start(&ca);
    // Both the pre-signed answer and the remembered state (nonce requests) are cached.
    for nonce in [&["-no_nonce"][..], &[]] {
        let text = openssl_ocsp(&server, &ca_pem, &[&["-cert", &cert][..], nonce].concat());
        assert!(text.contains(": good"), "{text}");
    }
    let before = Instant::now();
    ca.ok(&["revoke", &serial, "--reason", "affiliation-changed"]);
    println!("ca-cli revoke took {:?}", before.elapsed());
    let started = Instant::now();
    loop {
        let cached = openssl_ocsp(&server, &ca_pem, &["-cert", &cert, "-no_nonce"]);
        let live = openssl_ocsp(&server, &ca_pem, &["-cert", &cert]);
        if cached.contains(": revoked") && live.contains(": revoked") {
            assert!(cached.contains("affiliationChanged"), "{cached}");
            assert!(live.contains("affiliationChanged"), "{live}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "cached good answer outlived a CLI revocation by 1 s"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    println!("ca-cli revoke -> OCSP revoked: {:?}", started.elapsed());
}

#[test]
fn get_requests_carry_rfc5019_caching_headers_and_lint_clean() {
    let ca = TestCa::init();
    let good = ca.issue("acme", "alice", "portal-admin", "a.p12");
    let revoked = ca.issue("acme", "bob", "portal-admin", "b.p12");
    ca.ok(&[
        "revoke",
        revoked["serial"].as_str().unwrap(),
        "--reason",
        "key-compromise",
    ]);
    let ca_pem = ca.ca_pem();
    let server = Server::start(&ca);

    for (name, target) in [
        (
            "good",
            vec![
                "-cert".to_owned(),
                ca.cert_pem(good["serial"].as_str().unwrap()),
            ],
        ),
        (
            "revoked",
            vec![
                "-cert".to_owned(),
                ca.cert_pem(revoked["serial"].as_str().unwrap()),
            ],
        ),
        (
            "unknown",
            vec![
                "-serial".to_owned(),
                "0x7f00000000000000000000000000abcd".to_owned(),
            ],
        ),
    ] {
        let request = ca.path(&format!("{name}.req"));
        let mut args = vec![
            "ocsp",
            "-issuer",
            &ca_pem,
            "-no_nonce",
            "-reqout",
            request.to_str().unwrap(),
        ];
        args.extend(target.iter().map(String::as_str));
        let out = tool("openssl", &args);
        assert!(out.status.success(), "{}", stderr(&out));
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(std::fs::read(&request).unwrap());
        let url = server.url(&format!(
            "/ocsp/{}",
            encoded
                .replace('+', "%2B")
                .replace('/', "%2F")
                .replace('=', "%3D")
        ));
        let response = ca.path(&format!("{name}.resp"));
        let headers =
            stdout(&server.curl(&["-s", "-D", "-", "-o", response.to_str().unwrap(), &url]));
        assert!(
            headers.contains("content-type: application/ocsp-response"),
            "{headers}"
        );
        let out = tool(
            "openssl",
            &[
                "ocsp",
                "-respin",
                response.to_str().unwrap(),
                "-reqin",
                request.to_str().unwrap(),
                "-issuer",
                &ca_pem,
                "-CAfile",
                &ca_pem,
            ],
        );
        let text = format!("{}{}", stdout(&out), stderr(&out));
        assert!(text.contains("Response verify OK"), "{name}: {text}");
        let text = response_text(&response);
        assert!(
            text.contains(&format!("Cert Status: {name}")),
            "{name}: {text}"
        );
        let findings = pkilint_errors("lint_ocsp_response", &[], response.to_str().unwrap());
        assert!(findings.is_empty(), "{name}: pkilint {findings:?}");
        if name == "unknown" {
            continue; // not pre-signed: nothing would invalidate it when issued
        }
        assert!(
            headers.contains("cache-control: public, max-age="),
            "{headers}"
        );
        let max_age: i64 = headers
            .split("max-age=")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(max_age > 0 && max_age <= 60, "{headers}");
        assert!(
            headers.contains("last-modified: ") && headers.contains("expires: "),
            "{headers}"
        );
        let etag = header_value(&headers, "etag").unwrap().to_owned();
        let code = http_code(&url, &[&format!("If-None-Match: {etag}")]);
        assert_eq!(code, "304", "{name}");
        // Unencoded '/' in the base64 (as some clients send it) works too.
        let raw = server.url(&format!("/ocsp/{encoded}"));
        let code = http_code(&raw, &[]);
        assert_eq!(code, "200");
    }
}

#[test]
fn malformed_unauthorized_long_nonce_sha256_and_several_certids() {
    let ca = TestCa::init();
    let other = TestCa::init();
    let a = ca.issue("acme", "alice", "portal-admin", "a.p12");
    let b = ca.issue("acme", "bob", "portal-admin", "b.p12");
    let (cert_a, cert_b) = (
        ca.cert_pem(a["serial"].as_str().unwrap()),
        ca.cert_pem(b["serial"].as_str().unwrap()),
    );
    let foreign = other.issue("x", "y", "portal-admin", "f.p12");
    let foreign_cert = other.cert_pem(foreign["serial"].as_str().unwrap());
    let ca_pem = ca.ca_pem();
    let other_pem = other.ca_pem();
    let server = Server::start(&ca);

    // Garbage and empty bodies: malformedRequest, never a 500.
    for (name, body) in [
        ("garbage", b"this is not DER".to_vec()),
        ("empty", Vec::new()),
        ("truncated", vec![0x30, 0x82, 0x01]),
    ] {
        let request = ca.path(&format!("{name}.bin"));
        std::fs::write(&request, &body).unwrap();
        let response = ca.path(&format!("{name}.resp"));
        post_ocsp(&server, &request, &response);
        let text = response_text(&response);
        assert!(text.contains("malformedrequest"), "{name}: {text}");
    }
    let code = http_code(&server.url("/ocsp/%%%not-base64"), &[]);
    assert_eq!(
        code, "200",
        "malformed GET is an OCSP answer, not an HTTP error"
    );

    // Another CA's certificate: unauthorized.
    let text = {
        let url = server.url("/ocsp");
        let out = tool(
            "openssl",
            &[
                "ocsp",
                "-url",
                &url,
                "-issuer",
                &other_pem,
                "-cert",
                &foreign_cert,
                "-CAfile",
                &other_pem,
            ],
        );
        format!("{}{}", stdout(&out), stderr(&out))
    };
    assert!(text.contains("unauthorized"), "{text}");

    // Built with Python cryptography: a SHA-256 CertID, and a 40-byte nonce (refused).
    let script = r#"
import sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
cert = x509.load_pem_x509_certificate(open(sys.argv[1],'rb').read())
issuer = x509.load_pem_x509_certificate(open(sys.argv[2],'rb').read())
b = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA256())
if sys.argv[4] == 'long-nonce':
    b = b.add_extension(x509.OCSPNonce(b'n' * 40), critical=False)
open(sys.argv[3],'wb').write(b.build().public_bytes(serialization.Encoding.DER))
"#;
    for (mode, expect) in [("sha256", "good"), ("long-nonce", "malformed")] {
        let request = ca.path(&format!("{mode}.req"));
        let out = tool(
            "python3",
            &[
                "-c",
                script,
                &cert_a,
                &ca_pem,
                request.to_str().unwrap(),
                mode,
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let response = ca.path(&format!("{mode}.resp"));
        post_ocsp(&server, &request, &response);
        let check = r#"
import sys
from cryptography.x509 import ocsp
r = ocsp.load_der_ocsp_response(open(sys.argv[1],'rb').read())
if r.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
    print('malformed' if r.response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST else r.response_status)
else:
    print(r.certificate_status.name.lower(), r.hash_algorithm.name)
"#;
        let out = tool("python3", &["-c", check, response.to_str().unwrap()]);
        let text = stdout(&out);
        assert!(text.starts_with(expect), "{mode}: {text} {}", stderr(&out));
        if mode == "sha256" {
            assert!(text.contains("sha256"), "{text}");
        }
    }

    // Two CertIDs in one request: both answered.
    let text = openssl_ocsp(&server, &ca_pem, &["-cert", &cert_a, "-cert", &cert_b]);
    assert_eq!(text.matches(": good").count(), 2, "{text}");
    assert!(text.contains("Response verify OK"), "{text}");
}

#[test]
fn the_responder_certificate_is_delegated_and_rotates() {
    let ca = TestCa::init();
    let server = Server::start(&ca);
    let shown = ca.json(&["ocsp-signer", "show"]);
    let pem = ca.path("responder.pem");
    std::fs::write(&pem, shown["pem"].as_str().unwrap()).unwrap();
    let text = stdout(&tool(
        "openssl",
        &["x509", "-in", pem.to_str().unwrap(), "-noout", "-text"],
    ));
    assert!(
        text.contains("OCSP Signing") && text.contains("OCSP No Check"),
        "{text}"
    );
    let findings = pkilint_errors("lint_pkix_cert", &[], pem.to_str().unwrap());
    assert!(findings.is_empty(), "{findings:?}");
    let out = tool(
        "openssl",
        &[
            "x509",
            "-in",
            pem.to_str().unwrap(),
            "-noout",
            "-startdate",
            "-enddate",
        ],
    );
    assert!(stdout(&out).contains("notAfter="));

    let rotated = ca.json(&["ocsp-signer", "rotate"]);
    assert_ne!(rotated["serial"], shown["serial"]);
    let ca_pem = ca.ca_pem();
    let v = ca.issue("acme", "alice", "portal-admin", "a.p12");
    let cert = ca.cert_pem(v["serial"].as_str().unwrap());
    let want = rotated["serial"].as_str().unwrap().to_uppercase();
    let started = Instant::now();
    loop {
        let text = openssl_ocsp(&server, &ca_pem, &["-cert", &cert, "-resp_text"]);
        if text.to_uppercase().replace(':', "").contains(&want) {
            assert!(text.contains("Response verify OK"), "{text}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "server did not pick up the rotated responder: {text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn nginx_with_ssl_ocsp_refuses_a_reissued_device() {
    let port = free_port();
    let ca = TestCa::init_for(&format!("http://127.0.0.1:{port}"), &[]);
    let operator = ca.token("operator");
    let server = Server::start_on(&ca, port, &[]);
    let issued = server.issue(&operator, "alice", "{}");
    let (cert, key) = extract(&ca, &issued, "alice");
    let ca_pem = ca.ca_pem();
    let nginx = Nginx::start(&ca, "portal-ocsp.conf", None, Path::new(&ca_pem));
    assert_eq!(
        nginx.get(&cert, &key),
        200,
        "good certificate: {}",
        nginx.error_log()
    );
    let started = Instant::now();
    let reissued = server.reissue(&operator, "alice", "key-compromise");
    let code = nginx.get(&cert, &key);
    println!(
        "reissue response -> nginx (ssl_ocsp) refuses: {:?}",
        started.elapsed()
    );
    assert_eq!(
        code,
        400,
        "revoked certificate must be refused: {}",
        nginx.error_log()
    );
    let (new_cert, new_key) = extract(&ca, &reissued, "alice-new");
    assert_eq!(nginx.get(&new_cert, &new_key), 200);
}
