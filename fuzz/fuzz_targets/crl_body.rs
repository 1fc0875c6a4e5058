//! Any bytes as the body `crl pull` fetched: verified against the CA or refused, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// A real CA certificate (the one the corpus CRLs were signed by).
const CA: &[u8] = include_bytes!("../corpus/crl_body-ca.pem");

fuzz_target!(|data: &[u8]| {
    let now = ca_core::OffsetDateTime::now_utc();
    if let Ok(crl) = ca_core::verify_crl(data, CA, now) {
        let _ = ca_core::compare_crl(&crl, Some(&crl));
    }
});
