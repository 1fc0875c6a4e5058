//! Delivery by pickup through the API: the pickup-shaped answer of issue and
//! reissue, resend, the list of what waits, and the notification mail each
//! of them triggers (sent after the commit; a failure changes nothing but
//! the pickup's mail state).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use ca_core::{now, Action, CertificateView, PickupIssuance, PickupRecord, ReissueMode, Serial};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use zeroize::Zeroizing;

use crate::error::ApiError;
use crate::extract::{Auth, JsonBody};
use crate::secret::SecretJson;
use crate::AppState;

/// The routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/tenants/{tenant}/admins/{admin}/pickup/resend",
            post(resend),
        )
        .route("/v1/pickups", get(list))
}

/// Where a bundle waits.
#[derive(Debug, Serialize, ToSchema)]
pub struct PickupLink {
    /// The pickup's id.
    pub id: String,
    /// The page the admin opens (`<base_url>/pickup/<id>`).
    pub url: String,
    /// When the bundle is destroyed if not collected (RFC 3339).
    pub expires_at: String,
    /// Where the notification mail went.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// `none` (no address or no `smtp.url`) or `pending` (being sent; see `GET /v1/pickups`).
    pub mail: &'static str,
}

/// A new certificate whose bundle waits for pickup: no bundle and no
/// password here; the one-time `code` is shown only in this answer (give it
/// to the admin by phone or SMS, never in the mail).
#[derive(Serialize, ToSchema)]
pub struct PickupResponse {
    /// The certificate.
    #[serde(flatten)]
    pub certificate: CertificateView,
    /// Serials revoked in the same transaction (reissue, resend).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Vec<String>>,
    /// The pickup.
    pub pickup: PickupLink,
    /// The one-time code, `XXXX-XXXX-XXXX`.
    #[schema(value_type = String)]
    pub code: Zeroizing<String>,
}

/// Body of a resend.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResendBody {
    /// A new notification address; the last pickup's when absent.
    pub email: Option<String>,
}

/// A pickup as listed.
#[derive(Debug, Serialize, ToSchema)]
pub struct PickupView {
    /// Id.
    pub id: String,
    /// The page.
    pub url: String,
    /// The certificate.
    pub serial: String,
    /// Tenant.
    pub tenant: String,
    /// Admin.
    pub admin: String,
    /// Policy.
    pub policy: String,
    /// `waiting`, `collected`, `expired`, `locked` or `replaced`.
    pub state: &'static str,
    /// Notification address.
    pub email: Option<String>,
    /// Wrong codes so far.
    pub failures: u32,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub expires_at: String,
    /// When it was collected, expired, locked or replaced.
    pub closed_at: Option<String>,
    /// `none`, `pending`, `sent` or `failed`.
    pub mail: &'static str,
    /// Why the mail failed.
    pub mail_error: Option<String>,
}

impl PickupView {
    /// The view of `record` at `base_url`.
    pub fn new(record: &PickupRecord, base_url: &str) -> Self {
        PickupView {
            url: format!("{base_url}/pickup/{}", record.id),
            id: record.id.clone(),
            serial: record.serial.clone(),
            tenant: record.tenant.clone(),
            admin: record.admin.clone(),
            policy: record.policy.clone(),
            state: record.state_at(now()).name(),
            email: record.email.clone(),
            failures: record.failures,
            created_at: ca_core::rfc3339(record.created_at),
            expires_at: ca_core::rfc3339(record.expires_at),
            closed_at: record.closed_at.map(ca_core::rfc3339),
            mail: record.mail.name(),
            mail_error: record.mail_error.clone(),
        }
    }
}

/// A list of pickups.
#[derive(Debug, Serialize, ToSchema)]
pub struct PickupList {
    /// Newest first.
    pub items: Vec<PickupView>,
}

/// Query of the list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PickupQuery {
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Also collected and replaced pickups (default: only uncollected ones).
    pub all: Option<bool>,
    /// At most this many, 1-1000 (default 100).
    pub limit: Option<u32>,
}

/// The pickup-shaped answer of a committed issuance, after starting its mail.
pub(crate) fn answer(
    state: &AppState,
    issuance: PickupIssuance,
    reissue: bool,
) -> (StatusCode, PickupResponse) {
    state.metrics.pickup_created();
    let base_url = &state.ca.endpoints().base_url;
    let url = format!("{base_url}/pickup/{}", issuance.id);
    let mailing = state.mailer.is_some() && issuance.email.is_some();
    if mailing {
        spawn_mail(state, &issuance, &url);
    }
    let response = PickupResponse {
        certificate: CertificateView::new(&issuance.record, now()),
        revoked: reissue.then(|| issuance.revoked.iter().map(Serial::to_hex).collect()),
        pickup: PickupLink {
            id: issuance.id.clone(),
            url,
            expires_at: ca_core::rfc3339(issuance.expires_at),
            email: issuance.email.clone(),
            mail: if mailing { "pending" } else { "none" },
        },
        code: Zeroizing::new(issuance.code.as_str().to_owned()),
    };
    (StatusCode::CREATED, response)
}

