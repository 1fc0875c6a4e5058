//! The operator console (`/ui/`): headless Chromium driven by
//! `tests/console/console.py` (Selenium) signs in, issues and downloads a
//! bundle, reissues with key-compromise, revokes, and signs in as a
//! tenant-scoped operator; what it reports is checked here with
//! `openssl pkcs12` and `openssl ocsp`. The CSRF, origin, session and body
//! rules are checked with plain HTTP (curl).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::util::*;

/// Signs in with `token` over plain HTTP; returns the `Set-Cookie` header line.
pub(crate) fn sign_in(server: &Server, token: &str) -> String {
    let out = server.curl(&[
        "-s",
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-X",
        "POST",
        &server.url("/ui/sign-in"),
        "--data-urlencode",
        &format!("token={token}"),
    ]);
    let headers = stdout(&out);
    assert!(headers.starts_with("HTTP/1.1 303"), "{headers}");
    header_value(&headers, "set-cookie")
        .expect("a session cookie")
        .to_owned()
}

pub(crate) fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().trim().to_owned()
}

/// GET with the session cookie: (status, body).
pub(crate) fn get(server: &Server, cookie: &str, path: &str) -> (String, String) {
    let out = server.curl(&[
        "-s",
        "-w",
        "\n%{http_code}",
        "-b",
        cookie,
        &server.url(path),
    ]);
    let text = stdout(&out);
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.to_owned(), body.to_owned())
}

/// POST a form with the session cookie and extra curl arguments: (status, body).
fn post(server: &Server, cookie: &str, path: &str, form: &str, extra: &[&str]) -> (String, String) {
    let url = server.url(path);
    let mut args = vec![
        "-s",
        "-w",
        "\n%{http_code}",
        "-b",
        cookie,
        "-X",
        "POST",
        &url,
        "-d",
        form,
    ];
    args.extend_from_slice(extra);
    let out = server.curl(&args);
    let text = stdout(&out);
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.to_owned(), body.to_owned())
}

/// The CSRF token in a page's first form.
fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    page[at..at + 64].to_owned()
}

