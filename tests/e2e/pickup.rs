//! Delivery by one-time pickup, with real parts: headless Chromium
//! (`tests/pickup/pickup.py`) types the code and downloads the bundle, which
//! `openssl pkcs12` opens with the password the page showed; an SMTP server
//! (`mail::SmtpSink`) receives the link; curl for lock-out, expiry and resend;
//! SQLite and PostgreSQL; and a search of the server log and the database
//! files for the code, the password and the bundle.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

use crate::mail::{env_refs, link_in, smtp_env, wait_mail_state, SmtpSink};
use crate::util::*;

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

pub(crate) fn get_page(url: &str) -> (u16, String) {
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
pub(crate) fn bundle_serial(ca: &TestCa, file: &str, password: &str) -> String {
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

pub(crate) fn audit_actions(ca: &TestCa) -> Vec<String> {
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
