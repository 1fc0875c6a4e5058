//! The console's forms that change something — issue, reissue, revoke —
//! each with its confirmation page; the same `ca_core` calls and
//! `authorize` checks as `routes::certificates`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use ca_core::{
    now, Action, AdminId, CertificateRecord, Delivery, Error, Issuance, IssueRequest,
    PreparedIssuance, ReissueMode, RevocationReason, Serial, TenantId,
};
use maud::html;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::certificates::{
    admin_href, admin_with_error, blank, certificate_href, certificate_table, field_error,
    is_field_error, render_admin, status_of, FieldError,
};
use super::pages::{self, csrf_field, field, page, select, when, Nav};
use super::{secret_page, Checked, Console, UiError};
use crate::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/ui/certificates/{serial}/revoke",
            get(revoke_confirm).post(revoke),
        )
        .route(
            "/ui/tenants/{tenant}/admins/{admin}/issue",
            axum::routing::post(issue),
        )
        .route(
            "/ui/tenants/{tenant}/admins/{admin}/reissue",
            get(reissue_confirm).post(reissue),
        )
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

/// The delivery a form asked for (`download`, `pickup`, or blank: the
/// policy's) and its address, checked before anything is generated.
fn requested_delivery(
    delivery: Option<&str>,
    email: Option<String>,
) -> Result<(Option<Delivery>, Option<String>), Error> {
    let requested = match delivery.unwrap_or("") {
        "" => None,
        "download" => Some(Delivery::Direct),
        "pickup" => Some(Delivery::Pickup),
        d => {
            return Err(Error::InvalidInput(format!(
                "unknown delivery \"{}\": use download or pickup",
                d.escape_debug()
            )))
        }
    };
    let email = email.filter(|e| !e.is_empty());
    ca_core::check_delivery(requested, email.as_deref())?;
    Ok((requested, email))
}

/// Issued or reissued, either delivery: committed.
enum Committed {
    Download(Issuance),
    Pickup(ca_core::PickupIssuance),
}

/// Commits `prepared` by the delivery the form and its policy decide.
async fn commit_as(
    state: &AppState,
    console: &Console,
    prepared: PreparedIssuance,
    requested: Option<Delivery>,
    email: Option<String>,
) -> Result<Committed, Error> {
    let actor = console.who.actor();
    let mail = state.mailer.is_some();
    Ok(
        match state.ca.pickup_request(&prepared, requested, email, mail)? {
            Some(pickup) => {
                Committed::Pickup(state.ca.commit_pickup(prepared, &pickup, &actor).await?)
            }
            None => Committed::Download(state.ca.commit_idempotent(prepared, None, &actor).await?),
        },
    )
}

async fn issue(
    State(state): State<AppState>,
    Path((tenant, admin)): Path<(String, String)>,
    Checked(console, form): Checked<IssueForm>,
) -> Result<Response, UiError> {
    let who = &console.who;
    who.authorize(Action::Issue, Some(&tenant))?;
    let (requested, email) = match requested_delivery(form.delivery.as_deref(), form.email) {
        Ok(checked) => checked,
        Err(e) => return admin_with_error(&state, &console, &tenant, &admin, "issue", &e).await,
    };
    let request = IssueRequest {
        tenant: tenant.clone(),
        admin: admin.clone(),
        policy: form.policy.filter(|p| !p.is_empty()),
        password: optional_password(form.password),
    };
    let outcome = match state.ca.prepare_issue(&request).await {
        Ok(prepared) => commit_as(&state, &console, prepared, requested, email).await,
        Err(e) => Err(e),
    };
    let committed = match outcome {
        Ok(c) => c,
        Err(e) if is_field_error(&e) => {
            return admin_with_error(&state, &console, &tenant, &admin, "issue", &e).await;
        }
        Err(e) => return Err(e.into()),
    };
    state.ocsp.issued();
    Ok(match committed {
        Committed::Pickup(issuance) => {
            state.metrics.issued("issue", &issuance.record.policy);
            let (_, response) = crate::routes::pickup::answer(&state, issuance, false);
            super::pickups::pickup_page(&console, &response, "Certificate issued for pickup")
        }
        Committed::Download(issuance) => {
            state.metrics.issued("issue", &issuance.record.policy);
            issued_page(&console, &issuance, "Certificate issued", None)
        }
    })
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
    let target = ReissueTarget {
        tenant: &tenant,
        admin: &admin,
        policy: policy.as_deref(),
        reason,
    };
    Ok(confirm_page(&console, &target, &revoke, None))
}

