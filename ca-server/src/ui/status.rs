//! CRL and OCSP status, the audit log with `verify`, and API tokens.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use ca_core::{now, Action, Error, OffsetDateTime, Role};
use maud::html;
use serde::Deserialize;

use super::pages::{csrf_field, field, page, relative, select, when, Nav};
use super::{secret_page, Checked, Console, UiError};
use crate::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/ui/status", get(status))
        .route("/ui/audit", get(audit))
        .route("/ui/audit/verify", get(verify))
        .route("/ui/tokens", get(tokens).post(create_token))
        .route("/ui/tokens/{id}/revoke", post(revoke_token))
}

// ---------------------------------------------------------------- CRL & OCSP

/// One issuer's revocation status (one row per issuer with unexpired
/// certificates: the active one first, then retired ones after a rollover).
struct IssuerStatus {
    name: String,
    id: String,
    state: &'static str,
    crl_number: u64,
    this_update: Option<OffsetDateTime>,
    next_update: Option<OffsetDateTime>,
    pending: bool,
    responder_not_after: Option<OffsetDateTime>,
}

async fn status(State(state): State<AppState>, console: Console) -> Result<Response, UiError> {
    console.who.authorize(Action::Read, None)?;
    let mut issuers = Vec::new();
    for issuer in state.ca.issuers() {
        let crl = state.ca.crl_status_for(issuer.number()).await?;
        issuers.push(IssuerStatus {
            name: ca_core::subject_line(&issuer.certificate().der().0),
            id: issuer.id().to_owned(),
            state: issuer.state().name(),
            crl_number: crl.published_number,
            this_update: crl.this_update,
            next_update: crl.next_update,
            pending: crl.revision != crl.published_revision,
            responder_not_after: state
                .ocsp
                .responder_not_after_for(issuer.number())
                .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok()),
        });
    }
    let now = now();
    let body = html! {
        table {
            thead { tr {
                th scope="col" { "Issuer" } th scope="col" { "State" } th scope="col" { "CRL" } th scope="col" { "CRL number" } th scope="col" { "This update (age)" }
                th scope="col" { "Next update" } th scope="col" { "Revocations not yet in the CRL" }
                th scope="col" { "OCSP responder certificate expires" }
            } }
            tbody {
                @for i in &issuers {
                    tr id={ "issuer-" (i.id) } {
                        td { (i.name) }
                        td { (i.state) }
                        td { a href={ "/crl/" (i.id) } { "/crl/" (i.id) } }
                        td.crl-number { (i.crl_number) }
                        td { @if let Some(t) = i.this_update { (when(t)) " (" (relative(t, now)) ")" } @else { "none published yet" } }
                        td { @if let Some(t) = i.next_update {
                            (when(t)) " (" (relative(t, now)) ")"
                            @if t <= now { " " span.status-revoked { "stale" } }
                        } }
                        td { @if i.pending { "yes — republishing within seconds" } @else { "none" } }
                        td { @if let Some(t) = i.responder_not_after { (when(t)) " (" (relative(t, now)) ")" } @else { "not loaded" } }
                    }
                }
            }
        }
        p.muted { "Gateways fetch " a href="/crl" { "/crl" } " (DER, the active issuer's) or " a href="/crls.pem" { "/crls.pem" } " (every issuer's CRL in one PEM file) and ask " code { "/ocsp" } " (each issuer has its own responder); responder certificates are rotated automatically at half their validity." }
    };
    Ok(page(&console, Nav::Status, "CRL and OCSP status", body).into_response())
}

// ---------------------------------------------------------------- audit

#[derive(Deserialize)]
struct AuditQuery {
    since: Option<String>,
}

const AUDIT_PAGE: u32 = 100;

