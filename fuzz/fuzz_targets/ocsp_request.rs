//! Any bytes POSTed to /ocsp: must parse or be refused, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let issuer = ca_core::ocsp::IssuerHashes::fixed_for_fuzzing();
    let _ = ca_core::ocsp::parse_request(data, &issuer);
});
