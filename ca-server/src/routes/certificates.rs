//! Issuance, reissue, CSR signing, revocation and lookup — thin mappings onto `ca_core::Ca`.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use ca_core::{
    now, Action, CertificateView, Delivery, Error, IdempotencyKey, Issuance, IssueRequest,
    ListFilter, ListView, ReissueMode, RevocationReason, Serial,
};
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
            "/v1/tenants/{tenant}/admins/{admin}/certificates",
            post(issue),
        )
        .route("/v1/tenants/{tenant}/admins/{admin}/reissue", post(reissue))
        .route("/v1/tenants/{tenant}/admins/{admin}/csr", post(sign_csr))
        .route("/v1/certificates/{serial}/revoke", post(revoke))
        .route("/v1/certificates", get(list))
        .route("/v1/certificates/{serial}", get(show))
}

/// Body of an issue request. The password is wiped on drop and never
/// printed (`Debug` shows `<redacted>`).
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueBody {
    /// Policy; the server's default policy when absent.
    pub policy: Option<String>,
    /// Bundle password (at least the policy's `pkcs12.min_password_length`, default 12); generated when absent.
    #[schema(value_type = Option<String>)]
    pub password: Option<Zeroizing<String>>,
    /// `direct` (the bundle in the answer) or `pickup` (the bundle waits, sealed, for a one-time download); when absent, the policy's `delivery` (default `direct`).
    pub delivery: Option<String>,
    /// With `pickup`: where the notification mail with the link goes.
    pub email: Option<String>,
}

/// Body of a reissue request.
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReissueBody {
    /// Policy; that of the admin's active certificate when absent.
    pub policy: Option<String>,
    /// Reason for the replaced certificates (default `superseded`; `key-compromise` for a lost device).
    pub reason: Option<String>,
    /// Bundle password (at least the policy's `pkcs12.min_password_length`, default 12); generated when absent.
    #[schema(value_type = Option<String>)]
    pub password: Option<Zeroizing<String>>,
    /// `direct` or `pickup`; when absent, the policy's `delivery` (default `direct`).
    pub delivery: Option<String>,
    /// With `pickup`: where the notification mail with the link goes.
    pub email: Option<String>,
}

/// The delivery a request body names (`None`: its policy decides), checked
/// with its address before any key is generated.
fn requested_delivery(
    delivery: Option<&str>,
    email: Option<&str>,
) -> Result<Option<Delivery>, ApiError> {
    let requested = match delivery {
        None => None,
        Some(name) => Some(Delivery::parse(name).ok_or_else(|| {
            ApiError::InvalidBody(format!(
                "delivery \"{}\" is unknown: use \"direct\" (bundle in the answer) or \"pickup\" (one-time download)",
                name.escape_debug()
            ))
        })?),
    };
    ca_core::check_delivery(requested, email)?;
    Ok(requested)
}

/// Either answer of issue and reissue.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum IssueAnswer {
    /// `delivery` direct: the bundle and its password.
    Direct(IssueResponse),
    /// `delivery` pickup: a link and a one-time code, no bundle.
    Pickup(crate::routes::pickup::PickupResponse),
}

fn redacted(password: &Option<Zeroizing<String>>) -> &'static str {
    match password {
        Some(_) => "Some(<redacted>)",
        None => "None",
    }
}

impl std::fmt::Debug for IssueBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssueBody")
            .field("policy", &self.policy)
            .field("password", &redacted(&self.password))
            .field("delivery", &self.delivery)
            .field("email", &self.email)
            .finish()
    }
}

impl std::fmt::Debug for ReissueBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReissueBody")
            .field("policy", &self.policy)
            .field("reason", &self.reason)
            .field("password", &redacted(&self.password))
            .field("delivery", &self.delivery)
            .field("email", &self.email)
            .finish()
    }
}

/// Body of a CSR signing request.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CsrBody {
    /// Policy (e.g. `automation-csr`).
    pub policy: Option<String>,
    /// PKCS#10 request, PEM.
    pub csr: Option<String>,
}

/// Body of a revocation.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    /// Reason name (default `unspecified`).
    pub reason: Option<String>,
    /// When the key was (suspected) compromised, RFC 3339.
    pub invalidity_date: Option<String>,
}

/// A new certificate with its bundle. The password is returned only here;
/// the answer is written into wiped memory (see `crate::secret`).
#[derive(Serialize, ToSchema)]
pub struct IssueResponse {
    /// The certificate.
    #[serde(flatten)]
    pub certificate: CertificateView,
    /// PKCS#12 bundle, base64.
    #[schema(value_type = String)]
    pub pkcs12: Zeroizing<String>,
    /// Bundle password (deliver by a separate channel).
    #[schema(value_type = String)]
    pub password: Zeroizing<String>,
    /// Serials revoked in the same transaction (reissue only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Vec<String>>,
}

