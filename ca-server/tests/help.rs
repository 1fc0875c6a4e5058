//! `ca-server --help` names its configuration sources. (Also makes
//! `cargo test --workspace` build the binary the end-to-end tests start.)

#[test]
fn help_names_the_configuration_sources() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ca-server"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("--config") && text.contains("CA_KEY_PASSPHRASE"),
        "{text}"
    );
}
