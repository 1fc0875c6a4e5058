//! ca-server speaking HTTPS itself: checked with curl and `openssl s_client`;
//! SIGHUP certificate swaps; client-certificate login for renewal jobs;
//! expiring tokens and the abuse limits, from two loopback addresses.

use std::time::{Duration, Instant};

use crate::util::*;

/// A CA whose CDP/AIA point at https://127.0.0.1:`port`, with a server certificate.
fn https_ca() -> (TestCa, u16, TlsFiles) {
    let port = free_port();
    let ca = TestCa::init_for(&format!("https://127.0.0.1:{port}"), &[]);
    let (files, _) = TlsFiles::issue(&ca, "server");
    (ca, port, files)
}

fn s_client(port: u16, extra: &[&str]) -> (bool, String) {
    let mut args = vec!["s_client", "-connect"];
    let address = format!("127.0.0.1:{port}");
    args.push(&address);
    args.extend_from_slice(extra);
    let out = tool("openssl", &args);
    (
        out.status.success(),
        format!("{}{}", stdout(&out), stderr(&out)),
    )
}

#[test]
fn https_only_with_tls_1_2_and_1_3_and_a_lintable_server_certificate() {
    let (ca, port, files) = https_ca();
    let server = Server::start_tls(&ca, port, &files, None, &[]);

    // curl trusting only the CA certificate.
    let out = server.curl(&["-s", "-D", "-", "-o", "/dev/null", &server.url("/healthz")]);
    let headers = stdout(&out);
    assert!(headers.starts_with("HTTP/1.1 200"), "{headers}");
    assert_eq!(
        header_value(&headers, "strict-transport-security"),
        Some("max-age=31536000")
    );
    assert_eq!(
        header_value(&headers, "x-content-type-options"),
        Some("nosniff")
    );

    for (flag, protocol) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let (ok, text) = s_client(port, &[flag, "-CAfile", &files.ca_pem]);
        assert!(ok, "{flag}: {text}");
        assert!(
            text.contains(&format!("New, {protocol}, Cipher is")),
            "{text}"
        );
        assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    }
    // TLS 1.1 (allowed on the client side at security level 0): the server refuses it.
    let (_, text) = s_client(port, &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]);
    assert!(
        text.contains("alert protocol version") && text.contains("New, (NONE), Cipher is (NONE)"),
        "TLS 1.1: {text}"
    );

    // Plain HTTP to the TLS port: no HTTP answer at all (the handshake fails).
    let out = tool(
        "curl",
        &[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://127.0.0.1:{port}/healthz"),
        ],
    );
    assert!(!out.status.success(), "plain HTTP was answered");
    assert_eq!(stdout(&out), "000");
    // A peer that connects and never starts its handshake holds only its own
    // task (timed out after 10 s), not the accept loop.
    let _silent = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    // The server still serves HTTPS after that.
    let out = server.curl(&["-s", "-f", &server.url("/readyz")]);
    assert!(out.status.success());

    // The certificate: serverAuth, DNS + IP SANs, verifies for sslserver,
    // passes pkilint; a second one for the same name supersedes the first.
    let out = tool(
        "openssl",
        &[
            "verify",
            "-purpose",
            "sslserver",
            "-CAfile",
            &files.ca_pem,
            &files.cert,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&tool(
        "openssl",
        &["x509", "-in", &files.cert, "-noout", "-text"],
    ));
    assert!(
        text.contains("DNS:localhost, IP Address:127.0.0.1"),
        "{text}"
    );
    assert!(text.contains("TLS Web Server Authentication"), "{text}");
    assert!(
        text.contains(&format!("URI:https://127.0.0.1:{port}/crl")),
        "{text}"
    );
    let (lint_cert, lint_key) = (ca.path_str("lint.pem"), ca.path_str("lint.key"));
    let first = ca.json(&[
        "server-cert",
        "--dns",
        "ca.example.com",
        "--ip",
        "10.0.0.5",
        "--out-cert",
        &lint_cert,
        "--out-key",
        &lint_key,
    ]);
    let leaf = ca.path_str("lint-leaf.pem");
    tool("openssl", &["x509", "-in", &lint_cert, "-out", &leaf]);
    let findings = pkilint_errors("lint_pkix_cert", &[], &leaf);
    assert!(findings.is_empty(), "{findings:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&lint_key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let second = ca.json(&[
        "server-cert",
        "--dns",
        "ca.example.com",
        "--out-cert",
        &lint_cert,
        "--out-key",
        &lint_key,
    ]);
    assert_eq!(second["revoked"][0], first["serial"], "{second}");
    assert_eq!(second["tenant"], "_ca");
}

