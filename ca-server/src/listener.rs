//! Accepting connections: plain HTTP, or HTTPS through rustls (with ring).
//!
//! Why rustls and not the OpenSSL the CA links anyway: measured, OpenSSL 3.0
//! spends more of the server's CPU on each small record than the whole rest
//! of a pre-signed OCSP answer (BENCHMARKS.md, "Over TLS"). The files are
//! still read and checked with OpenSSL (PEM, expiry, key match), so the error
//! messages name the file and the problem as before.
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
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ca_core::TlsFiles;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use openssl::asn1::Asn1Time;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use tokio::net::{TcpListener, TcpStream};
use tower::Service as _;
use zeroize::Zeroizing;

use crate::Switch;

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

/// The server's TLS configuration, re-read from its files on
/// [`TlsAcceptor::reload`]; a connection keeps the configuration it started with.
pub struct TlsAcceptor {
    files: TlsFiles,
    current: RwLock<Arc<rustls::ServerConfig>>,
}

impl TlsAcceptor {
    /// Reads and checks the files; the error names the file and the problem.
    pub fn load(files: &TlsFiles) -> Result<(Self, String), String> {
        let (config, serial) = build(files)?;
        Ok((
            TlsAcceptor {
                files: files.clone(),
                current: RwLock::new(Arc::new(config)),
            },
            serial,
        ))
    }

    /// Re-reads the files; on success new connections use them (connections
    /// already open keep theirs), on error the previous ones stay in use.
    /// Returns the new certificate's serial.
    pub fn reload(&self) -> Result<String, String> {
        let (config, serial) = build(&self.files)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        Ok(serial)
    }

    fn current(&self) -> Arc<rustls::ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn read(path: &Path, key: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{key} {}: cannot read: {e}", path.display()))
}

/// The checked contents of the TLS files.
struct Loaded {
    chain: Vec<X509>,
    key: PKey<Private>,
    client_cas: Option<Vec<X509>>,
    serial: String,
}

/// Reads the files and checks what either stack would only find later or
/// say less clearly: the leaf is valid now and the key is its key. Errors
/// name the configuration key, the file and the problem.
fn load_files(files: &TlsFiles) -> Result<Loaded, String> {
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
    let key_pem = Zeroizing::new(read(&files.key_file, "tls.key_file")?);
    let key = PKey::private_key_from_pem(&key_pem)
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
    let client_cas = match &files.client_ca_file {
        None => None,
        Some(ca_file) => Some(
            X509::stack_from_pem(&read(ca_file, "tls.client_ca_file")?)
                .ok()
                .filter(|cas| !cas.is_empty())
                .ok_or_else(|| {
                    format!(
                        "tls.client_ca_file {}: no PEM certificate in the file",
                        ca_file.display()
                    )
                })?,
        ),
    };
    let serial = leaf
        .serial_number()
        .to_bn()
        .and_then(|bn| bn.to_hex_str().map(|h| h.to_lowercase()))
        .map_err(|e| format!("tls.cert_file {cert_path}: {e}"))?;
    Ok(Loaded {
        chain,
        key,
        client_cas,
        serial,
    })
}

fn build(files: &TlsFiles) -> Result<(rustls::ServerConfig, String), String> {
    let loaded = load_files(files)?;
    Ok((rustls_config(&loaded)?, loaded.serial))
}

/// rustls (ring): TLS 1.2 and 1.3 with rustls' suites, all of them AEAD
/// with forward secrecy (ECDHE with AES-GCM or ChaCha20-Poly1305, the same
/// set as Mozilla's "intermediate" profile minus nothing we offered), the
/// chain and key, and — with `client_ca_file` — a request (not a
/// requirement) for a client certificate chaining to those CAs.
fn rustls_config(loaded: &Loaded) -> Result<rustls::ServerConfig, String> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let tls_error = |e: rustls::Error| format!("TLS setup: {e}");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = loaded
        .chain
        .iter()
        .map(|c| c.to_der().map(CertificateDer::from))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("TLS setup: {e}"))?;
    // The key goes to ring as PKCS#8 from a buffer wiped afterwards.
    let pkcs8 = Zeroizing::new(
        loaded
            .key
            .private_key_to_pkcs8()
            .map_err(|e| format!("TLS setup: {e}"))?,
    );
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&PrivateKeyDer::Pkcs8(
        PrivatePkcs8KeyDer::from(&pkcs8[..]),
    ))
    .map_err(|e| format!("tls.key_file: key type not supported for TLS: {e}"))?;
    let certified = rustls::sign::CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(tls_error)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(tls_error)?;
    let builder = match &loaded.client_cas {
        None => builder.with_no_client_auth(),
        Some(cas) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in cas {
                let der = ca.to_der().map_err(|e| format!("TLS setup: {e}"))?;
                roots
                    .add(CertificateDer::from(der))
                    .map_err(|e| format!("tls.client_ca_file: {e}"))?;
            }
            // Asked for, not required (tokens still work).
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| format!("tls.client_ca_file: {e}"))?;
            builder.with_client_cert_verifier(Arc::new(ExpiredForApiCheck(verifier)))
        }
    };
    Ok(builder.with_cert_resolver(Arc::new(OneCertificate(Arc::new(certified)))))
}

