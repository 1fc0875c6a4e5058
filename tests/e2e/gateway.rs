//! The portal gateway's side: nginx with the shipped `examples/nginx/portal.conf`,
//! a CRL kept fresh by `ca-cli crl pull`, and the lock-out of a lost device.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::util::*;

/// nginx with its own prefix on a free port, using the shipped portal.conf unmodified.
pub(crate) struct Nginx {
    prefix: PathBuf,
    conf: PathBuf,
    pub(crate) port: u16,
}

impl Nginx {
    /// Starts nginx with `examples/nginx/<shipped>` included unmodified.
    pub(crate) fn start(
        ca: &TestCa,
        shipped: &str,
        crl_pem: Option<&Path>,
        ca_pem: &Path,
    ) -> Nginx {
        let prefix = ca.path("nginx");
        let portal = prefix.join("conf/portal");
        std::fs::create_dir_all(&portal).unwrap();
        std::fs::create_dir_all(prefix.join("logs")).unwrap();
        let port = free_port();
        std::fs::write(
            portal.join("listen.conf"),
            format!("listen 127.0.0.1:{port} ssl;\n"),
        )
        .unwrap();
        let (key, cert) = (portal.join("server.key"), portal.join("server.pem"));
        let out = tool(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=portal.test",
                "-keyout",
                key.to_str().unwrap(),
                "-out",
                cert.to_str().unwrap(),
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        std::fs::copy(ca_pem, portal.join("ca.pem")).unwrap();
        if let Some(crl) = crl_pem {
            std::fs::copy(crl, portal.join("crl.pem")).unwrap();
        }
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/nginx")
            .join(shipped)
            .canonicalize()
            .unwrap();
        let conf = prefix.join("conf/nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "user root;\nworker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log info;\nevents {{ worker_connections 64; }}\n\
                 http {{\n  access_log {p}/logs/access.log;\n  include {shipped};\n}}\n",
                p = prefix.display(),
                shipped = shipped.display()
            ),
        )
        .unwrap();
        let nginx = Nginx { prefix, conf, port };
        let out = tool("nginx", &nginx.args(&["-t"]));
        assert!(out.status.success(), "nginx -t: {}", stderr(&out));
        let out = tool("nginx", &nginx.args(&[]));
        assert!(out.status.success(), "nginx: {}", stderr(&out));
        nginx
    }

    fn args<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec![
            "-p",
            self.prefix.to_str().unwrap(),
            "-c",
            self.conf.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args
    }

    pub(crate) fn error_log(&self) -> String {
        std::fs::read_to_string(self.prefix.join("logs/error.log")).unwrap_or_default()
    }

    fn reload_command(&self) -> String {
        format!(
            "nginx -p {} -c {} -s reload",
            self.prefix.display(),
            self.conf.display()
        )
    }

    fn crl_path(&self) -> PathBuf {
        self.prefix.join("conf/portal/crl.pem")
    }

    /// GET /whoami with a client certificate; returns the HTTP status (0 if the handshake failed).
    pub(crate) fn get(&self, cert: &str, key: &str) -> u16 {
        let url = format!("https://127.0.0.1:{}/whoami", self.port);
        let out = tool(
            "curl",
            &[
                "-s",
                "-k",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--cert",
                cert,
                "--key",
                key,
                &url,
            ],
        );
        stdout(&out).trim().parse().unwrap_or(0)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let pid = std::fs::read_to_string(self.prefix.join("nginx.pid")).unwrap_or_default();
        if !pid.trim().is_empty() {
            let _ = tool("kill", &["-QUIT", pid.trim()]);
        }
    }
}