fn status_of(ca: &TestCa, serial: &str) -> String {
    ca.json(&["show", serial])["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn console_in_headless_chromium() {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let ca = TestCa::init_for(&base, &[]);
    let admin_token = ca.token("admin");
    let operator_a = ca.json(&[
        "token",
        "create",
        "--role",
        "operator",
        "--tenant",
        "acme",
        "--name",
        "desk-acme",
    ])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let bob = ca.issue("globex", "bob", "portal-admin", "bob.p12");
    let bob_serial = bob["serial"].as_str().unwrap().to_owned();
    let server = Server::start_on(&ca, port, &[]);

    let downloads = ca.path("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    // CA_UPDATE_SCREENSHOTS=1 writes the README's screenshots into docs/screenshots.
    let shots = if std::env::var_os("CA_UPDATE_SCREENSHOTS").is_some() {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots")
    } else {
        ca.path("screenshots")
    };
    std::fs::create_dir_all(&shots).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("console/console.py");
    // Always under a time limit: a browser waiting on a dialog must not hang CI.
    let out = Command::new("timeout")
        .args(["-k", "5", "240", "/usr/bin/python3"])
        .arg(&script)
        .args([&base, &admin_token, &operator_a, &bob_serial])
        .arg(&downloads)
        .arg(&shots)
        .env("HOME", ca.path("home"))
        .output()
        .expect("run /usr/bin/python3 (Debian python3-selenium, chromium, chromium-driver)");
    assert!(
        out.status.success(),
        "console.py failed ({:?}):\n{}\n{}\nserver log:\n{}",
        out.status.code(),
        stdout(&out),
        stderr(&out),
        server.log_text()
    );
    let report: Value = serde_json::from_str(stdout(&out).trim()).unwrap();

    // The session cookie: HttpOnly, SameSite=Strict, not Secure on plain HTTP, /ui only.
    assert_eq!(report["cookie"]["httpOnly"], true, "{report}");
    assert_eq!(report["cookie"]["sameSite"], "Strict", "{report}");
    assert_eq!(report["cookie"]["secure"], false, "{report}");
    assert_eq!(report["cookie"]["path"], "/ui", "{report}");
    assert_eq!(report["first_tab"], "Skip to content", "{report}");

    // The downloaded bundle opens with the password the page showed.
    let issued = report["issued"].as_str().unwrap();
    let bundle = report["bundle"].as_str().unwrap();
    let password = report["password"].as_str().unwrap();
    assert!(password.len() >= 12, "{report}");
    let pass_arg = format!("pass:{password}");
    let opened = tool(
        "openssl",
        &[
            "pkcs12", "-in", bundle, "-passin", &pass_arg, "-nokeys", "-clcerts",
        ],
    );
    assert!(
        opened.status.success(),
        "openssl pkcs12: {}",
        stderr(&opened)
    );
    let pem = stdout(&opened);
    let pem_path = ca.path_str("downloaded.pem");
    std::fs::write(&pem_path, &pem).unwrap();
    let serial = stdout(&tool(
        "openssl",
        &["x509", "-in", &pem_path, "-noout", "-serial"],
    ))
    .trim()
    .trim_start_matches("serial=")
    .to_ascii_lowercase();
    assert_eq!(
        serial.trim_start_matches('0'),
        issued.trim_start_matches('0')
    );
    let wrong = tool(
        "openssl",
        &[
            "pkcs12",
            "-in",
            bundle,
            "-passin",
            "pass:not-the-password",
            "-nokeys",
        ],
    );
    assert!(
        !wrong.status.success(),
        "a wrong password opened the bundle"
    );

    // A bad password was refused beside its field with the API's message; nothing issued.
    let message = report["bad_password_error"].as_str().unwrap();
    assert!(
        message.contains("bundle password has 5 characters"),
        "{report}"
    );
    assert_eq!(report["bad_password_invalid"], "true");
    assert_eq!(
        ca.json(&["list", "--tenant", "acme", "--admin", "carol"])["items"],
        serde_json::json!([])
    );

    // The reissue confirmation named the certificate it revoked, with the reason.
    let confirmation = report["confirmation"].as_str().unwrap();
    assert!(
        confirmation.contains("1 certificate(s)") && confirmation.contains("key-compromise"),
        "{report}"
    );
    assert!(
        report["confirmation_table"]
            .as_str()
            .unwrap()
            .contains(issued),
        "{report}"
    );
    assert_eq!(report["reissue_revoked"], serde_json::json!([issued]));
    // ... and OpenSSL's OCSP client says the old certificate is revoked (keyCompromise).
    let ca_pem = ca.ca_pem();
    let ocsp = openssl_ocsp(&server, &ca_pem, &["-cert", &pem_path, "-no_nonce"]);
    assert!(ocsp.contains(": revoked"), "{ocsp}");
    assert!(ocsp.contains("Reason: keyCompromise"), "{ocsp}");

    // The reissued one was then revoked through its confirmation page.
    let reissued = report["reissued"].as_str().unwrap();
    assert!(
        report["revoked_notice"]
            .as_str()
            .unwrap()
            .contains(reissued),
        "{report}"
    );
    assert_eq!(status_of(&ca, reissued), "revoked");
    let shown = ca.json(&["show", reissued]);
    assert_eq!(shown["reason"], "affiliation-changed", "{shown}");
    assert!(
        report["verify"].as_str().unwrap().contains("intact"),
        "{report}"
    );

    // Every mutation is audited with the console user's token id, as the API does.
    let token_id = admin_token.split('_').nth(1).unwrap();
    let audit = ca.json(&["audit", "list"]);
    let actor = format!("token:{token_id}");
    for action in [
        "console-sign-in",
        "issue",
        "reissue",
        "revoke",
        "console-sign-out",
    ] {
        assert!(
            audit["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["action"] == action && e["actor"] == actor.as_str()),
            "no {action} by {actor}: {audit}"
        );
    }
    assert_eq!(report["after_sign_out"], "Sign in", "{report}");

    // The operator limited to acme sees nothing of globex.
    let op = &report["operator"];
    let nav = op["nav"].as_str().unwrap();
    assert!(!nav.contains("Tokens") && !nav.contains("Audit"), "{op}");
    let all = op["all_search"].as_str().unwrap();
    assert!(all.contains("alice") && all.contains("acme"), "{op}");
    for page in [
        "all_search",
        "globex_search",
        "globex_serial",
        "globex_admin",
        "expiring",
    ] {
        let text = op[page].as_str().unwrap();
        assert!(
            !text.contains(&bob_serial) && !text.contains("bob"),
            "{page} shows tenant globex: {text}"
        );
    }
    assert!(
        op["globex_search"]
            .as_str()
            .unwrap()
            .contains("limited to tenant acme"),
        "{op}"
    );
    assert!(op["globex_admin"].as_str().unwrap().contains("403"), "{op}");
    assert!(
        op["globex_serial"].as_str().unwrap().contains("403"),
        "{op}"
    );
    assert!(op["tokens"].as_str().unwrap().contains("403"), "{op}");
    assert!(op["audit"].as_str().unwrap().contains("403"), "{op}");
}

#[test]
fn console_forms_need_the_session_csrf_token_and_same_origin() {
    let ca = TestCa::init();
    let token = ca.token("admin");
    let alice = ca.issue("acme", "alice", "portal-admin", "alice.p12");
    let serial = alice["serial"].as_str().unwrap().to_owned();
    let server = Server::start(&ca);
    let set_cookie = sign_in(&server, &token);
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=1800"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(
        !set_cookie.contains("Secure"),
        "Secure on plain HTTP: {set_cookie}"
    );
    let cookie = cookie_pair(&set_cookie);
    let (code, page) = get(
        &server,
        &cookie,
        &format!("/ui/certificates/{serial}/revoke"),
    );
    assert_eq!(code, "200", "{page}");
    let csrf = csrf_of(&page);
    let revoke = format!("/ui/certificates/{serial}/revoke");

    // No CSRF token, a made-up one, and another session's: refused, nothing changed.
    let other = cookie_pair(&sign_in(&server, &token));
    let (_, other_page) = get(&server, &other, &revoke);
    let other_csrf = csrf_of(&other_page);
    assert_ne!(other_csrf, csrf);
    let before = ca.state();
    for form in [
        "reason=key-compromise".to_owned(),
        format!("reason=key-compromise&csrf={}", "0".repeat(64)),
        format!("reason=key-compromise&csrf={other_csrf}"),
    ] {
        let (code, body) = post(&server, &cookie, &revoke, &form, &[]);
        assert_eq!(code, "403", "{form}: {body}");
        assert!(body.contains("CSRF token"), "{body}");
    }
    // The right token from another site's page: refused.
    let form = format!("reason=key-compromise&csrf={csrf}");
    let (code, body) = post(
        &server,
        &cookie,
        &revoke,
        &form,
        &["-H", "Origin: https://evil.example"],
    );
    assert_eq!(code, "403", "{body}");
    assert!(body.contains("another site"), "{body}");
    // A form over the byte limit: 413, nothing changed.
    let big = format!(
        "reason=key-compromise&csrf={csrf}&pad={}",
        "a".repeat(20_000)
    );
    let (code, _) = post(&server, &cookie, &revoke, &big, &[]);
    assert_eq!(code, "413");
    // A bad reason: the API's message, status 422, nothing changed.
    let (code, body) = post(
        &server,
        &cookie,
        &revoke,
        &format!("reason=lost&csrf={csrf}"),
        &[],
    );
    assert_eq!(code, "422", "{body}");
    assert!(body.contains("unknown revocation reason"), "{body}");
    assert_eq!(ca.state(), before, "a refused form changed something");
    assert_eq!(status_of(&ca, &serial), "active");

    // With its token, from the console's own origin: revoked.
    let origin = format!("Origin: {}", server.base);
    let (code, body) = post(&server, &cookie, &revoke, &form, &["-H", &origin]);
    assert_eq!(code, "200", "{body}");
    assert_eq!(status_of(&ca, &serial), "revoked");

    // Every console page carries the strict CSP and is never cached.
    let out = server.curl(&[
        "-s",
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-b",
        &cookie,
        &server.url("/ui/"),
    ]);
    let headers = stdout(&out);
    assert_eq!(
        header_value(&headers, "content-security-policy"),
        Some("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
    );
    assert_eq!(header_value(&headers, "cache-control"), Some("no-store"));
    assert_eq!(header_value(&headers, "x-frame-options"), Some("DENY"));
}

#[test]
fn revoking_the_token_ends_its_console_sessions() {
    let ca = TestCa::init();
    let admin = ca.token("admin");
    let created = ca.json(&["token", "create", "--role", "operator", "--name", "desk"]);
    let operator = created["token"].as_str().unwrap().to_owned();
    let operator_id = created["id"].as_str().unwrap().to_owned();
    let server = Server::start(&ca);
    let cookie = cookie_pair(&sign_in(&server, &operator));
    assert_eq!(get(&server, &cookie, "/ui/").0, "200");

    // Revoked by another process (the CLI): the server notices on its store poll.
    ca.ok(&["token", "revoke", &operator_id]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        let (code, _) = get(&server, &cookie, "/ui/");
        if code == "303" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the session outlived its token's revocation"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Signing in again with it is refused beside the field.
    let out = server.curl(&[
        "-s",
        "-w",
        "\n%{http_code}",
        "-X",
        "POST",
        &server.url("/ui/sign-in"),
        "--data-urlencode",
        &format!("token={operator}"),
    ]);
    let text = stdout(&out);
    assert!(text.ends_with("401"), "{text}");
    assert!(text.contains("invalid or revoked API token"), "{text}");

    // Only the session secret's SHA-256 is stored, never the secret.
    let cookie = cookie_pair(&sign_in(&server, &admin));
    let secret = cookie.split_once('=').unwrap().1.to_owned();
    let script = "import sqlite3,sys,hashlib\nc=sqlite3.connect(sys.argv[1])\nrows=[r[0] for r in c.execute('SELECT id_hash FROM console_sessions')]\nprint(hashlib.sha256(sys.argv[2].encode()).hexdigest() in rows, any(sys.argv[2] in r for r in rows))\n";
    let out = tool(
        "python3",
        &["-c", script, ca.db().to_str().unwrap(), &secret],
    );
    assert_eq!(stdout(&out).trim(), "True False", "{}", stderr(&out));

    // Sign-out deletes the session: the cookie is worthless afterwards.
    let (_, page) = get(&server, &cookie, "/ui/");
    let csrf = csrf_of(&page);
    let (code, _) = post(
        &server,
        &cookie,
        "/ui/sign-out",
        &format!("csrf={csrf}"),
        &[],
    );
    assert_eq!(code, "303");
    assert_eq!(get(&server, &cookie, "/ui/").0, "303");
}

#[test]
fn a_console_session_works_on_every_replica_and_ends_on_all_with_its_token() {
    let Some(db) = PgDatabase::create("console") else {
        return;
    };
    let ca = TestCa::init_on(&db.url);
    let created = ca.json(&["token", "create", "--role", "operator", "--name", "desk"]);
    let operator = created["token"].as_str().unwrap().to_owned();
    let operator_id = created["id"].as_str().unwrap().to_owned();
    let admin = ca.token("admin");
    let a = Server::start(&ca);
    let b = Server::start(&ca);
    let cookie = cookie_pair(&sign_in(&a, &operator));
    // Signed in on replica a; the same cookie works on b, and its forms too.
    let (code, page) = get(&b, &cookie, "/ui/tenants/acme/admins/alice");
    assert_eq!(code, "200", "{page}");
    let csrf = csrf_of(&page);
    let (code, body) = post(
        &b,
        &cookie,
        "/ui/tenants/acme/admins/alice/issue",
        &format!("policy=portal-admin&csrf={csrf}"),
        &[],
    );
    assert_eq!(code, "201", "{body}");
    assert!(body.contains("id=\"password\""), "{body}");

    // The token revoked through replica a's API: replica b ends the session too.
    let (code, body) = a.api(
        "DELETE",
        &format!("/v1/tokens/{operator_id}"),
        &admin,
        "",
        &[],
    );
    assert_eq!(code, 200, "{body}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while get(&b, &cookie, "/ui/").0 != "303" {
        assert!(
            std::time::Instant::now() < deadline,
            "replica b kept a session whose token was revoked"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(get(&a, &cookie, "/ui/").0, "303");
}

#[test]
fn over_tls_the_cookie_is_secure_and_a_client_certificate_signs_in() {
    let port = free_port();
    let ca = TestCa::init_for(&format!("https://127.0.0.1:{port}"), &[]);
    let (files, _) = TlsFiles::issue(&ca, "server");
    let operator = ca.token("operator");
    let server = Server::start_tls(&ca, port, &files, Some(&files.ca_pem), &[]);
    assert!(sign_in(&server, &operator).contains("; Secure"));

    let (job_cert, job_key, job) =
        ca.client_certificate("job", "automation", "nightly", "automation-renewer");
    let job_serial = job["serial"].as_str().unwrap().to_owned();
    let (other_cert, other_key, _) =
        ca.client_certificate("other", "automation", "weekly", "automation-renewer");
    let with_cert = |cert: Option<(&str, &str)>, args: &[&str]| -> String {
        let mut all: Vec<&str> = vec!["-s", "-D", "-", "-o", "/dev/null"];
        if let Some((cert, key)) = cert {
            all.extend_from_slice(&["--cert", cert, "--key", key]);
        }
        all.extend_from_slice(args);
        stdout(&server.curl(&all))
    };
    let headers = with_cert(
        Some((&job_cert, &job_key)),
        &["-X", "POST", &server.url("/ui/sign-in/certificate")],
    );
    assert!(headers.starts_with("HTTP/1.1 303"), "{headers}");
    let set_cookie = header_value(&headers, "set-cookie").unwrap().to_owned();
    assert!(
        set_cookie.contains("; Secure") && set_cookie.contains("HttpOnly"),
        "{set_cookie}"
    );
    let cookie = cookie_pair(&set_cookie);
    let page = |cert: Option<(&str, &str)>| {
        let out = with_cert(cert, &["-b", &cookie, &server.url("/ui/")]);
        out.lines().next().unwrap_or("").to_owned()
    };
    assert!(page(Some((&job_cert, &job_key))).contains("200"));
    // The session is bound to the certificate it signed in with.
    assert!(page(None).contains("303"));
    assert!(page(Some((&other_cert, &other_key))).contains("303"));
    let audit = ca.ok(&["audit", "list"]);
    assert!(audit.contains(&format!("cert:{job_serial}")), "{audit}");
    // Revoking the certificate ends the session at once.
    ca.ok(&["revoke", &job_serial, "--reason", "key-compromise"]);
    assert!(page(Some((&job_cert, &job_key))).contains("303"));
}

#[test]
fn pages_escape_what_they_show_and_a_session_ends_when_its_token_expires() {
    let ca = TestCa::init();
    let admin = ca.token("admin");
    ca.json(&[
        "token",
        "create",
        "--role",
        "auditor",
        "--name",
        "<script>alert(1)</script>",
    ]);
    let expiring = ca.json(&[
        "token",
        "create",
        "--role",
        "operator",
        "--name",
        "short",
        "--expires-in",
        "3s",
    ])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let server = Server::start(&ca);
    let cookie = cookie_pair(&sign_in(&server, &admin));
    let (code, page) = get(&server, &cookie, "/ui/tokens");
    assert_eq!(code, "200", "{page}");
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(!page.contains("<script"), "unescaped markup: {page}");

    let short = cookie_pair(&sign_in(&server, &expiring));
    assert_eq!(get(&server, &short, "/ui/").0, "200");
    std::thread::sleep(std::time::Duration::from_millis(3500));
    assert_eq!(
        get(&server, &short, "/ui/").0,
        "303",
        "the session outlived its token's expiry"
    );
}

/// The text of the element with `id` (the first `>`…`<` after it).
fn element_text(page: &str, id: &str) -> String {
    let at = page
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in {page}"));
    let start = at + page[at..].find('>').unwrap() + 1;
    let end = start + page[start..].find('<').unwrap();
    page[start..end].to_owned()
}

#[test]
fn the_console_issues_for_pickup_lists_pickups_and_resends() {
    let port = free_port();
    let ca = TestCa::init_for(&format!("http://127.0.0.1:{port}"), &[]);
    let operator = ca.token("operator");
    let auditor = ca.token("auditor");
    let server = Server::start_on(&ca, port, &[]);
    let cookie = cookie_pair(&sign_in(&server, &operator));
    let admin = "/ui/tenants/acme/admins/alice";
    let (code, page) = get(&server, &cookie, admin);
    assert_eq!(code, "200", "{page}");
    assert!(page.contains("value=\"pickup\""), "{page}");
    let csrf = csrf_of(&page);

    // A bad address: shown beside its field, nothing issued.
    let (code, page) = post(
        &server,
        &cookie,
        &format!("{admin}/issue"),
        &format!("csrf={csrf}&policy=portal-admin&delivery=pickup&email=not+an+address"),
        &[],
    );
    assert_eq!(code, "422", "{page}");
    assert!(page.contains("id=\"email-error\""), "{page}");
    assert_eq!(
        ca.json(&["list", "--tenant", "acme"])["items"],
        serde_json::json!([])
    );

    // Pickup: a link and a code, no bundle and no password on the page.
    let (code, page) = post(
        &server,
        &cookie,
        &format!("{admin}/issue"),
        &format!("csrf={csrf}&policy=portal-admin&delivery=pickup&email=alice%40example.com"),
        &[],
    );
    assert_eq!(code, "201", "{page}");
    assert!(!page.contains("application/x-pkcs12"), "{page}");
    let first_url = element_text(&page, "pickup-url");
    let first_code = element_text(&page, "pickup-code");
    assert!(
        first_url.starts_with(&server.url("/pickup/")),
        "{first_url}"
    );
    assert_eq!(first_code.len(), 14, "{first_code}");

    // Listed as waiting; a resend gives a new link and code, the old link dies.
    let (code, list) = get(&server, &cookie, "/ui/pickups?tenant=acme");
    assert_eq!(code, "200", "{list}");
    let id = first_url.rsplit('/').next().unwrap();
    assert!(list.contains(&format!("id=\"pickup-{id}\"")), "{list}");
    assert!(list.contains(">waiting<"), "{list}");
    let csrf = csrf_of(&list);
    let resend = format!("{admin}/pickup/resend");
    let (code, page) = post(&server, &cookie, &resend, &format!("csrf={csrf}"), &[]);
    assert_eq!(code, "201", "{page}");
    let second_url = element_text(&page, "pickup-url");
    let second_code = element_text(&page, "pickup-code");
    assert_ne!(second_url, first_url);
    assert_ne!(second_code, first_code);
    let out = tool(
        "curl",
        &["-s", "-o", "/dev/null", "-w", "%{http_code}", &first_url],
    );
    assert_eq!(stdout(&out), "410", "the old link still works");

    // The admin collects; the console then shows it collected and a resend is 409.
    let out = tool(
        "curl",
        &[
            "-s",
            "-w",
            "\n%{http_code}",
            "--data-urlencode",
            &format!("code={second_code}"),
            &second_url,
        ],
    );
    assert!(stdout(&out).ends_with("200"), "{}", stdout(&out));
    let (_, list) = get(&server, &cookie, "/ui/pickups?tenant=acme&all=1");
    assert!(list.contains(">collected<"), "{list}");
    let (code, page) = post(&server, &cookie, &resend, &format!("csrf={csrf}"), &[]);
    assert_eq!(code, "409", "{page}");
    assert!(page.contains("already collected"), "{page}");

    // An auditor sees the list but no resend, and may not post one.
    let auditor_cookie = cookie_pair(&sign_in(&server, &auditor));
    let (code, list) = get(&server, &auditor_cookie, "/ui/pickups?tenant=acme&all=1");
    assert_eq!(code, "200", "{list}");
    assert!(!list.contains("Resend"), "{list}");
    let csrf = csrf_of(&list);
    let (code, _) = post(
        &server,
        &auditor_cookie,
        &resend,
        &format!("csrf={csrf}"),
        &[],
    );
    assert_eq!(code, "403");
}

/// The value of the hidden input `name` on a page.
fn hidden_value(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} field in {page}"))
        + marker.len();
    page[at..at + page[at..].find('"').unwrap()].to_owned()
}

/// The console's issue and reissue forms follow the policy's `delivery`
/// unless one is picked, and a reissue can go by pickup: the old
/// certificate is revoked and no bundle or password reaches the page.
#[test]
fn the_console_reissues_by_pickup_and_follows_the_policys_delivery() {
    let port = free_port();
    let ca = TestCa::init_for(&format!("http://127.0.0.1:{port}"), &[]);
    ca.add_pickup_policy();
    let server = Server::start_on(&ca, port, &[]);
    let cookie = cookie_pair(&sign_in(&server, &ca.token("operator")));
    let (_, page) = get(&server, &cookie, "/ui/tenants/acme/admins/alice");
    let csrf = csrf_of(&page);

    // No delivery picked: the pickup policy holds the bundle back, the
    // direct one hands it over.
    let (code, page) = post(
        &server,
        &cookie,
        "/ui/tenants/acme/admins/alice/issue",
        &format!("csrf={csrf}&policy=portal-admin-pickup&delivery="),
        &[],
    );
    assert_eq!(code, "201", "{page}");
    assert!(!page.contains("application/x-pkcs12"), "{page}");
    assert!(
        element_text(&page, "pickup-url").contains("/pickup/"),
        "{page}"
    );
    let (code, page) = post(
        &server,
        &cookie,
        "/ui/tenants/acme/admins/bob/issue",
        &format!("csrf={csrf}&policy=portal-admin&delivery="),
        &[],
    );
    assert_eq!(code, "201", "{page}");
    assert!(page.contains("application/x-pkcs12"), "{page}");
    let old = ca.json(&["list", "--tenant", "acme", "--admin", "bob"])["items"][0]["serial"]
        .as_str()
        .unwrap()
        .to_owned();

    // Reissue bob by pickup: confirm, then commit with delivery=pickup.
    let (code, confirm) = get(
        &server,
        &cookie,
        "/ui/tenants/acme/admins/bob/reissue?reason=key-compromise",
    );
    assert_eq!(code, "200", "{confirm}");
    assert!(confirm.contains("value=\"pickup\""), "{confirm}");
    let listed = hidden_value(&confirm, "confirm");
    let form = |extra: &str| {
        format!(
            "csrf={}&policy=&reason=key-compromise&confirm={listed}&password={extra}",
            csrf_of(&confirm)
        )
    };
    // A mail address with a download: beside its field, nothing changes.
    let (code, page) = post(
        &server,
        &cookie,
        "/ui/tenants/acme/admins/bob/reissue",
        &form("&delivery=download&email=bob%40example.com"),
        &[],
    );
    assert_eq!(code, "422", "{page}");
    assert!(page.contains("pickup delivery only"), "{page}");
    assert_eq!(status_of(&ca, &old), "active");
    let (code, page) = post(
        &server,
        &cookie,
        "/ui/tenants/acme/admins/bob/reissue",
        &form("&delivery=pickup&email=bob%40example.com"),
        &[],
    );
    assert_eq!(code, "201", "{page}");
    assert!(!page.contains("application/x-pkcs12"), "{page}");
    assert!(
        element_text(&page, "pickup-url").contains("/pickup/"),
        "{page}"
    );
    assert_eq!(element_text(&page, "pickup-code").len(), 14, "{page}");
    assert!(page.contains(&old), "the revoked serial is named: {page}");
    assert_eq!(status_of(&ca, &old), "revoked");
    let (_, list) = get(&server, &cookie, "/ui/pickups?tenant=acme");
    assert_eq!(list.matches(">waiting<").count(), 2, "{list}");
}
