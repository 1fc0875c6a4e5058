//! The operator console (DESIGN §7, `GET /ui/…`): HTML pages over the same
//! `ca_core` calls and the same `Principal::authorize` checks as the JSON
//! API, so a role or tenant rule has one home.
//!
//! ```text
//!  browser ─► /ui/sign-in (API token, or the TLS client certificate)
//!               └─► Ca::console_sign_in_* ─► session (only its SHA-256 stored) ─► cookie
//!  browser ─► /ui/… ─► Console (cookie ─► Ca::console_session: the token or
//!               certificate re-checked on every request) ─► authorize ─► ca_core
//!            POST ─► Checked<T>: Origin, CSRF token (HMAC of the session secret), body ≤ 16 KiB
//! ```
//!
//! Safe by construction: every page goes through `maud`, which escapes every
//! interpolated value; the Content-Security-Policy allows only this origin's
//! one style sheet (no script at all, no inline style); answers are never
//! cached and never framed; every mutation is audited by `ca_core` with the
//! session's credential as actor (`token:<id>` or `cert:<serial>`, as the API).

mod certificates;
mod lifecycle;
mod pages;
mod pickup;
mod pickups;
mod session;
mod status;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use ca_core::{ConsoleSecret, Principal};
use maud::Markup;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use crate::error::ApiError;
use crate::listener::Peer;
use crate::AppState;

pub(crate) use session::Console;

/// Form bodies above this are refused (413): the largest form, issue with a
/// password, is a few hundred bytes.
pub const UI_BODY_LIMIT: usize = 16 * 1024;

/// The console's only style sheet.
const CSS: &str = include_str!("console.css");

/// `default-src 'none'`: nothing loads unless named here — the one
/// same-origin style sheet; no script, no inline style, no frames, forms only
/// to this origin (CSP Level 3, W3C).
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's routes, merged into the API's router in one place (`app`).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/console.css", get(css))
        .merge(session::router())
        .merge(certificates::router())
        .merge(lifecycle::router())
        .merge(status::router())
        .merge(pickup::router())
        .merge(pickups::router())
        .layer(DefaultBodyLimit::max(UI_BODY_LIMIT))
        .layer(axum::middleware::map_response(headers))
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        CSS,
    )
        .into_response()
}

/// Headers on every console answer.
async fn headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // `same-origin`, not `no-referrer`: under `no-referrer` browsers send
    // `Origin: null` on form posts (Fetch standard, "serializing a request
    // origin"), and `same_origin` needs the real one. Other sites still get
    // no referrer.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        // Pages show certificates, passwords and token secrets: keep no copy.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Everything a console handler can fail with. Messages are the API's
/// (`ApiError`'s mapping), shown on a page instead of in JSON.
pub(crate) enum UiError {
    /// A CA error (status and message exactly as the API maps it).
    Core(ApiError),
    /// No session, or it ended: go to the sign-in page.
    SignIn,
    /// A form without this session's CSRF token, or from another origin.
    Csrf(&'static str),
    /// The form body is over [`UI_BODY_LIMIT`].
    TooLarge,
    /// The form body does not decode.
    BadForm(String),
}

impl From<ca_core::Error> for UiError {
    fn from(e: ca_core::Error) -> Self {
        UiError::Core(ApiError::Core(e))
    }
}

impl UiError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            UiError::Core(e) => e.status(),
            UiError::SignIn => StatusCode::SEE_OTHER,
            UiError::Csrf(_) => StatusCode::FORBIDDEN,
            UiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            UiError::BadForm(_) => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    /// The message a person sees: the API's for CA errors.
    pub(crate) fn message(&self) -> String {
        match self {
            UiError::Core(e) => e.view().error.message,
            UiError::SignIn => "sign in first".into(),
            UiError::Csrf(why) => {
                format!("{why}; nothing was changed: reload the page and submit the form again")
            }
            UiError::TooLarge => format!(
                "the form is larger than the {} KiB limit; nothing was changed",
                UI_BODY_LIMIT / 1024
            ),
            UiError::BadForm(m) => format!("the form could not be read ({m}); nothing was changed"),
        }
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        if let UiError::SignIn = self {
            return Redirect::to("/ui/sign-in").into_response();
        }
        if let UiError::Core(e) = &self {
            if self.status().is_server_error() {
                tracing::error!(error = ?e, "console request failed");
            }
        }
        let status = self.status();
        let page = pages::error_page(status, &self.message());
        let mut response = (status, page).into_response();
        if matches!(
            status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::INSUFFICIENT_STORAGE
        ) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        }
        response
    }
}

