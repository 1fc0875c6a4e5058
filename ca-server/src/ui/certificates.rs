//! Search, an admin's certificates, issue, reissue, revoke, expiring soon —
//! the same `ca_core` calls and `authorize` checks as `routes::certificates`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use ca_core::{
    now, Action, AdminId, CertificateRecord, CertificateStatus, Error, Issuance, IssueRequest,
    ListFilter, ReissueMode, RevocationReason, Serial, TenantId,
};
use maud::{html, Markup};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::pages::{self, csrf_field, field, page, relative, select, status_word, when, Nav};
use super::{secret_page, Checked, Console, UiError};
use crate::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/ui/", get(search))
        .route("/ui/expiring", get(expiring))
        .route("/ui/certificates/{serial}", get(certificate))
        .route(
            "/ui/certificates/{serial}/revoke",
            get(revoke_confirm).post(revoke),
        )
        .route("/ui/tenants/{tenant}/admins/{admin}", get(admin_page))
        .route(
            "/ui/tenants/{tenant}/admins/{admin}/issue",
            axum::routing::post(issue),
        )
        .route(
            "/ui/tenants/{tenant}/admins/{admin}/reissue",
            get(reissue_confirm).post(reissue),
        )
}

/// Page size of every list.
const PAGE: u32 = 100;

fn enc(text: &str) -> String {
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}

pub(crate) fn admin_href(tenant: &str, admin: &str) -> String {
    format!("/ui/tenants/{}/admins/{}", enc(tenant), enc(admin))
}

fn certificate_href(serial: &Serial) -> String {
    format!("/ui/certificates/{serial}")
}

/// A field error to show next to its field: the API's message.
struct FieldError {
    /// Which form (`issue`, `reissue`, `search`, …).
    form: &'static str,
    field: &'static str,
    message: String,
}

impl FieldError {
    fn on(&self, form: &str, field: &str) -> Option<&str> {
        (self.form == form && self.field == field).then_some(self.message.as_str())
    }
}

/// Which field a CA error is about, from the rule its message names (the
/// messages are the API's; the console only decides where to show them).
fn field_of(e: &Error) -> &'static str {
    let text = e.to_string().to_ascii_lowercase();
    if text.starts_with("email") {
        "email"
    } else if text.contains("password") {
        "password"
    } else if text.contains("policy") || text.contains("policies") {
        "policy"
    } else if text.contains("reason") {
        "reason"
    } else if text.contains("tenant") {
        "tenant"
    } else if text.contains("admin") {
        "admin"
    } else if text.contains("invalidity") {
        "invalidity_date"
    } else {
        "form"
    }
}

fn field_error(form: &'static str, e: &Error) -> FieldError {
    FieldError {
        form,
        field: field_of(e),
        message: crate::ApiError::Core(clone_error(e)).view().error.message,
    }
}

/// Errors the console shows beside a field rather than on an error page.
fn is_field_error(e: &Error) -> bool {
    matches!(
        e,
        Error::InvalidInput(_) | Error::Policy(_) | Error::Conflict(_) | Error::NotFound(_)
    )
}

fn clone_error(e: &Error) -> Error {
    match e {
        Error::InvalidInput(m) => Error::InvalidInput(m.clone()),
        Error::Policy(m) => Error::Policy(m.clone()),
        Error::Conflict(m) => Error::Conflict(m.clone()),
        Error::NotFound(m) => Error::NotFound(m.clone()),
        other => Error::Crypto(other.code().to_owned()),
    }
}

fn status_of(e: &Error) -> StatusCode {
    crate::ApiError::Core(clone_error(e)).status()
}

// ---------------------------------------------------------------- search

#[derive(Deserialize, Default)]
struct SearchQuery {
    tenant: Option<String>,
    admin: Option<String>,
    serial: Option<String>,
    status: Option<String>,
    cursor: Option<String>,
}

