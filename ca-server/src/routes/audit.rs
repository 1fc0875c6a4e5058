//! The audit log over HTTP.

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use ca_core::{Action, AuditEvent};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::extract::Auth;
use crate::AppState;

/// The routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/audit", get(audit))
}

/// Query of the audit log.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only events after this sequence number.
    pub since: Option<u64>,
    /// At most this many (1-1000, default 100).
    pub limit: Option<u32>,
}

/// A page of audit events.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// Events, oldest first.
    pub items: Vec<AuditEvent>,
    /// Pass as `since` for the next page; `null` on the last.
    pub next_since: Option<u64>,
}

/// Audit events (roles admin and auditor).
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery), security(("bearer" = [])),
    responses((status = 200, body = AuditPage), (status = 401), (status = 403)))]
pub async fn audit(
    State(state): State<AppState>,
    Auth(who): Auth,
    Query(query): Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    who.authorize(Action::Audit, None)?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let items = state
        .ca
        .audit_events(query.since.unwrap_or(0), limit)
        .await?;
    let next_since = (items.len() as u32 == limit)
        .then(|| items.last().map(|e| e.seq))
        .flatten();
    Ok(Json(AuditPage { items, next_since }))
}
