//! Shared helpers: a CA in a temp directory driven through the real `ca-cli`
//! binary, and the independent tools that check its output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// `openssl req -newkey` arguments for a P-256 key.
pub const P256: &[&str] = &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];

pub const PASSPHRASE: &str = "correct horse battery staple";

/// Directory holding the workspace binaries (target/debug or target/release).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/e2e-<hash>
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is not built: run the tests with `cargo test --workspace` (it builds the binaries first)",
        path.display()
    );
    path
}

/// Runs an external checker; a missing tool fails the test with the install hint.
pub fn tool(program: &str, args: &[&str]) -> Output {
    tool_in(program, args, None)
}

pub fn tool_in(program: &str, args: &[&str], dir: Option<&Path>) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args);
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {program}: {e} (install it: see .ci/run — openssl, libnss3-tools, pip pkilint cryptography)")
    })
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A CA in its own temp directory.
pub struct TestCa {
    pub dir: tempfile::TempDir,
    /// `CA_DATABASE_URL` for every command and server (`None`: SQLite in the data directory).
    pub database_url: Option<String>,
    /// More variables for every command and server (a token's settings).
    pub env: Vec<(String, String)>,
}

impl TestCa {
    pub fn init() -> TestCa {
        Self::init_with(&[])
    }

    pub fn init_with(extra: &[&str]) -> TestCa {
        Self::init_for("http://127.0.0.1:8080", extra)
    }

    /// A CA whose certificates point at `base_url` for CRL, OCSP and caIssuers.
    pub fn init_for(base_url: &str, extra: &[&str]) -> TestCa {
        Self::init_full(base_url, extra, None)
    }

    /// A CA whose store is the PostgreSQL database at `database_url`.
    pub fn init_on(database_url: &str) -> TestCa {
        Self::init_full("http://127.0.0.1:8080", &[], Some(database_url.to_owned()))
    }

    fn init_full(base_url: &str, extra: &[&str], database_url: Option<String>) -> TestCa {
        let ca = TestCa {
            dir: tempfile::tempdir().unwrap(),
            database_url,
            env: Vec::new(),
        };
        ca.init_here(base_url, extra);
        ca
    }

    /// A temp directory for a CA not created yet (to prepare its data directory first).
    pub fn uninitialised() -> TestCa {
        TestCa {
            dir: tempfile::tempdir().unwrap(),
            database_url: None,
            env: Vec::new(),
        }
    }