/// A certificate signed from a CSR.
#[derive(Debug, Serialize, ToSchema)]
pub struct CsrResponse {
    /// The certificate.
    #[serde(flatten)]
    pub certificate: CertificateView,
    /// The certificate, PEM (DESIGN §7: `certificate`).
    #[serde(rename = "certificate")]
    pub certificate_pem: String,
}

/// One certificate with its PEM.
#[derive(Debug, Serialize, ToSchema)]
pub struct ShowResponse {
    /// The certificate.
    #[serde(flatten)]
    pub certificate: CertificateView,
    /// PEM.
    pub pem: String,
}

/// Query of the list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Only this admin.
    pub admin: Option<String>,
    /// Only this policy.
    pub policy: Option<String>,
    /// active, revoked or expired.
    pub status: Option<String>,
    /// Only active certificates expiring within this many days (renewal jobs).
    pub expiring_within_days: Option<u32>,
    /// Page size, 1-1000 (default 100).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

fn issue_response(issuance: Issuance, reissue: bool) -> IssueResponse {
    let bundle = issuance
        .bundle
        .as_ref()
        .map(|b| base64::engine::general_purpose::STANDARD.encode(&b.0[..]));
    IssueResponse {
        certificate: CertificateView::new(&issuance.record, now()),
        pkcs12: Zeroizing::new(bundle.unwrap_or_default()),
        password: issuance.password.unwrap_or_default(),
        revoked: reissue.then(|| issuance.revoked.iter().map(Serial::to_hex).collect()),
    }
}

/// Issue the first certificate for an admin.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/admins/{admin}/certificates", tag = "certificates",
    params(("tenant" = String, Path), ("admin" = String, Path)), request_body = IssueBody,
    security(("bearer" = [])),
    responses((status = 201, body = IssueAnswer, description = "The bundle and password (direct), or with delivery pickup: a link and a one-time code, no bundle"), (status = 401), (status = 403), (status = 409, description = "An active certificate exists: use reissue"), (status = 422)))]
pub async fn issue(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path((tenant, admin)): Path<(String, String)>,
    JsonBody(body): JsonBody<IssueBody>,
) -> Result<SecretJson<IssueAnswer>, ApiError> {
    who.authorize(Action::Issue, Some(&tenant))?;
    let requested = requested_delivery(body.delivery.as_deref(), body.email.as_deref())?;
    let request = IssueRequest {
        tenant,
        admin,
        policy: body.policy,
        password: body.password,
    };
    let prepared = state.ca.prepare_issue(&request).await?;
    let pickup =
        state
            .ca
            .pickup_request(&prepared, requested, body.email, state.mailer.is_some())?;
    if let Some(pickup) = pickup {
        let issuance = state
            .ca
            .commit_pickup(prepared, &pickup, &who.actor())
            .await?;
        state.ocsp.issued();
        state.metrics.issued("issue", &issuance.record.policy);
        let (status, answer) = crate::routes::pickup::answer(&state, issuance, false);
        return Ok(SecretJson(status, IssueAnswer::Pickup(answer)));
    }
    let issuance = state.ca.commit(prepared, &who.actor()).await?;
    state.ocsp.issued();
    state.metrics.issued("issue", &issuance.record.policy);
    Ok(SecretJson(
        StatusCode::CREATED,
        IssueAnswer::Direct(issue_response(issuance, false)),
    ))
}

/// Replace an admin's certificate: new one issued, every active one of the policy revoked, in one transaction.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/admins/{admin}/reissue", tag = "certificates",
    params(("tenant" = String, Path), ("admin" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "Same key and body within 24 h never issues twice; the retry gets 409 already_delivered with the serial")),
    request_body = ReissueBody, security(("bearer" = [])),
    responses((status = 201, body = IssueAnswer, description = "As issue, plus `revoked`"), (status = 401), (status = 403), (status = 404, description = "Nothing active to replace and no policy named"), (status = 409), (status = 422)))]
