//! Search, an admin's certificates, one certificate, expiring soon — the
//! same `ca_core` calls and `authorize` checks as `routes::certificates`.
//! The forms that change something (issue, reissue, revoke) are in
//! `lifecycle`; their errors come back to the admin page drawn here.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use ca_core::{
    now, Action, AdminId, CertificateRecord, CertificateStatus, Error, ListFilter, Serial, TenantId,
};
use maud::{html, Markup};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde::Deserialize;

use super::pages::{self, csrf_field, field, page, relative, select, status_word, when, Nav};
use super::{Console, UiError};
use crate::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/ui/", get(search))
        .route("/ui/expiring", get(expiring))
        .route("/ui/certificates/{serial}", get(certificate))
        .route("/ui/tenants/{tenant}/admins/{admin}", get(admin_page))
}

/// Page size of every list.
const PAGE: u32 = 100;

pub(super) fn enc(text: &str) -> String {
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}

pub(crate) fn admin_href(tenant: &str, admin: &str) -> String {
    format!("/ui/tenants/{}/admins/{}", enc(tenant), enc(admin))
}

pub(super) fn certificate_href(serial: &Serial) -> String {
    format!("/ui/certificates/{serial}")
}

/// A field error to show next to its field: the API's message.
pub(super) struct FieldError {
    /// Which form (`issue`, `reissue`, `search`, …).
    pub(super) form: &'static str,
    pub(super) field: &'static str,
    pub(super) message: String,
}

impl FieldError {
    pub(super) fn on(&self, form: &str, field: &str) -> Option<&str> {
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

pub(super) fn field_error(form: &'static str, e: &Error) -> FieldError {
    FieldError {
        form,
        field: field_of(e),
        message: crate::ApiError::Core(clone_error(e)).view().error.message,
    }
}

/// Errors the console shows beside a field rather than on an error page.
pub(super) fn is_field_error(e: &Error) -> bool {
    matches!(
        e,
        Error::InvalidInput(_) | Error::Policy(_) | Error::Conflict(_) | Error::NotFound(_)
    )
}

pub(super) fn clone_error(e: &Error) -> Error {
    match e {
        Error::InvalidInput(m) => Error::InvalidInput(m.clone()),
        Error::Policy(m) => Error::Policy(m.clone()),
        Error::Conflict(m) => Error::Conflict(m.clone()),
        Error::NotFound(m) => Error::NotFound(m.clone()),
        other => Error::Crypto(other.code().to_owned()),
    }
}

pub(super) fn status_of(e: &Error) -> StatusCode {
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

pub(super) fn blank(v: &Option<String>) -> Option<&str> {
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

pub(super) fn certificate_table(
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
pub(super) async fn admin_with_error(
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

pub(super) async fn render_admin(
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
                    (super::lifecycle::delivery_fields(|f| err("issue", f).map(str::to_owned)))
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
