//! The real `ca-server` binary on a loopback port, driven with curl and checked
//! with OpenSSL.

use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::util::*;

/// Polls /crl until `serial` is listed; returns how long it took.
fn wait_for_crl_listing(ca: &TestCa, server: &Server, serial: &str, since: Instant) -> Duration {
    let file = ca.path_str("fetched.crl");
    loop {
        let out = server.curl(&["-s", "-o", &file, &server.url("/crl")]);
        assert!(out.status.success());
        let text = stdout(&tool(
            "openssl",
            &["crl", "-inform", "DER", "-in", &file, "-noout", "-text"],
        ));
        if text.contains(&serial.to_uppercase()) {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(5),
            "{serial} not on the CRL after 5 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn issue_reissue_and_crl_over_http_with_real_clients() {
    let ca = TestCa::init();
    let operator = ca.token("operator");
    let server = Server::start(&ca);

    let issued = server.issue(&operator, "alice", r#"{"policy":"portal-admin"}"#);
    let old_serial = issued["serial"].as_str().unwrap().to_owned();
    let password = issued["password"].as_str().unwrap().to_owned();
    let p12 = ca.path_str("alice.p12");
    std::fs::write(
        &p12,
        base64::engine::general_purpose::STANDARD
            .decode(issued["pkcs12"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let old_pem = ca.path_str("old.pem");
    let out = tool(
        "openssl",
        &[
            "pkcs12",
            "-in",
            &p12,
            "-passin",
            &format!("pass:{password}"),
            "-clcerts",
            "-nokeys",
            "-out",
            &old_pem,
        ],
    );
    assert!(out.status.success(), "openssl pkcs12: {}", stderr(&out));

    // Reissue (device lost) and time until the old serial is on the served CRL.
    let started = Instant::now();
    let (status, reissued) = server.api(
        "POST",
        "/v1/tenants/acme/admins/alice/reissue",
        &operator,
        r#"{"reason":"key-compromise"}"#,
        &["Idempotency-Key: lost-phone-1"],
    );
    assert_eq!(status, 201, "{reissued}");
    assert_eq!(reissued["revoked"], serde_json::json!([old_serial]));
    let visible = wait_for_crl_listing(&ca, &server, &old_serial, started);
    println!("reissue -> old serial on /crl: {visible:?}");
    assert!(visible <= Duration::from_secs(2), "took {visible:?}");

    let crl_pem = ca.path_str("served.pem");
    let out = server.curl(&["-s", "-o", &crl_pem, &server.url("/crl.pem")]);
    assert!(out.status.success());
    let ca_pem = ca.path_str("served-ca.pem");
    server.curl(&["-s", "-o", &ca_pem, &server.url("/ca.pem")]);
    let (verified, text) = verify_with_crl(&ca_pem, &crl_pem, &old_pem);
    assert!(!verified && text.contains("certificate revoked"), "{text}");
    let new_p12 = ca.path_str("new.p12");
    std::fs::write(
        &new_p12,
        base64::engine::general_purpose::STANDARD
            .decode(reissued["pkcs12"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let new_pem = ca.path_str("new.pem");
    let pass = format!("pass:{}", reissued["password"].as_str().unwrap());
    tool(
        "openssl",
        &[
            "pkcs12", "-in", &new_p12, "-passin", &pass, "-clcerts", "-nokeys", "-out", &new_pem,
        ],
    );
    let (verified, text) = verify_with_crl(&ca_pem, &crl_pem, &new_pem);
    assert!(verified, "{text}");

    // Conditional GET: 304 with the ETag.
    let headers = stdout(&server.curl(&["-s", "-D", "-", "-o", "/dev/null", &server.url("/crl")]));
    let etag = header_value(&headers, "etag").unwrap().to_owned();
    let code = http_code(&server.url("/crl"), &[&format!("If-None-Match: {etag}")]);
    assert_eq!(code, "304");

    // Graceful stop; nothing secret in the log.
    let (code, log) = server.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("stopped cleanly"), "{log}");
    assert!(
        log.contains("/v1/tenants/{tenant}/admins/{admin}/reissue"),
        "one line per request: {log}"
    );
    for secret in [
        operator.as_str(),
        &password,
        reissued["password"].as_str().unwrap(),
        PASSPHRASE,
    ] {
        assert!(!log.contains(secret), "secret in the server log");
    }
    // cat_<id>_<secret>: the secret is base64url and may itself hold '_'.
    let secret_part = operator.splitn(3, '_').nth(2).unwrap();
    assert!(secret_part.len() >= 40, "{operator}");
    assert!(!log.contains(secret_part));
}

#[test]
fn a_revocation_made_with_the_cli_reaches_the_servers_crl() {
    let ca = TestCa::init();
    let v = ca.issue("acme", "bob", "portal-admin", "bob.p12");
    let serial = v["serial"].as_str().unwrap().to_owned();
    let server = Server::start(&ca);
    let started = Instant::now();
    // Without the key the CLI cannot publish: the running server must notice.
    let out = ca
        .command(&["revoke", &serial, "--reason", "key-compromise"])
        .env_remove("CA_KEY_PASSPHRASE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let visible = wait_for_crl_listing(&ca, &server, &serial, started);
    println!("ca-cli revoke -> on server /crl: {visible:?}");
    assert!(visible <= Duration::from_secs(2), "took {visible:?}");
}

#[test]
fn a_token_revoked_with_the_cli_stops_working_on_the_running_server() {
    let ca = TestCa::init();
    let created = ca.json(&["token", "create", "--role", "auditor", "--name", "e2e"]);
    let (id, token) = (
        created["id"].as_str().unwrap(),
        created["token"].as_str().unwrap(),
    );
    let server = Server::start(&ca);
    // Used once, so the server holds it in its token cache.
    let (status, body) = server.api("GET", "/v1/certificates", token, "", &[]);
    assert_eq!(status, 200, "{body}");
    ca.ok(&["token", "revoke", id]);
    let revoked = Instant::now();
    loop {
        let (status, _) = server.api("GET", "/v1/certificates", token, "", &[]);
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            revoked.elapsed() < Duration::from_secs(1),
            "a revoked token still works a second later"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "ca-cli token revoke -> refused by server: {:?}",
        revoked.elapsed()
    );
}

#[test]
fn renewal_job_retried_never_issues_twice() {
    let ca = TestCa::init();
    for admin in ["a1", "a2", "a3"] {
        ca.issue("acme", admin, "portal-admin", &format!("{admin}.p12"));
    }
    let renewer = ca.token("renewer");
    let server = Server::start(&ca);
    let (status, due) = server.api(
        "GET",
        "/v1/certificates?expiring_within_days=400&status=active",
        &renewer,
        "",
        &[],
    );
    assert_eq!(status, 200, "{due}");
    let due: Vec<(String, String)> = due["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["admin"].as_str().unwrap().to_owned(),
                c["serial"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(due.len(), 3);
    let run_job = |expect_first_time: bool| {
        for (admin, serial) in &due {
            let key = format!("Idempotency-Key: renew-{serial}");
            let (status, body) = server.api(
                "POST",
                &format!("/v1/tenants/acme/admins/{admin}/reissue"),
                &renewer,
                "{}",
                &[&key],
            );
            if expect_first_time {
                assert_eq!(status, 201, "{body}");
                assert_eq!(body["revoked"], serde_json::json!([serial]));
            } else {
                assert_eq!(status, 409, "{body}");
                assert_eq!(body["error"]["code"], "already_delivered");
            }
        }
    };
    run_job(true);
    run_job(false);
    let all = ca.json(&["list"]);
    assert_eq!(
        all["items"].as_array().unwrap().len(),
        6,
        "3 originals + 3 renewals, nothing twice"
    );
    let active = ca.json(&["list", "--status", "active"]);
    assert_eq!(active["items"].as_array().unwrap().len(), 3);
}

#[test]
fn start_up_fails_fast_naming_the_problem() {
    let ca = TestCa::init();
    let config = ca.path("ca.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nlisen = \"typo\"\n").unwrap();
    let out = std::process::Command::new(bin("ca-server"))
        .arg("--config")
        .arg(&config)
        .env("CA_DATA_DIR", ca.data_dir())
        .env("CA_KEY_PASSPHRASE", PASSPHRASE)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("lisen"), "{}", stderr(&out));
    let out = std::process::Command::new(bin("ca-server"))
        .env("CA_DATA_DIR", ca.data_dir())
        .env("CA_LISTEN", "127.0.0.1:0")
        .env("CA_KEY_PASSPHRASE", "wrong passphrase here")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("wrong passphrase"),
        "{}",
        stderr(&out)
    );
}

/// Each thread of process `pid`: (name, the CPUs it may run on, as the
/// kernel lists them in `/proc`).
fn thread_cpus(pid: u32) -> Vec<(String, String)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default()
        };
        threads.push((field("Name:"), field("Cpus_allowed_list:")));
    }
    threads
}

#[test]
fn async_workers_are_pinned_one_to_a_cpu_and_sqlite_threads_are_not() {
    let mine = std::fs::read_to_string("/proc/self/status").unwrap();
    let all = mine
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_owned();
    if !all.contains(['-', ',']) {
        eprintln!("one CPU ({all}): nothing to pin; skipped");
        return;
    }
    let in_set: usize = all
        .split(',')
        .map(|range| match range.split_once('-') {
            Some((a, b)) => b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1,
            None => 1,
        })
        .sum();
    let workers = std::thread::available_parallelism().unwrap().get();
    if workers != in_set {
        eprintln!("a CPU quota ({workers} of {in_set} CPUs): the server pins nothing; skipped");
        return;
    }
    let ca = TestCa::init();
    let operator = ca.token("operator");
    let server = Server::start(&ca);
    // A write, so SQLite's connection threads are there and have written.
    server.issue(&operator, "alice", r#"{"policy":"portal-admin"}"#);
    // A worker takes its CPU the first time it goes idle.
    let deadline = Instant::now() + Duration::from_secs(5);
    let threads = loop {
        let threads = thread_cpus(server.pid());
        let pinned = threads
            .iter()
            .filter(|(name, cpus)| name.starts_with("tokio") && *cpus != all)
            .count();
        if pinned >= 2 || Instant::now() > deadline {
            break threads;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut worker_cpus: Vec<&str> = threads
        .iter()
        .filter(|(name, cpus)| name.starts_with("tokio") && *cpus != all)
        .map(|(_, cpus)| cpus.as_str())
        .collect();
    assert!(worker_cpus.len() >= 2, "workers not pinned: {threads:?}");
    // Concurrent writes make the pool open more connections, now from pinned
    // workers: their threads inherit the worker's CPU unless released.
    let before = threads
        .iter()
        .filter(|(n, _)| n.starts_with("sqlx-sqlite"))
        .count();
    std::thread::scope(|s| {
        for i in 0..16 {
            let (server, operator) = (&server, &operator);
            s.spawn(move || {
                server.issue(
                    operator,
                    &format!("parallel{i}"),
                    r#"{"policy":"portal-admin"}"#,
                )
            });
        }
    });
    let threads = thread_cpus(server.pid());
    let after = threads
        .iter()
        .filter(|(n, _)| n.starts_with("sqlx-sqlite"))
        .count();
    // The pool keeps at most 4 SQLite connections (ca-core's store). When
    // start-up already opened all four, none can open from a pinned worker
    // here, and the check below (every SQLite thread free) is what remains.
    if before < 4 {
        assert!(
            after > before,
            "no SQLite connection opened under load ({before} threads): {threads:?}"
        );
    }
    assert!(
        worker_cpus.iter().all(|c| c.parse::<usize>().is_ok()),
        "a pinned worker may use more than one CPU: {threads:?}"
    );
    worker_cpus.sort_unstable();
    worker_cpus.dedup();
    assert!(
        worker_cpus.len() >= 2,
        "two workers on one CPU: {threads:?}"
    );
    let sqlite: Vec<_> = threads
        .iter()
        .filter(|(name, _)| name.starts_with("sqlx-sqlite"))
        .collect();
    assert!(!sqlite.is_empty(), "no SQLite thread found: {threads:?}");
    assert!(
        sqlite.iter().all(|(_, cpus)| *cpus == all),
        "a SQLite thread is pinned (it runs the group commit, the one serial stage): {threads:?}"
    );
    assert!(server
        .log_text()
        .contains("async workers pinned one to a CPU"));
    server.stop();

    // Off: every thread may run anywhere.
    let server = Server::start_with(&ca, &[("CA_WORKER_AFFINITY", "off")]);
    server.issue(&operator, "bob", r#"{"policy":"portal-admin"}"#);
    std::thread::sleep(Duration::from_millis(200));
    let threads = thread_cpus(server.pid());
    assert!(threads.iter().all(|(_, cpus)| *cpus == all), "{threads:?}");
    assert!(server.log_text().contains("async workers not pinned"));
}
