//! `backup` and `restore` (DESIGN §3, §6): an online snapshot under load that
//! restores to a store passing `audit verify` with every acknowledged
//! certificate; an old backup shown a newer CRL refuses, or rolls forward.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::util::*;

/// A second data directory in the same temp dir, restored from `archive`.
fn restore_cmd(ca: &TestCa, target: &str, archive: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["--data-dir", target, "restore", "--from", archive];
    args.extend_from_slice(extra);
    let mut cmd = std::process::Command::new(bin("ca-cli"));
    cmd.args(&args)
        .current_dir(ca.dir.path())
        .env("CA_KEY_PASSPHRASE", PASSPHRASE)
        .env_remove("CA_CONFIG")
        .env_remove("CA_DATA_DIR")
        .env_remove("CA_DATABASE_URL");
    cmd.output().unwrap()
}

fn cli_on(ca: &TestCa, dir: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--data-dir", dir];
    all.extend_from_slice(args);
    let mut cmd = std::process::Command::new(bin("ca-cli"));
    cmd.args(&all)
        .current_dir(ca.dir.path())
        .env("CA_KEY_PASSPHRASE", PASSPHRASE)
        .env_remove("CA_CONFIG")
        .env_remove("CA_DATA_DIR")
        .env_remove("CA_DATABASE_URL");
    cmd.output().unwrap()
}