async fn audit(
    State(state): State<AppState>,
    console: Console,
    Query(query): Query<AuditQuery>,
) -> Result<Response, UiError> {
    console.who.authorize(Action::Audit, None)?;
    let since_text = query.since.unwrap_or_default();
    let since = match since_text.trim() {
        "" => None,
        t => Some(t.parse::<u64>().map_err(|_| {
            Error::InvalidInput(format!(
                "since must be an event number, not \"{}\"",
                t.escape_debug()
            ))
        })?),
    };
    // Newest first by default: start from the head.
    let head = state.ca.change_counter().await?;
    let after = since.unwrap_or_else(|| head.saturating_sub(u64::from(AUDIT_PAGE)));
    let events = state.ca.audit_events(after, AUDIT_PAGE).await?;
    let older = after.saturating_sub(u64::from(AUDIT_PAGE));
    let body = html! {
        form.card method="get" action="/ui/audit/verify" {
            p { "Check the whole hash chain: any edited, deleted or reordered event is found." }
            button type="submit" { "Verify the audit chain" }
        }
        h2 { "Events " (after + 1) "–" (after + events.len() as u64) " of " (head) }
        table {
            thead { tr { th scope="col" { "#" } th scope="col" { "Time" } th scope="col" { "Actor" } th scope="col" { "Action" } th scope="col" { "Subject" } th scope="col" { "Serials" } th scope="col" { "Details" } } }
            tbody {
                @for e in events.iter().rev() {
                    tr {
                        td { (e.seq) } td.nowrap { (when(e.at)) } td.mono.nowrap { (e.actor) } td.nowrap { (e.action) } td.wrap { (e.subject) }
                        td.mono.nowrap { @for s in &e.serials {
                            // Short form for reading; the link and its title carry the whole serial.
                            a href=(format!("/ui/certificates/{s}")) title=(s) { (s.get(..12).unwrap_or(s)) "…" } br;
                        } }
                        td.wrap { (e.details) }
                    }
                }
            }
        }
        p {
            @if after > 0 { a href=(format!("/ui/audit?since={older}")) { "Older events" } " " }
            @if since.is_some() { a href="/ui/audit" { "Newest events" } }
        }
    };
    Ok(page(&console, Nav::Audit, "Audit log", body).into_response())
}

async fn verify(State(state): State<AppState>, console: Console) -> Result<Response, UiError> {
    console.who.authorize(Action::Audit, None)?;
    let (status, body) = match state.ca.verify_audit().await {
        Ok(report) => (
            StatusCode::OK,
            html! {
                p.notice role="status" id="verify-result" { "The audit chain is intact: " (report.events) " events verified; head " code { (report.head) } "." }
            },
        ),
        Err(Error::AuditBroken(why)) => (
            StatusCode::OK,
            html! { p.alert role="alert" id="verify-result" { "The audit chain is BROKEN: " (why) } },
        ),
        Err(e) => return Err(e.into()),
    };
    let body = html! { (body) p { a href="/ui/audit" { "Back to the audit log" } } };
    Ok((
        status,
        page(&console, Nav::Audit, "Audit chain verification", body),
    )
        .into_response())
}

// ---------------------------------------------------------------- tokens

struct TokenErrors {
    field: &'static str,
    message: String,
}

