//! # ca-server — the HTTP face of the CA
//!
//! A thin axum layer over `ca_core::Ca`: TLS and connections, routing, auth
//! (bearer token or client certificate) under abuse limits, JSON mapping,
//! caching and security headers, metrics and the CRL refresher. No CA logic.
//!
//! ```text
//!  listener (TLS, Peer) ─► Api ─┬─► POST /ocsp, GET /ocsp/… ─► routes::ocsp::fast ─► OcspService
//!     security headers ◄────────┤
//!                               └─► observe (log + metrics) ─► body limit ─► route ─► Auth ─► ca_core::Ca
//!                                                                                      │ limits
//!  CrlCache::run ◄── revocations (notify) / store polling ◄────────────────────────────┘
//! ```

#![forbid(unsafe_code)]

mod crl;
mod error;
mod extract;
pub mod limits;
pub mod listener;
mod mail;
mod metrics;
mod ocsp;
mod openapi;
mod routes;
mod secret;
mod ui;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;

pub use crl::CrlCache;
pub use error::ApiError;
pub use limits::Limits;
pub use listener::{Peer, TlsAcceptor};
pub use mail::Mailer;
pub use metrics::Metrics;
pub use ocsp::OcspService;
pub use ui::UI_BODY_LIMIT;

/// Entry points for the fuzz targets (`fuzz/`). Not a stable interface.
#[doc(hidden)]
pub mod fuzzing {
    /// Any bytes as the JSON body of every route that takes one.
    pub fn json_bodies(data: &[u8]) {
        crate::routes::certificates::check_bodies(data);
    }
}

/// Request bodies above this are refused with 413.
pub const BODY_LIMIT: usize = 1 << 20;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The CA.
    pub ca: Arc<ca_core::Ca>,
    /// The served CRL.
    pub crl: Arc<CrlCache>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The OCSP responder's cache and signer.
    pub ocsp: Arc<OcspService>,
    /// Abuse limits.
    pub limits: Arc<Limits>,
    /// Set when a newer state (the CA opened again after `ca import-cert`)
    /// replaced this one: its background work stops.
    retired: Arc<std::sync::atomic::AtomicBool>,
    /// Notification mail, when `smtp.url` is set.
    pub mailer: Option<Arc<Mailer>>,
}

impl AppState {
    /// State around an open CA (with its key).
    pub fn new(ca: ca_core::Ca) -> Self {
        AppState {
            ca: Arc::new(ca),
            crl: Arc::default(),
            metrics: Arc::default(),
            ocsp: Arc::default(),
            limits: Arc::default(),
            retired: Arc::default(),
            mailer: None,
        }
    }

    /// State around a CA opened again (after `ca import-cert`), keeping this
    /// state's metrics and abuse limits; caches start afresh.
    pub fn succeeded_by(&self, ca: ca_core::Ca) -> Self {
        AppState {
            metrics: self.metrics.clone(),
            limits: self.limits.clone(),
            mailer: self.mailer.clone(),
            ..AppState::new(ca)
        }
    }

    /// Stops this state's background work and answers its held CRL
    /// long-polls (their clients ask again, and reach the newer state).
    pub fn retire(&self) {
        self.retired
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.crl.close();
    }

    /// The same state sending notification mail as `config` says (`smtp.*`;
    /// templates from `<data_dir>/mail/`). A bad setting fails, naming it.
    pub fn with_mail(mut self, config: &ca_core::Config) -> ca_core::Result<Self> {
        if let Some(smtp) = &config.smtp {
            self.mailer = Some(Arc::new(Mailer::new(smtp, &config.data_dir)?));
        }
        Ok(self)
    }

    /// The same state under the configured abuse limits (the default ones otherwise).
    pub fn with_limits(mut self, limits: ca_core::Limits) -> Self {
        self.limits = Arc::new(Limits::new(limits));
        self
    }

    /// Publishes a CRL if needed, loads it for serving, and loads (or issues)
    /// the OCSP responder certificate; call before serving.
    pub async fn warm_up(&self) -> ca_core::Result<()> {
        self.crl.refresh(&self.ca, &self.metrics).await?;
        self.ocsp
            .observe_revision(self.ca.crl_status().await?.revision);
        self.ca.refresh_token_cache().await?;
        self.ocsp.refresh_responder(&self.ca).await
    }

    /// A certificate's status changed through this server: drop pre-signed
    /// OCSP answers now, and republish the CRL shortly.
    pub fn status_changed(&self) {
        self.ocsp.invalidate();
        self.crl.revoked();
    }