fn blank(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

async fn search(
    State(state): State<AppState>,
    console: Console,
    Query(query): Query<SearchQuery>,
) -> Result<Response, UiError> {
    let who = &console.who;
    who.authorize(Action::Read, None)?;
    let mut error: Option<FieldError> = None;
    let mut records = Vec::new();
    let mut searched = false;
    if let Some(serial) = blank(&query.serial) {
        match Serial::parse(serial) {
            Ok(serial) => return Ok(Redirect::to(&certificate_href(&serial)).into_response()),
            Err(e) => {
                error = Some(FieldError {
                    form: "search",
                    field: "serial",
                    message: e.to_string(),
                })
            }
        }
    }
    // As the API's list: a tenant-scoped caller sees its tenant only.
    let tenant = blank(&query.tenant)
        .map(str::to_owned)
        .or_else(|| who.tenant.clone());
    let filter = (|| -> Result<ListFilter, (&'static str, Error)> {
        who.authorize(Action::Read, tenant.as_deref())
            .map_err(|e| ("tenant", e))?;
        Ok(ListFilter {
            tenant: tenant
                .as_deref()
                .map(TenantId::parse)
                .transpose()
                .map_err(|e| ("tenant", e))?
                .map(|t| t.to_string()),
            admin: blank(&query.admin)
                .map(AdminId::parse)
                .transpose()
                .map_err(|e| ("admin", e))?
                .map(|a| a.to_string()),
            policy: None,
            status: blank(&query.status)
                .map(CertificateStatus::parse)
                .transpose()
                .map_err(|e| ("status", e))?,
            expiring_within_secs: None,
            limit: PAGE,
            cursor: blank(&query.cursor)
                .map(Serial::parse)
                .transpose()
                .map_err(|e| ("form", e))?,
        })
    })();
    let mut status = StatusCode::OK;
    match filter {
        Ok(filter) if error.is_none() => {
            records = state.ca.list(&filter).await?;
            searched = true;
        }
        Ok(_) => status = StatusCode::UNPROCESSABLE_ENTITY,
        Err((field, e)) => {
            status = crate::ApiError::Core(clone_error(&e)).status();
            if matches!(e, Error::Forbidden(_)) {
                status = StatusCode::FORBIDDEN;
            }
            error = Some(FieldError {
                form: "search",
                field,
                message: match &e {
                    Error::Forbidden(m) => m.clone(),
                    e => crate::ApiError::Core(clone_error(e)).view().error.message,
                },
            });
        }
    }
    let err = |f: &str| error.as_ref().and_then(|e| e.on("search", f));
    let statuses: Vec<(String, String)> = [
        ("", "any"),
        ("active", "active"),
        ("revoked", "revoked"),
        ("expired", "expired"),
    ]
    .iter()
    .map(|(v, t)| (v.to_string(), t.to_string()))
    .collect();
    let tenant_value = blank(&query.tenant).unwrap_or("");
    let admin_value = blank(&query.admin).unwrap_or("");
    let now = now();
    let next_cursor = (records.len() as u32 == PAGE)
        .then(|| records.last().map(|r| r.serial.to_hex()))
        .flatten();
    let body = html! {
        form.card method="get" action="/ui/" role="search" {
            div.row {
                (field("tenant", "Tenant", "text", tenant_value, err("tenant"), html!{}))
                (field("admin", "Admin", "text", admin_value, err("admin"), html!{}))
                (field("serial", "Serial (hex)", "text", blank(&query.serial).unwrap_or(""), err("serial"), html!{}))
                (select("status", "Status", &statuses, blank(&query.status).unwrap_or(""), err("status")))
                div.field { button type="submit" { "Search" } }
            }
            @if let Some(scope) = &who.tenant {
                p.muted { "Your token is limited to tenant " code { (scope) } "; results are from it only." }
            }
        }
        @if let Some(e) = error.as_ref().filter(|e| e.field == "form") {
            p.alert role="alert" { (e.message) }
        }
        @if let (Some(t), Some(a)) = (blank(&query.tenant), blank(&query.admin)) {
            @if error.is_none() {
                p { a href=(admin_href(t, a)) { "Open " (a) " (" (t) "): certificates, issue, reissue" } }
            }
        }
        @if searched {
            h2 { (records.len()) " certificate(s)" }
            (certificate_table(&records, now, true))
            @if let Some(cursor) = next_cursor {
                p { a href=(format!("/ui/?tenant={}&admin={}&status={}&cursor={}", enc(tenant_value), enc(admin_value), enc(blank(&query.status).unwrap_or("")), cursor)) { "Next page" } }
            }
        }
    };
    Ok((
        status,
        page(&console, Nav::Search, "Search certificates", body),
    )
        .into_response())
}

fn certificate_table(
    records: &[CertificateRecord],
    now: ca_core::OffsetDateTime,
    with_admin: bool,
) -> Markup {
    html! {
        @if records.is_empty() {
            p.muted { "No certificates." }
        } @else {
            table {
                thead { tr {
                    th scope="col" { "Serial" }
                    @if with_admin { th scope="col" { "Tenant" } th scope="col" { "Admin" } }
                    th scope="col" { "Policy" } th scope="col" { "Status" }
                    th scope="col" { "Not before" } th scope="col" { "Not after" } th scope="col" { "Revoked" }
                } }
                tbody {
                    @for r in records {
                        tr {
                            td { a.mono href=(certificate_href(&r.serial)) { (r.serial) } }
                            @if with_admin {
                                td { (r.tenant) }
                                td { a href=(admin_href(&r.tenant, &r.admin)) { (r.admin) } }
                            }
                            td { (r.policy) }
                            td { (status_word(r, now)) }
                            td { (when(r.not_before)) }
                            td { (when(r.not_after)) " " span.muted { "(" (relative(r.not_after, now)) ")" } }
                            td {
                                @if let Some(at) = r.revoked_at {
                                    (when(at)) " — " (r.reason.map(|x| x.name()).unwrap_or("unspecified"))
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------- expiring

#[derive(Deserialize)]
struct ExpiringQuery {
    days: Option<String>,
}

async fn expiring(
    State(state): State<AppState>,
    console: Console,
    Query(query): Query<ExpiringQuery>,
) -> Result<Response, UiError> {
    let who = &console.who;
    who.authorize(Action::Read, who.tenant.as_deref())?;
    let days_text = blank(&query.days).unwrap_or("30").to_owned();
    let (days, error) = match days_text.parse::<u32>() {
        Ok(d) if (1..=3650).contains(&d) => (Some(d), None),
        _ => (None, Some("days must be a whole number from 1 to 3650")),
    };
    let mut records = Vec::new();
    if let Some(days) = days {
        records = state
            .ca
            .list(&ListFilter {
                tenant: who.tenant.clone(),
                status: Some(CertificateStatus::Active),
                expiring_within_secs: Some(u64::from(days) * 86_400),
                limit: 1000,
                ..ListFilter::default()
            })
            .await?;
        records.sort_by_key(|r| r.not_after);
    }
    let now = now();
    let body = html! {
        form.card method="get" action="/ui/expiring" {
            div.row {
                (field("days", "Active certificates expiring within (days)", "number", &days_text, error, html!{}))
                div.field { button type="submit" { "Show" } }
            }
        }
        @if days.is_some() {
            h2 { (records.len()) " certificate(s), soonest first" }
            (certificate_table(&records, now, true))
        }
    };
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok((status, page(&console, Nav::Expiring, "Expiring soon", body)).into_response())
}

// ---------------------------------------------------------------- one certificate

async fn certificate(
    State(state): State<AppState>,
    console: Console,
    Path(serial): Path<String>,
) -> Result<Response, UiError> {
    let who = &console.who;
    who.authorize(Action::Read, None)?;
    let record = state.ca.certificate(&Serial::parse(&serial)?).await?;
    who.authorize(Action::Read, Some(&record.tenant))?;
    let now = now();
    let pem = ca_core::pem_encode("CERTIFICATE", &record.der);
    let active = record.status(now) == CertificateStatus::Active;
    let body = html! {
        dl.facts {
            dt { "Serial" } dd.mono { (record.serial) }
            dt { "Admin" } dd { a href=(admin_href(&record.tenant, &record.admin)) { (record.admin) " (" (record.tenant) ")" } }
            dt { "Subject" } dd { (ca_core::subject_line(&record.der)) }
            dt { "Policy" } dd { (record.policy) }
            dt { "Status" } dd { (status_word(&record, now)) }
            dt { "Valid" } dd { (when(record.not_before)) " to " (when(record.not_after)) }
            @if let Some(at) = record.revoked_at {
                dt { "Revoked" } dd { (when(at)) ", " (record.reason.map(|r| r.name()).unwrap_or("unspecified")) }
            }
            @if let Some(at) = record.invalidity_date {
                dt { "Invalidity date" } dd { (when(at)) }
            }
        }
        @if active && who.authorize(Action::Revoke, Some(&record.tenant)).is_ok() && record.tenant != ca_core::RESERVED_TENANT {
            p { a.button.danger href=(format!("{}/revoke", certificate_href(&record.serial))) { "Revoke…" } }
        }
        details { summary { "PEM" } pre.mono { (pem) } }
    };
    Ok(page(&console, Nav::Search, "Certificate", body).into_response())
}

// ---------------------------------------------------------------- admin page

/// The admin's page, optionally with an error beside one field of one form.
/// The admin page again with `e` shown beside the field of `form`, under the
/// status and message the API gives the same error.
async fn admin_with_error(
    state: &AppState,
    console: &Console,
    tenant: &str,
    admin: &str,
    form: &'static str,
    e: &Error,
) -> Result<Response, UiError> {
    let error = field_error(form, e);
    render_admin(state, console, tenant, admin, Some(error), status_of(e)).await
}

async fn render_admin(
    state: &AppState,
    console: &Console,
    tenant: &str,
    admin: &str,
    error: Option<FieldError>,
    status: StatusCode,
) -> Result<Response, UiError> {
    let who = &console.who;
    who.authorize(Action::Read, Some(tenant))?;
    let tenant_id = TenantId::parse(tenant)?;
    let admin_id = AdminId::parse(admin)?;
    let mut records = state
        .ca
        .list(&ListFilter {
            tenant: Some(tenant_id.to_string()),
            admin: Some(admin_id.to_string()),
            limit: 1000,
            ..ListFilter::default()
        })
        .await?;
    // History: newest first.
    records.sort_by_key(|r| std::cmp::Reverse(r.not_before));
    let now = now();
    let active: Vec<&CertificateRecord> = records
        .iter()
        .filter(|r| r.status(now) == CertificateStatus::Active)
        .collect();
    let err = |form: &str, f: &str| error.as_ref().and_then(|e| e.on(form, f));
    let policies: Vec<(String, String)> = state
        .ca
        .policies()
        .iter()
        .filter(|p| p.kind == ca_core::PolicyKind::Pkcs12)
        .map(|p| (p.name.clone(), format!("{} — {}", p.name, p.description)))
        .collect();
    let default_policy = active
        .first()
        .map(|r| r.policy.clone())
        .unwrap_or_else(|| state.ca.default_policy().to_owned());
    let mut reissue_policies = vec![(String::new(), "that of the active certificate".to_owned())];
    reissue_policies.extend(policies.iter().cloned());
    let href = admin_href(tenant, admin);
    let may_issue = who.authorize(Action::Issue, Some(tenant)).is_ok();
    let may_reissue = who.authorize(Action::Reissue, Some(tenant)).is_ok();
    let may_revoke = who.authorize(Action::Revoke, Some(tenant)).is_ok();
    let body = html! {
        p.muted { "Tenant " code { (tenant) } " · admin " code { (admin) } }
        @if let Some(e) = error.as_ref().filter(|e| e.field == "form") {
            p.alert role="alert" { (e.message) }
        }
        h2 { "Certificates (newest first)" }
        (certificate_table(&records, now, false))
        @if may_revoke && !active.is_empty() {
            p { @for r in &active { a.button.danger href=(format!("{}/revoke", certificate_href(&r.serial))) { "Revoke " (r.serial.to_hex()[..8]) "…" } " " } }
        }
        @if may_issue && active.is_empty() && tenant != ca_core::RESERVED_TENANT {
            form.card method="post" action=(format!("{href}/issue")) aria-labelledby="issue-title" {
                h2 id="issue-title" { "Issue a first certificate" }
                (csrf_field(console))
                div.row {
                    (select("policy", "Policy", &policies, &default_policy, err("issue", "policy")))
                    (field("password", "Bundle password (blank: generate one)", "password", "", err("issue", "password"), html!{}))
                    fieldset.field {
                        legend { "Delivery" }
                        label { input type="radio" name="delivery" value="download" checked; "direct download" }
                        " "
                        label { input type="radio" name="delivery" value="pickup"; "pickup (link by mail, code shown once)" }
                    }
                    (field("email", "Admin's mail address (pickup only, optional)", "email", "", err("issue", "email"), html!{}))
                    div.field { button type="submit" { "Issue" } }
                }
            }
        }
        @if may_issue && !active.is_empty() {
            p.muted { "An active certificate exists: reissue replaces it. To move the admin to another policy, revoke it first, then issue." }
        }
        @if may_reissue && !active.is_empty() && tenant != ca_core::RESERVED_TENANT {
            form.card method="get" action=(format!("{href}/reissue")) aria-labelledby="reissue-title" {
                h2 id="reissue-title" { "Reissue (device lost or replaced)" }
                p.muted { "Issues a new certificate and revokes the active one of the policy in the same transaction. The next page names what will be revoked." }
                div.row {
                    (select("policy", "Policy", &reissue_policies, "", err("reissue", "policy")))
                    (select("reason", "Reason for the old certificate", &pages::reasons(), "superseded", err("reissue", "reason")))
                    div.field { button type="submit" { "Continue…" } }
                }
            }
        }
    };
    let title = format!("{admin} ({tenant})");
    Ok((status, page(console, Nav::Search, &title, body)).into_response())
}

async fn admin_page(
    State(state): State<AppState>,
    console: Console,
    Path((tenant, admin)): Path<(String, String)>,
) -> Result<Response, UiError> {
    render_admin(&state, &console, &tenant, &admin, None, StatusCode::OK).await
}

// ---------------------------------------------------------------- issue

#[derive(Deserialize)]
struct IssueForm {
    policy: Option<String>,
    password: Option<Zeroizing<String>>,
    delivery: Option<String>,
    email: Option<String>,
}

fn optional_password(p: Option<Zeroizing<String>>) -> Option<Zeroizing<String>> {
    p.filter(|p| !p.is_empty())
}

async fn issue(
    State(state): State<AppState>,
    Path((tenant, admin)): Path<(String, String)>,
    Checked(console, form): Checked<IssueForm>,
) -> Result<Response, UiError> {
    let who = &console.who;
    who.authorize(Action::Issue, Some(&tenant))?;
    let email = form.email.filter(|e| !e.is_empty());
    let pickup = match form.delivery.as_deref() {
        None | Some("download") => None,
        Some("pickup") => Some(ca_core::PickupRequest {
            mail: state.mailer.is_some(),
            email: email.clone(),
        }),
        Some(d) => {
            return Err(Error::InvalidInput(format!(
                "unknown delivery \"{}\": use download or pickup",
                d.escape_debug()
            ))
            .into());
        }
    };
    let checked = match (&pickup, &email) {
        (None, Some(_)) => Err(Error::InvalidInput(
            "email goes with pickup delivery only (the link goes by mail; a download carries the bundle)".into(),
        )),
        (Some(_), Some(email)) => ca_core::check_email(email),
        _ => Ok(()),
    };
    if let Err(e) = checked {
        return admin_with_error(&state, &console, &tenant, &admin, "issue", &e).await;
    }
    let request = IssueRequest {
        tenant: tenant.clone(),
        admin: admin.clone(),
        policy: form.policy.filter(|p| !p.is_empty()),
        password: optional_password(form.password),
    };
    if let Some(pickup) = pickup {
        let outcome = match state.ca.prepare_issue(&request).await {
            Ok(prepared) => {
                state
                    .ca
                    .commit_pickup(prepared, &pickup, &who.actor())
                    .await
            }
            Err(e) => Err(e),
        };
        let issuance = match outcome {
            Ok(i) => i,
            Err(e) if is_field_error(&e) => {
                return admin_with_error(&state, &console, &tenant, &admin, "issue", &e).await;
            }
            Err(e) => return Err(e.into()),
        };
        state.ocsp.issued();
        state.metrics.issued("issue", &issuance.record.policy);
        let (_, response) = crate::routes::pickup::answer(&state, issuance, false);
        return Ok(super::pickups::pickup_page(
            &console,
            &response,
            "Certificate issued for pickup",
        ));
    }
    let outcome = match state.ca.prepare_issue(&request).await {
        Ok(prepared) => state.ca.commit(prepared, &who.actor()).await,
        Err(e) => Err(e),
    };
    let issuance = match outcome {
        Ok(i) => i,
        Err(e) if is_field_error(&e) => {
            return admin_with_error(&state, &console, &tenant, &admin, "issue", &e).await;
        }
        Err(e) => return Err(e.into()),
    };
    state.ocsp.issued();
    state.metrics.issued("issue", &issuance.record.policy);
    Ok(issued_page(&console, &issuance, "Certificate issued", None))
}

/// The page that hands over a new bundle: a download link carrying the
/// bundle itself (a `data:` URL, so no copy waits on the server for a second
/// request, which another replica might answer) and the password, shown once.
fn issued_page(
    console: &Console,
    issuance: &Issuance,
    title: &str,
    revoked: Option<&[Serial]>,
) -> Response {
    let record = &issuance.record;
    let bundle = issuance.bundle.as_ref().map(|b| {
        Zeroizing::new(format!(
            "data:application/x-pkcs12;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(&b.0[..])
        ))
    });
    let file = format!("{}-{}.p12", record.tenant, record.admin);
    let password = issuance.password.as_ref().map(|p| p.as_str()).unwrap_or("");
    let body = html! {
        p.notice role="status" { "Committed: serial " code { (record.serial) } ", valid until " (when(record.not_after)) "." }
        @if let Some(revoked) = revoked {
            @if revoked.is_empty() { p { "Nothing was revoked (this was the admin's first certificate under the policy)." } }
            @else {
                p { "Revoked in the same transaction:" }
                ul { @for s in revoked { li { a.mono href=(certificate_href(s)) { (s) } } } }
            }
        }
        @if let Some(href) = &bundle {
            h2 { "1. Download the bundle" }
            p { a.button id="download" href=(href.as_str()) download=(file) { "Download " (file) } }
            h2 { "2. Give the admin this password by a separate channel" }
            p { span.secret id="password" { (password) } }
            p.muted { "Shown this once: it is not stored. Leaving this page discards the bundle." }
        }
        p { a href=(admin_href(&record.tenant, &record.admin)) { "Back to " (record.admin) } }
    };
    secret_page(StatusCode::CREATED, page(console, Nav::Search, title, body))
}

// ---------------------------------------------------------------- reissue

#[derive(Deserialize)]
struct ReissueQuery {
    policy: Option<String>,
    reason: Option<String>,
}

/// What a reissue would revoke now (the CA's answer: the rows its
/// committing transaction supersedes).
async fn would_revoke(
    state: &AppState,
    tenant: &str,
    admin: &str,
    policy: Option<&str>,
) -> Result<Vec<CertificateRecord>, Error> {
    state
        .ca
        .reissue_would_revoke(&TenantId::parse(tenant)?, &AdminId::parse(admin)?, policy)
        .await
}

fn serial_list(records: &[CertificateRecord]) -> String {
    records
        .iter()
        .map(|r| r.serial.to_hex())
        .collect::<Vec<_>>()
        .join(",")
}

async fn reissue_confirm(
    State(state): State<AppState>,
    console: Console,
    Path((tenant, admin)): Path<(String, String)>,
    Query(query): Query<ReissueQuery>,
) -> Result<Response, UiError> {
    let who = &console.who;
    who.authorize(Action::Reissue, Some(&tenant))?;
    let policy = blank(&query.policy).map(str::to_owned);
    let reason = match RevocationReason::parse(blank(&query.reason).unwrap_or("superseded")) {
        Ok(r) => r,
        Err(e) => {
            return render_admin(
                &state,
                &console,
                &tenant,
                &admin,
                Some(FieldError {
                    form: "reissue",
                    field: "reason",
                    message: crate::ApiError::Core(e).view().error.message,
                }),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await;
        }
    };
    let revoke = match would_revoke(&state, &tenant, &admin, policy.as_deref()).await {
        Ok(r) => r,
        Err(e) if is_field_error(&e) => {
            return admin_with_error(&state, &console, &tenant, &admin, "reissue", &e).await;
        }
        Err(e) => return Err(e.into()),
    };
    Ok(confirm_page(
        &console,
        &tenant,
        &admin,
        policy.as_deref(),
        reason,
        &revoke,
        None,
    ))
}

fn confirm_page(
    console: &Console,
    tenant: &str,
    admin: &str,
    policy: Option<&str>,
    reason: RevocationReason,
    revoke: &[CertificateRecord],
    error: Option<FieldError>,
) -> Response {
    let now = now();
    let err = |f: &str| error.as_ref().and_then(|e| e.on("reissue", f));
    let body = html! {
        @if let Some(e) = error.as_ref().filter(|e| e.field != "password") {
            p.alert role="alert" { (e.message) }
        }
        @if revoke.is_empty() {
            p.notice { "Nothing is active to replace: this issues " (admin) "'s first certificate" @if let Some(p) = policy { " under " code { (p) } } " and revokes nothing." }
        } @else {
            p.alert id="will-revoke" { "This will revoke " strong { (revoke.len()) } " certificate(s) with reason " strong { (reason.name()) } ", at once and for good:" }
            (certificate_table(revoke, now, false))
        }
        form.card method="post" action=(format!("{}/reissue", admin_href(tenant, admin))) {
            (csrf_field(console))
            input type="hidden" name="policy" value=(policy.unwrap_or(""));
            input type="hidden" name="reason" value=(reason.name());
            input type="hidden" name="confirm" value=(serial_list(revoke));
            div.row {
                (field("password", "Bundle password (blank: generate one)", "password", "", err("password"), html!{}))
                div.field {
                    @if revoke.is_empty() { button type="submit" { "Issue" } }
                    @else { button.danger type="submit" { "Revoke and reissue" } }
                }
                div.field { a href=(admin_href(tenant, admin)) { "Cancel" } }
            }
        }
    };
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    (
        status,
        page(
            console,
            Nav::Search,
            &format!("Reissue for {admin} ({tenant})?"),
            body,
        ),
    )
        .into_response()
}

#[derive(Deserialize)]
struct ReissueForm {
    policy: Option<String>,
    reason: Option<String>,
    confirm: Option<String>,
    password: Option<Zeroizing<String>>,
}

async fn reissue(
    State(state): State<AppState>,
    Path((tenant, admin)): Path<(String, String)>,
    Checked(console, form): Checked<ReissueForm>,
) -> Result<Response, UiError> {
    let who = &console.who;
    who.authorize(Action::Reissue, Some(&tenant))?;
    // A caller who may not issue (a renewer) may only replace (DESIGN §3).
    let mode = match who.authorize(Action::Issue, Some(&tenant)) {
        Ok(()) => ReissueMode::ReplaceOrIssue,
        Err(_) => ReissueMode::ReplaceOnly,
    };
    let policy = blank(&form.policy).map(str::to_owned);
    let reason = RevocationReason::parse(blank(&form.reason).unwrap_or("superseded"))?;
    // The confirmation named what would be revoked; if that changed since
    // (another operator acted), show the new set instead of revoking it unseen.
    let revoke = would_revoke(&state, &tenant, &admin, policy.as_deref()).await?;
    if serial_list(&revoke) != form.confirm.as_deref().unwrap_or("") {
        let error = FieldError {
            form: "reissue",
            field: "form",
            message: "what this reissue would revoke changed since the confirmation was shown; nothing was changed: check the list below and confirm again".into(),
        };
        return Ok(confirm_page(
            &console,
            &tenant,
            &admin,
            policy.as_deref(),
            reason,
            &revoke,
            Some(error),
        ));
    }
    let request = IssueRequest {
        tenant: tenant.clone(),
        admin: admin.clone(),
        policy: policy.clone(),
        password: optional_password(form.password),
    };
    let outcome = match state.ca.prepare_reissue(&request, reason, mode).await {
        Ok(prepared) => {
            state
                .ca
                .commit_idempotent(prepared, None, &who.actor())
                .await
        }
        Err(e) => Err(e),
    };
    let issuance = match outcome {
        Ok(i) => i,
        Err(e) if is_field_error(&e) => {
            let error = field_error("reissue", &e);
            return Ok(confirm_page(
                &console,
                &tenant,
                &admin,
                policy.as_deref(),
                reason,
                &revoke,
                Some(error),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    state.ocsp.issued();
    state.metrics.issued("reissue", &issuance.record.policy);
    state.metrics.revoked(issuance.revoked.len());
    if !issuance.revoked.is_empty() {
        state.status_changed();
    }
    let revoked = issuance.revoked.clone();
    Ok(issued_page(
        &console,
        &issuance,
        "Certificate reissued",
        Some(&revoked),
    ))
}

// ---------------------------------------------------------------- revoke

async fn revoke_confirm(
    State(state): State<AppState>,
    console: Console,
    Path(serial): Path<String>,
) -> Result<Response, UiError> {
    let who = &console.who;
    who.authorize(Action::Revoke, None)?;
    let record = state.ca.certificate(&Serial::parse(&serial)?).await?;
    who.authorize(Action::Revoke, Some(&record.tenant))?;
    Ok(revoke_page(&console, &record, None, "", StatusCode::OK))
}

fn revoke_page(
    console: &Console,
    record: &CertificateRecord,
    error: Option<FieldError>,
    date: &str,
    status: StatusCode,
) -> Response {
    let now = now();
    let err = |f: &str| error.as_ref().and_then(|e| e.on("revoke", f));
    let body = html! {
        @if let Some(e) = error.as_ref().filter(|e| e.field == "form") {
            p.alert role="alert" { (e.message) }
        }
        p.alert { "This revokes the certificate below at once and for good; " (record.admin) " can no longer log in with it." }
        (certificate_table(std::slice::from_ref(record), now, true))
        form.card method="post" action=(format!("{}/revoke", certificate_href(&record.serial))) {
            (csrf_field(console))
            div.row {
                (select("reason", "Reason", &pages::reasons(), "unspecified", err("reason")))
                (field("invalidity_date", "Invalidity date (RFC 3339, optional)", "text", date, err("invalidity_date"), html!{}))
                div.field { button.danger type="submit" { "Revoke" } }
                div.field { a href=(admin_href(&record.tenant, &record.admin)) { "Cancel" } }
            }
        }
    };
    (
        status,
        page(console, Nav::Search, "Revoke certificate?", body),
    )
        .into_response()
}

#[derive(Deserialize)]
struct RevokeForm {
    reason: Option<String>,
    invalidity_date: Option<String>,
}

async fn revoke(
    State(state): State<AppState>,
    Path(serial): Path<String>,
    Checked(console, form): Checked<RevokeForm>,
) -> Result<Response, UiError> {
    let who = &console.who;
    who.authorize(Action::Revoke, None)?;
    let serial = Serial::parse(&serial)?;
    let record = state.ca.certificate(&serial).await?;
    who.authorize(Action::Revoke, Some(&record.tenant))?;
    let date_text = blank(&form.invalidity_date).unwrap_or("").to_owned();
    let checked = (|| -> Result<_, Error> {
        let reason = RevocationReason::parse(blank(&form.reason).unwrap_or("unspecified"))?;
        let date = blank(&form.invalidity_date)
            .map(|t| {
                ca_core::OffsetDateTime::parse(t, &ca_core::Rfc3339).map_err(|_| {
                    Error::InvalidInput(format!("invalid invalidity_date \"{t}\": use RFC 3339"))
                })
            })
            .transpose()?;
        Ok((reason, date))
    })();
    let outcome = match checked {
        Ok((reason, date)) => state.ca.revoke(&serial, reason, date, &who.actor()).await,
        Err(e) => Err(e),
    };
    let record = match outcome {
        Ok(r) => r,
        Err(e) if is_field_error(&e) => {
            let status = status_of(&e);
            return Ok(revoke_page(
                &console,
                &record,
                Some(field_error("revoke", &e)),
                &date_text,
                status,
            ));
        }
        Err(e) => return Err(e.into()),
    };
    state.metrics.revoked(1);
    state.status_changed();
    let now = now();
    let body = html! {
        p.notice role="status" id="revoked" { "Revoked " code { (record.serial) } " (" (record.reason.map(|r| r.name()).unwrap_or("unspecified")) "). OCSP answers revoked now; the CRL follows within seconds." }
        (certificate_table(std::slice::from_ref(&record), now, true))
        p { a href=(admin_href(&record.tenant, &record.admin)) { "Back to " (record.admin) } }
    };
    Ok(page(&console, Nav::Search, "Certificate revoked", body).into_response())
}