async fn render_tokens(
    state: &AppState,
    console: &Console,
    error: Option<TokenErrors>,
    status: StatusCode,
) -> Result<Response, UiError> {
    console.who.authorize(Action::ManageTokens, None)?;
    let tokens = state.ca.tokens().await?;
    let now = now();
    let err = |f: &str| {
        error
            .as_ref()
            .filter(|e| e.field == f)
            .map(|e| e.message.as_str())
    };
    let roles: Vec<(String, String)> = Role::ALL
        .iter()
        .map(|r| (r.name().to_owned(), r.name().to_owned()))
        .collect();
    let body = html! {
        @if let Some(e) = error.as_ref().filter(|e| e.field == "form") { p.alert role="alert" { (e.message) } }
        form.card method="post" action="/ui/tokens" aria-labelledby="create-title" {
            h2 id="create-title" { "Create a token" }
            (csrf_field(console))
            div.row {
                (select("role", "Role", &roles, "operator", err("role")))
                (field("tenant", "Tenant (operator/renewer only; blank: all)", "text", "", err("tenant"), html!{}))
                (field("name", "Name", "text", "", err("name"), html!{}))
                (field("expires_in", "Expires in (e.g. 90d; blank: never)", "text", "", err("expires_in"), html!{}))
                div.field { button type="submit" { "Create" } }
            }
        }
        table {
            thead { tr { th scope="col" { "Id" } th scope="col" { "Name" } th scope="col" { "Role" } th scope="col" { "Tenant" } th scope="col" { "Created" } th scope="col" { "Expires" } th scope="col" { "State" } th scope="col" { "" } } }
            tbody {
                @for t in &tokens {
                    tr {
                        td.mono { (t.id) } td { (t.name) } td { (t.role) } td { (t.tenant.as_deref().unwrap_or("all")) }
                        td { (t.created_at) }
                        td { @if let Some(at) = t.expires_at { (when(at)) } @else { "never" } }
                        td {
                            @if let Some(at) = &t.revoked_at { span.status-revoked { "revoked " (at) } }
                            @else if t.expires_at.is_some_and(|at| at <= now) { span.status-expired { "expired" } }
                            @else { span.status-active { "active" } }
                        }
                        td {
                            @if t.revoked_at.is_none() {
                                form method="post" action=(format!("/ui/tokens/{}/revoke", t.id)) {
                                    (csrf_field(console))
                                    button.danger type="submit" aria-label=(format!("Revoke token {}", t.id)) { "Revoke" }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok((status, page(console, Nav::Tokens, "API tokens", body)).into_response())
}

async fn tokens(State(state): State<AppState>, console: Console) -> Result<Response, UiError> {
    render_tokens(&state, &console, None, StatusCode::OK).await
}

#[derive(Deserialize)]
struct CreateForm {
    role: Option<String>,
    tenant: Option<String>,
    name: Option<String>,
    expires_in: Option<String>,
}

fn blank(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

async fn create_token(
    State(state): State<AppState>,
    Checked(console, form): Checked<CreateForm>,
) -> Result<Response, UiError> {
    console.who.authorize(Action::ManageTokens, None)?;
    // The same checks, in the same order and with the same messages, as POST /v1/tokens.
    let checked = (|| -> Result<_, (&'static str, Error)> {
        let role = blank(&form.role)
            .ok_or_else(|| {
                Error::InvalidInput("role is required: admin, operator, renewer or auditor".into())
            })
            .and_then(Role::parse)
            .map_err(|e| ("role", e))?;
        let expires_in = blank(&form.expires_in)
            .map(|d| {
                d.parse::<ca_core::Duration>()
                    .map_err(|e| Error::InvalidInput(format!("expires_in: {e}")))
            })
            .transpose()
            .map_err(|e| ("expires_in", e))?;
        Ok((role, expires_in))
    })();
    let created = match checked {
        Ok((role, expires_in)) => state
            .ca
            .create_token_expiring(
                role,
                blank(&form.tenant),
                blank(&form.name).unwrap_or(""),
                expires_in,
                &console.who.actor(),
            )
            .await
            .map_err(|e| {
                let text = e.to_string();
                let field = if text.contains("tenant") {
                    "tenant"
                } else if text.contains("name") {
                    "name"
                } else if text.contains("expiry") {
                    "expires_in"
                } else {
                    "form"
                };
                (field, e)
            }),
        Err(e) => Err(e),
    };
    let created = match created {
        Ok(c) => c,
        Err((field, e @ Error::InvalidInput(_))) => {
            let status = crate::ApiError::Core(Error::InvalidInput(String::new())).status();
            let message = crate::ApiError::Core(e).view().error.message;
            return render_tokens(
                &state,
                &console,
                Some(TokenErrors { field, message }),
                status,
            )
            .await;
        }
        Err((_, e)) => return Err(e.into()),
    };
    let body = html! {
        p.notice role="status" { "Token " code { (created.record.id) } " created (" (created.record.role) ")." }
        p { "Copy it now — it is shown this once and only its hash is kept:" }
        p { span.secret id="new-token" { (created.token.as_str()) } }
        p { a href="/ui/tokens" { "Back to tokens" } }
    };
    Ok(secret_page(
        StatusCode::CREATED,
        page(&console, Nav::Tokens, "Token created", body),
    ))
}

#[derive(Deserialize)]
struct Empty {}

async fn revoke_token(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Checked(console, Empty {}): Checked<Empty>,
) -> Result<Response, UiError> {
    console.who.authorize(Action::ManageTokens, None)?;
    match state.ca.revoke_token(&id, &console.who.actor()).await {
        Ok(()) => render_tokens(&state, &console, None, StatusCode::OK).await,
        Err(e @ (Error::NotFound(_) | Error::Conflict(_))) => {
            let status = crate::ApiError::Core(Error::Conflict(String::new())).status();
            let status = if matches!(e, Error::NotFound(_)) {
                StatusCode::NOT_FOUND
            } else {
                status
            };
            let message = crate::ApiError::Core(e).view().error.message;
            render_tokens(
                &state,
                &console,
                Some(TokenErrors {
                    field: "form",
                    message,
                }),
                status,
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}
