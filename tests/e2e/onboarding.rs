//! Onboarding: a policy's default delivery, `bulk-issue` from a CSV file,
//! and shell completions.

use serde_json::Value;

use crate::pickup::bundle_serial;
use crate::util::*;

/// A policy with `delivery = "pickup"` makes pickup the default of issue and
/// reissue (API and CLI) when the caller names no delivery; an explicit
/// choice still wins.
#[test]
fn a_policy_can_make_pickup_the_default() {
    let ca = TestCa::init();
    ca.add_pickup_policy();
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