    /// Starts delivery's background work, every few seconds: expired
    /// pickups are destroyed (each audited), and with mail configured,
    /// expiry reminders go out (each once: claimed in the store first).
    pub fn spawn_delivery(&self) {
        let state = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                if state.retired.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                if let Err(e) = state.ca.expire_pickups().await {
                    tracing::error!(error = %e, "pickup expiry sweep failed; will retry");
                }
                let Some(mailer) = state.mailer.clone() else {
                    continue;
                };
                match state.ca.store().pending_mails(20).await {
                    Ok(pending) => {
                        for record in &pending {
                            routes::pickup::send_pending(&state, record).await;
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read pending pickup mail; will retry")
                    }
                }
                if mailer.reminder_before.as_secs() == 0 {
                    continue;
                }
                let at = ca_core::now();
                let before = at + mailer.reminder_before.to_time();
                let due = match state.ca.store().reminders_due(before, 50).await {
                    Ok(due) => due,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read due reminders; will retry");
                        continue;
                    }
                };
                for due in due {
                    match state.ca.store().claim_reminder(&due, at).await {
                        Ok(true) => {}
                        Ok(false) => continue,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot claim a reminder; will retry");
                            continue;
                        }
                    }
                    let sent = mailer.send_reminder(&due).await;
                    state.metrics.mail(sent.is_ok());
                    if let Err(error) = sent {
                        tracing::warn!(serial = %due.serial, error = %error, "expiry reminder failed; will retry");
                        if let Err(e) = state
                            .ca
                            .store()
                            .release_reminder(&due.serial, &error, ca_core::now())
                            .await
                        {
                            tracing::error!(error = %e, "cannot release a failed reminder");
                        }
                    }
                }
            }
        });
    }

    /// Starts the background work: CRL refresh, OCSP cache invalidation for
    /// changes made by other processes, responder rotation.
    pub fn spawn_background(&self) {
        let state = self.clone();
        tokio::spawn(async move {
            let mut ticks: u64 = 0;
            let mut key_down = false;
            loop {
                if state.retired.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                // A token that went away is re-opened from here (at most once
                // a second), so the server recovers without a restart.
                match (state.ca.check_key().await, key_down) {
                    (Err(e), false) => {
                        tracing::error!(error = %e, "CA key unavailable; requests that sign get 503 until it is back");
                        key_down = true;
                    }
                    (Ok(()), true) => {
                        tracing::info!("CA key available again");
                        key_down = false;
                    }
                    _ => {}
                }
                state.crl.wait_for_change().await;
                if let Err(e) = state.crl.refresh(&state.ca, &state.metrics).await {
                    tracing::error!(error = %e, "CRL refresh failed; will retry");
                }
                match state.ca.crl_status().await {
                    Ok(status) => state.ocsp.observe_revision(status.revision),
                    Err(e) => tracing::error!(error = %e, "cannot read the store; will retry"),
                }
                match state.ca.change_counter().await {
                    Ok(counter) => state.ocsp.observe_changes(counter),
                    Err(e) => tracing::error!(error = %e, "cannot read the store; will retry"),
                }
                if let Err(e) = state.ca.refresh_token_cache().await {
                    tracing::error!(error = %e, "cannot read the store's tokens; will retry");
                }
                ticks += 1;
                // About every 5 s: responder rotation (ours or another process's).
                if ticks.is_multiple_of(20) {
                    if let Err(e) = state.ocsp.refresh_responder(&state.ca).await {
                        tracing::error!(error = %e, "OCSP responder refresh failed; will retry");
                    }
                }
            }
        });
    }
}

