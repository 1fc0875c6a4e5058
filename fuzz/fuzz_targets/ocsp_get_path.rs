//! Any text after /ocsp/ in a GET: base64 decoding, then request parsing.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let issuer = ca_core::ocsp::IssuerHashes::fixed_for_fuzzing();
    if let Ok(der) = ca_core::ocsp::decode_get_path(text) {
        let _ = ca_core::ocsp::parse_request(&der, &issuer);
    }
});