#[test]
fn bad_tls_files_stop_start_up_naming_the_file_and_the_problem() {
    let (ca, _, files) = https_ca();
    let missing = ca.path_str("missing.pem");
    let err = Server::start_fails(
        &ca,
        &[
            ("CA_TLS_CERT_FILE", &missing),
            ("CA_TLS_KEY_FILE", &files.key),
        ],
    );
    assert!(
        err.contains("tls.cert_file") && err.contains("missing.pem") && err.contains("cannot read"),
        "{err}"
    );

    let (other, _) = TlsFiles::issue(&ca, "other");
    let err = Server::start_fails(
        &ca,
        &[
            ("CA_TLS_CERT_FILE", &files.cert),
            ("CA_TLS_KEY_FILE", &other.key),
        ],
    );
    assert!(
        err.contains("tls.key_file") && err.contains("other.key") && err.contains("does not match"),
        "{err}"
    );

    // An expired certificate (made with Python cryptography, dated in the past).
    let (expired, expired_key) = (ca.path_str("expired.pem"), ca.path_str("expired.key"));
    let script = r#"
import datetime, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
key = ec.generate_private_key(ec.SECP256R1())
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
now = datetime.datetime(2020, 1, 1)
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
open(sys.argv[1], "wb").write(cert.public_bytes(serialization.Encoding.PEM))
open(sys.argv[2], "wb").write(key.private_bytes(serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
"#;
    let out = tool("python3", &["-c", script, &expired, &expired_key]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = Server::start_fails(
        &ca,
        &[
            ("CA_TLS_CERT_FILE", &expired),
            ("CA_TLS_KEY_FILE", &expired_key),
        ],
    );
    assert!(
        err.contains("tls.cert_file") && err.contains("expired.pem") && err.contains("expired on"),
        "{err}"
    );

    let err = Server::start_fails(&ca, &[("CA_TLS_CERT_FILE", &files.cert)]);
    assert!(err.contains("tls.key_file"), "{err}");
}

#[test]
fn sighup_swaps_the_certificate_while_a_request_is_in_flight() {
    let (ca, port, files) = https_ca();
    let operator = ca.token("operator");
    let server = Server::start_tls(&ca, port, &files, None, &[]);
    let before = served_serial(port);

    // A request in flight: curl streams its body from stdin (chunked), and
    // the body is finished only after the swap.
    let url = server.url("/v1/tenants/acme/admins/slow/certificates");
    let auth = format!("Authorization: Bearer {operator}");
    let mut in_flight = std::process::Command::new("curl")
        .args([
            "--cacert",
            &files.ca_pem,
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .args([
            "-X",
            "POST",
            "-H",
            &auth,
            "-H",
            "Content-Type: application/json",
            "-T",
            "-",
            &url,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = in_flight.stdin.take().unwrap();
    use std::io::Write as _;
    stdin.write_all(b"{\"policy\":").unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(Duration::from_millis(500));

    let (_, renewed) = TlsFiles::issue(&ca, "server");
    let after = renewed["serial"].as_str().unwrap().to_owned();
    assert_ne!(before, after);
    tool("kill", &["-HUP", &server.pid().to_string()]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while served_serial(port) != after {
        assert!(
            Instant::now() < deadline,
            "still serving {before}: {}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    stdin.write_all(b"\"portal-admin\"}").unwrap();
    drop(stdin);
    let out = in_flight.wait_with_output().unwrap();
    assert_eq!(
        stdout(&out),
        "201",
        "the request in flight finished on its connection"
    );

    // A broken file on SIGHUP: logged, and the previous certificate stays.
    std::fs::write(&files.key, "not a key").unwrap();
    tool("kill", &["-HUP", &server.pid().to_string()]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(served_serial(port), after);
    let log = server.log_text();
    assert!(
        log.contains("TLS certificate reloaded") && log.contains("TLS files not reloaded"),
        "{log}"
    );
}

#[test]
fn a_renewal_job_logs_in_with_its_client_certificate_until_it_is_revoked_on_every_replica() {
    let (ca, port, files) = https_ca();
    let operator = ca.token("operator");
    let a = Server::start_tls(&ca, port, &files, Some(&files.ca_pem), &[]);
    let b = Server::start_tls(&ca, free_port(), &files, Some(&files.ca_pem), &[]);
    a.issue(&operator, "alice", "{}");

    let (job_key, job_csr) = ca.new_csr("job", P256, "/CN=job");
    let job_cert = ca.path_str("job.pem");
    let job = ca.json(&[
        "sign-csr",
        "--tenant",
        "automation",
        "--admin",
        "nightly",
        "--policy",
        "automation-renewer",
        "--csr",
        &job_csr,
        "--out",
        &job_cert,
    ]);
    let job_serial = job["serial"].as_str().unwrap().to_owned();
    let call = |server: &Server, method: &str, path: &str| -> (String, String) {
        let out = server.curl(&[
            "-s",
            "--cert",
            &job_cert,
            "--key",
            &job_key,
            "-X",
            method,
            "-w",
            "\n%{http_code}",
            &server.url(path),
        ]);
        let text = stdout(&out);
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.to_owned(), body.to_owned())
    };

    // The renewer role: reissue and read, nothing else.
    let (code, body) = call(&a, "POST", "/v1/tenants/acme/admins/alice/reissue");
    assert_eq!(code, "201", "{body}");
    assert_eq!(call(&b, "GET", "/v1/certificates?tenant=acme").0, "200");
    assert_eq!(
        call(&a, "POST", "/v1/tenants/acme/admins/bob/certificates").0,
        "403"
    );
    let audit = ca.ok(&["audit", "list"]);
    assert!(
        audit.contains(&format!("cert:{job_serial}")),
        "the job is the audit actor: {audit}"
    );

    // A certificate of this CA whose policy grants no API role: refused.
    let (plain_key, plain_csr) = ca.new_csr("plain", P256, "/CN=plain");
    let plain_cert = ca.path_str("plain.pem");
    ca.ok(&[
        "sign-csr",
        "--tenant",
        "acme",
        "--admin",
        "robot",
        "--policy",
        "automation-csr",
        "--csr",
        &plain_csr,
        "--out",
        &plain_cert,
    ]);
    let out = a.curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--cert",
        &plain_cert,
        "--key",
        &plain_key,
        &a.url("/v1/certificates"),
    ]);
    assert_eq!(stdout(&out), "401");

    // Bearer tokens keep working next to client certificates.
    let (status, _) = a.api("GET", "/v1/certificates", &operator, "", &[]);
    assert_eq!(status, 200);

    // Revoked by another process: both servers refuse the next call at once.
    ca.ok(&["revoke", &job_serial, "--reason", "key-compromise"]);
    for server in [&a, &b] {
        let (code, body) = call(server, "GET", "/v1/certificates");
        assert_eq!(code, "401", "{body}");
        assert!(body.contains("revoked"), "{body}");
    }
}

#[test]
fn tokens_expire_and_failed_logins_from_one_address_get_429_but_not_others() {
    let (ca, port, files) = https_ca();
    let server = Server::start_tls(&ca, port, &files, None, &[]);

    // --expires-in 2s: works, then 401 token_expired.
    let created = Instant::now();
    let short = ca.json(&["token", "create", "--role", "auditor", "--expires-in", "2s"]);
    assert!(short["expires_at"].is_string(), "{short}");
    let short = short["token"].as_str().unwrap().to_owned();
    let (status, _) = server.api("GET", "/v1/audit", &short, "", &[]);
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_secs(3).saturating_sub(created.elapsed()));
    let (status, body) = server.api("GET", "/v1/audit", &short, "", &[]);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("token_expired")),
        "{body}"
    );

    // 30 bad tokens from 127.0.0.1: 401 up to the limit (20 a minute), then 429.
    let good = ca.token("auditor");
    let bad = "cat_0123456789abcdef_not-the-secret";
    let mut codes = Vec::new();
    for _ in 0..30 {
        codes.push(server.api("GET", "/v1/audit", bad, "", &[]).0);
    }
    assert!(codes[..18].iter().all(|c| *c == 401), "{codes:?}");
    assert_eq!(codes[29], 429, "{codes:?}");
    let out = server.curl(&[
        "-s",
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-H",
        &format!("Authorization: Bearer {good}"),
        &server.url("/v1/audit"),
    ]);
    let headers = stdout(&out);
    assert!(
        headers.starts_with("HTTP/1.1 429"),
        "even a good token from that address waits: {headers}"
    );
    let retry: u64 = header_value(&headers, "retry-after")
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{headers}");

    // Another address is not locked out: its good token works, its bad one is a plain 401.
    let from_other = |token: &str| {
        let out = server.curl(&[
            "-s",
            "--interface",
            "127.0.0.2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            &format!("Authorization: Bearer {token}"),
            &server.url("/v1/audit"),
        ]);
        stdout(&out)
    };
    assert_eq!(from_other(&good), "200");
    assert_eq!(from_other(bad), "401");
    // Public routes are not limited.
    let out = server.curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &server.url("/crl"),
    ]);
    assert_eq!(stdout(&out), "200");
}
