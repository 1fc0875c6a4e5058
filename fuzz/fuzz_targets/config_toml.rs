//! Any text as `ca.toml` (read from a file, as the binaries read it), with
//! the same text as every `CA_…` override: a config or an error naming the key.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static PATH: std::path::PathBuf =
            std::env::temp_dir().join(format!("ca-fuzz-config-{}.toml", std::process::id()));
    }
    PATH.with(|path| {
        std::fs::write(path, data).expect("temp file");
        let _ = ca_core::Config::load(Some(path), |_| None);
        if let Ok(text) = std::str::from_utf8(data) {
            let _ = ca_core::Config::load(None, |_| Some(text.to_owned()));
        }
    });
});