/// What a reissue confirmation carries from the admin page to the commit.
struct ReissueTarget<'a> {
    tenant: &'a str,
    admin: &'a str,
    policy: Option<&'a str>,
    reason: RevocationReason,
}

/// The delivery choice of the issue and reissue forms: the policy's unless
/// one is picked.
pub(super) fn delivery_fields(err: impl Fn(&str) -> Option<String>) -> maud::Markup {
    html! {
        fieldset.field {
            legend { "Delivery" }
            label { input type="radio" name="delivery" value="" checked; "as the policy says" }
            " "
            label { input type="radio" name="delivery" value="download"; "direct download" }
            " "
            label { input type="radio" name="delivery" value="pickup"; "pickup (link by mail, code shown once)" }
        }
        (field("email", "Admin's mail address (pickup only, optional)", "email", "", err("email").as_deref(), html!{}))
    }
}

fn confirm_page(
    console: &Console,
    target: &ReissueTarget<'_>,
    revoke: &[CertificateRecord],
    error: Option<FieldError>,
) -> Response {
    let ReissueTarget {
        tenant,
        admin,
        policy,
        reason,
    } = *target;
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
                (delivery_fields(|f| err(f).map(str::to_owned)))
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
    delivery: Option<String>,
    email: Option<String>,
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
    let target = ReissueTarget {
        tenant: &tenant,
        admin: &admin,
        policy: policy.as_deref(),
        reason,
    };
    // The confirmation named what would be revoked; if that changed since
    // (another operator acted), show the new set instead of revoking it unseen.
    let revoke = would_revoke(&state, &tenant, &admin, policy.as_deref()).await?;
    if serial_list(&revoke) != form.confirm.as_deref().unwrap_or("") {
        let error = FieldError {
            form: "reissue",
            field: "form",
            message: "what this reissue would revoke changed since the confirmation was shown; nothing was changed: check the list below and confirm again".into(),
        };
        return Ok(confirm_page(&console, &target, &revoke, Some(error)));
    }
    let (requested, email) = match requested_delivery(form.delivery.as_deref(), form.email) {
        Ok(checked) => checked,
        Err(e) => {
            let error = field_error("reissue", &e);
            return Ok(confirm_page(&console, &target, &revoke, Some(error)));
        }
    };
    let request = IssueRequest {
        tenant: tenant.clone(),
        admin: admin.clone(),
        policy: policy.clone(),
        password: optional_password(form.password),
    };
    let outcome = match state.ca.prepare_reissue(&request, reason, mode).await {
        Ok(prepared) => commit_as(&state, &console, prepared, requested, email).await,
        Err(e) => Err(e),
    };
    let committed = match outcome {
        Ok(c) => c,
        Err(e) if is_field_error(&e) => {
            let error = field_error("reissue", &e);
            return Ok(confirm_page(&console, &target, &revoke, Some(error)));
        }
        Err(e) => return Err(e.into()),
    };
    state.ocsp.issued();
    let (policy, revoked) = match &committed {
        Committed::Pickup(i) => (i.record.policy.clone(), i.revoked.clone()),
        Committed::Download(i) => (i.record.policy.clone(), i.revoked.clone()),
    };
    state.metrics.issued("reissue", &policy);
    state.metrics.revoked(revoked.len());
    if !revoked.is_empty() {
        state.status_changed();
    }
    Ok(match committed {
        Committed::Pickup(issuance) => {
            let (_, response) = crate::routes::pickup::answer(&state, issuance, true);
            super::pickups::pickup_page(&console, &response, "Certificate reissued for pickup")
        }
        Committed::Download(issuance) => {
            issued_page(&console, &issuance, "Certificate reissued", Some(&revoked))
        }
    })
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
