//! Any text as `ca.toml` (parsed as the binaries parse the file they read),
//! with the same text as every `CA_…` override: a config or an error naming
//! the key. The text is parsed from memory (`Config::load_str`, which
//! `Config::load` calls once it has read the file), not written to disk:
//! a temporary file per input cost about 2 ms, most of the run.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Invalid UTF-8 is refused by the file reader before the parser sees it.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = ca_core::Config::load_str(text, "ca.toml", |_| None);
    let _ = ca_core::Config::load(None, |_| Some(text.to_owned()));
});