    /// `ca-cli init` in this directory.
    pub fn init_here(&self, base_url: &str, extra: &[&str]) {
        let ca = self;
        let mut args = vec![
            "init",
            "--subject",
            "CN=Portal Admin CA,O=Example",
            "--base-url",
            base_url,
        ];
        args.extend_from_slice(extra);
        ca.ok(&args);
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("ca-data")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn path_str(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_owned()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("ca-cli"));
        cmd.arg("--data-dir")
            .arg(self.data_dir())
            .args(args)
            .current_dir(self.dir.path());
        cmd.env("CA_KEY_PASSPHRASE", PASSPHRASE)
            .env_remove("CA_CONFIG")
            .env_remove("CA_DATA_DIR");
        match &self.database_url {
            Some(url) => cmd.env("CA_DATABASE_URL", url),
            None => cmd.env_remove("CA_DATABASE_URL"),
        };
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "ca-cli {args:?} failed: {}",
            stderr(&out)
        );
        stdout(&out)
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let text = self.ok(&all);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    /// Runs a command that must fail; returns (exit code, stderr).
    pub fn fail(&self, args: &[&str]) -> (i32, String) {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "ca-cli {args:?} unexpectedly succeeded: {}",
            stdout(&out)
        );
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "ca-cli {args:?} panicked: {err}");
        (out.status.code().unwrap_or(-1), err)
    }

    /// Everything observable about the store: all certificates and the audit log.
    pub fn state(&self) -> String {
        let list = self.json(&["list", "--limit", "1000"]);
        let audit = self.json(&["audit", "list"]);
        format!("{list}\n{audit}")
    }

    /// Issues a bundle; returns the JSON answer (serial, password, ...).
    pub fn issue(&self, tenant: &str, admin: &str, policy: &str, out: &str) -> Value {
        let out = self.path_str(out);
        self.json(&[
            "issue", "--tenant", tenant, "--admin", admin, "--policy", policy, "--out", &out,
        ])
    }

    /// Writes the PEM of a certificate to a file and returns its path.
    pub fn cert_pem(&self, serial: &str) -> String {
        let v = self.json(&["show", serial, "--pem"]);
        let path = self.path_str(&format!("{serial}.pem"));
        std::fs::write(&path, v["pem"].as_str().unwrap()).unwrap();
        path
    }

    pub fn ca_pem(&self) -> String {
        let path = self.path_str("ca.pem");
        self.ok(&["ca-cert", "--out", &path]);
        path
    }

    pub fn crl_pem(&self) -> String {
        let path = self.path_str("crl.pem");
        self.ok(&["crl", "--out", &path, "--pem"]);
        path
    }

    /// Creates an API token with `role`; returns the secret.
    pub fn token(&self, role: &str) -> String {
        self.json(&["token", "create", "--role", role, "--name", "e2e"])["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Makes a key and a CSR for it with `openssl req`; returns (key path, CSR path).
    pub fn new_csr(&self, name: &str, newkey: &[&str], subject: &str) -> (String, String) {
        let (key, csr) = (
            self.path_str(&format!("{name}.key")),
            self.path_str(&format!("{name}.csr")),
        );
        let mut args = vec!["req", "-new"];
        args.extend_from_slice(newkey);
        args.extend_from_slice(&["-nodes", "-keyout", &key, "-out", &csr, "-subj", subject]);
        let out = tool("openssl", &args);
        assert!(out.status.success(), "openssl req: {}", stderr(&out));
        (key, csr)
    }

    /// A P-256 key (`<name>.key`) and a certificate (`<name>.pem`) for it
    /// from `sign-csr` under `policy`: (certificate, key, the CLI's answer).
    pub fn client_certificate(
        &self,
        name: &str,
        tenant: &str,
        admin: &str,
        policy: &str,
    ) -> (String, String, Value) {
        let (key, csr) = self.new_csr(name, P256, &format!("/CN={name}"));
        let cert = self.path_str(&format!("{name}.pem"));
        let answer = self.json(&[
            "sign-csr", "--tenant", tenant, "--admin", admin, "--policy", policy, "--csr", &csr,
            "--out", &cert,
        ]);
        (cert, key, answer)
    }

    /// Adds policy `portal-admin-pickup`: the shipped `portal-admin` with
    /// `delivery = "pickup"` (read by servers started after this).
    pub fn add_pickup_policy(&self) {
        let policies = self.data_dir().join("policies");
        let shipped = std::fs::read_to_string(policies.join("portal-admin.toml"))
            .expect("init copies the shipped policies");
        std::fs::write(
            policies.join("portal-admin-pickup.toml"),
            shipped.replace(
                "name = \"portal-admin\"",
                "name = \"portal-admin-pickup\"\ndelivery = \"pickup\"",
            ),
        )
        .unwrap();
    }

    pub fn db(&self) -> PathBuf {
        self.data_dir().join("ca.db")
    }
}

/// Counts pkilint ERROR and FATAL findings (its exit code counts INFO too and wraps).
pub fn pkilint_errors(program: &str, extra: &[&str], file: &str) -> Vec<String> {
    let mut args = vec!["lint", "-f", "JSON"];
    args.extend_from_slice(extra);
    args.push(file);
    let out = tool(program, &args);
    let text = stdout(&out);
    let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "{program} did not print JSON ({e}): {text} {}",
            stderr(&out)
        )
    });
    let mut bad = Vec::new();
    collect_findings(&value, &mut bad);
    bad
}

fn collect_findings(value: &Value, bad: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(sev) = map.get("severity").and_then(Value::as_str) {
                if sev == "ERROR" || sev == "FATAL" {
                    bad.push(value.to_string());
                }
            }
            map.values().for_each(|v| collect_findings(v, bad));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_findings(v, bad)),
        _ => {}
    }
}