/// Extracts (cert.pem, key.pem) from an API issue/reissue answer.
pub(crate) fn extract(ca: &TestCa, answer: &serde_json::Value, name: &str) -> (String, String) {
    let p12 = ca.path_str(&format!("{name}.p12"));
    std::fs::write(
        &p12,
        base64::engine::general_purpose::STANDARD
            .decode(answer["pkcs12"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let pass = format!("pass:{}", answer["password"].as_str().unwrap());
    let (cert, key) = (
        ca.path_str(&format!("{name}.crt")),
        ca.path_str(&format!("{name}.key")),
    );
    let out = tool(
        "openssl",
        &[
            "pkcs12", "-in", &p12, "-passin", &pass, "-clcerts", "-nokeys", "-out", &cert,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = tool(
        "openssl",
        &[
            "pkcs12", "-in", &p12, "-passin", &pass, "-nocerts", "-nodes", "-out", &key,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    (cert, key)
}

fn pull(
    ca: &TestCa,
    url: &str,
    ca_pem: &str,
    out: &Path,
    on_change: Option<&str>,
) -> std::process::Output {
    let mut args = vec![
        "--json",
        "crl",
        "pull",
        "--url",
        url,
        "--ca",
        ca_pem,
        "--out",
        out.to_str().unwrap(),
    ];
    if let Some(cmd) = on_change {
        args.extend_from_slice(&["--on-change", cmd]);
    }
    // The CA passphrase is in the environment (a shell that holds it): the
    // hook must not inherit it.
    ca.command(&args).output().unwrap()
}

#[test]
fn a_lost_device_is_locked_out_at_the_nginx_gateway() {
    // The CA serves HTTPS itself, so its CDP/AIA are https URLs and the
    // gateway's `crl pull` fetches over TLS, trusting the CA certificate.
    let port = free_port();
    let ca = TestCa::init_for(&format!("https://127.0.0.1:{port}"), &[]);
    let operator = ca.token("operator");
    let (files, _) = TlsFiles::issue(&ca, "server");
    let server = Server::start_tls(&ca, port, &files, None, &[]);
    let ca_pem = ca.ca_pem();
    let bootstrap = ca.path("bootstrap-crl.pem");
    let out = pull(&ca, &server.url("/crl"), &ca_pem, &bootstrap, None);
    assert!(out.status.success(), "{}", stderr(&out));

    let issued = server.issue(&operator, "alice", "{}");
    let (old_cert, old_key) = extract(&ca, &issued, "old");
    let text = stdout(&tool(
        "openssl",
        &["x509", "-in", &old_cert, "-noout", "-text"],
    ));
    assert!(
        text.contains(&format!("URI:{}/crl", server.base)) && server.base.starts_with("https://"),
        "CDP on https: {text}"
    );
    let nginx = Nginx::start(&ca, "portal.conf", Some(&bootstrap), Path::new(&ca_pem));
    assert_eq!(
        nginx.get(&old_cert, &old_key),
        200,
        "the issued certificate gets in"
    );
    // A legacy bundle (3DES bags, SHA-1 MAC, RSA-2048: for old Windows and
    // macOS) delivers a key and certificate that log in the same way.
    let legacy = server.issue(&operator, "bob", r#"{"policy":"portal-admin-legacy"}"#);
    let (legacy_cert, legacy_key) = extract(&ca, &legacy, "legacy");
    assert_eq!(
        nginx.get(&legacy_cert, &legacy_key),
        200,
        "the certificate from a legacy bundle gets in"
    );
    // No certificate: refused.
    let url = format!("https://127.0.0.1:{}/whoami", nginx.port);
    let code = stdout(&tool(
        "curl",
        &["-s", "-k", "-o", "/dev/null", "-w", "%{http_code}", &url],
    ));
    assert_eq!(code, "400", "no client certificate must be refused");

    // Device lost: reissue with key-compromise, then the gateway's pull loop.
    let started = Instant::now();
    let reissued = server.reissue(&operator, "alice", "key-compromise");
    let reload = nginx.reload_command();
    let refused_after = loop {
        let out = pull(
            &ca,
            &server.url("/crl"),
            &ca_pem,
            &nginx.crl_path(),
            Some(&reload),
        );
        assert!(out.status.success(), "crl pull: {}", stderr(&out));
        let code = nginx.get(&old_cert, &old_key);
        if code != 200 {
            assert_eq!(code, 400, "refusal is nginx's certificate error");
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "old certificate still accepted after 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    println!("reissue response -> old certificate refused by nginx: {refused_after:?}");
    let (new_cert, new_key) = extract(&ca, &reissued, "new");
    assert_eq!(
        nginx.get(&new_cert, &new_key),
        200,
        "the new certificate gets in"
    );
    let log = nginx.error_log();
    assert!(
        log.contains("certificate revoked") || log.contains("revoked"),
        "nginx error log: {log}"
    );
}

/// Serves a directory over HTTP on a free loopback port (Python's http.server).
struct StaticServer {
    child: std::process::Child,
    port: u16,
}

impl StaticServer {
    fn start(dir: &Path) -> StaticServer {
        let port = free_port();
        let child = std::process::Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
                dir.to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3");
        let url = format!("http://127.0.0.1:{port}/");
        for _ in 0..100 {
            if http_code(&url, &[]) == "200" {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        StaticServer { child, port }
    }

    fn url(&self, file: &str) -> String {
        format!("http://127.0.0.1:{}/{file}", self.port)
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn crl_pull_refuses_tampered_foreign_and_older_crls_and_keeps_the_installed_file() {
    let ca = TestCa::init();
    let other = TestCa::init();
    let ca_pem = ca.ca_pem();
    let served = ca.path("served");
    std::fs::create_dir_all(&served).unwrap();
    // An older CRL (lower number), then the current one.
    let older = served.join("older.der");
    ca.ok(&["crl", "--out", older.to_str().unwrap()]);
    let v = ca.issue("acme", "alice", "portal-admin", "a.p12");
    ca.ok(&["revoke", v["serial"].as_str().unwrap()]);
    let current = served.join("current.der");
    ca.ok(&["crl", "--out", current.to_str().unwrap()]);
    let mut tampered = std::fs::read(&current).unwrap();
    let at = tampered.len() - 10;
    tampered[at] ^= 0x01;
    std::fs::write(served.join("tampered.der"), &tampered).unwrap();
    other.ok(&["crl", "--out", served.join("foreign.der").to_str().unwrap()]);
    std::fs::write(served.join("garbage.der"), b"<html>not a crl</html>").unwrap();
    let http = StaticServer::start(&served);

    let installed = ca.path("crl.pem");
    let marker = ca.path("changed");
    let on_change = format!("env > {}", marker.display());
    let out = pull(
        &ca,
        &http.url("current.der"),
        &ca_pem,
        &installed,
        Some(&on_change),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["changed"], true);
    assert_eq!(v["revoked"], 1);
    assert!(marker.exists(), "--on-change runs when the CRL changed");
    let hook_env = std::fs::read_to_string(&marker).unwrap();
    assert!(
        !hook_env.contains("CA_KEY_PASSPHRASE") && !hook_env.contains(crate::util::PASSPHRASE),
        "the CA passphrase leaves the environment before hooks run:\n{hook_env}"
    );
    let good = std::fs::read(&installed).unwrap();
    assert!(String::from_utf8_lossy(&good).starts_with("-----BEGIN X509 CRL-----"));
    let text = stdout(&tool(
        "openssl",
        &[
            "crl",
            "-in",
            installed.to_str().unwrap(),
            "-noout",
            "-verify",
            "-CAfile",
            &ca_pem,
        ],
    ));
    let _ = text;

    // Unchanged: exit 0, no --on-change.
    std::fs::remove_file(&marker).unwrap();
    let out = pull(
        &ca,
        &http.url("current.der"),
        &ca_pem,
        &installed,
        Some(&on_change),
    );
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["changed"], false);
    assert!(
        !marker.exists(),
        "--on-change must not run when nothing changed"
    );

    for (file, needle) in [
        ("tampered.der", "signature does not verify"),
        ("foreign.der", "signature does not verify"),
        ("older.der", "not newer"),
        ("garbage.der", "not a DER or PEM CRL"),
    ] {
        let out = pull(&ca, &http.url(file), &ca_pem, &installed, Some(&on_change));
        assert_eq!(out.status.code(), Some(2), "{file}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{file}: {}", stderr(&out));
        assert_eq!(
            std::fs::read(&installed).unwrap(),
            good,
            "{file} replaced the installed CRL"
        );
        assert!(!marker.exists());
    }
    // Unreachable CA: exit 1, file kept.
    let out = pull(
        &ca,
        &format!("http://127.0.0.1:{}/crl", free_port()),
        &ca_pem,
        &installed,
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(std::fs::read(&installed).unwrap(), good);
    // DER output.
    let der_out = ca.path("crl.der");
    let out = ca
        .command(&[
            "crl",
            "pull",
            "--url",
            &http.url("current.der"),
            "--ca",
            &ca_pem,
            "--out",
            der_out.to_str().unwrap(),
            "--der",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        std::fs::read(&der_out).unwrap(),
        std::fs::read(&current).unwrap()
    );
}

#[test]
fn crl_pull_interval_mode_stops_cleanly_on_sigterm() {
    let ca = TestCa::init();
    let server = Server::start(&ca);
    let ca_pem = ca.ca_pem();
    let out = ca.path("crl.pem");
    let mut child = ca
        .command(&[
            "crl",
            "pull",
            "--url",
            &server.url("/crl"),
            "--ca",
            &ca_pem,
            "--out",
            out.to_str().unwrap(),
            "--interval",
            "1s",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !out.exists() {
        assert!(Instant::now() < deadline, "no CRL written");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1200));
    tool("kill", &["-TERM", &child.id().to_string()]);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}