/// The server's one certificate, whatever the client hello says.
#[derive(Debug)]
struct OneCertificate(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for OneCertificate {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Client-certificate verification: a chain to an unknown CA fails the
/// handshake. A client certificate of a known CA that is expired (or not yet valid) is verified again at a
/// time inside its own validity — so its chain and signatures are still
/// checked in full — and let through, so the API can answer 401 saying why
/// (`ca_core` checks validity and revocation against the store on every
/// request anyway).
#[derive(Debug)]
struct ExpiredForApiCheck(Arc<dyn rustls::server::danger::ClientCertVerifier>);

impl rustls::server::danger::ClientCertVerifier for ExpiredForApiCheck {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        use rustls::CertificateError::{Expired, ExpiredContext, NotValidYet, NotValidYetContext};
        match self.0.verify_client_cert(end_entity, intermediates, now) {
            Err(rustls::Error::InvalidCertificate(
                Expired | ExpiredContext { .. } | NotValidYet | NotValidYetContext { .. },
            )) => {
                let inside = validity_midpoint(end_entity).ok_or(
                    rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding),
                )?;
                self.0.verify_client_cert(end_entity, intermediates, inside)
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The middle of a certificate's validity period, as a verification time.
fn validity_midpoint(der: &[u8]) -> Option<rustls::pki_types::UnixTime> {
    let cert = X509::from_der(der).ok()?;
    let epoch = Asn1Time::from_unix(0).ok()?;
    let seconds = |t: &openssl::asn1::Asn1TimeRef| -> Option<i64> {
        let diff = epoch.diff(t).ok()?;
        Some(i64::from(diff.days) * 86_400 + i64::from(diff.secs))
    };
    let (from, to) = (seconds(cert.not_before())?, seconds(cert.not_after())?);
    let middle = u64::try_from(from + (to - from) / 2).ok()?;
    Some(rustls::pki_types::UnixTime::since_unix_epoch(
        Duration::from_secs(middle),
    ))
}

/// Serves `api` on `listener` until `shutdown` resolves, then lets requests
/// in flight finish.
pub async fn serve(
    listener: TcpListener,
    api: Switch,
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
                    let Some(stream) = handshake(tls.current(), stream, address).await else {
                        return;
                    };
                    let certificate = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .map(|leaf| Arc::from(leaf.as_ref()));
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
    config: Arc<rustls::ServerConfig>,
    stream: TcpStream,
    address: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let accept = tokio_rustls::TlsAcceptor::from(config).accept(stream);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
        Ok(Ok(stream)) => Some(stream),
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
    api: Switch,
    peer: Peer,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let mut api = api.current();
            let mut request = request.map(axum::body::Body::new);
            request.extensions_mut().insert(peer.clone());
            api.call(request)
        });
    if let Err(e) = watcher.watch(http.serve_connection(io, service)).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
