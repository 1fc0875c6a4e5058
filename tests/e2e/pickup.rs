//! Delivery by one-time pickup, with real parts: an SMTP server (Debian's
//! python3-aiosmtpd, `tests/pickup/smtp_sink.py`) receives the mails and
//! the link is read from them; headless Chromium (`tests/pickup/pickup.py`)
//! types the code and downloads the bundle, which `openssl pkcs12` opens
//! with the password the page showed; curl for lock-out, expiry and resend;
//! SQLite and PostgreSQL; and a search of the server log and the database
//! files for the code, the password and the bundle.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

use crate::util::*;

/// `smtp_sink.py` on a loopback port; killed on drop.
struct SmtpSink {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl SmtpSink {
    fn start(dir: &Path) -> SmtpSink {
        Self::start_on(free_port(), dir)
    }

    fn start_on(port: u16, dir: &Path) -> SmtpSink {
        Self::spawn(port, dir, &[])
    }

    /// `mode` `starttls` or `smtps`, with the server's certificate and key files.
    fn start_tls(dir: &Path, mode: &str, cert: &str, key: &str) -> SmtpSink {
        Self::spawn(free_port(), dir, &[mode, cert, key])
    }

    fn spawn(port: u16, dir: &Path, tls: &[&str]) -> SmtpSink {
        std::fs::create_dir_all(dir).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("pickup/smtp_sink.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(&script)
            .arg(port.to_string())
            .arg(dir)
            .args(tls)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run /usr/bin/python3 tests/pickup/smtp_sink.py (Debian python3-aiosmtpd)");
        let mut line = String::new();
        use std::io::BufRead as _;
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the SMTP sink did not start");
        SmtpSink {
            child,
            port,
            dir: dir.to_owned(),
        }
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The messages received so far, in order.
    fn mails(&self) -> Vec<String> {
        let mut files: Vec<(u32, PathBuf)> = std::fs::read_dir(&self.dir)
            .unwrap()
            .filter_map(|e| {
                let path = e.ok()?.path();
                let n = path.file_stem()?.to_str()?.parse().ok()?;
                (path.extension()? == "eml").then_some((n, path))
            })
            .collect();
        files.sort();
        files
            .iter()
            .map(|(_, p)| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    /// Waits (at most 20 s) until `n` messages have arrived.
    fn wait_for(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mails = self.mails();
            if mails.len() >= n {
                return mails;
            }
            assert!(
                Instant::now() < deadline,
                "{} mails after 20 s, expected {n}",
                mails.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn smtp_env(sink_url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("CA_SMTP_URL", sink_url.to_owned()),
        ("CA_SMTP_FROM", "Portal CA <ca@example.com>".to_owned()),
    ]
}

fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The pickup link in a mail.
fn link_in(mail: &str, base: &str) -> String {
    let start = mail
        .find(&format!("{base}/pickup/"))
        .unwrap_or_else(|| panic!("no pickup link in the mail:\n{mail}"));
    let len = base.len() + "/pickup/".len() + 32;
    mail[start..start + len].to_owned()
}

/// POSTs the code form; returns (status, page).
fn post_code(url: &str, code: &str) -> (u16, String) {
    let out = tool(
        "curl",
        &[
            "-s",
            "-w",
            "\n%{http_code}",
            "--data-urlencode",
            &format!("code={code}"),
            url,
        ],
    );
    let text = stdout(&out);
    let (page, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), page.to_owned())
}

fn get_page(url: &str) -> (u16, String) {
    let out = tool("curl", &["-s", "-w", "\n%{http_code}", url]);
    let text = stdout(&out);
    let (page, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), page.to_owned())
}

/// The bundle and password on a collected page (as the browser would save it).
fn bundle_on(page: &str) -> (Vec<u8>, String) {
    let href = page
        .split("href=\"data:application/x-pkcs12;base64,")
        .nth(1)
        .unwrap_or_else(|| panic!("no bundle on the page:\n{page}"));
    let b64 = &href[..href.find('"').unwrap()];
    let bundle = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let password = page
        .split("id=\"password\" class=\"mono\">")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_owned();
    (bundle, password)
}

/// The serial in a bundle, read by `openssl pkcs12` with `password`.
fn bundle_serial(ca: &TestCa, file: &str, password: &str) -> String {
    let pass = format!("pass:{password}");
    let certs = tool(
        "openssl",
        &[
            "pkcs12", "-in", file, "-passin", &pass, "-nokeys", "-clcerts",
        ],
    );
    assert!(certs.status.success(), "openssl pkcs12: {}", stderr(&certs));
    let pem = ca.path_str("from-bundle.pem");
    std::fs::write(&pem, stdout(&certs)).unwrap();
    let serial = tool("openssl", &["x509", "-in", &pem, "-noout", "-serial"]);
    stdout(&serial)
        .trim()
        .trim_start_matches("serial=")
        .to_lowercase()
}

fn audit_actions(ca: &TestCa) -> Vec<String> {
    ca.json(&["audit", "list"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect()
}

/// Fails if any of `secrets` occurs in any of `files`.
fn assert_absent(files: &[PathBuf], secrets: &[(&str, &[u8])]) {
    for file in files {
        let Ok(bytes) = std::fs::read(file) else {
            continue;
        };
        for (what, secret) in secrets {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == *secret),
                "{what} found in {}",
                file.display()
            );
        }
    }
}

/// Waits (at most 20 s) for `pickup list` to show the first item's mail in `state`.
fn wait_mail_state(ca: &TestCa, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = ca.json(&["pickup", "list", "--all"]);
        if list["items"][0]["mail"] == state {
            return list["items"][0].clone();
        }
        assert!(Instant::now() < deadline, "mail never {state}: {list}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn pickup_in_headless_chromium() {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let ca = TestCa::init_for(&base, &[]);
    let sink = SmtpSink::start(&ca.path("mail"));
    let mut env = smtp_env(&sink.url());
    // Every new certificate (397 days) is inside this window: its reminder is due at once.
    env.push(("CA_SMTP_REMINDER_BEFORE", "400d".to_owned()));
    let server = Server::start_on(&ca, port, &env_refs(&env));
    let token = ca.token("operator");

    let answer = server.issue(
        &token,
        "alice",
        r#"{"delivery":"pickup","email":"alice@example.com"}"#,
    );
    assert!(
        answer.get("pkcs12").is_none() && answer.get("password").is_none(),
        "{answer}"
    );
    let code = answer["code"].as_str().unwrap().to_owned();
    let serial = answer["serial"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 14, "{answer}");
    assert_eq!(answer["pickup"]["mail"], "pending", "{answer}");
    let url = answer["pickup"]["url"].as_str().unwrap().to_owned();

    // The mail carries the link, never the code.
    let mails = sink.wait_for(2);
    let pickup_mail = mails
        .iter()
        .find(|m| m.contains("ready to collect"))
        .unwrap_or_else(|| panic!("no pickup mail: {mails:?}"));
    assert!(pickup_mail.contains("X-Envelope-To: alice@example.com"));
    assert_eq!(link_in(pickup_mail, &base), url);
    for mail in &mails {
        assert!(!mail.contains(&code) && !mail.contains(&code.replace('-', "")));
    }
    let reminder = mails
        .iter()
        .find(|m| m.contains("expires on"))
        .unwrap_or_else(|| panic!("no reminder mail: {mails:?}"));
    assert!(reminder.contains(&serial), "{reminder}");
    let listed = wait_mail_state(&ca, "sent");
    assert_eq!(listed["state"], "waiting", "{listed}");

    // The admin collects it in the browser.
    let downloads = ca.path("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("pickup/pickup.py");
    let link = link_in(pickup_mail, &base);
    let out = Command::new("timeout")
        .args(["-k", "5", "120", "/usr/bin/python3"])
        .arg(&script)
        .args([&link, &code])
        .arg(&downloads)
        .env("HOME", ca.path("home"))
        .output()
        .expect("run /usr/bin/python3 (Debian python3-selenium, chromium, chromium-driver)");
    assert!(
        out.status.success(),
        "pickup.py failed ({:?}):\n{}\n{}\nserver log:\n{}",
        out.status.code(),
        stdout(&out),
        stderr(&out),
        server.log_text()
    );
    let report: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(
        report["first"], "Collect your login certificate",
        "{report}"
    );
    assert_eq!(report["collected"], "Your login certificate", "{report}");
    let file = report["file"]
        .as_str()
        .unwrap_or_else(|| panic!("no download: {report}"));
    assert!(file.ends_with("/alice.p12"), "{report}");
    let password = report["password"].as_str().unwrap().to_owned();
    assert!(password.len() >= 12, "{report}");
    assert_eq!(bundle_serial(&ca, file, &password), serial);
    // Opened again: refused, saying what to do.
    assert_eq!(report["second"], "Already collected", "{report}");
    assert!(report["second_text"]
        .as_str()
        .unwrap()
        .contains("ask your support desk for a reissue"));
    let (status, page) = post_code(&url, &code);
    assert_eq!(status, 410, "{page}");

    // One reminder, however many rounds of the reminder task ran.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(sink.mails().len(), 2);
    let actions = audit_actions(&ca);
    for action in [
        "pickup.created",
        "pickup.mailed",
        "pickup.collected",
        "reminder.sent",
    ] {
        assert!(actions.iter().any(|a| a == action), "{action}: {actions:?}");
    }
    ca.ok(&["audit", "verify"]);

    // Nothing reveals the code, the password or the bundle: not the log,
    // not the database (nor its WAL).
    let bundle = std::fs::read(file).unwrap();
    let slice = &bundle[bundle.len() / 2..bundle.len() / 2 + 32];
    let (_, log) = server.stop();
    assert!(!log.is_empty());
    let files = [
        ca.path(&format!("server-{port}.log")),
        ca.db(),
        ca.data_dir().join("ca.db-wal"),
    ];
    let bare = code.replace('-', "");
    assert_absent(
        &files,
        &[
            ("the code", code.as_bytes()),
            ("the code (bare)", bare.as_bytes()),
            ("the password", password.as_bytes()),
            ("a slice of the bundle", slice),
        ],
    );
    // The sealed copy is gone from the row.
    let out = tool(
        "sqlite3",
        &[
            ca.db().to_str().unwrap(),
            "SELECT state, sealed IS NULL, salt IS NULL FROM pickups",
        ],
    );
    assert!(out.status.success(), "sqlite3: {}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "1|1|1");
}

#[test]
fn wrong_codes_lock_and_resend_kills_the_old_link() {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let ca = TestCa::init_for(&base, &[]);
    let server = Server::start_on(&ca, port, &[]);
    let operator = ca.token("operator");
    let answer = server.issue(&operator, "bob", r#"{"delivery":"pickup"}"#);
    let first_serial = answer["serial"].as_str().unwrap().to_owned();
    let url = answer["pickup"]["url"].as_str().unwrap().to_owned();
    assert_eq!(answer["pickup"]["mail"], "none", "{answer}");

    // A form posted from another site is refused before the code is looked at.
    let out = tool(
        "curl",
        &[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "Origin: https://evil.example",
            "--data-urlencode",
            &format!("code={}", answer["code"].as_str().unwrap()),
            &url,
        ],
    );
    assert_eq!(stdout(&out), "403");
    assert_eq!(get_page(&url).0, 200, "the cross-site post changed nothing");

    // A code of the wrong form is not counted.
    let (status, page) = post_code(&url, "not-a-code");
    assert_eq!(status, 422, "{page}");
    assert!(page.contains("Nothing was counted"), "{page}");
    for left in (1..=4).rev() {
        let (status, page) = post_code(&url, "AAAA-BBBB-CCCC");
        assert_eq!(status, 403, "{page}");
        let tries = if left == 1 { "try" } else { "tries" };
        assert!(page.contains(&format!("{left} {tries} left")), "{page}");
    }
    let (status, page) = post_code(&url, "AAAA-BBBB-CCCC");
    assert_eq!(status, 410, "{page}");
    assert!(page.contains("Locked") && page.contains("resend"), "{page}");
    // Even the right code cannot open it now.
    let (status, _) = post_code(&url, answer["code"].as_str().unwrap());
    assert_eq!(status, 410);
    let listed = ca.json(&["pickup", "list"]);
    assert_eq!(listed["items"][0]["state"], "locked", "{listed}");
    assert_eq!(listed["items"][0]["failures"], 5, "{listed}");

    // Auditors may not resend; renewers may.
    let resend = "/v1/tenants/acme/admins/bob/pickup/resend";
    let (status, body) = server.api("POST", resend, &ca.token("auditor"), "{}", &[]);
    assert_eq!(status, 403, "{body}");
    let (status, again) = server.api("POST", resend, &ca.token("renewer"), "{}", &[]);
    assert_eq!(status, 201, "{again}");
    assert_eq!(again["revoked"][0], first_serial.as_str(), "{again}");
    let new_url = again["pickup"]["url"].as_str().unwrap().to_owned();
    assert_ne!(new_url, url);
    assert_eq!(
        ca.json(&["show", &first_serial])["status"],
        "revoked",
        "the uncollected certificate is replaced"
    );

    // A second resend kills the first resend's link.
    let (status, third) = server.api("POST", resend, &operator, "{}", &[]);
    assert_eq!(status, 201, "{third}");
    let (status, page) = get_page(&new_url);
    assert_eq!(status, 410, "{page}");
    assert!(page.contains("Link replaced"), "{page}");
    let (status, page) = post_code(&new_url, again["code"].as_str().unwrap());
    assert_eq!(status, 410, "{page}");

    // The newest link opens with its code; the bundle opens with its password.
    let third_url = third["pickup"]["url"].as_str().unwrap();
    let (status, page) = post_code(third_url, third["code"].as_str().unwrap());
    assert_eq!(status, 200, "{page}");
    let (bundle, password) = bundle_on(&page);
    let file = ca.path_str("bob.p12");
    std::fs::write(&file, bundle).unwrap();
    assert_eq!(
        bundle_serial(&ca, &file, &password),
        third["serial"].as_str().unwrap()
    );

    // Collected: a resend cannot bring it back.
    let (status, body) = server.api("POST", resend, &operator, "{}", &[]);
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("already collected"),
        "{body}"
    );
    let (code, err) = ca.fail(&["pickup", "resend", "--tenant", "acme", "--admin", "bob"]);
    assert_eq!(code, 3, "{err}");
    let (status, list) = server.api("GET", "/v1/pickups?all=true", &operator, "", &[]);
    assert_eq!(status, 200, "{list}");
    let states: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["collected", "replaced", "locked"], "{list}");
    let actions = audit_actions(&ca);
    for action in [
        "pickup.wrong_code",
        "pickup.locked",
        "pickup.resent",
        "pickup.collected",
    ] {
        assert!(actions.iter().any(|a| a == action), "{action}: {actions:?}");
    }
    ca.ok(&["audit", "verify"]);
}

#[test]
fn pickup_expires_and_its_bundle_is_destroyed() {
    let port = free_port();
    let ca = TestCa::init_for(&format!("http://127.0.0.1:{port}"), &[]);
    let server = Server::start_on(&ca, port, &[("CA_PICKUP_VALIDITY", "2s")]);
    let token = ca.token("operator");
    let answer = server.issue(&token, "carol", r#"{"delivery":"pickup"}"#);
    let url = answer["pickup"]["url"].as_str().unwrap();
    let (status, _) = get_page(url);
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_secs(3));
    let (status, page) = get_page(url);
    assert_eq!(status, 410, "{page}");
    assert!(page.contains("expired"), "{page}");
    let (status, _) = post_code(url, answer["code"].as_str().unwrap());
    assert_eq!(status, 410);
    // The sweep records the expiry and destroys the sealed bundle.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !audit_actions(&ca).iter().any(|a| a == "pickup.expired") {
        assert!(Instant::now() < deadline, "never expired in the store");
        std::thread::sleep(Duration::from_millis(200));
    }
    let listed = ca.json(&["pickup", "list"]);
    assert_eq!(listed["items"][0]["state"], "expired", "{listed}");
    let out = tool(
        "sqlite3",
        &[
            ca.db().to_str().unwrap(),
            "SELECT state, sealed IS NULL FROM pickups",
        ],
    );
    assert!(out.status.success(), "sqlite3: {}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "2|1");
    // The certificate stands; a resend gives a new pickup.
    assert_eq!(
        ca.json(&["show", answer["serial"].as_str().unwrap()])["status"],
        "active"
    );
    let again = ca.json(&["pickup", "resend", "--tenant", "acme", "--admin", "carol"]);
    assert_eq!(again["revoked"][0], answer["serial"], "{again}");
}

#[test]
fn mail_failure_keeps_the_certificate_and_resend_retries() {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let ca = TestCa::init_for(&base, &[]);
    // Nothing listens on the SMTP port yet.
    let smtp_port = free_port();
    let env = smtp_env(&format!("smtp://127.0.0.1:{smtp_port}"));
    let server = Server::start_on(&ca, port, &env_refs(&env));
    let token = ca.token("operator");
    let answer = server.issue(
        &token,
        "dave",
        r#"{"delivery":"pickup","email":"dave@example.com"}"#,
    );
    let serial = answer["serial"].as_str().unwrap();
    let listed = wait_mail_state(&ca, "failed");
    assert_eq!(listed["state"], "waiting", "{listed}");
    assert!(
        listed["mail_error"].as_str().unwrap().contains("SMTP"),
        "{listed}"
    );
    assert_eq!(ca.json(&["show", serial])["status"], "active");
    let metrics = stdout(&server.curl(&["-s", &server.url("/metrics")]));
    assert!(metrics.contains("ca_mail_failed_total 1"), "{metrics}");
    assert!(audit_actions(&ca).iter().any(|a| a == "pickup.mail_failed"));
    // The pickup still works without the mail (the code came by phone).
    let (status, _) = get_page(answer["pickup"]["url"].as_str().unwrap());
    assert_eq!(status, 200);

    // The SMTP server is back: resend mails a new link; the old one dies.
    let sink = SmtpSink::start_on(smtp_port, &ca.path("mail"));
    let (status, again) = server.api(
        "POST",
        "/v1/tenants/acme/admins/dave/pickup/resend",
        &token,
        "{}",
        &[],
    );
    assert_eq!(status, 201, "{again}");
    let mails = sink.wait_for(1);
    assert_eq!(
        link_in(&mails[0], &base),
        again["pickup"]["url"].as_str().unwrap()
    );
    assert!(mails[0].contains("X-Envelope-To: dave@example.com"));
    let (status, _) = get_page(answer["pickup"]["url"].as_str().unwrap());
    assert_eq!(status, 410);
    wait_mail_state(&ca, "sent");
}

/// Mail over STARTTLS and over implicit TLS to a mail server whose
/// certificate comes from a private CA: sent when `smtp.ca_file` trusts that
/// CA, refused (and visible as a failed mail) when only the system's roots do.
#[test]
fn mail_goes_over_starttls_and_smtps_checking_the_servers_certificate() {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let ca = TestCa::init_for(&base, &[]);
    // The mail server's certificate, for localhost and 127.0.0.1, from this
    // CA: a private CA no system trusts.
    let (files, _) = TlsFiles::issue(&ca, "mail");
    let ca_file = files.ca_pem.clone();
    let token = ca.token("operator");
    for mode in ["starttls", "smtps"] {
        let sink = SmtpSink::start_tls(
            &ca.path(&format!("mail-{mode}")),
            mode,
            &files.cert,
            &files.key,
        );
        let url = match mode {
            "starttls" => format!("smtp://127.0.0.1:{}?tls=required", sink.port),
            _ => format!("smtps://127.0.0.1:{}", sink.port),
        };
        // Only the system's roots: the handshake fails, the mail is a
        // recorded failure, the certificate stands.
        let mut env = smtp_env(&url);
        let server = Server::start_on(&ca, port, &env_refs(&env));
        let admin = format!("{mode}-untrusted");
        let answer = server.issue(
            &token,
            &admin,
            r#"{"delivery":"pickup","email":"x@example.com"}"#,
        );
        let listed = wait_mail_state_of(&ca, &admin, "failed");
        let error = listed["mail_error"].as_str().unwrap();
        assert!(error.contains("certificate"), "{mode}: {listed}");
        assert_eq!(
            ca.json(&["show", answer["serial"].as_str().unwrap()])["status"],
            "active"
        );
        assert!(sink.mails().is_empty(), "{mode}: a mail got through");
        drop(server);

        // With smtp.ca_file naming the private CA, the mail goes.
        env.push(("CA_SMTP_CA_FILE", ca_file.clone()));
        let server = Server::start_on(&ca, port, &env_refs(&env));
        let admin = format!("{mode}-trusted");
        let answer = server.issue(
            &token,
            &admin,
            &format!(r#"{{"delivery":"pickup","email":"{admin}@example.com"}}"#),
        );
        let mails = sink.wait_for(1);
        assert_eq!(
            link_in(&mails[0], &base),
            answer["pickup"]["url"].as_str().unwrap(),
            "{mode}"
        );
        wait_mail_state_of(&ca, &admin, "sent");
        drop(server);
    }
    // A CA file that is not PEM stops start-up, naming the key and the file.
    let bad = ca.path_str("not-a-ca.pem");
    std::fs::write(&bad, "hello").unwrap();
    let mut env = smtp_env("smtps://127.0.0.1:465");
    env.push(("CA_SMTP_CA_FILE", bad.clone()));
    let message = Server::start_fails(&ca, &env_refs(&env));
    assert!(
        message.contains("smtp.ca_file") && message.contains("not-a-ca.pem"),
        "{message}"
    );
}

/// A policy with `delivery = "pickup"` makes pickup the default of issue and
/// reissue (API and CLI) when the caller names no delivery; an explicit
/// choice still wins.
#[test]
fn a_policy_can_make_pickup_the_default() {
    let ca = TestCa::init();
    let shipped = std::fs::read_to_string(ca.data_dir().join("policies/portal-admin.toml"))
        .expect("init copies the shipped policies");
    std::fs::write(
        ca.data_dir().join("policies/portal-admin-pickup.toml"),
        shipped.replace(
            "name = \"portal-admin\"",
            "name = \"portal-admin-pickup\"\ndelivery = \"pickup\"",
        ),
    )
    .unwrap();
    let server = Server::start(&ca);
    let token = ca.token("operator");
    let policy = r#""policy":"portal-admin-pickup""#;

    let answer = server.issue(&token, "pia", &format!("{{{policy}}}"));
    assert!(answer["pickup"]["url"].is_string(), "{answer}");
    assert!(
        answer["code"].is_string() && answer.get("pkcs12").is_none(),
        "{answer}"
    );
    // Reissue keeps the active certificate's policy, and so its delivery.
    let (status, again) = server.api(
        "POST",
        "/v1/tenants/acme/admins/pia/reissue",
        &token,
        "{}",
        &[],
    );
    assert_eq!(status, 201, "{again}");
    assert!(
        again["pickup"]["url"].is_string() && again.get("pkcs12").is_none(),
        "{again}"
    );
    // The caller's explicit choice wins over the policy's.
    let direct = server.issue(
        &token,
        "pib",
        &format!(r#"{{{policy},"delivery":"direct"}}"#),
    );
    assert!(
        direct["pkcs12"].is_string() && direct.get("pickup").is_none(),
        "{direct}"
    );
    // An address goes with pickup only: fine under the pickup policy,
    // 422 under a direct one (and nothing is issued).
    let mailed = server.issue(
        &token,
        "pic",
        &format!(r#"{{{policy},"email":"pic@example.com"}}"#),
    );
    assert!(mailed["pickup"]["url"].is_string(), "{mailed}");
    let (status, refused) = server.api(
        "POST",
        "/v1/tenants/acme/admins/pid/certificates",
        &token,
        r#"{"email":"pid@example.com"}"#,
        &[],
    );
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("pickup"),
        "{refused}"
    );
    assert_eq!(
        ca.json(&["list", "--tenant", "acme", "--admin", "pid"])["items"],
        serde_json::json!([])
    );

    // The CLI: no --out and no --pickup takes the policy's delivery.
    let out = ca.json(&[
        "issue",
        "--tenant",
        "acme",
        "--admin",
        "pie",
        "--policy",
        "portal-admin-pickup",
    ]);
    assert!(
        out["pickup"]["url"].is_string() && out["code"].is_string(),
        "{out}"
    );
    let (code, message) = ca.fail(&["issue", "--tenant", "acme", "--admin", "pif"]);
    assert_ne!(code, 0);
    assert!(
        message.contains("--out") && message.contains("portal-admin"),
        "{message}"
    );
}

/// Waits (at most 20 s) for `pickup list` to show `admin`'s mail in `state`.
fn wait_mail_state_of(ca: &TestCa, admin: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = ca.json(&["pickup", "list", "--all"]);
        let item = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["admin"] == admin)
            .cloned();
        if let Some(item) = item.filter(|i| i["mail"] == state) {
            return item;
        }
        assert!(
            Instant::now() < deadline,
            "{admin}'s mail never {state}: {list}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn cli_pickup_mail_is_sent_by_the_server() {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let ca = TestCa::init_for(&base, &[]);
    let sink = SmtpSink::start(&ca.path("mail"));
    let env = smtp_env(&sink.url());
    let mut issue = ca.command(&[
        "--json",
        "issue",
        "--tenant",
        "acme",
        "--admin",
        "erin",
        "--pickup",
        "--email",
        "erin@example.com",
    ]);
    issue.envs(env.iter().map(|(k, v)| (k, v)));
    let out = issue.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let answer: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(answer["pickup"]["mail"], "pending", "{answer}");
    let _server = Server::start_on(&ca, port, &env_refs(&env));
    let mails = sink.wait_for(1);
    assert_eq!(
        link_in(&mails[0], &base),
        answer["pickup"]["url"].as_str().unwrap()
    );
}

#[test]
fn pickup_on_postgres() {
    let Some(db) = PgDatabase::create("pickup") else {
        return;
    };
    let port = free_port();
    let mut ca = TestCa::uninitialised();
    ca.database_url = Some(db.url.clone());
    ca.init_here(&format!("http://127.0.0.1:{port}"), &[]);
    let server = Server::start_on(&ca, port, &[]);
    let token = ca.token("operator");
    let answer = server.issue(&token, "frank", r#"{"delivery":"pickup"}"#);
    let code = answer["code"].as_str().unwrap();
    assert_eq!(
        db.query("SELECT count(*) FROM pickups WHERE sealed IS NOT NULL")
            .trim(),
        "1"
    );
    let (status, page) = post_code(answer["pickup"]["url"].as_str().unwrap(), code);
    assert_eq!(status, 200, "{page}");
    let (bundle, password) = bundle_on(&page);
    assert_eq!(
        db.query(
            "SELECT count(*) FROM pickups WHERE sealed IS NULL AND salt IS NULL AND state = 1"
        )
        .trim(),
        "1"
    );
    // No row of any table holds the code, the password or the bundle.
    let dump = tool("pg_dump", &["--data-only", &db.url]);
    assert!(dump.status.success(), "pg_dump: {}", stderr(&dump));
    let dump = stdout(&dump);
    let hex_slice = hex_of(&bundle[bundle.len() / 2..bundle.len() / 2 + 24]);
    for (what, secret) in [
        ("code", code.to_owned()),
        ("bare code", code.replace('-', "")),
        ("password", password.clone()),
        ("bundle", hex_slice),
    ] {
        assert!(!dump.contains(&secret), "{what} in the PostgreSQL rows");
    }
    let (status, again) = server.api(
        "POST",
        "/v1/tenants/acme/admins/frank/pickup/resend",
        &token,
        "{}",
        &[],
    );
    assert_eq!(status, 409, "{again}");
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn bulk_issue_good_bad_and_rerun() {
    let ca = TestCa::init();
    let csv = ca.path("admins.csv");
    std::fs::write(
        &csv,
        "tenant,admin,email\nacme,alice,alice@example.com\nacme,bad name!\nglobex,bob\nacme,carol,not-an-address\n",
    )
    .unwrap();
    let out_dir = ca.path_str("bundles");
    let csv_arg = csv.to_str().unwrap();
    let args = [
        "--json",
        "bulk-issue",
        "--csv",
        csv_arg,
        "--policy",
        "portal-admin",
        "--out-dir",
        &out_dir,
    ];
    let first = ca.run(&args);
    assert_eq!(first.status.code(), Some(1), "{}", stderr(&first));
    let report: Value = serde_json::from_str(&stdout(&first)).unwrap();
    assert_eq!(report["issued"], 2, "{report}");
    assert_eq!(report["failed"], 2, "{report}");
    let items = report["items"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    assert!(
        items[1]["error"].as_str().unwrap().contains("line 3"),
        "{report}"
    );
    assert!(
        items[3]["error"].as_str().unwrap().contains("email"),
        "{report}"
    );

    // Each bundle opens with its line of passwords.csv; both files are 0600.
    let passwords = std::fs::read_to_string(ca.path("bundles/passwords.csv")).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    for name in ["passwords.csv", "acme-alice.p12", "globex-bob.p12"] {
        let mode = std::fs::metadata(ca.path(&format!("bundles/{name}")))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
    let lines: Vec<&str> = passwords.lines().collect();
    assert_eq!(lines[0], "tenant,admin,serial,file,password");
    assert_eq!(lines.len(), 3, "{passwords}");
    for line in &lines[1..] {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(bundle_serial(&ca, fields[3], fields[4]), fields[2]);
    }

    // The same file again: nothing issued twice, the passwords kept.
    let second = ca.run(&args);
    let report: Value = serde_json::from_str(&stdout(&second)).unwrap();
    assert_eq!(report["issued"], 0, "{report}");
    assert_eq!(report["already_active"], 2, "{report}");
    assert_eq!(
        std::fs::read_to_string(ca.path("bundles/passwords.csv")).unwrap(),
        passwords
    );
    let active = ca.json(&["list", "--status", "active"]);
    assert_eq!(
        active["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["tenant"] != "_ca")
            .count(),
        2,
        "{active}"
    );

    // Pickup delivery: codes instead of bundles; all already active now.
    let good = ca.path("more.csv");
    std::fs::write(&good, "acme,dan,dan@example.com\n").unwrap();
    let report = ca.json(&[
        "bulk-issue",
        "--csv",
        good.to_str().unwrap(),
        "--policy",
        "portal-admin",
        "--pickup",
    ]);
    assert_eq!(report["issued"], 1, "{report}");
    assert_eq!(report["items"][0]["code"].as_str().unwrap().len(), 14);
    let (code, err) = ca.fail(&["bulk-issue", "--csv", csv_arg, "--policy", "portal-admin"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn shell_completions() {
    let ca = TestCa::uninitialised();
    for shell in ["bash", "zsh", "fish"] {
        let text = ca.ok(&["completions", shell]);
        assert!(
            text.contains("bulk-issue") && text.contains("pickup"),
            "{shell}: {text}"
        );
    }
    let (code, err) = ca.fail(&["completions", "tcsh"]);
    assert_eq!(code, 2, "{err}");
}
