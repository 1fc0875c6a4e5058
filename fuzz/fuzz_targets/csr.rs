//! Any bytes as a CSR (`sign-csr --csr F`, `POST …/csr`): a key or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ca_core::fuzzing::csr(data);
});
