//! `ca-server`: load configuration, open the CA, serve until SIGTERM.

// Denied, not forbidden: `allocator` and `affinity` alone allow it, for
// calls into glibc.
#![deny(unsafe_code)]

mod affinity;
mod allocator;

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use zeroize::Zeroizing;

/// HTTP API of the client-certificate CA. Configuration from --config and CA_… variables;
/// the CA key passphrase from CA_KEY_PASSPHRASE or key.passphrase_file, or with
/// key.source = "pkcs11" the token PIN from CA_PKCS11_PIN or key.pin_file.
#[derive(Parser)]
#[command(name = "ca-server", version, after_help = AFTER_HELP)]
struct Args {
    /// Configuration file (ca.toml).
    #[arg(long, env = "CA_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

const AFTER_HELP: &str = "\
Environment only (they concern the process, not the CA):
  CA_LOG              log filter, e.g. info (default: info,sqlx=warn) or ca_server=debug
  CA_WORKER_AFFINITY  off: leave the async workers to the scheduler (default: on Linux, one
                      pinned to each CPU of the process's set, when there is one for each)

Signals: SIGTERM finishes in-flight requests (up to 30 s) and exits 0; SIGHUP re-reads the
TLS certificate and key files.

Examples:
  ca-cli init --subject \"CN=Portal Admin CA,O=Example Corp\" --base-url http://127.0.0.1:8080
  export CA_KEY_PASSPHRASE='the passphrase given at init'   # or key.passphrase_file
  ca-server                                   # ca-data/ of this directory, on 127.0.0.1:8080
  CA_TLS_CERT_FILE=ca-data/server.pem CA_TLS_KEY_FILE=ca-data/server.key ca-server   # HTTPS
  ca-server --config /etc/portal-ca/ca.toml   # every key of ca.toml also from CA_… (README)";

fn main() {
    allocator::configure();
    let args = Args::parse();
    let config = match ca_core::Config::load(args.config.as_deref(), |k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => fail(&e.to_string()),
    };
    init_logging(config.log_format);
    allocator::spawn_trimmer();
    // Read before any thread exists: the environment is then changed safely.
    let secrets = match read_secrets(&config) {
        Ok(s) => s,
        Err(e) => fail(&e.to_string()),
    };
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().worker_threads(workers);
    match affinity::enable(std::env::var("CA_WORKER_AFFINITY").ok().as_deref(), workers) {
        Ok(cpus) => {
            builder
                .on_thread_start(affinity::release_current)
                .on_thread_park(affinity::place_worker);
            ca_core::on_sqlite_connection(|| affinity::release_threads_named("sqlx-sqlite"));
            tracing::info!(?cpus, "async workers pinned one to a CPU");
        }
        Err(why) => tracing::info!(%why, "async workers not pinned"),
    }
    let runtime = builder.build().expect("tokio runtime");
    if let Err(e) = runtime.block_on(serve(config, secrets)) {
        tracing::error!(error = %e, "ca-server stopped");
        fail(&e.to_string());
    }
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}

fn init_logging(format: ca_core::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CA_LOG")
        .unwrap_or_else(|_| "info,sqlx=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        ca_core::LogFormat::Json => builder.json().init(),
        ca_core::LogFormat::Text => builder.init(),
    }
}

/// The secrets `key.source` needs, read once: the passphrase from
/// `key.passphrase_file` or `CA_KEY_PASSPHRASE`, the token PIN from
/// `key.pin_file` or `CA_PKCS11_PIN` (both variables leave the environment).
fn read_secrets(config: &ca_core::Config) -> Result<ca_core::KeySecrets, ca_core::Error> {
    let from_env = ca_core::take_secret_env("CA_KEY_PASSPHRASE");
    let pin = ca_core::read_pin(config)?;
    if let (Some(token), None) = (config.token(), &pin) {
        return Err(ca_core::Error::Key(format!(
            "set CA_PKCS11_PIN or key.pin_file to the user PIN of token \"{}\"",
            token.token_label
        )));
    }
    let passphrase = match &config.passphrase_file {
        Some(file) => {
            let text = Zeroizing::new(std::fs::read_to_string(file).map_err(|e| {
                ca_core::Error::Config(format!("key.passphrase_file {}: {e}", file.display()))
            })?);
            Some(Zeroizing::new(
                text.trim_end_matches(['\r', '\n']).as_bytes().to_vec(),
            ))
        }
        None => from_env.map(|p| Zeroizing::new(p.as_bytes().to_vec())),
    };
    if passphrase.is_none() && config.needs_passphrase() {
        let what = match config.token() {
            None => "to unlock the CA key",
            Some(_) => "to unlock the OCSP responder key (ocsp.key_source = \"file\")",
        };
        return Err(ca_core::Error::Key(format!(
            "set CA_KEY_PASSPHRASE or key.passphrase_file {what}"
        )));
    }
    Ok(ca_core::KeySecrets { passphrase, pin })
}

async fn serve(
    config: ca_core::Config,
    secrets: ca_core::KeySecrets,
) -> Result<(), ca_core::Error> {
    // TLS files first: a bad certificate or key fails start-up before anything else.
    let tls = match &config.tls {
        Some(files) => {
            let (acceptor, serial) =
                ca_server::TlsAcceptor::load(files).map_err(ca_core::Error::Config)?;
            tracing::info!(serial = %serial, cert_file = %files.cert_file.display(), client_certificates = files.client_ca_file.is_some(), "TLS certificate loaded");
            Some(Arc::new(acceptor))
        }
        None => None,
    };
    let opened = ca_core::Ca::open_with(&config, &secrets).await;
    let (api, state) = match opened {
        Ok(ca) => {
            let state = ca_server::AppState::new(ca)
                .with_limits(config.limits)
                .with_mail(&config)?;
            state.warm_up().await?;
            state.spawn_background();
            state.spawn_delivery();
            (ca_server::app(state.clone()), Some(state))
        }
        // An issuing CA waiting for its certificate: serve /readyz 503 with
        // the reason (and nothing else) rather than refusing to start.
        Err(ca_core::Error::NotReady(reason)) => {
            tracing::warn!(reason = %reason, "the CA cannot issue yet; waiting for `ca-cli ca import-cert`");
            (ca_server::pending_app(reason), None)
        }
        Err(e) => return Err(e),
    };
    let api = ca_server::Switch::new(api);
    // The secrets stay (zeroized on drop) to open the CA again when its
    // issuer changes; the CA itself keeps them anyway (the token PIN, to
    // log in again after the token comes back).
    follow_issuers(api.clone(), config.clone(), secrets, state);
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| {
            ca_core::Error::Config(format!("listen: cannot bind {}: {e}", config.listen))
        })?;
    let address = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(listen = %address, scheme, data_dir = %config.data_dir.display(), "ca-server ready");
    reload_on_sighup(tls.clone());
    let current = api.clone();
    let shutdown = async move {
        shutdown().await;
        // Held CRL long-polls are answered now, not after their wait.
        if let Some(state) = current.current().state() {
            state.crl.close();
        }
    };
    ca_server::listener::serve(listener, api, tls, shutdown).await;
    tracing::info!("ca-server stopped cleanly");
    Ok(())
}

/// Every second, follows the store's issuers: a pending issuing CA starts
/// serving once `ca import-cert` installed its certificate, and after a
/// rollover's import new requests go to the CA opened again (new
/// certificates from the new issuer; the old one keeps its CRL and OCSP).
/// No restart, no connection dropped; a failed reopen is logged and retried.
fn follow_issuers(
    api: ca_server::Switch,
    config: ca_core::Config,
    secrets: ca_core::KeySecrets,
    mut state: Option<ca_server::AppState>,
) {
    tokio::spawn(async move {
        let mut last_error = String::new();
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let changed = match &state {
                None => true,
                Some(state) => match state.ca.issuer_changed().await {
                    Ok(changed) => changed,
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot read the issuers; will retry");
                        false
                    }
                },
            };
            if !changed {
                continue;
            }
            let opened = async {
                let ca = ca_core::Ca::open_with(&config, &secrets).await?;
                let next = match &state {
                    Some(previous) => previous.succeeded_by(ca),
                    None => ca_server::AppState::new(ca)
                        .with_limits(config.limits)
                        .with_mail(&config)?,
                };
                next.warm_up().await?;
                Ok::<_, ca_core::Error>(next)
            }
            .await;
            match opened {
                Ok(next) => {
                    next.spawn_background();
                    next.spawn_delivery();
                    api.set(ca_server::app(next.clone()));
                    let issuer = next.ca.issuers().first().map(|i| i.id().to_owned());
                    match state.replace(next) {
                        Some(previous) => {
                            previous.retire();
                            tracing::info!(issuer = ?issuer, "the active issuer changed (ca import-cert): new certificates come from it");
                        }
                        None => {
                            tracing::info!(issuer = ?issuer, "the issuing CA's certificate is installed: serving")
                        }
                    }
                    last_error.clear();
                }
                // Still pending: nothing to say again.
                Err(ca_core::Error::NotReady(_)) => {}
                Err(e) => {
                    let message = e.to_string();
                    if message != last_error {
                        tracing::error!(error = %message, "cannot open the CA again after its issuer changed; still serving the previous one, will retry");
                        last_error = message;
                    }
                }
            }
        }
    });
}

/// SIGHUP re-reads the TLS certificate and key: new connections get them,
/// connections in flight keep the old ones. A bad file is logged and the
/// previous certificate stays in use.
fn reload_on_sighup(tls: Option<Arc<ca_server::TlsAcceptor>>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; TLS files will not be reloaded");
                return;
            }
        };
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                match &tls {
                    Some(tls) => match tls.reload() {
                        Ok(serial) => {
                            tracing::info!(serial = %serial, "SIGHUP: TLS certificate reloaded")
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "SIGHUP: TLS files not reloaded; still serving the previous certificate")
                        }
                    },
                    None => tracing::info!("SIGHUP: no TLS files configured; nothing to reload"),
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = tls;
}

/// Resolves on SIGTERM or Ctrl-C; in-flight requests then finish before exit.
async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down: finishing in-flight requests");
}
