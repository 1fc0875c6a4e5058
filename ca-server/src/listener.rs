//! Accepting connections: plain HTTP, or HTTPS through OpenSSL (the TLS stack
//! the CA already links for PKCS#12 and key handling, so no second crypto
//! library is added).
//!
//! ```text
//!  accept ─► task per connection ─► [TLS handshake, ≤ 10 s] ─► hyper HTTP/1.1 ─► Api
//!                                     │ acceptor read from TlsAcceptor (swapped on SIGHUP;
//!                                     │ connections keep the context they started with)
//!                                     └ client certificate (DER) ─► Peer extension ─► Auth
//! ```
//!
//! Every connection is watched for graceful shutdown: on SIGTERM the listener
//! closes, idle connections close, and requests in flight finish.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ca_core::TlsFiles;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use openssl::asn1::Asn1Time;
use openssl::pkey::PKey;
use openssl::ssl::{Ssl, SslAcceptor, SslMethod, SslVerifyMode};
use openssl::x509::{X509StoreContextRef, X509};
use tokio::net::{TcpListener, TcpStream};
use tokio_openssl::SslStream;
use tower::Service as _;

use crate::Api;

/// A peer that has not finished its TLS handshake by then is dropped, so a
/// slow or silent client holds one task, never the accept loop.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A client must send a request's headers within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// After SIGTERM, requests in flight get this long to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The other end of a connection; every request carries it as an extension.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The TCP peer address (what abuse limits count by).
    pub address: SocketAddr,
    /// True when the connection is TLS.
    pub tls: bool,
    /// The client certificate (DER) the peer presented and proved it holds the
    /// key of; whether it may log in is decided by `ca_core`, per request.
    pub certificate: Option<Arc<[u8]>>,
}

/// The server's TLS configuration, re-read from its files on [`TlsAcceptor::reload`].
pub struct TlsAcceptor {
    files: TlsFiles,
    current: RwLock<Arc<SslAcceptor>>,
}

impl TlsAcceptor {
    /// Reads and checks the files; the error names the file and the problem.
    pub fn load(files: &TlsFiles) -> Result<(Self, String), String> {
        let (acceptor, serial) = build_acceptor(files)?;
        Ok((
            TlsAcceptor {
                files: files.clone(),
                current: RwLock::new(Arc::new(acceptor)),
            },
            serial,
        ))
    }

    /// Re-reads the files; on success new connections use them (connections
    /// already open keep theirs), on error the previous ones stay in use.
    /// Returns the new certificate's serial.
    pub fn reload(&self) -> Result<String, String> {
        let (acceptor, serial) = build_acceptor(&self.files)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(acceptor);
        Ok(serial)
    }

    fn current(&self) -> Arc<SslAcceptor> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn read(path: &Path, key: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{key} {}: cannot read: {e}", path.display()))
}

/// Builds the acceptor: Mozilla's "intermediate" profile (TLS 1.2 and 1.3,
/// ECDHE with AES-GCM or ChaCha20-Poly1305 only), the certificate chain and
/// key, and — with `client_ca_file` — a request (not a requirement) for a
/// client certificate from those CAs.
fn build_acceptor(files: &TlsFiles) -> Result<(SslAcceptor, String), String> {
    let (cert_path, key_path) = (files.cert_file.display(), files.key_file.display());
    let chain = X509::stack_from_pem(&read(&files.cert_file, "tls.cert_file")?)
        .map_err(|_| format!("tls.cert_file {cert_path}: not a PEM certificate chain"))?;
    let leaf = chain
        .first()
        .ok_or_else(|| format!("tls.cert_file {cert_path}: no certificate in the file"))?;
    let now = Asn1Time::days_from_now(0).map_err(|e| e.to_string())?;
    if leaf.not_after() <= now {
        return Err(format!(
            "tls.cert_file {cert_path}: the certificate expired on {} (issue a new one: ca-cli server-cert)",
            leaf.not_after()
        ));
    }
    if leaf.not_before() > now {
        return Err(format!(
            "tls.cert_file {cert_path}: the certificate is not valid before {}",
            leaf.not_before()
        ));
    }
    let key = PKey::private_key_from_pem(&read(&files.key_file, "tls.key_file")?)
        .map_err(|_| format!("tls.key_file {key_path}: not a PEM private key"))?;
    let matches = leaf
        .public_key()
        .map(|public| public.public_eq(&key))
        .unwrap_or(false);
    if !matches {
        return Err(format!(
            "tls.key_file {key_path} does not match the certificate in tls.cert_file {cert_path}"
        ));
    }
    let tls_error = |e: openssl::error::ErrorStack| format!("TLS setup: {e}");
    let mut builder =
        SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).map_err(tls_error)?;
    builder.set_certificate(leaf).map_err(tls_error)?;
    for extra in chain.iter().skip(1) {
        builder
            .add_extra_chain_cert(extra.to_owned())
            .map_err(tls_error)?;
    }
    // Read whole TLS records (and what follows) in one read instead of a
    // header read and a body read: one syscall less per request.
    builder.set_read_ahead(true);
    builder.set_private_key(&key).map_err(tls_error)?;
    builder.check_private_key().map_err(tls_error)?;
    if let Some(ca_file) = &files.client_ca_file {
        let shown = ca_file.display();
        let cas = X509::stack_from_pem(&read(ca_file, "tls.client_ca_file")?)
            .ok()
            .filter(|cas| !cas.is_empty())
            .ok_or_else(|| format!("tls.client_ca_file {shown}: no PEM certificate in the file"))?;
        for ca in &cas {
            builder
                .cert_store_mut()
                .add_cert(ca.to_owned())
                .map_err(tls_error)?;
            builder.add_client_ca(ca).map_err(tls_error)?;
        }
        // PEER without FAIL_IF_NO_PEER_CERT: asked for, not required (tokens still work).
        builder.set_verify_callback(SslVerifyMode::PEER, accept_for_api_check);
        // Session resumption with client certificates needs a context id.
        builder
            .set_session_id_context(b"ca-server")
            .map_err(tls_error)?;
    }
    let serial = leaf
        .serial_number()
        .to_bn()
        .and_then(|bn| bn.to_hex_str().map(|h| h.to_lowercase()))
        .map_err(tls_error)?;
    Ok((builder.build(), serial))
}