pub async fn reissue(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path((tenant, admin)): Path<(String, String)>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<ReissueBody>,
) -> Result<SecretJson<IssueAnswer>, ApiError> {
    who.authorize(Action::Reissue, Some(&tenant))?;
    let requested = requested_delivery(body.delivery.as_deref(), body.email.as_deref())?;
    // A caller who may not issue (a renewer) may only replace (DESIGN §3).
    let mode = match who.authorize(Action::Issue, Some(&tenant)) {
        Ok(()) => ReissueMode::ReplaceOrIssue,
        Err(_) => ReissueMode::ReplaceOnly,
    };
    let reason = RevocationReason::parse(body.reason.as_deref().unwrap_or("superseded"))?;
    let idempotency = match headers.get("idempotency-key") {
        Some(value) => {
            let key = value
                .to_str()
                .map_err(|_| Error::InvalidInput("Idempotency-Key must be visible ASCII".into()))?;
            let parts = [
                tenant.as_str(),
                admin.as_str(),
                body.policy.as_deref().unwrap_or(""),
                reason.name(),
            ];
            let scope = format!("{tenant}/{}", who.actor());
            let idem = IdempotencyKey::new(key, &scope, "reissue", &parts)?;
            state.ca.check_idempotency(&idem).await?;
            Some(idem)
        }
        None => None,
    };
    let request = IssueRequest {
        tenant,
        admin,
        policy: body.policy,
        password: body.password,
    };
    let prepared = state.ca.prepare_reissue(&request, reason, mode).await?;
    if let Some(pickup) =
        state
            .ca
            .pickup_request(&prepared, requested, body.email, state.mailer.is_some())?
    {
        if idempotency.is_some() {
            return Err(ApiError::InvalidBody(
                "Idempotency-Key is not supported with \"delivery\": \"pickup\": a retried pickup reissue would replace the first one's link; use resend instead".into(),
            ));
        }
        let issuance = state
            .ca
            .commit_pickup(prepared, &pickup, &who.actor())
            .await?;
        state.ocsp.issued();
        state.metrics.issued("reissue", &issuance.record.policy);
        state.metrics.revoked(issuance.revoked.len());
        if !issuance.revoked.is_empty() {
            state.status_changed();
        }
        let (status, answer) = crate::routes::pickup::answer(&state, issuance, true);
        return Ok(SecretJson(status, IssueAnswer::Pickup(answer)));
    }
    let issuance = state
        .ca
        .commit_idempotent(prepared, idempotency.as_ref(), &who.actor())
        .await?;
    state.ocsp.issued();
    state.metrics.issued("reissue", &issuance.record.policy);
    state.metrics.revoked(issuance.revoked.len());
    if !issuance.revoked.is_empty() {
        state.status_changed();
    }
    Ok(SecretJson(
        StatusCode::CREATED,
        IssueAnswer::Direct(issue_response(issuance, true)),
    ))
}

/// Sign a CSR for a client that keeps its own key.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/admins/{admin}/csr", tag = "certificates",
    params(("tenant" = String, Path), ("admin" = String, Path)), request_body = CsrBody, security(("bearer" = [])),
    responses((status = 201, body = CsrResponse), (status = 401), (status = 403), (status = 409), (status = 422)))]
pub async fn sign_csr(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path((tenant, admin)): Path<(String, String)>,
    JsonBody(body): JsonBody<CsrBody>,
) -> Result<(StatusCode, Json<CsrResponse>), ApiError> {
    who.authorize(Action::SignCsr, Some(&tenant))?;
    let policy = body
        .policy
        .ok_or_else(|| ApiError::InvalidBody("missing field `policy`".into()))?;
    let csr = body
        .csr
        .ok_or_else(|| ApiError::InvalidBody("missing field `csr` (PEM)".into()))?;
    let prepared = state
        .ca
        .prepare_sign_csr(&tenant, &admin, &policy, csr.as_bytes())
        .await?;
    let issuance = state.ca.commit(prepared, &who.actor()).await?;
    state.ocsp.issued();
    state.metrics.issued("sign-csr", &issuance.record.policy);
    let certificate_pem = ca_core::pem_encode("CERTIFICATE", &issuance.record.der);
    Ok((
        StatusCode::CREATED,
        Json(CsrResponse {
            certificate: CertificateView::new(&issuance.record, now()),
            certificate_pem,
        }),
    ))
}

/// Revoke one certificate.
#[utoipa::path(post, path = "/v1/certificates/{serial}/revoke", tag = "certificates",
    params(("serial" = String, Path)), request_body = RevokeBody, security(("bearer" = [])),
    responses((status = 200, body = CertificateView), (status = 401), (status = 403), (status = 404), (status = 409, description = "Already revoked"), (status = 422)))]
