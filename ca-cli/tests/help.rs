//! The help text teaches: every command is listed with an example day and the exit codes.
//! (Also makes `cargo test --workspace` build the `ca-cli` binary the end-to-end tests drive.)

use std::process::Command;

#[test]
fn help_lists_commands_exit_codes_and_examples() {
    let out = Command::new(env!("CARGO_BIN_EXE_ca-cli"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for word in [
        "init",
        "issue",
        "reissue",
        "revoke",
        "sign-csr",
        "list",
        "show",
        "crl",
        "ca-cert",
        "policy",
        "audit",
        "Exit codes",
        "CA_KEY_PASSPHRASE",
    ] {
        assert!(text.contains(word), "--help lacks {word}:\n{text}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_ca-cli"))
        .args(["reissue", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("key-compromise") && text.contains("Example"),
        "{text}"
    );
}
