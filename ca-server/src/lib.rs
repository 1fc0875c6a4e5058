//! # ca-server — the HTTP face of the CA
//!
//! A thin axum layer over `ca_core::Ca`: routing, bearer-token auth, JSON
//! mapping, caching headers, metrics and the CRL refresher. No CA logic.
//!
//! ```text
//!  request ─► observe (log line + metrics) ─► body limit 1 MiB ─► route ─► Auth ─► ca_core::Ca
//!                                                                  │
//!  CrlCache::run ◄── revocations (notify) / store polling ◄────────┘
//! ```

#![forbid(unsafe_code)]

mod crl;
mod error;
mod extract;
mod metrics;
mod openapi;
mod routes;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;

pub use crl::CrlCache;
pub use error::ApiError;
pub use metrics::Metrics;

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
}

impl AppState {
    /// State around an open CA (with its key).
    pub fn new(ca: ca_core::Ca) -> Self {
        AppState {
            ca: Arc::new(ca),
            crl: Arc::default(),
            metrics: Arc::default(),
        }
    }

    /// Publishes a CRL if needed and loads it for serving; call before serving.
    pub async fn warm_up(&self) -> ca_core::Result<()> {
        self.crl.refresh(&self.ca, &self.metrics).await
    }

    /// Starts the CRL refresher in the background.
    pub fn spawn_background(&self) {
        tokio::spawn(Arc::clone(&self.crl).run(Arc::clone(&self.ca), Arc::clone(&self.metrics)));
    }
}

/// The whole API.
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(routes::public::router())
        .merge(routes::certificates::router())
        .merge(routes::audit::router())
        .fallback(|| async {
            ApiError::Core(ca_core::Error::NotFound(
                "no such endpoint; see /openapi.json".into(),
            ))
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// One log line and the metrics for every request. Logs the token's public id,
/// never the token, and never a body.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| ca_core::token_id(t.trim()))
        .map(str::to_owned);
    let response = next.run(request).await;
    let elapsed = start.elapsed();
    let status = response.status().as_u16();
    state
        .metrics
        .request(&method, &route, status, elapsed.as_secs_f64());
    tracing::info!(
        method = %method,
        route = %route,
        status,
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        token = token.as_deref().unwrap_or("-"),
        "request"
    );
    response
}
