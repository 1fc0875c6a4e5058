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