#[test]
fn a_backup_under_issuance_load_restores_every_acknowledged_certificate() {
    let ca = TestCa::init();
    let token = ca.token("operator");
    // ca-server's own TLS key is a plaintext PEM: it must never go into a backup.
    ca.ok(&[
        "server-cert",
        "--dns",
        "ca.test",
        "--out-cert",
        &format!("{}/server.pem", ca.data_dir().display()),
        "--out-key",
        &format!("{}/server.key", ca.data_dir().display()),
    ]);
    let server = Server::start(&ca);
    let url = server.url("/v1/tenants/acme/admins");
    // (serial, when the 201 came back)
    let acknowledged: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (acknowledged, stop, url, token) = (
            Arc::clone(&acknowledged),
            Arc::clone(&stop),
            url.clone(),
            token.clone(),
        );
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let out = tool(
                    "curl",
                    &[
                        "-s",
                        "-X",
                        "POST",
                        "-H",
                        &format!("Authorization: Bearer {token}"),
                        "-H",
                        "Content-Type: application/json",
                        "-d",
                        "{}",
                        &format!("{url}/load{n}/certificates"),
                    ],
                );
                let answer: serde_json::Value =
                    serde_json::from_str(&stdout(&out)).unwrap_or_default();
                if let Some(serial) = answer["serial"].as_str() {
                    acknowledged
                        .lock()
                        .unwrap()
                        .push((serial.to_owned(), Instant::now()));
                }
            }
        })
    };
    // Let some issuance happen first, then back up while it goes on.
    while acknowledged.lock().unwrap().len() < 5 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let archive = ca.path_str("backup.tar");
    let started = Instant::now();
    let report = ca.json(&["backup", "--out", &archive]);
    let during = acknowledged.lock().unwrap().len();
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    load.join().unwrap();
    drop(server);
    assert!(
        acknowledged.lock().unwrap().len() > during,
        "the load went on during and after the backup"
    );
    assert_eq!(report["store"], "sqlite", "{report}");
    let skipped = report["skipped"].to_string();
    assert!(skipped.contains("server.key"), "{report}");

    // Any tar reads it; no plaintext key is in it.
    let listing = stdout(&tool("tar", &["-tvf", &archive]));
    for member in [
        "manifest.json",
        "ca.db",
        "ca.pem",
        "ca.key",
        "policies/portal-admin.toml",
    ] {
        assert!(listing.contains(member), "{member} missing: {listing}");
    }
    assert!(!listing.contains("server.key"), "{listing}");
    let bytes = std::fs::read(&archive).unwrap();
    assert!(
        !bytes.windows(11).any(|w| w == b"PRIVATE KEY"),
        "a PEM private key is in the backup"
    );
    let mode = std::fs::metadata(&archive).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);

    let target = ca.path_str("restored");
    let out = restore_cmd(&ca, &target, &archive, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli_on(&ca, &target, &["audit", "verify"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Every certificate acknowledged before the backup began is there.
    let before: Vec<String> = acknowledged
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, at)| *at < started)
        .map(|(s, _)| s.clone())
        .collect();
    assert!(before.len() >= 5);
    for serial in &before {
        let out = cli_on(&ca, &target, &["--json", "show", serial]);
        assert!(out.status.success(), "{serial} lost: {}", stderr(&out));
    }
    // The restored CA works: it unlocks its key and issues.
    let out = cli_on(
        &ca,
        &target,
        &[
            "issue",
            "--tenant",
            "acme",
            "--admin",
            "after",
            "--out",
            &ca.path_str("after.p12"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // A second restore into the same directory is refused.
    let out = restore_cmd(&ca, &target, &archive, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
}

#[test]
fn an_old_backup_refuses_a_newer_crl_or_rolls_forward_above_it() {
    let ca = TestCa::init();
    let alice = ca.issue("acme", "alice", "portal-admin", "alice.p12")["serial"]
        .as_str()
        .unwrap()
        .to_owned();
    let archive = ca.path_str("old.tar");
    ca.ok(&["backup", "--out", &archive]);

    // After the backup: alice revoked, bob issued and revoked, a CRL published.
    ca.ok(&["revoke", &alice, "--reason", "key-compromise"]);
    let bob = ca.issue("acme", "bob", "portal-admin", "bob.p12")["serial"]
        .as_str()
        .unwrap()
        .to_owned();
    ca.ok(&["revoke", &bob, "--reason", "key-compromise"]);
    let newer = ca.crl_pem();
    let newer_number = ca.json(&["crl", "--out", &newer, "--pem"])["crl_number"]
        .as_u64()
        .unwrap();

    // Refused, naming the CRL; nothing is created.
    let target = ca.path_str("restored");
    let out = restore_cmd(&ca, &target, &archive, &["--last-crl", &newer]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(message.contains(&newer), "{message}");
    assert!(
        message.contains("CRL numbers would go backwards"),
        "{message}"
    );
    assert!(message.contains("--roll-forward"), "{message}");
    assert!(!std::path::Path::new(&target).exists());

    // Rolled forward: numbers continue above it, both revocations kept.
    let out = restore_cmd(
        &ca,
        &target,
        &archive,
        &["--last-crl", &newer, "--roll-forward"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli_on(&ca, &target, &["audit", "verify"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli_on(&ca, &target, &["--json", "show", &alice]);
    let shown: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(shown["status"], "revoked", "{shown}");
    let crl = ca.path_str("after-restore.crl");
    let out = cli_on(&ca, &target, &["--json", "crl", "--out", &crl, "--pem"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let published: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(
        published["crl_number"].as_u64().unwrap() > newer_number,
        "{published} vs {newer_number}"
    );
    // OpenSSL reads both serials on the restored CA's CRL (bob was issued
    // after the backup: the store never saw him, his revocation is kept).
    let text = stdout(&tool("openssl", &["crl", "-in", &crl, "-noout", "-text"])).to_lowercase();
    assert!(text.contains(&alice), "{text}");
    assert!(text.contains(&bob), "{text}");
    let (ok, why) = verify_with_crl(&ca.ca_pem(), &crl, &ca.cert_pem(&alice));
    assert!(!ok && why.contains("revoked"), "{why}");
}

/// `restore` into PostgreSQL: the archive holds no database (pg_dump's
/// job); a dump taken after the backup restores and verifies, one taken
/// before it — or another CA's — is refused, naming why.
#[test]
fn a_postgres_backup_restores_only_with_a_dump_that_reaches_it() {
    let Some(db) = PgDatabase::create("backup") else {
        return;
    };
    let ca = TestCa::init_on(&db.url);
    let alice = ca.issue("acme", "alice", "portal-admin", "alice.p12")["serial"]
        .as_str()
        .unwrap()
        .to_owned();
    let dump = |name: &str| {
        let path = ca.path_str(name);
        let out = tool(
            "pg_dump",
            &["--format=custom", "--no-owner", "-f", &path, &db.url],
        );
        assert!(out.status.success(), "pg_dump: {}", stderr(&out));
        path
    };
    let too_old = dump("before.dump");
    ca.ok(&["revoke", &alice, "--reason", "key-compromise"]);
    let bob = ca.issue("acme", "bob", "portal-admin", "bob.p12")["serial"]
        .as_str()
        .unwrap()
        .to_owned();
    let archive = ca.path_str("pg.tar");
    ca.ok(&["backup", "--out", &archive]);
    let good = dump("after.dump");

    // The archive: a manifest naming the store, no database in it.
    let listing = stdout(&tool("tar", &["-tf", &archive]));
    assert!(listing.contains("manifest.json"), "{listing}");
    assert!(!listing.contains("ca.db"), "{listing}");

    let restore_into = |target: &str, database_url: &str| {
        std::process::Command::new(bin("ca-cli"))
            .args(["--data-dir", target, "restore", "--from", &archive])
            .current_dir(ca.dir.path())
            .env("CA_KEY_PASSPHRASE", PASSPHRASE)
            .env("CA_DATABASE_URL", database_url)
            .env_remove("CA_CONFIG")
            .env_remove("CA_DATA_DIR")
            .output()
            .unwrap()
    };
    let load = |dump: &str, tag: &str| {
        let target = PgDatabase::create(tag).unwrap();
        let out = tool("pg_restore", &["--no-owner", "-d", &target.url, dump]);
        assert!(out.status.success(), "pg_restore: {}", stderr(&out));
        target
    };

    // Without a database URL the restore says what to do first.
    let out = restore_cmd(&ca, &ca.path_str("nowhere"), &archive, &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("pg_restore"), "{}", stderr(&out));

    // A dump from before the backup: refused, nothing created.
    let old = load(&too_old, "backup_old");
    let target = ca.path_str("from-old");
    let out = restore_into(&target, &old.url);
    assert!(
        !out.status.success(),
        "a dump older than the backup restored"
    );
    assert!(
        stderr(&out).contains("older than the backup"),
        "{}",
        stderr(&out)
    );
    assert!(!std::path::Path::new(&target).exists());

    // Another CA's database: refused.
    let other_db = PgDatabase::create("backup_other").unwrap();
    let other = TestCa::init_on(&other_db.url);
    for admin in ["x", "y", "z", "w"] {
        other.issue("acme", admin, "portal-admin", &format!("{admin}.p12"));
    }
    let out = restore_into(&ca.path_str("from-other"), &other_db.url);
    assert!(!out.status.success(), "another CA's database restored");
    assert!(
        stderr(&out).contains("not the backup's"),
        "{}",
        stderr(&out)
    );

    // The dump taken after the backup: restored, verified, statuses kept.
    let restored = load(&good, "backup_new");
    let target = ca.path_str("restored");
    let out = restore_into(&target, &restored.url);
    assert!(out.status.success(), "{}", stderr(&out));
    let on_restored = |args: &[&str]| {
        let mut all = vec!["--data-dir", target.as_str()];
        all.extend_from_slice(args);
        std::process::Command::new(bin("ca-cli"))
            .args(&all)
            .current_dir(ca.dir.path())
            .env("CA_KEY_PASSPHRASE", PASSPHRASE)
            .env("CA_DATABASE_URL", &restored.url)
            .env_remove("CA_CONFIG")
            .env_remove("CA_DATA_DIR")
            .output()
            .unwrap()
    };
    let out = on_restored(&["audit", "verify"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for (serial, status) in [(&alice, "revoked"), (&bob, "active")] {
        let out = on_restored(&["--json", "show", serial]);
        assert!(out.status.success(), "{}", stderr(&out));
        let shown: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(shown["status"], status, "{shown}");
    }
    // The restored CA signs: its next CRL lists alice (OpenSSL reads it).
    let crl = ca.path_str("restored.crl");
    let out = on_restored(&["crl", "--out", &crl, "--pem"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&tool("openssl", &["crl", "-in", &crl, "-noout", "-text"]));
    assert!(
        text.to_uppercase().contains(&alice.to_uppercase()),
        "{text}"
    );
}
