//! End-to-end tests: the real `ca-cli` binary, its output checked with tools no
//! one here wrote — OpenSSL, NSS `pk12util`, Python `cryptography`, pkilint.

mod util;

mod backup;
mod cli_audit;
mod cli_errors;
mod cli_issue;
mod cli_revocation;
mod console;
mod crl;
mod gateway;
mod hierarchy;
mod hsm;
mod mail;
mod ocsp;
mod onboarding;
mod pickup;
mod postgres;
mod reliability;
mod server;
mod tls;