pub async fn revoke(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(serial): Path<String>,
    JsonBody(body): JsonBody<RevokeBody>,
) -> Result<Json<CertificateView>, ApiError> {
    who.authorize(Action::Revoke, None)?;
    let serial = Serial::parse(&serial)?;
    let reason = RevocationReason::parse(body.reason.as_deref().unwrap_or("unspecified"))?;
    let invalidity_date = body
        .invalidity_date
        .as_deref()
        .map(|t| {
            time_parse(t).ok_or_else(|| {
                Error::InvalidInput(format!("invalid invalidity_date \"{t}\": use RFC 3339"))
            })
        })
        .transpose()?;
    let record = state.ca.certificate(&serial).await?;
    who.authorize(Action::Revoke, Some(&record.tenant))?;
    let record = state
        .ca
        .revoke(&serial, reason, invalidity_date, &who.actor())
        .await?;
    state.metrics.revoked(1);
    state.status_changed();
    Ok(Json(CertificateView::new(&record, now())))
}

fn time_parse(text: &str) -> Option<ca_core::OffsetDateTime> {
    ca_core::OffsetDateTime::parse(text, &ca_core::Rfc3339).ok()
}

/// List certificates (cursor pagination; `expiring_within_days` for renewal jobs).
#[utoipa::path(get, path = "/v1/certificates", tag = "certificates", params(ListQuery), security(("bearer" = [])),
    responses((status = 200, body = ListView), (status = 401), (status = 403), (status = 422)))]
pub async fn list(
    State(state): State<AppState>,
    Auth(who): Auth,
    Query(query): Query<ListQuery>,
) -> Result<Json<ListView>, ApiError> {
    let tenant = query.tenant.or_else(|| who.tenant.clone());
    who.authorize(Action::Read, tenant.as_deref())?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(Error::InvalidInput("limit must be between 1 and 1000".into()).into());
    }
    let filter = ListFilter {
        tenant: tenant
            .as_deref()
            .map(ca_core::TenantId::parse)
            .transpose()?
            .map(|t| t.to_string()),
        admin: query
            .admin
            .as_deref()
            .map(ca_core::AdminId::parse)
            .transpose()?
            .map(|a| a.to_string()),
        policy: query.policy,
        status: query
            .status
            .as_deref()
            .map(ca_core::CertificateStatus::parse)
            .transpose()?,
        expiring_within_secs: query.expiring_within_days.map(|d| u64::from(d) * 86_400),
        limit,
        cursor: query.cursor.as_deref().map(Serial::parse).transpose()?,
    };
    let records = state.ca.list(&filter).await?;
    Ok(Json(ListView::new(&records, limit, now())))
}

/// One certificate with its PEM.
#[utoipa::path(get, path = "/v1/certificates/{serial}", tag = "certificates", params(("serial" = String, Path)),
    security(("bearer" = [])), responses((status = 200, body = ShowResponse), (status = 401), (status = 403), (status = 404)))]
pub async fn show(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(serial): Path<String>,
) -> Result<Json<ShowResponse>, ApiError> {
    who.authorize(Action::Read, None)?;
    let record = state.ca.certificate(&Serial::parse(&serial)?).await?;
    who.authorize(Action::Read, Some(&record.tenant))?;
    let pem = ca_core::pem_encode("CERTIFICATE", &record.der);
    Ok(Json(ShowResponse {
        certificate: CertificateView::new(&record, now()),
        pem,
    }))
}

/// What the handlers check of each body before they reach the CA (for the
/// `json_bodies` fuzz target): parse, then the reason, date and password rules.
pub(crate) fn check_bodies(data: &[u8]) {
    use crate::extract::parse_json;
    if let Ok(body) = parse_json::<IssueBody>(data) {
        let _ = requested_delivery(body.delivery.as_deref(), body.email.as_deref());
        let _ = format!("{body:?}");
    }
    if let Ok(body) = parse_json::<ReissueBody>(data) {
        let _ = RevocationReason::parse(body.reason.as_deref().unwrap_or("superseded"));
        let _ = requested_delivery(body.delivery.as_deref(), body.email.as_deref());
        let _ = format!("{body:?}");
    }
    if let Ok(body) = parse_json::<crate::routes::pickup::ResendBody>(data) {
        if let Some(email) = body.email.as_deref() {
            let _ = ca_core::check_email(email);
        }
    }
    if let Ok(body) = parse_json::<CsrBody>(data) {
        if let Some(csr) = body.csr {
            let _ = ca_core::fuzzing::csr(csr.as_bytes());
        }
    }
    if let Ok(body) = parse_json::<RevokeBody>(data) {
        let _ = RevocationReason::parse(body.reason.as_deref().unwrap_or("unspecified"));
        if let Some(date) = body.invalidity_date.as_deref() {
            let _ = time_parse(date);
        }
    }
}
