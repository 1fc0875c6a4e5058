//! Pickups in the console: what waits for collection (per tenant), resend
//! (a new link and code; the old link dies), and the page that shows a new
//! pickup's link and one-time code once — after an issue or reissue with
//! delivery "pickup", or a resend. The same `ca_core` calls and `authorize`
//! checks as `routes::pickup`, and the same mail.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use ca_core::{now, Action, PickupState};
use maud::html;
use serde::Deserialize;

use super::certificates::admin_href;
use super::pages::{csrf_field, page, relative, when, Nav};
use super::{secret_page, Checked, Console, UiError};
use crate::routes::pickup::PickupResponse;
use crate::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/ui/pickups", get(pickups)).route(
        "/ui/tenants/{tenant}/admins/{admin}/pickup/resend",
        post(resend),
    )
}

#[derive(Deserialize)]
struct PickupsQuery {
    tenant: Option<String>,
    all: Option<String>,
}

/// Pickups newest first: those not collected, or every one with `all`.
async fn pickups(
    State(state): State<AppState>,
    console: Console,
    Query(query): Query<PickupsQuery>,
) -> Result<Response, UiError> {
    let who = &console.who;
    let tenant = query
        .tenant
        .filter(|t| !t.is_empty())
        .or_else(|| who.tenant.clone());
    who.authorize(Action::Read, tenant.as_deref())?;
    let all = query.all.is_some_and(|a| !a.is_empty());
    let records = state.ca.pickups(tenant.as_deref(), all, 100).await?;
    let at = now();
    let body = html! {
        form.card method="get" action="/ui/pickups" {
            div.row {
                div.field {
                    label for="tenant" { "Tenant" }
                    input id="tenant" name="tenant" value=(tenant.as_deref().unwrap_or(""));
                }
                div.field { label { input type="checkbox" name="all" value="1" checked[all]; " also collected and replaced" } }
                div.field { button type="submit" { "Show" } }
            }
        }
        @if records.is_empty() {
            p.notice { "No pickup waits" @if let Some(t) = &tenant { " in " (t) } "." }
        } @else {
            table id="pickups" {
                thead { tr {
                    th scope="col" { "Admin" } th scope="col" { "State" } th scope="col" { "Mail" }
                    th scope="col" { "Wrong codes" } th scope="col" { "Created" } th scope="col" { "Expires" }
                    th scope="col" { "" }
                } }
                tbody {
                    @for r in &records {
                        @let shown = r.state_at(at);
                        tr id={ "pickup-" (r.id) } {
                            td { a href=(admin_href(&r.tenant, &r.admin)) { (r.tenant) " / " (r.admin) } br; span.muted.mono { (r.serial) } }
                            td.state { (shown.name()) }
                            td { (r.mail.name()) @if let Some(e) = &r.email { br; span.muted { (e) } } @if let Some(e) = &r.mail_error { br; span.status-revoked { (e) } } }
                            td { (r.failures) }
                            td { (when(r.created_at)) }
                            td { (when(r.expires_at)) " (" (relative(r.expires_at, at)) ")" }
                            td {
                                @if shown != PickupState::Collected && shown != PickupState::Replaced
                                    && who.authorize(Action::Reissue, Some(&r.tenant)).is_ok() {
                                    form method="post" action=(format!("{}/pickup/resend", admin_href(&r.tenant, &r.admin))) {
                                        (csrf_field(&console))
                                        button type="submit" { "Resend…" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        p.muted { "A resend reissues: the bundle waiting under the old link is replaced by a new certificate under a new link and code (the server cannot re-seal a bundle without its code). Once collected, only a reissue helps." }
    };
    Ok(page(&console, Nav::Pickups, "Pickups", body).into_response())
}

#[derive(Deserialize)]
struct ResendForm {
    email: Option<String>,
}

async fn resend(
    State(state): State<AppState>,
    Path((tenant, admin)): Path<(String, String)>,
    Checked(console, form): Checked<ResendForm>,
) -> Result<Response, UiError> {
    let email = form.email.filter(|e| !e.is_empty());
    if let Some(email) = &email {
        ca_core::check_email(email)?;
    }
    let response =
        crate::routes::pickup::resend_as(&state, &console.who, &tenant, &admin, email).await?;
    Ok(pickup_page(&console, &response, "Pickup resent"))
}

/// The page after a pickup was made: its link (for the admin, also in the
/// mail when an address is given) and its one-time code, shown only here —
/// give it to the admin by another channel (phone, SMS), never with the link.
pub(super) fn pickup_page(console: &Console, response: &PickupResponse, title: &str) -> Response {
    let c = &response.certificate;
    let body = html! {
        p.notice role="status" { "Committed: serial " code { (c.serial) } ", valid until " (c.not_after) ". The bundle waits, sealed, for one download until " (response.pickup.expires_at) "." }
        @if let Some(revoked) = &response.revoked {
            @if !revoked.is_empty() { p { "Revoked in the same transaction: " @for s in revoked { code { (s) } " " } } }
        }
        dl {
            dt { "Link for the admin" } dd { code id="pickup-url" { (response.pickup.url) } }
            dt { "One-time code (shown once: read it to the admin by phone or send it by SMS)" } dd { code id="pickup-code" { (response.code.as_str()) } }
            dt { "Notification mail" } dd id="pickup-mail" {
                @match (&response.pickup.email, response.pickup.mail) {
                    (Some(e), "pending") => { "being sent to " (e) " (the link only, never the code)" }
                    (Some(e), _) => { "not sent: no smtp.url is configured; give " (e) " the link yourself" }
                    (None, _) => { "none: no address given; give the admin the link yourself" }
                }
            }
        }
        p { a href=(admin_href(&c.tenant, &c.admin)) { "Back to " (c.admin) } " · " a href={ "/ui/pickups?tenant=" (c.tenant) } { "Pickups of " (c.tenant) } }
    };
    secret_page(
        StatusCode::CREATED,
        page(console, Nav::Pickups, title, body),
    )
}