/// Sends the pickup mail in the background and records how it went.
fn spawn_mail(state: &AppState, issuance: &PickupIssuance, url: &str) {
    let Some(email) = issuance.email.clone() else {
        return;
    };
    let state = state.clone();
    let (id, url) = (issuance.id.clone(), url.to_owned());
    let (tenant, admin) = (
        issuance.record.tenant.clone(),
        issuance.record.admin.clone(),
    );
    let expires_at = ca_core::rfc3339(issuance.expires_at);
    tokio::spawn(async move {
        send_mail(&state, &id, &email, &tenant, &admin, &url, &expires_at).await;
    });
}

/// Sends a pending pickup's mail (made by `ca-cli`, or left by a server that
/// stopped before sending it).
pub(crate) async fn send_pending(state: &AppState, record: &PickupRecord) {
    let Some(email) = &record.email else {
        return;
    };
    let url = format!("{}/pickup/{}", state.ca.endpoints().base_url, record.id);
    let expires_at = ca_core::rfc3339(record.expires_at);
    send_mail(
        state,
        &record.id,
        email,
        &record.tenant,
        &record.admin,
        &url,
        &expires_at,
    )
    .await;
}

/// Claims the pickup's mail (so one server sends it), sends it and records
/// the outcome (audited). A failure is logged and counted, never more.
async fn send_mail(
    state: &AppState,
    id: &str,
    email: &str,
    tenant: &str,
    admin: &str,
    url: &str,
    expires_at: &str,
) {
    let Some(mailer) = state.mailer.clone() else {
        return;
    };
    match state.ca.store().claim_pickup_mail(id).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::error!(pickup = %id, error = %e, "cannot claim a pickup mail; will retry");
            return;
        }
    }
    let sent = mailer
        .send_pickup(email, tenant, admin, url, expires_at)
        .await;
    state.metrics.mail(sent.is_ok());
    let (mail, error) = match &sent {
        Ok(()) => (ca_core::MailState::Sent, None),
        Err(e) => {
            tracing::warn!(pickup = %id, error = %e, "pickup mail failed; the pickup waits, `pickup resend` retries");
            (ca_core::MailState::Failed, Some(e.as_str()))
        }
    };
    if let Err(e) = state
        .ca
        .store()
        .set_pickup_mail(id, mail, error, ca_core::now())
        .await
    {
        tracing::error!(pickup = %id, error = %e, "cannot record the pickup mail's outcome");
    }
}

/// New link and code for a bundle not yet collected: reissues (superseded)
/// with the bundle waiting under a new pickup; the old link dies.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/admins/{admin}/pickup/resend", tag = "pickup",
    params(("tenant" = String, Path), ("admin" = String, Path)), request_body = ResendBody,
    security(("bearer" = [])),
    responses((status = 201, body = PickupResponse), (status = 401), (status = 403, description = "Auditors may not resend"),
        (status = 404, description = "No pickup to resend"), (status = 409, description = "Already collected: reissue"), (status = 422)))]
pub async fn resend(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path((tenant, admin)): Path<(String, String)>,
    JsonBody(body): JsonBody<ResendBody>,
) -> Result<SecretJson<PickupResponse>, ApiError> {
    let response = resend_as(&state, &who, &tenant, &admin, body.email).await?;
    Ok(SecretJson(StatusCode::CREATED, response))
}

/// A resend by `who` (renewers may, auditors may not; one who may not issue
/// only replaces), with its bookkeeping and mail: the API's and the
/// console's one path.
pub(crate) async fn resend_as(
    state: &AppState,
    who: &ca_core::Principal,
    tenant: &str,
    admin: &str,
    email: Option<String>,
) -> Result<PickupResponse, ca_core::Error> {
    who.authorize(Action::Reissue, Some(tenant))?;
    let mode = match who.authorize(Action::Issue, Some(tenant)) {
        Ok(()) => ReissueMode::ReplaceOrIssue,
        Err(_) => ReissueMode::ReplaceOnly,
    };
    let issuance = state
        .ca
        .resend_pickup(
            tenant,
            admin,
            email,
            state.mailer.is_some(),
            mode,
            &who.actor(),
        )
        .await?;
    state.ocsp.issued();
    state.metrics.issued("resend", &issuance.record.policy);
    state.metrics.revoked(issuance.revoked.len());
    if !issuance.revoked.is_empty() {
        state.status_changed();
    }
    Ok(answer(state, issuance, true).1)
}

/// Pickups, newest first: by default those not collected (waiting, locked, expired).
#[utoipa::path(get, path = "/v1/pickups", tag = "pickup", params(PickupQuery), security(("bearer" = [])),
    responses((status = 200, body = PickupList), (status = 401), (status = 403), (status = 422)))]
pub async fn list(
    State(state): State<AppState>,
    Auth(who): Auth,
    Query(query): Query<PickupQuery>,
) -> Result<Json<PickupList>, ApiError> {
    let tenant = query.tenant.or_else(|| who.tenant.clone());
    who.authorize(Action::Read, tenant.as_deref())?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ca_core::Error::InvalidInput("limit must be between 1 and 1000".into()).into());
    }
    let records = state
        .ca
        .pickups(tenant.as_deref(), query.all.unwrap_or(false), limit)
        .await?;
    let base_url = &state.ca.endpoints().base_url;
    Ok(Json(PickupList {
        items: records
            .iter()
            .map(|r| PickupView::new(r, base_url))
            .collect(),
    }))
}
