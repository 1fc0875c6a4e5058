//! Faults a CA meets in production, driven through the real binaries: a full
//! or read-only disk, and SIGTERM while requests are in flight.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::util::*;

/// A small tmpfs mounted over a directory, unmounted on drop.
struct SmallDisk {
    at: PathBuf,
}

impl SmallDisk {
    /// `None` (skip) when this machine cannot mount (not root); CI always can.
    fn mount(at: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .unwrap();
        if !out.status.success() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the disk tests as root: {}",
                stderr(&out)
            );
            eprintln!(
                "skipping: cannot mount a tmpfs here ({})",
                stderr(&out).trim()
            );
            return None;
        }
        Some(SmallDisk { at: at.to_owned() })
    }

    fn remount(&self, mode: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&self.at)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }

    /// Fills the disk to the last byte; returns the filler file.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.at.join("filler.bin");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 << 10];
        while file.write_all(&chunk).is_ok() {}
        let small = [0u8; 512];
        while file.write_all(&small).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).output();
    }
}

fn count(ca: &TestCa) -> usize {
    ca.json(&["list", "--tenant", "acme"])["items"]
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn a_full_disk_refuses_changes_clearly_and_recovers() {
    let ca = TestCa::uninitialised();
    let Some(disk) = SmallDisk::mount(&ca.data_dir(), "24m") else {
        return;
    };
    ca.init_here("http://127.0.0.1:8080", &[]);
    let server = Server::start(&ca);
    let token = ca.token("operator");
    let alice = server.issue(&token, "alice", "{}");
    let alice_serial = alice["serial"].as_str().unwrap().to_owned();
    let before = count(&ca);

    let filler = disk.fill();
    // Through the API: 507 with a message that names the disk, nothing changed.
    let (code, body) = server.post(&token, "/v1/tenants/acme/admins/bob/certificates", "{}");
    assert_eq!(code, "507", "{body}");
    assert!(body.contains("disk is full"), "{body}");
    let (code, body) = server.post(
        &token,
        &format!("/v1/certificates/{alice_serial}/revoke"),
        "{}",
    );
    assert_eq!(code, "507", "{body}");
    // Through the CLI (bundle written elsewhere): exit 1, the disk named.
    let out = ca.run(&[
        "issue",
        "--tenant",
        "acme",
        "--admin",
        "carol",
        "--out",
        "/dev/null/x",
    ]);
    assert!(!out.status.success());
    let out = ca.run(&["revoke", &alice_serial]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("full or read-only"),
        "{}",
        stderr(&out)
    );

    std::fs::remove_file(filler).unwrap();
    assert_eq!(count(&ca), before, "nothing half-committed");
    let shown = ca.json(&["show", &alice_serial]);
    assert_eq!(
        shown["status"], "active",
        "the refused revocation did not happen"
    );

    // Space is back: the same server carries on, without a restart.
    let (code, body) = server.post(&token, "/v1/tenants/acme/admins/bob/certificates", "{}");
    assert_eq!(code, "201", "{body}\n{}", server.log_text());
    let (code, body) = server.post(
        &token,
        &format!("/v1/certificates/{alice_serial}/revoke"),
        "{}",
    );
    assert_eq!(code, "200", "{body}\n{}", server.log_text());
    assert_eq!(count(&ca), before + 1);
    let audit = ca.run(&["audit", "verify"]);
    assert!(audit.status.success(), "{}", stderr(&audit));
    drop(server);
}

/// A data directory whose file system went read-only. (Linux refuses to
/// remount a file system read-only while a file on it is open for writing,
/// so the server is stopped first; a disk that turns read-only under a
/// running server fails the same writes with the same error.)
#[test]
fn a_read_only_disk_refuses_changes_and_recovers() {
    let ca = TestCa::uninitialised();
    let Some(disk) = SmallDisk::mount(&ca.data_dir(), "24m") else {
        return;
    };
    ca.init_here("http://127.0.0.1:8080", &[]);
    let alice = ca.issue("acme", "alice", "portal-admin", "alice.p12");
    let alice_serial = alice["serial"].as_str().unwrap().to_owned();
    let before = count(&ca);

    disk.remount("ro");
    let out = ca.run(&["revoke", &alice_serial]);
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(
        message.contains("read-only") || message.contains("readonly"),
        "{message}"
    );
    assert!(!message.contains("panicked"), "{message}");
    disk.remount("rw");

    assert_eq!(count(&ca), before, "nothing half-committed");
    assert_eq!(ca.json(&["show", &alice_serial])["status"], "active");
    ca.ok(&["revoke", &alice_serial]);
    let audit = ca.run(&["audit", "verify"]);
    assert!(audit.status.success(), "{}", stderr(&audit));
}

/// SIGTERM with requests in flight: each completes (its certificate
/// committed and delivered) or is refused before it changed anything; the
/// server exits 0.
#[test]
fn sigterm_under_load_finishes_or_refuses_and_exits_zero() {
    let ca = TestCa::init();
    let server = Server::start(&ca);
    let token = ca.token("operator");
    let results: Vec<(String, String)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8)
            .map(|i| {
                let (server, token) = (&server, &token);
                scope.spawn(move || {
                    let mut seen = Vec::new();
                    for j in 0..40 {
                        let (code, body) = server.post(
                            token,
                            &format!("/v1/tenants/acme/admins/u{i}-{j}/certificates"),
                            "{}",
                        );
                        let refused = code == "000";
                        seen.push((code, body));
                        if refused {
                            break;
                        }
                    }
                    seen
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(700));
        let pid = server.pid();
        let out = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .output()
            .unwrap();
        assert!(out.status.success());
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let (status, log) = server.stop();
    assert_eq!(status, Some(0), "exit status after SIGTERM: {log}");
    // Every 201 is committed; nothing else was.
    let delivered: Vec<String> = results
        .iter()
        .filter(|(code, _)| code == "201")
        .map(|(_, body)| {
            serde_json::from_str::<serde_json::Value>(body).unwrap()["serial"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let codes: std::collections::BTreeSet<&str> = results.iter().map(|(c, _)| c.as_str()).collect();
    assert!(
        codes.iter().all(|c| *c == "201" || *c == "000"),
        "{codes:?}"
    );
    assert!(!delivered.is_empty());
    assert_eq!(count(&ca), delivered.len(), "stored == delivered");
    for serial in &delivered {
        assert_eq!(ca.json(&["show", serial])["status"], "active");
    }
    let audit = ca.run(&["audit", "verify"]);
    assert!(audit.status.success(), "{}", stderr(&audit));
}