/// A page that shows a secret (a bundle, its password, a new token): the
/// finished text is handed to the connection in memory wiped once the answer
/// is sent. Not wiped: the copies `maud` leaves behind when its buffer grows
/// while the page is built (as `crate::secret` notes for socket buffers, some
/// copies are outside our reach; the values themselves are `Zeroizing`).
pub(crate) fn secret_page(status: StatusCode, markup: Markup) -> Response {
    let text = Zeroizing::new(markup.into_string().into_bytes());
    let mut response = (status, Body::from(Bytes::from_owner(text))).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

/// A POSTed form from a signed-in console: the session is checked, then the
/// origin and the CSRF token, then the body is decoded into `T`. A handler
/// that takes this cannot forget the CSRF check.
pub(crate) struct Checked<T>(pub Console, pub T);

/// The field every console form carries.
#[derive(serde::Deserialize)]
struct CsrfField {
    csrf: Option<String>,
}

impl<T: DeserializeOwned> FromRequest<AppState> for Checked<T> {
    type Rejection = UiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, UiError> {
        let (mut parts, body) = req.into_parts();
        let console = Console::from_request_parts(&mut parts, state).await?;
        same_origin(&parts)?;
        let req = Request::from_parts(parts, body);
        let body = read_form(req, state).await?;
        let csrf: CsrfField =
            serde_urlencoded::from_bytes(&body).map_err(|e| UiError::BadForm(e.to_string()))?;
        if !csrf
            .csrf
            .as_deref()
            .is_some_and(|t| console.secret.csrf_matches(t))
        {
            crate::secret::wipe(body);
            return Err(UiError::Csrf(
                "this form was sent without this session's CSRF token",
            ));
        }
        let parsed = serde_urlencoded::from_bytes::<T>(&body);
        // Forms may carry a bundle password or a token: wipe what we hold.
        crate::secret::wipe(body);
        Ok(Checked(
            console,
            parsed.map_err(|e| UiError::BadForm(e.to_string()))?,
        ))
    }
}

/// Reads a form body under the console's byte limit.
pub(crate) async fn read_form(req: Request, state: &AppState) -> Result<Bytes, UiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            UiError::TooLarge
        } else {
            UiError::BadForm(rejection.body_text())
        }
    })
}

/// Refuses a POST whose `Origin` (or, without one, `Sec-Fetch-Site`) says it
/// came from another site. SameSite=Strict already keeps the cookie off such
/// requests; this also covers the sign-in form, which has no session yet
/// (login CSRF, OWASP CSRF Prevention Cheat Sheet).
pub(crate) fn same_origin(parts: &Parts) -> Result<(), UiError> {
    if parts.method != Method::POST {
        return Ok(());
    }
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    if let Some(origin) = parts.headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let origin_host = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        if origin_host.is_none() || origin_host != host {
            tracing::warn!(origin = %origin.escape_debug(), host = ?host, "refused a console form from another origin");
            return Err(UiError::Csrf("this form was sent from another site"));
        }
        return Ok(());
    }
    if let Some(site) = parts.headers.get("sec-fetch-site") {
        if !matches!(site.to_str(), Ok("same-origin" | "none")) {
            tracing::warn!(sec_fetch_site = ?site, "refused a console form from another site");
            return Err(UiError::Csrf("this form was sent from another site"));
        }
    }
    Ok(())
}

/// True when this request came over TLS (cookies are then `Secure`).
pub(crate) fn over_tls(parts: &Parts) -> bool {
    parts.extensions.get::<Peer>().is_some_and(|p| p.tls)
}

/// Whether the caller may do `action` (for showing or hiding links; the
/// handlers themselves always call `authorize`).
pub(crate) fn may(who: &Principal, action: ca_core::Action) -> bool {
    who.role.allows(action)
}

/// The session's CSRF token, for the forms of a page.
pub(crate) fn csrf(secret: &ConsoleSecret) -> String {
    secret.csrf_token()
}
