//! Any bytes as the JSON body of every route that takes one: parsed and
//! checked as the handlers do before they touch the CA, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ca_server::fuzzing::json_bodies(data);
});
