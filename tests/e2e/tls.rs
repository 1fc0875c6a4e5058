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
    // TLS 1.1 (allowed on the client side at security level 0): the server
    // refuses it with a fatal alert — rustls says handshake_failure (40), as
    // none of the suites such a hello offers is one it has; OpenSSL said
    // protocol_version (70).
    let (ok, text) = s_client(port, &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]);
    assert!(
        !ok && (text.contains("alert protocol version")
            || text.contains("alert handshake failure"))
            && text.contains("New, (NONE), Cipher is (NONE)"),
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

    let (job_cert, job_key, job) =
        ca.client_certificate("job", "automation", "nightly", "automation-renewer");
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
    let (plain_cert, plain_key, _) =
        ca.client_certificate("plain", "acme", "robot", "automation-csr");
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

/// A policy like the shipped `automation-renewer`, but valid for a few
/// seconds, so a real certificate of this CA expires during the test (the
/// server's clock is never faked).
const SHORT_RENEWER_POLICY: &str = r#"name = "short-renewer"
description = "Renewal job certificate that expires within the test"
kind = "csr"
key = ["ecdsa-p256"]
validity = "4s"
subject.common_name = "{admin}"
subject.organizational_unit = "{tenant}"
subject.organization = "Example Corp"
extended_key_usage = ["client-auth"]
max_active_per_admin = 1
api_role = "renewer"
"#;

#[test]
fn an_expired_client_certificate_is_refused_with_401_on_every_replica() {
    let (ca, port, files) = https_ca();
    std::fs::write(
        ca.data_dir().join("policies/short-renewer.toml"),
        SHORT_RENEWER_POLICY,
    )
    .unwrap();
    let a = Server::start_tls(&ca, port, &files, Some(&files.ca_pem), &[]);
    let b = Server::start_tls(&ca, free_port(), &files, Some(&files.ca_pem), &[]);

    let (job_cert, job_key, job) =
        ca.client_certificate("short-job", "automation", "short", "short-renewer");
    let not_after = job["not_after"].as_str().unwrap().to_owned();
    // OpenSSL reads the validity the server will see: a few seconds.
    let dates = stdout(&tool(
        "openssl",
        &["x509", "-in", &job_cert, "-noout", "-dates"],
    ));
    assert!(dates.contains("notAfter="), "{dates}");
    let call = |server: &Server| -> (String, String) {
        let out = server.curl(&[
            "-s",
            "--cert",
            &job_cert,
            "--key",
            &job_key,
            "-w",
            "\n%{http_code}",
            &server.url("/v1/certificates?tenant=acme"),
        ]);
        let text = stdout(&out);
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.to_owned(), body.to_owned())
    };
    for server in [&a, &b] {
        let (code, body) = call(server);
        assert_eq!(code, "200", "valid: {body}");
    }

    // Wait until `openssl verify` itself calls the certificate expired.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = tool("openssl", &["verify", "-CAfile", &files.ca_pem, &job_cert]);
        let said = format!("{}{}", stdout(&out), stderr(&out));
        if !out.status.success() && said.contains("certificate has expired") {
            break;
        }
        assert!(Instant::now() < deadline, "not expired by {not_after}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The handshake still completes (so the answer can say why), and both
    // replicas refuse the job with 401 naming the validity.
    for server in [&a, &b] {
        let (code, body) = call(server);
        assert_eq!(code, "401", "expired: {body}");
        assert!(body.contains("is not valid now"), "{body}");
        assert!(body.contains(job["serial"].as_str().unwrap()), "{body}");
    }
}

#[test]
fn token_expiry_and_revocation_reach_the_other_replica_on_postgres() {
    let Some(db) = PgDatabase::create("tls_tokens") else {
        return;
    };
    let ca = TestCa::init_on(&db.url);
    let (files, _) = TlsFiles::issue(&ca, "server");
    let admin = ca.token("admin");
    let a = Server::start_tls(&ca, free_port(), &files, None, &[]);
    let b = Server::start_tls(&ca, free_port(), &files, None, &[]);

    // Two tokens made through replica A's API: one expiring, one to revoke.
    let (status, short) = a.api(
        "POST",
        "/v1/tokens",
        &admin,
        r#"{"role":"auditor","name":"short","expires_in":"3s"}"#,
        &[],
    );
    assert_eq!(status, 201, "{short}");
    let created = Instant::now();
    let (status, doomed) = a.api(
        "POST",
        "/v1/tokens",
        &admin,
        r#"{"role":"auditor","name":"doomed"}"#,
        &[],
    );
    assert_eq!(status, 201, "{doomed}");
    let short_token = short["token"].as_str().unwrap().to_owned();
    let doomed_token = doomed["token"].as_str().unwrap().to_owned();
    let doomed_id = doomed["id"].as_str().unwrap().to_owned();
    // Replica B has never seen them: it finds them in the database (and caches them).
    for token in [&short_token, &doomed_token] {
        for server in [&b, &a] {
            let (status, body) = server.api("GET", "/v1/audit", token, "", &[]);
            assert_eq!(status, 200, "{body}");
        }
    }

    // Revoked on A: B, which has it cached, refuses it within its 250 ms poll.
    let (status, body) = a.api(
        "DELETE",
        &format!("/v1/tokens/{doomed_id}"),
        &admin,
        "",
        &[],
    );
    assert_eq!(status, 200, "{body}");
    let revoked = Instant::now();
    let mut tries = 0;
    loop {
        tries += 1;
        let (status, body) = b.api("GET", "/v1/audit", &doomed_token, "", &[]);
        if status == 401 {
            break;
        }
        assert_eq!(status, 200, "{body}");
        // The poll is every 250 ms; each try is a curl process and a TLS
        // handshake (100-600 ms each on this shared 2-core machine). Without
        // the poll B would accept its cached token forever.
        assert!(
            revoked.elapsed() < Duration::from_secs(2),
            "B still accepts the token revoked on A after {:?}",
            revoked.elapsed()
        );
    }
    assert_eq!(a.api("GET", "/v1/audit", &doomed_token, "", &[]).0, 401);
    println!(
        "revoked on A -> refused by B after {:?} ({tries} tries)",
        revoked.elapsed()
    );
    let listed = b.api("GET", "/v1/tokens", &admin, "", &[]).1;
    let entry = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == doomed_id.as_str())
        .cloned()
        .unwrap();
    assert!(entry["revoked_at"].is_string(), "{entry}");

    // Expired: both replicas refuse it with token_expired, at once.
    std::thread::sleep(Duration::from_secs(3).saturating_sub(created.elapsed()));
    for server in [&a, &b] {
        let (status, body) = server.api("GET", "/v1/audit", &short_token, "", &[]);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("token_expired")),
            "{body}"
        );
    }
    // Every change is in the audit chain, written by both processes.
    let report = ca.json(&["audit", "verify"]);
    assert_eq!(report["ok"], serde_json::json!(true), "{report}");
}