/// Chain verification of a client certificate. A chain to an unknown CA
/// fails the handshake; an expired (or not yet valid) certificate of a known
/// CA is let through so the API can answer 401 saying why — `ca_core` checks
/// validity and revocation against the store on every request anyway.
fn accept_for_api_check(preverified: bool, context: &mut X509StoreContextRef) -> bool {
    // X509_V_ERR_CERT_NOT_YET_VALID (9), X509_V_ERR_CERT_HAS_EXPIRED (10).
    preverified || matches!(context.error().as_raw(), 9 | 10)
}

/// Serves `api` on `listener` until `shutdown` resolves, then lets requests
/// in flight finish.
pub async fn serve(
    listener: TcpListener,
    api: Api,
    tls: Option<Arc<TlsAcceptor>>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    tokio::pin!(shutdown);
    loop {
        let (stream, address) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let (api, tls, http, watcher) =
            (api.clone(), tls.clone(), http.clone(), graceful.watcher());
        tokio::spawn(async move {
            match tls {
                None => {
                    let peer = Peer {
                        address,
                        tls: false,
                        certificate: None,
                    };
                    serve_connection(&http, watcher, TokioIo::new(stream), api, peer).await;
                }
                Some(tls) => {
                    let Some(stream) = handshake(&tls, stream, address).await else {
                        return;
                    };
                    let certificate = stream
                        .ssl()
                        .peer_certificate()
                        .and_then(|c| c.to_der().ok())
                        .map(Arc::from);
                    let peer = Peer {
                        address,
                        tls: true,
                        certificate,
                    };
                    serve_connection(&http, watcher, TokioIo::new(stream), api, peer).await;
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}; exiting anyway");
    }
}

/// The TLS handshake, bounded in time. A failed one (a plain-HTTP request, an
/// unknown client CA, no shared protocol) only closes that connection.
async fn handshake(
    tls: &TlsAcceptor,
    stream: TcpStream,
    address: SocketAddr,
) -> Option<SslStream<TcpStream>> {
    let acceptor = tls.current();
    let mut stream = Ssl::new(acceptor.context())
        .and_then(|ssl| SslStream::new(ssl, stream))
        .map_err(|e| tracing::error!(error = %e, "cannot set up a TLS session"))
        .ok()?;
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, Pin::new(&mut stream).accept()).await {
        Ok(Ok(())) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(peer = %address, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(peer = %address, "TLS handshake timed out");
            None
        }
    }
}

async fn serve_connection<I>(
    http: &hyper::server::conn::http1::Builder,
    watcher: Watcher,
    io: I,
    api: Api,
    peer: Peer,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let mut api = api.clone();
            let mut request = request.map(axum::body::Body::new);
            request.extensions_mut().insert(peer.clone());
            api.call(request)
        });
    if let Err(e) = watcher.watch(http.serve_connection(io, service)).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
