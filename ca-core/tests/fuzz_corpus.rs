//! Replays the fuzzing corpus (`fuzz/corpus/*`: seeds and any inputs a fuzzer
//! run found worth keeping) through the OCSP decoders: no input may panic, and
//! the seeds get the answers they were made for.

use std::path::Path;

use ca_core::ocsp::{decode_get_path, parse_request, IssuerHashes, OcspFailure};

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    files
        .into_iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

#[test]
fn ocsp_request_corpus_never_panics() {
    let issuer = IssuerHashes::fixed_for_fuzzing();
    for (name, data) in corpus("ocsp_request") {
        let result = parse_request(&data, &issuer);
        match name.as_str() {
            "seed-garbage.bin" | "seed-long-nonce.der" => {
                assert_eq!(result.unwrap_err(), OcspFailure::Malformed, "{name}")
            }
            // Real requests for another CA than the fuzzing one.
            n if n.starts_with("seed-") => {
                assert_eq!(result.unwrap_err(), OcspFailure::Unauthorized, "{name}")
            }
            _ => {}
        }
    }
}

#[test]
fn ocsp_get_path_corpus_never_panics() {
    let issuer = IssuerHashes::fixed_for_fuzzing();
    for (name, data) in corpus("ocsp_get_path") {
        let Ok(text) = std::str::from_utf8(&data) else {
            continue;
        };
        let decoded = decode_get_path(text);
        if name == "seed-bad.txt" {
            assert!(decoded.is_err());
        } else if name.starts_with("seed-") {
            assert!(decoded.is_ok(), "{name}");
        }
        if let Ok(der) = decoded {
            let _ = parse_request(&der, &issuer);
        }
    }
}

#[test]
fn csr_corpus_never_panics() {
    for (name, data) in corpus("csr") {
        let result = ca_core::fuzzing::csr(&data);
        if name.starts_with("seed-") {
            assert!(result.is_ok(), "{name}: {:?}", result.err());
        }
    }
}

#[test]
fn policy_corpus_never_panics() {
    for (name, data) in corpus("policy_toml") {
        let Ok(text) = std::str::from_utf8(&data) else {
            continue;
        };
        let result = ca_core::fuzzing::policy(text);
        if name.starts_with("seed-") {
            assert!(result.is_ok(), "{name}: {:?}", result.err());
        }
    }
}

#[test]
fn config_corpus_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    for (name, data) in corpus("config_toml") {
        let path = dir.path().join("ca.toml");
        std::fs::write(&path, &data).unwrap();
        let result = ca_core::Config::load(Some(&path), |_| None);
        if name.starts_with("seed-") {
            assert!(result.is_ok(), "{name}: {:?}", result.err());
        }
        if let Ok(text) = std::str::from_utf8(&data) {
            // The fuzz target parses from memory: it must say what the file says.
            let from_str = ca_core::Config::load_str(text, &path.display().to_string(), |_| None);
            assert_eq!(
                result.as_ref().err().map(|e| e.to_string()),
                from_str.as_ref().err().map(|e| e.to_string()),
                "{name}: load_str and load disagree"
            );
            let _ = ca_core::Config::load(None, |_| Some(text.to_owned()));
        }
    }
}

#[test]
fn crl_body_corpus_never_panics() {
    let ca =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/crl_body-ca.pem"))
            .unwrap();
    // The seeds are real CRLs; their nextUpdate is a day after they were
    // made, so they are checked at a time inside it.
    for (name, data) in corpus("crl_body") {
        let result = ca_core::verify_crl(&data, &ca, ca_core::OffsetDateTime::now_utc());
        if name.starts_with("seed-") {
            match result {
                Ok(_) => {}
                Err(e) => assert!(
                    e.to_string().contains("expired") || e.to_string().contains("nextUpdate"),
                    "{name}: {e}"
                ),
            }
        }
    }
}
