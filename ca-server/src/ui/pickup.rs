//! The admin's pickup page (DESIGN §7, `GET /pickup/{id}`): public, no
//! login. The admin types the one-time code (`POST /pickup/{id}`, field
//! `code`); the answer to the right code is the only page that ever holds
//! the bundle: it shows the password once and offers `<admin>.p12` as a
//! `data:` link with the `download` attribute, so the file comes from that
//! same answer (no second request, no server-side copy, any replica). The
//! pickup is marked collected, its sealed copy destroyed, before that page
//! is sent; reloading it or opening the link again gets 410 "ask for a
//! reissue".
//!
//! Same headers as the console: a CSP without any script, `no-store`,
//! no framing. There is no session, so no CSRF token; a POST whose `Origin`
//! names another site is refused all the same.

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use ca_core::{PickupOutcome, PickupRecord, PickupState};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use zeroize::Zeroizing;

use super::{read_form, same_origin, secret_page, UiError};
use crate::AppState;

/// The routes (merged under the console's headers).
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/pickup/{id}", get(show).post(collect))
}

fn frame(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · certificate pickup" }
                link rel="stylesheet" href="/ui/console.css";
            }
            body {
                header { span.brand { "Certificate pickup" } }
                main id="main" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

fn form(record: &PickupRecord, error: Option<&str>) -> Markup {
    frame(
        "Collect your login certificate",
        html! {
            p { "A login certificate for " strong { (record.admin) } " at " strong { (record.tenant) }
                " waits here until " (ca_core::rfc3339(record.expires_at)) "." }
            p { "Enter the one-time code your support desk gave you (by phone or SMS). "
                "You can download the certificate once, and its password is shown once." }
            form.card method="post" action={ "/pickup/" (record.id) } {
                div.field {
                    label for="code" { "One-time code" }
                    @if let Some(error) = error {
                        input id="code" name="code" type="text" autocomplete="off" autocapitalize="characters"
                            spellcheck="false" required maxlength="64" placeholder="XXXX-XXXX-XXXX"
                            aria-invalid="true" aria-describedby="code-error";
                        p.alert id="code-error" role="alert" { (error) }
                    } @else {
                        input id="code" name="code" type="text" autocomplete="off" autocapitalize="characters"
                            spellcheck="false" required maxlength="64" placeholder="XXXX-XXXX-XXXX";
                    }
                }
                p { button id="collect" type="submit" { "Collect" } }
            }
        },
    )
}

fn gone(state: PickupState) -> (StatusCode, Markup) {
    let (title, message) = match state {
        PickupState::Collected => (
            "Already collected",
            "This certificate was already downloaded; it cannot be downloaded again. If you do not have it, ask your support desk for a reissue.",
        ),
        PickupState::Expired => (
            "Link expired",
            "This link has expired and its certificate was destroyed. Ask your support desk for a resend.",
        ),
        PickupState::Locked => (
            "Locked",
            "Too many wrong codes were entered, so this pickup was locked and its certificate destroyed. Ask your support desk for a resend.",
        ),
        PickupState::Replaced | PickupState::Waiting => (
            "Link replaced",
            "A newer link replaced this one. Use the link in the latest mail, or ask your support desk for a resend.",
        ),
    };
    (
        StatusCode::GONE,
        frame(
            title,
            html! { p.alert role="alert" id="gone" { (message) } },
        ),
    )
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        frame(
            "No such pickup",
            html! { p.alert role="alert" { "This pickup link is not known. Check that the whole link from your mail was opened." } },
        ),
    )
        .into_response()
}

async fn show(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, UiError> {
    let Some(record) = state.ca.pickup(&id).await? else {
        return Ok(not_found());
    };
    let now = ca_core::now();
    match record.state_at(now) {
        PickupState::Waiting => Ok((StatusCode::OK, form(&record, None)).into_response()),
        other => Ok(gone(other).into_response()),
    }
}

/// The form's one field, wiped on drop.
#[derive(serde::Deserialize)]
struct CodeForm {
    code: Option<Zeroizing<String>>,
}

async fn collect(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, UiError> {
    let (parts, body) = request.into_parts();
    same_origin(&parts)?;
    let body = read_form(Request::from_parts(parts, body), &state).await?;
    let parsed = serde_urlencoded::from_bytes::<CodeForm>(&body);
    crate::secret::wipe(body);
    let form_data = parsed.map_err(|e| UiError::BadForm(e.to_string()))?;
    let code = form_data.code.unwrap_or_default();
    let Some(outcome) = state.ca.open_pickup(&id, &code).await? else {
        return Ok(not_found());
    };
    Ok(match outcome {
        PickupOutcome::Opened { record, opened } => {
            tracing::info!(pickup = %record.id, serial = %record.serial, "pickup collected");
            secret_page(StatusCode::OK, collected(&record, &opened))
        }
        PickupOutcome::Malformed(record) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            form(
                &record,
                Some("A code has 12 letters and digits, like ABCD-EFGH-JKMN. Nothing was counted: type it again."),
            ),
        )
            .into_response(),
        PickupOutcome::WrongCode(record, left) => (
            StatusCode::FORBIDDEN,
            form(
                &record,
                Some(&format!(
                    "That code is wrong. {left} {} left before this pickup locks.",
                    if left == 1 { "try" } else { "tries" }
                )),
            ),
        )
            .into_response(),
        PickupOutcome::Locked(_) => gone(PickupState::Locked).into_response(),
        PickupOutcome::Gone(_, state) => gone(state).into_response(),
    })
}

fn collected(record: &PickupRecord, opened: &ca_core::OpenedBundle) -> Markup {
    let file = format!("{}.p12", record.admin);
    let href = Zeroizing::new(format!(
        "data:application/x-pkcs12;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&opened.bundle[..])
    ));
    frame(
        "Your login certificate",
        html! {
            section.card {
                h2 { "1. Download it (once)" }
                p { a.button id="download" download=(file) href=(PreEscaped(href.as_str())) { "Download " (file) } }
                p { "This page is the only copy: the server has destroyed its own. Keep the file until it is installed." }
                h2 { "2. Its password (shown once)" }
                p { output id="password" class="mono" { (opened.password.as_str()) } }
                p { "Write it down or copy it now; you need it once, to install the certificate." }
            }
            section.card {
                h2 { "3. Install it" }
                h3 { "Windows (Chrome, Edge)" }
                ol {
                    li { "Double-click " (file) "; the Certificate Import Wizard opens. Choose " em { "Current User" } "." }
                    li { "Enter the password above; leave " em { "Mark this key as exportable" } " off." }
                    li { "Let Windows choose the store (" em { "Personal" } "), then Finish. Restart the browser." }
                }
                h3 { "macOS (Safari, Chrome)" }
                ol {
                    li { "Double-click " (file) "; Keychain Access asks for the password above." }
                    li { "It goes into the " em { "login" } " keychain. Restart the browser." }
                }
                h3 { "Chrome on Linux" }
                ol {
                    li { "Open " code { "chrome://certificate-manager" } " (older versions: Settings, Privacy and security, Security, Manage certificates), " em { "Your certificates" } ", " em { "Import" } "." }
                    li { "Choose " (file) " and enter the password above. Or in a terminal: "
                        code { "pk12util -i " (file) " -d sql:$HOME/.pki/nssdb" } "." }
                }
                p { "Then delete the downloaded file. When the portal asks, choose this certificate." }
            }
        },
    )
}
