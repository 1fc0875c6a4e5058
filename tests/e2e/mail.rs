//! Notification mail with a real SMTP server (Debian's python3-aiosmtpd,
//! `tests/pickup/smtp_sink.py`, plain, STARTTLS or implicit TLS): the link is
//! read from the mails it receives; failures stay visible and resend retries.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::pickup::{audit_actions, get_page};
use crate::util::*;

/// `smtp_sink.py` on a loopback port; killed on drop.
pub(crate) struct SmtpSink {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl SmtpSink {
    pub(crate) fn start(dir: &Path) -> SmtpSink {
        Self::start_on(free_port(), dir)
    }

    pub(crate) fn start_on(port: u16, dir: &Path) -> SmtpSink {
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

    pub(crate) fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The messages received so far, in order.
    pub(crate) fn mails(&self) -> Vec<String> {
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
    pub(crate) fn wait_for(&self, n: usize) -> Vec<String> {
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

pub(crate) fn smtp_env(sink_url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("CA_SMTP_URL", sink_url.to_owned()),
        ("CA_SMTP_FROM", "Portal CA <ca@example.com>".to_owned()),
    ]
}

pub(crate) fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The pickup link in a mail.
pub(crate) fn link_in(mail: &str, base: &str) -> String {
    let start = mail
        .find(&format!("{base}/pickup/"))
        .unwrap_or_else(|| panic!("no pickup link in the mail:\n{mail}"));
    let len = base.len() + "/pickup/".len() + 32;
    mail[start..start + len].to_owned()
}

/// Waits (at most 20 s) for `pickup list` to show the first item's mail in `state`.
pub(crate) fn wait_mail_state(ca: &TestCa, state: &str) -> Value {
    wait_mail(ca, None, state)
}

/// Waits (at most 20 s) for `pickup list` to show the mail of `admin`'s
/// pickup (else of the first one listed) in `state`; returns that item.
fn wait_mail(ca: &TestCa, admin: Option<&str>, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = ca.json(&["pickup", "list", "--all"]);
        let items = list["items"].as_array().unwrap();
        let item = match admin {
            Some(admin) => items.iter().find(|i| i["admin"] == admin),
            None => items.first(),
        };
        if let Some(item) = item.filter(|i| i["mail"] == state) {
            return item.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{}mail never {state}: {list}",
            admin.map(|a| format!("{a}'s ")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
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
        let listed = wait_mail(&ca, Some(&admin), "failed");
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
        wait_mail(&ca, Some(&admin), "sent");
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
