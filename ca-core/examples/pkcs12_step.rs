//! Times the PKCS#12 step of an issuance on its own (no key generation, no
//! signing, no store), for both profiles and for OpenSSL's `PKCS12_create`
//! writing the legacy one, in one process, alternating them so that machine
//! noise falls on all alike. Used by `benches/bench.py`.
//!
//! `cargo run --release -p ca-core --example pkcs12_step -- [SECONDS] [ROUNDS]`
//! prints one JSON line per (key, profile): bundles per second, the median of
//! ROUNDS rounds of SECONDS each on one thread.

use std::time::Instant;

use ca_core::KeyAlgorithm;

fn main() -> ca_core::Result<()> {
    let mut args = std::env::args().skip(1);
    let seconds: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2.0);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    for (name, algorithm) in [
        ("P-256", KeyAlgorithm::EcdsaP256),
        ("RSA-2048", KeyAlgorithm::Rsa2048),
    ] {
        let mut steps = [
            (
                "modern",
                ca_core::benching::pkcs12_step(algorithm, "modern")?,
            ),
            (
                "legacy",
                ca_core::benching::pkcs12_step(algorithm, "legacy")?,
            ),
            (
                "openssl-legacy",
                ca_core::benching::pkcs12_step(algorithm, "openssl-legacy")?,
            ),
        ];
        let mut rates: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
        for _ in 0..rounds {
            for (i, (_, step)) in steps.iter_mut().enumerate() {
                let start = Instant::now();
                let mut count = 0u64;
                while start.elapsed().as_secs_f64() < seconds {
                    step()?;
                    count += 1;
                }
                rates[i].push(count as f64 / start.elapsed().as_secs_f64());
            }
        }
        for (i, (profile, _)) in steps.iter().enumerate() {
            let mut r = rates[i].clone();
            r.sort_by(f64::total_cmp);
            println!(
                "JSON {{\"key\":\"{name}\",\"profile\":\"{profile}\",\"median\":{:.1},\"min\":{:.1},\"max\":{:.1}}}",
                r[r.len() / 2],
                r[0],
                r[r.len() - 1]
            );
        }
    }
    Ok(())
}
