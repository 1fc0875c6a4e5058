//! Any text as a policy file: a policy or an error naming file and line, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ca_core::fuzzing::policy(text);
    }
});