/// The whole API, as one service: OCSP's hot routes are answered before the
/// router (see `routes::ocsp::fast`), everything else goes through it.
pub fn app(state: AppState) -> Api {
    let router = Router::new()
        .merge(routes::public::router())
        .merge(routes::certificates::router())
        .merge(routes::audit::router())
        .merge(routes::tokens::router())
        .merge(routes::pickup::router())
        .merge(routes::ocsp::router())
        .merge(ui::router())
        .fallback(|| async {
            ApiError::Core(ca_core::Error::NotFound(
                "no such endpoint; see /openapi.json".into(),
            ))
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state.clone());
    Api {
        state: Some(state),
        router,
    }
}

/// What the server answers while an issuing CA waits for its certificate
/// (`init --issuing` before `ca import-cert`): `/healthz` 200, `/readyz` 503
/// with the reason, everything else 503 `not_ready` with the same reason.
/// Nothing is issued or signed; `ca-server` replaces it with [`app`] (see
/// [`Switch`]) once the import is in the store.
pub fn pending_app(reason: String) -> Api {
    use axum::routing::get;
    let ready_reason = reason.clone();
    let router = Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }),
        )
        .route(
            "/readyz",
            get(move || {
                let reason = ready_reason.clone();
                async move {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        axum::Json(serde_json::json!({
                            "ready": false,
                            "checks": { "issuer": false },
                            "reasons": [reason.clone()],
                            "reason": reason,
                        })),
                    )
                }
            }),
        )
        .fallback(move || {
            let reason = reason.clone();
            async move { ApiError::Core(ca_core::Error::NotReady(reason)) }
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT));
    Api {
        state: None,
        router,
    }
}

/// The service [`app`] returns; [`listener::serve`] serves it through a [`Switch`].
#[derive(Clone)]
pub struct Api {
    /// `None` while the CA waits for its issuing certificate ([`pending_app`]).
    state: Option<AppState>,
    router: Router,
}

impl Api {
    /// The state behind it (`None` while pending).
    pub fn state(&self) -> Option<&AppState> {
        self.state.as_ref()
    }
}

/// The [`Api`] being served, replaceable while connections stay open: the
/// pending answer becomes the full API once `ca import-cert` is in the store,
/// and a rollover's import replaces the API around the CA opened again.
/// Requests already running finish on the `Api` they started with.
#[derive(Clone)]
pub struct Switch(Arc<std::sync::RwLock<Api>>);

impl Switch {
    /// Serves `api` until [`Switch::set`].
    pub fn new(api: Api) -> Self {
        Switch(Arc::new(std::sync::RwLock::new(api)))
    }

    /// What new requests go to (a cheap clone: the router and state are shared).
    pub fn current(&self) -> Api {
        match self.0.read() {
            Ok(api) => api.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Sends new requests to `api`; returns the one it replaces.
    pub fn set(&self, api: Api) -> Api {
        let mut current = match self.0.write() {
            Ok(current) => current,
            Err(poisoned) => poisoned.into_inner(),
        };
        std::mem::replace(&mut *current, api)
    }
}

impl tower::Service<Request> for Api {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let tls = request.extensions().get::<Peer>().is_some_and(|p| p.tls);
        let private = request.uri().path().starts_with("/v1/");
        let fast = match &self.state {
            Some(state) => routes::ocsp::fast_route(&request).map(|r| (r, state.clone())),
            None => None,
        };
        match fast {
            Some((route, state)) => Box::pin(async move {
                let mut response = routes::ocsp::fast(state, request, route).await;
                security_headers(&mut response, tls, false);
                Ok(response)
            }),
            None => {
                let answer = self.router.call(request);
                Box::pin(async move {
                    let mut response = answer.await?;
                    security_headers(&mut response, tls, private);
                    Ok(response)
                })
            }
        }
    }
}

/// Headers on every answer: `nosniff`; HSTS on TLS; and `no-store` on the
/// authenticated API, whose answers carry bundles, passwords, tokens or
/// certificate data that no cache should keep. (Static values: no allocation.)
fn security_headers(response: &mut Response, tls: bool, private: bool) {
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if tls {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    if private {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

/// One log line and the metrics for every request. Logs the token's public id,
/// never the token, and never a body.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| ca_core::token_id(t.trim()))
        .map(str::to_owned);
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    record(
        &state,
        &method,
        route,
        response.status(),
        start,
        token.as_deref(),
    );
    response
}

/// Counts a finished request and logs it.
fn record(
    state: &AppState,
    method: &Method,
    route: &str,
    status: StatusCode,
    start: Instant,
    token: Option<&str>,
) {
    let elapsed = start.elapsed().as_secs_f64();
    let status = status.as_u16();
    state.metrics.request(method, route, status, elapsed);
    let latency_ms = elapsed * 1000.0;
    let token = token.unwrap_or("-");
    // Gateways poll these at high rates: their lines are debug-level (CA_LOG=debug).
    if route.starts_with("/ocsp")
        || route.starts_with("/crl")
        || route == "/healthz"
        || route == "/metrics"
    {
        tracing::debug!(method = %method, route = %route, status, latency_ms, token, "request");
    } else {
        tracing::info!(method = %method, route = %route, status, latency_ms, token, "request");
    }
}
