//! `ca-cli`: parse, run one command, turn an error into a message and an exit code.

#![forbid(unsafe_code)]

mod cli;
mod commands;
mod delivery;
mod hierarchy;
mod pull;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    if let cli::Command::Completions { shell } = cli.command {
        delivery::completions(shell);
        return;
    }
    let json = cli.json;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(commands::run(cli));
    // A `crl pull --watch` stopped by SIGTERM may leave its long-poll running
    // on a blocking thread; do not wait out its 55 s (nothing is written there).
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    if let Err(error) = result {
        if json {
            let view = ca_core::ErrorView::from_error(&error);
            eprintln!("{}", serde_json::to_string(&view).expect("serialisable"));
        } else {
            eprintln!("error: {error}");
        }
        std::process::exit(exit_code(&error));
    }
}

/// The one mapping from errors to exit codes (documented in `--help`).
fn exit_code(error: &ca_core::Error) -> i32 {
    use ca_core::Error;
    match error {
        Error::InvalidInput(_) | Error::Policy(_) | Error::Config(_) => 2,
        Error::Unauthenticated(_) | Error::TokenExpired(_) | Error::Forbidden(_) => 2,
        Error::Conflict(_) | Error::AlreadyDone { .. } => 3,
        Error::NotFound(_) => 4,
        Error::Key(_) | Error::SignerUnavailable(_) | Error::NotReady(_) => 5,
        Error::AuditBroken(_) => 6,
        Error::Store(_)
        | Error::Unavailable(_)
        | Error::StorageFull(_)
        | Error::Crypto(_)
        | Error::Io { .. } => 1,
    }
}