/// Runs SQL against the SQLite store with Python's sqlite3 (tampering tests).
pub fn sqlite(db: &Path, sql: &str) {
    let script = "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\nc.executescript(sys.argv[2])\nc.commit()\n";
    let out = tool("python3", &["-c", script, db.to_str().unwrap(), sql]);
    assert!(out.status.success(), "sqlite: {}", stderr(&out));
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `ca-server` on a free loopback port, stopped (SIGTERM) on drop.
pub struct Server {
    child: Option<std::process::Child>,
    pub base: String,
    pub log: PathBuf,
    /// Arguments every curl call to this server gets (`--cacert` for HTTPS).
    curl_args: Vec<String>,
}

impl Server {
    pub fn start(ca: &TestCa) -> Server {
        Self::start_with(ca, &[])
    }

    pub fn start_with(ca: &TestCa, env: &[(&str, &str)]) -> Server {
        Self::start_on(ca, free_port(), env)
    }

    pub fn start_on(ca: &TestCa, port: u16, env: &[(&str, &str)]) -> Server {
        Self::launch(ca, port, env, "http", Vec::new())
    }

    /// A server speaking HTTPS with `cert`/`key` (and client certificates from
    /// `client_ca`); curl calls trust `ca_pem`.
    pub fn start_tls(
        ca: &TestCa,
        port: u16,
        files: &TlsFiles,
        client_ca: Option<&str>,
        env: &[(&str, &str)],
    ) -> Server {
        let mut all = vec![
            ("CA_TLS_CERT_FILE", files.cert.as_str()),
            ("CA_TLS_KEY_FILE", files.key.as_str()),
        ];
        if let Some(client_ca) = client_ca {
            all.push(("CA_TLS_CLIENT_CA_FILE", client_ca));
        }
        all.extend_from_slice(env);
        let curl_args = vec!["--cacert".to_owned(), files.ca_pem.clone()];
        Self::launch(ca, port, &all, "https", curl_args)
    }

    /// Runs `ca-server` with `env` expecting it to fail at start; returns its stderr.
    pub fn start_fails(ca: &TestCa, env: &[(&str, &str)]) -> String {
        let mut cmd = Command::new(bin("ca-server"));
        cmd.env("CA_DATA_DIR", ca.data_dir())
            .env("CA_LISTEN", format!("127.0.0.1:{}", free_port()))
            .env("CA_KEY_PASSPHRASE", PASSPHRASE)
            .env_remove("CA_CONFIG")
            .env_remove("CA_DATABASE_URL");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "ca-server started: {}", stderr(&out));
        stderr(&out)
    }

    /// A server whose CA cannot issue yet (an issuing CA before `ca
    /// import-cert`): returns once `/readyz` answers 503.
    pub fn start_pending(ca: &TestCa) -> Server {
        Self::launch_until(ca, free_port(), &[], "http", Vec::new(), "503")
    }

    fn launch(
        ca: &TestCa,
        port: u16,
        env: &[(&str, &str)],
        scheme: &str,
        curl_args: Vec<String>,
    ) -> Server {
        Self::launch_until(ca, port, env, scheme, curl_args, "200")
    }

    fn launch_until(
        ca: &TestCa,
        port: u16,
        env: &[(&str, &str)],
        scheme: &str,
        curl_args: Vec<String>,
        ready_status: &str,
    ) -> Server {
        let log = ca.path(&format!("server-{port}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(bin("ca-server"));
        cmd.env("CA_DATA_DIR", ca.data_dir())
            .env("CA_LISTEN", format!("127.0.0.1:{port}"))
            .env("CA_KEY_PASSPHRASE", PASSPHRASE)
            .env_remove("CA_CONFIG")
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        match &ca.database_url {
            Some(url) => cmd.env("CA_DATABASE_URL", url),
            None => cmd.env_remove("CA_DATABASE_URL"),
        };
        cmd.envs(ca.env.iter().map(|(k, v)| (k, v)));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let server = Server {
            child: Some(child),
            base: format!("{scheme}://127.0.0.1:{port}"),
            log,
            curl_args,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let ready = server.curl(&[
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &server.url("/readyz"),
            ]);
            if stdout(&ready) == ready_status {
                return server;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "ca-server did not become ready: {}",
                server.log_text()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn curl(&self, args: &[&str]) -> Output {
        let mut all: Vec<&str> = self.curl_args.iter().map(String::as_str).collect();
        all.extend_from_slice(args);
        tool("curl", &all)
    }

    /// The server's process id (for signals).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or_default()
    }

    /// A JSON API call: returns (status, body).
    pub fn api(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: &str,
        headers: &[&str],
    ) -> (u16, Value) {
        let auth = format!("Authorization: Bearer {token}");
        let url = self.url(path);
        let mut args = vec![
            "-s",
            "-X",
            method,
            "-H",
            &auth,
            "-H",
            "Content-Type: application/json",
            "-w",
            "\n%{http_code}",
        ];
        for h in headers {
            args.push("-H");
            args.push(h);
        }
        if !body.is_empty() {
            args.push("--data-binary");
            args.push(body);
        }
        args.push(&url);
        let out = self.curl(&args);
        let text = stdout(&out);
        let (body, code) = text.rsplit_once('\n').unwrap();
        (
            code.parse().unwrap(),
            serde_json::from_str(body).unwrap_or(Value::Null),
        )
    }

    /// Issues a bundle for acme/`admin` over the API; the answer must be 201.
    pub fn issue(&self, token: &str, admin: &str, body: &str) -> Value {
        let path = format!("/v1/tenants/acme/admins/{admin}/certificates");
        let (status, answer) = self.api("POST", &path, token, body, &[]);
        assert_eq!(status, 201, "{answer}");
        answer
    }

    /// Reissues acme/`admin`'s certificate with `reason`; the answer must be 201.
    pub fn reissue(&self, token: &str, admin: &str, reason: &str) -> Value {
        let path = format!("/v1/tenants/acme/admins/{admin}/reissue");
        let body = format!(r#"{{"reason":"{reason}"}}"#);
        let (status, answer) = self.api("POST", &path, token, &body, &[]);
        assert_eq!(status, 201, "{answer}");
        answer
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits; returns the exit code and the log.
    /// POSTs `body` with the bearer `token` (curl gives up after 20 s);
    /// returns the HTTP status (`000`: no answer) and the body.
    pub fn post(&self, token: &str, path: &str, body: &str) -> (String, String) {
        let out = self.curl(&[
            "-s",
            "--max-time",
            "20",
            "-w",
            "\n%{http_code}",
            "-X",
            "POST",
            "-H",
            &format!("Authorization: Bearer {token}"),
            "-d",
            body,
            &self.url(path),
        ]);
        let text = stdout(&out);
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "000"));
        (code.to_owned(), body.to_owned())
    }

    pub fn stop(mut self) -> (Option<i32>, String) {
        let mut child = self.child.take().unwrap();
        tool("kill", &["-TERM", &child.id().to_string()]);
        let status = child.wait().unwrap();
        (status.code(), self.log_text())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// ca-server's own TLS certificate and key (from `ca-cli server-cert`) and
/// the CA certificate that trusts them.
pub struct TlsFiles {
    pub cert: String,
    pub key: String,
    pub ca_pem: String,
}

impl TlsFiles {
    /// Issues a server certificate for localhost / 127.0.0.1 into `<name>.pem` / `<name>.key`.
    pub fn issue(ca: &TestCa, name: &str) -> (TlsFiles, Value) {
        let files = TlsFiles {
            cert: ca.path_str(&format!("{name}.pem")),
            key: ca.path_str(&format!("{name}.key")),
            ca_pem: ca.ca_pem(),
        };
        let answer = ca.json(&[
            "server-cert",
            "--dns",
            "localhost",
            "--ip",
            "127.0.0.1",
            "--out-cert",
            &files.cert,
            "--out-key",
            &files.key,
        ]);
        (files, answer)
    }
}

/// The serial (lower-case hex) of the certificate a TLS server at
/// 127.0.0.1:`port` presents, via `openssl s_client`.
pub fn served_serial(port: u16) -> String {
    let out = tool(
        "openssl",
        &["s_client", "-connect", &format!("127.0.0.1:{port}")],
    );
    let pem = stdout(&out);
    let start = pem
        .find("-----BEGIN CERTIFICATE-----")
        .unwrap_or_else(|| panic!("s_client got no certificate: {pem} {}", stderr(&out)));
    let end = pem.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----".len();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &pem[start..end]).unwrap();
    let out = tool(
        "openssl",
        &[
            "x509",
            "-noout",
            "-serial",
            "-in",
            file.path().to_str().unwrap(),
        ],
    );
    stdout(&out)
        .trim()
        .trim_start_matches("serial=")
        .to_lowercase()
}

/// The value of a response header in `curl -D -` output (names lower-case).
pub fn header_value<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("{name}: ");
    headers
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map(str::trim)
}

/// GETs `url` with curl and extra request headers; returns the HTTP status code.
pub fn http_code(url: &str, headers: &[&str]) -> String {
    let mut args = vec!["-s", "-o", "/dev/null", "-w", "%{http_code}"];
    for h in headers {
        args.extend_from_slice(&["-H", h]);
    }
    args.push(url);
    stdout(&tool("curl", &args))
}

/// A fresh PostgreSQL database for one test, dropped afterwards.
///
/// The server comes from `CA_TEST_POSTGRES_URL` (a URL to any database the
/// test may `CREATE DATABASE` from; `.ci/run` sets it). In CI (`CI` set) an
/// unset variable or an unreachable server fails the test; elsewhere an unset
/// variable skips it with a note.
pub struct PgDatabase {
    admin_url: String,
    name: String,
    /// URL of the new database.
    pub url: String,
}

impl PgDatabase {
    pub fn create(tag: &str) -> Option<PgDatabase> {
        let Ok(admin_url) = std::env::var("CA_TEST_POSTGRES_URL") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CA_TEST_POSTGRES_URL is not set: CI must run the PostgreSQL tests \
                 (e.g. postgres://postgres@127.0.0.1:5432/test)"
            );
            eprintln!(
                "skipping: set CA_TEST_POSTGRES_URL=postgres://user@host:5432/db to run the PostgreSQL tests"
            );
            return None;
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("ca_e2e_{tag}_{}_{nanos}", std::process::id());
        psql(&admin_url, &format!("CREATE DATABASE {name}"));
        let (base, query) = match admin_url.split_once('?') {
            Some((base, query)) => (base, format!("?{query}")),
            None => (admin_url.as_str(), String::new()),
        };
        let (server, _) = base
            .rsplit_once('/')
            .filter(|(server, _)| server.contains("://") && !server.ends_with('/'))
            .unwrap_or_else(|| panic!("CA_TEST_POSTGRES_URL needs a database path: {admin_url}"));
        let url = format!("{server}/{name}{query}");
        Some(PgDatabase {
            admin_url,
            name,
            url,
        })
    }

    /// Runs one SQL statement in this database; returns its unaligned output.
    pub fn query(&self, sql: &str) -> String {
        psql(&self.url, sql)
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                &self.admin_url,
                "-qc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

/// `psql URL -c SQL`, failing the test with psql's message.
pub fn psql(url: &str, sql: &str) -> String {
    let out = tool("psql", &[url, "-v", "ON_ERROR_STOP=1", "-tAc", sql]);
    assert!(
        out.status.success(),
        "PostgreSQL unreachable or refused `{sql}` at {url}: {}",
        stderr(&out)
    );
    stdout(&out)
}

/// `openssl verify -crl_check -purpose sslclient`; returns (verified, output).
pub fn verify_with_crl(ca_pem: &str, crl: &str, cert: &str) -> (bool, String) {
    let out = tool(
        "openssl",
        &[
            "verify",
            "-crl_check",
            "-purpose",
            "sslclient",
            "-CAfile",
            ca_pem,
            "-CRLfile",
            crl,
            cert,
        ],
    );
    (
        out.status.success(),
        format!("{}{}", stdout(&out), stderr(&out)),
    )
}

/// `openssl ocsp -url <server>/ocsp -issuer CA -CAfile CA EXTRA…`: stdout and stderr.
pub fn openssl_ocsp(server: &Server, ca_pem: &str, extra: &[&str]) -> String {
    let url = server.url("/ocsp");
    let mut args = vec!["ocsp", "-url", &url, "-issuer", ca_pem, "-CAfile", ca_pem];
    args.extend_from_slice(extra);
    let out = tool("openssl", &args);
    format!("{}{}", stdout(&out), stderr(&out))
}

/// A TCP relay on loopback whose connections can be cut and let through
/// again: a database that goes away and comes back, without stopping the
/// database server other tests share.
pub struct TcpProxy {
    pub port: u16,
    state: std::sync::Arc<std::sync::Mutex<ProxyState>>,
}

struct ProxyState {
    open: bool,
    connections: Vec<std::net::TcpStream>,
}

impl TcpProxy {
    pub fn start(upstream: &str) -> TcpProxy {
        use std::net::{TcpListener, TcpStream};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = std::sync::Arc::new(std::sync::Mutex::new(ProxyState {
            open: true,
            connections: Vec::new(),
        }));
        let shared = std::sync::Arc::clone(&state);
        let upstream = upstream.to_owned();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let mut state = shared.lock().unwrap();
                if !state.open {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (mut from, mut to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
                state.connections.push(client);
                state.connections.push(server);
            }
        });
        TcpProxy { port, state }
    }

    /// Cuts every connection and refuses new ones.
    pub fn cut(&self) {
        let mut state = self.state.lock().unwrap();
        state.open = false;
        for c in state.connections.drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Lets new connections through again.
    pub fn restore(&self) {
        self.state.lock().unwrap().open = true;
    }
}

/// `url` with its `host:port` replaced by `127.0.0.1:port`.
pub fn via_port(url: &str, port: u16) -> (String, String) {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (auth, path) = rest.split_once('/').unwrap();
    let (user, host) = match auth.rsplit_once('@') {
        Some((user, host)) => (format!("{user}@"), host),
        None => (String::new(), auth),
    };
    (
        format!("{scheme}://{user}127.0.0.1:{port}/{path}"),
        host.to_owned(),
    )
}