/// A web-PKI CA (made with Python cryptography, not this CA) and a server
/// certificate from it for 127.0.0.1, as a site whose TLS certificate comes
/// from its usual certificate provider would have.
fn foreign_server_certificate(ca: &TestCa, name: &str) -> (String, String, String) {
    let (ca_file, cert, key) = (
        ca.path_str(&format!("{name}-ca.pem")),
        ca.path_str(&format!("{name}.pem")),
        ca.path_str(&format!("{name}.key")),
    );
    let script = r#"
import datetime, ipaddress, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ExtendedKeyUsageOID
now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
later = now + datetime.timedelta(days=2)
ca_key = ec.generate_private_key(ec.SECP256R1())
ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Web PKI Test CA " + sys.argv[4])])
ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
      .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
      .not_valid_before(now).not_valid_after(later)
      .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
      .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
      .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
      .sign(ca_key, hashes.SHA256()))
key = ec.generate_private_key(ec.SECP256R1())
leaf = (x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(later)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256()))
open(sys.argv[1], "wb").write(ca.public_bytes(serialization.Encoding.PEM))
open(sys.argv[2], "wb").write(leaf.public_bytes(serialization.Encoding.PEM))
open(sys.argv[3], "wb").write(key.private_bytes(serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
"#;
    let out = tool("python3", &["-c", script, &ca_file, &cert, &key, name]);
    assert!(out.status.success(), "{}", stderr(&out));
    (ca_file, cert, key)
}

#[test]
fn crl_pull_with_tls_ca_trusts_only_that_ca_for_the_https_connection() {
    let port = free_port();
    let ca = TestCa::init_for(&format!("https://127.0.0.1:{port}"), &[]);
    let (web_ca, web_cert, web_key) = foreign_server_certificate(&ca, "web");
    let (other_ca, _, _) = foreign_server_certificate(&ca, "other");
    let files = TlsFiles {
        cert: web_cert,
        key: web_key,
        ca_pem: web_ca.clone(),
    };
    let server = Server::start_tls(&ca, port, &files, None, &[]);
    let ca_pem = ca.ca_pem();
    let out_file = ca.path("pulled.crl.pem");
    let url = server.url("/crl");
    let pull = |tls_ca: Option<&str>| {
        let mut args = vec![
            "--json",
            "crl",
            "pull",
            "--url",
            &url,
            "--ca",
            &ca_pem,
            "--out",
            out_file.to_str().unwrap(),
        ];
        if let Some(tls_ca) = tls_ca {
            args.extend_from_slice(&["--tls-ca", tls_ca]);
        }
        ca.command(&args).output().unwrap()
    };

    // Without --tls-ca the CA certificate is the TLS anchor too: this
    // server's certificate does not chain to it, so nothing is fetched.
    let out = pull(None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot fetch the CRL from") && stderr(&out).contains("certif"),
        "{}",
        stderr(&out)
    );
    assert!(!out_file.exists(), "nothing installed");
    // A --tls-ca the server's certificate does not chain to: refused the same way.
    let out = pull(Some(&other_ca));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("certif"), "{}", stderr(&out));
    assert!(!out_file.exists(), "nothing installed");
    // Not a certificate at all: named.
    let garbage = ca.path_str("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let out = pull(Some(&garbage));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("garbage.pem")
            && stderr(&out).contains("not a PEM or DER certificate"),
        "{}",
        stderr(&out)
    );

    // The right --tls-ca: fetched over HTTPS, and the CRL itself verified
    // against --ca (this CA), which OpenSSL confirms.
    let out = pull(Some(&web_ca));
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["changed"], true, "{report}");
    let out = tool(
        "openssl",
        &[
            "crl",
            "-in",
            out_file.to_str().unwrap(),
            "-CAfile",
            &ca_pem,
            "-noout",
        ],
    );
    assert!(
        out.status.success() && stderr(&out).contains("verify OK"),
        "{}",
        stderr(&out)
    );
}

