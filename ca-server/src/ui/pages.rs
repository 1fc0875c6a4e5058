//! The page frame and the small pieces every page uses. `maud` escapes every
//! `(value)` it interpolates; nothing here builds HTML from strings.

use axum::http::StatusCode;
use ca_core::{Action, CertificateRecord, OffsetDateTime, Principal};
use maud::{html, Markup, DOCTYPE};

use super::{csrf, may, Console};

/// Which navigation entry a page belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    Search,
    Expiring,
    Status,
    Pickups,
    Audit,
    Tokens,
}

fn head(title: &str) -> Markup {
    html! {
        (DOCTYPE)
        meta charset="utf-8";
        meta name="viewport" content="width=device-width, initial-scale=1";
        title { (title) " · CA console" }
        link rel="stylesheet" href="/ui/console.css";
    }
}

/// A page for a signed-in user: navigation (only what their role may do),
/// who they are, sign-out, then `body`.
pub(crate) fn page(console: &Console, nav: Nav, title: &str, body: Markup) -> Markup {
    let who = &console.who;
    let item = |target: Nav, href: &str, text: &str| {
        html! {
            @if target == nav { a href=(href) aria-current="page" { (text) } }
            @else { a href=(href) { (text) } }
        }
    };
    html! {
        (head(title))
        body {
            a.skip href="#main" { "Skip to content" }
            header {
                span.brand { "CA console" }
                nav aria-label="Main" {
                    (item(Nav::Search, "/ui/", "Search"))
                    " "
                    (item(Nav::Expiring, "/ui/expiring", "Expiring soon"))
                    " "
                    (item(Nav::Pickups, "/ui/pickups", "Pickups"))
                    " "
                    (item(Nav::Status, "/ui/status", "CRL & OCSP"))
                    @if may(who, Action::Audit) { " " (item(Nav::Audit, "/ui/audit", "Audit log")) }
                    @if may(who, Action::ManageTokens) { " " (item(Nav::Tokens, "/ui/tokens", "Tokens")) }
                }
                div.who {
                    span { (who_text(who)) }
                    form method="post" action="/ui/sign-out" {
                        input type="hidden" name="csrf" value=(csrf(&console.secret));
                        button type="submit" { "Sign out" }
                    }
                }
            }
            main id="main" tabindex="-1" {
                h1 { (title) }
                (body)
            }
        }
    }
}

fn who_text(who: &Principal) -> String {
    match &who.tenant {
        Some(t) => format!("{} · {} (tenant {t})", who.actor(), who.role),
        None => format!("{} · {}", who.actor(), who.role),
    }
}

/// The sign-in page, with the message of a failed attempt next to the field.
pub(crate) fn sign_in(has_certificate: bool, error: Option<&str>) -> Markup {
    html! {
        (head("Sign in"))
        body {
            header { span.brand { "CA console" } }
            main id="main" {
                h1 { "Sign in" }
                form.card method="post" action="/ui/sign-in" {
                    div.field {
                        label for="token" { "API token" }
                        @if let Some(e) = error {
                            input id="token" name="token" type="password" autocomplete="off" required autofocus aria-invalid="true" aria-describedby="token-error";
                            span.error id="token-error" role="alert" { (e) }
                        } @else {
                            input id="token" name="token" type="password" autocomplete="off" required autofocus;
                        }
                    }
                    p.muted { "The token is exchanged for a session of at most 30 minutes; revoking the token ends it." }
                    button type="submit" { "Sign in" }
                }
                @if has_certificate {
                    form.card method="post" action="/ui/sign-in/certificate" {
                        p { "Your browser presented a client certificate." }
                        button type="submit" { "Sign in with this certificate" }
                    }
                }
            }
        }
    }
}

/// A page for an error that has no form to go back to.
pub(crate) fn error_page(status: StatusCode, message: &str) -> Markup {
    html! {
        (head("Error"))
        body {
            header { span.brand { "CA console" } nav { a href="/ui/" { "Back to the console" } } }
            main id="main" {
                h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
                p.alert role="alert" { (message) }
            }
        }
    }
}

/// RFC 3339, UTC, seconds.
pub(crate) fn when(t: OffsetDateTime) -> String {
    ca_core::rfc3339(t)
}

/// "in 3 d 4 h" / "5 min ago" — for ages and deadlines at a glance.
pub(crate) fn relative(t: OffsetDateTime, now: OffsetDateTime) -> String {
    let secs = (t - now).whole_seconds();
    let text = span_text(secs.unsigned_abs());
    if secs >= 0 {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

fn span_text(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86_400),
    }
}

/// A certificate's status as a styled word.
pub(crate) fn status_word(record: &CertificateRecord, now: OffsetDateTime) -> Markup {
    let status = record.status(now).name();
    html! { span class=(format!("status-{status}")) { (status) } }
}

/// A label + input with its error (if any) beside it, linked for screen readers.
pub(crate) fn field(
    id: &str,
    label: &str,
    input_type: &str,
    value: &str,
    error: Option<&str>,
    extra: Markup,
) -> Markup {
    let error_id = format!("{id}-error");
    html! {
        div.field {
            label for=(id) { (label) }
            @if let Some(e) = error {
                input id=(id) name=(id) type=(input_type) value=(value) aria-invalid="true" aria-describedby=(error_id);
                span.error id=(error_id) role="alert" { (e) }
            } @else {
                input id=(id) name=(id) type=(input_type) value=(value);
            }
            (extra)
        }
    }
}

/// A select of `options` (value, text) with `selected` chosen and its error beside it.
pub(crate) fn select(
    id: &str,
    label: &str,
    options: &[(String, String)],
    selected: &str,
    error: Option<&str>,
) -> Markup {
    let error_id = format!("{id}-error");
    let opts = html! {
        @for (value, text) in options {
            @if value == selected { option value=(value) selected { (text) } }
            @else { option value=(value) { (text) } }
        }
    };
    html! {
        div.field {
            label for=(id) { (label) }
            @if let Some(e) = error {
                select id=(id) name=(id) aria-invalid="true" aria-describedby=(error_id) { (opts) }
                span.error id=(error_id) role="alert" { (e) }
            } @else {
                select id=(id) name=(id) { (opts) }
            }
        }
    }
}

/// The hidden CSRF field of a form.
pub(crate) fn csrf_field(console: &Console) -> Markup {
    html! { input type="hidden" name="csrf" value=(csrf(&console.secret)); }
}

/// The revocation reasons as select options.
pub(crate) fn reasons() -> Vec<(String, String)> {
    ca_core::RevocationReason::ALL
        .iter()
        .map(|r| (r.name().to_owned(), r.name().to_owned()))
        .collect()
}