/// A client certificate (clientAuth) from a CA made with Python
/// cryptography, not this one; `expired` dates it in the past.
fn foreign_client_certificate(ca: &TestCa, name: &str, expired: bool) -> (String, String) {
    let (cert, key) = (
        ca.path_str(&format!("{name}.pem")),
        ca.path_str(&format!("{name}.key")),
    );
    let script = r#"
import datetime, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ExtendedKeyUsageOID
now = datetime.datetime.now(datetime.timezone.utc)
if sys.argv[3] == "expired":
    start, end = datetime.datetime(2020, 1, 1), datetime.datetime(2020, 1, 2)
else:
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=2)
ca_key = ec.generate_private_key(ec.SECP256R1())
ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Portal Admin CA")])
key = ec.generate_private_key(ec.SECP256R1())
leaf = (x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "intruder")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256()))
open(sys.argv[1], "wb").write(leaf.public_bytes(serialization.Encoding.PEM))
open(sys.argv[2], "wb").write(key.private_bytes(serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
"#;
    let validity = if expired { "expired" } else { "valid" };
    let out = tool("python3", &["-c", script, &cert, &key, validity]);
    assert!(out.status.success(), "{}", stderr(&out));
    (cert, key)
}

#[test]
fn a_client_certificate_of_another_ca_fails_the_handshake_even_under_our_ca_name() {
    let (ca, port, files) = https_ca();
    let server = Server::start_tls(&ca, port, &files, Some(&files.ca_pem), &[]);
    let operator = ca.token("operator");
    // Issued by a CA with this CA's name but another key, valid or expired:
    // the chain does not verify, so the handshake fails (the expired one is
    // not let through to the API, as an expired certificate of ours is).
    for expired in [false, true] {
        let (cert, key) = foreign_client_certificate(&ca, &format!("intruder-{expired}"), expired);
        let out = server.curl(&[
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cert",
            &cert,
            "--key",
            &key,
            "-H",
            &format!("Authorization: Bearer {operator}"),
            &server.url("/v1/certificates"),
        ]);
        assert!(!out.status.success(), "expired={expired}: answered");
        assert_eq!(stdout(&out), "000", "expired={expired}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("alert") || stderr(&out).contains("SSL"),
            "expired={expired}: {}",
            stderr(&out)
        );
    }
    // Without a client certificate the same token works.
    let (status, _) = server.api("GET", "/v1/certificates", &operator, "", &[]);
    assert_eq!(status, 200);
}
