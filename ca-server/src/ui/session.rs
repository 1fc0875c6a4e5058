//! Signing in and out, and the session every other page runs under.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use ca_core::{ConsoleSecret, Principal};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::{over_tls, pages, read_form, same_origin, Checked, UiError};
use crate::listener::Peer;
use crate::AppState;

/// The cookie's name. (`__Host-` would need `Secure`, which plain-HTTP
/// deployments behind a TLS proxy cannot set; `Path=/ui` keeps it off the API.)
const COOKIE: &str = "ca_console";

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/ui/sign-in", get(sign_in_page).post(sign_in))
        .route("/ui/sign-in/certificate", post(sign_in_certificate))
        .route("/ui/sign-out", post(sign_out))
}

/// A signed-in console user: who, and the session secret (for CSRF tokens).
pub(crate) struct Console {
    /// The caller, exactly as the API would see their token or certificate.
    pub who: Principal,
    /// The session's secret (from the cookie).
    pub secret: ConsoleSecret,
}

impl FromRequestParts<AppState> for Console {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, UiError> {
        let secret = session_cookie(parts).ok_or(UiError::SignIn)?;
        let peer_certificate = parts
            .extensions
            .get::<Peer>()
            .and_then(|p| p.certificate.clone());
        let who = match state
            .ca
            .console_session(&secret, peer_certificate.as_deref())
            .await
        {
            Ok(who) => who,
            Err(ca_core::Error::Unauthenticated(_) | ca_core::Error::TokenExpired(_)) => {
                return Err(UiError::SignIn)
            }
            Err(e) => return Err(e.into()),
        };
        // The same per-credential request rate as the API.
        if let Some(limiter) = &state.limits.token_requests {
            if let Err(wait) = limiter.take(&who.actor()) {
                return Err(UiError::Core(crate::ApiError::RateLimited {
                    message: "this token is over its request rate; retry later".into(),
                    retry_after: wait.as_secs(),
                }));
            }
        }
        Ok(Console { who, secret })
    }
}

/// The session cookie's secret, when one of our shape is sent.
fn session_cookie(parts: &Parts) -> Option<ConsoleSecret> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .and_then(|(_, value)| ConsoleSecret::parse(value))
}

/// `Set-Cookie` for a new session: HttpOnly (no script can read it),
/// SameSite=Strict (never sent on a cross-site request, RFC 6265bis §5.4.7),
/// Secure over TLS, scoped to /ui, and gone with the session's lifetime.
fn session_set_cookie(secret: &ConsoleSecret, tls: bool) -> HeaderValue {
    let value = Zeroizing::new(format!(
        "{COOKIE}={}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{}",
        secret.expose(),
        ca_core::CONSOLE_SESSION_LIFETIME.whole_seconds(),
        if tls { "; Secure" } else { "" }
    ));
    let mut header = HeaderValue::from_str(&value).expect("cookie text is visible ASCII");
    header.set_sensitive(true);
    header
}

/// Clears the cookie (the session itself is deleted from the store first, so
/// a copy kept elsewhere is worthless anyway).
fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static("ca_console=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0")
}

async fn sign_in_page(request: Request) -> Response {
    let has_certificate = request
        .extensions()
        .get::<Peer>()
        .is_some_and(|p| p.certificate.is_some());
    pages::sign_in(has_certificate, None).into_response()
}

#[derive(Deserialize)]
struct SignInForm {
    token: Option<Zeroizing<String>>,
}

async fn sign_in(State(state): State<AppState>, request: Request) -> Result<Response, UiError> {
    let (parts, body) = request.into_parts();
    same_origin(&parts)?;
    let tls = over_tls(&parts);
    let has_certificate = parts
        .extensions
        .get::<Peer>()
        .is_some_and(|p| p.certificate.is_some());
    let address = parts
        .extensions
        .get::<Peer>()
        .map(|p| crate::limits::address_key(p.address.ip()));
    // The API's limit on failed authentications from one address applies here too.
    if let (Some(limiter), Some(address)) = (&state.limits.auth_failures, &address) {
        if let Err(wait) = limiter.check(address) {
            return Err(UiError::Core(crate::ApiError::RateLimited {
                message: "too many failed authentications from this address; retry later".into(),
                retry_after: wait.as_secs(),
            }));
        }
    }
    let body = read_form(Request::from_parts(parts, body), &state).await?;
    let form: Result<SignInForm, _> = serde_urlencoded::from_bytes(&body);
    crate::secret::wipe(body);
    let form = form.map_err(|e| UiError::BadForm(e.to_string()))?;
    let token = form.token.unwrap_or_default();
    let token = token.trim();
    if token.is_empty() {
        return Ok(field_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            has_certificate,
            "enter an API token (it starts with cat_; `ca-cli token create` makes one)",
        ));
    }
    match state.ca.console_sign_in_token(token).await {
        Ok((secret, _)) => Ok(signed_in(&secret, tls)),
        Err(e @ (ca_core::Error::Unauthenticated(_) | ca_core::Error::TokenExpired(_))) => {
            if let (Some(limiter), Some(address)) = (&state.limits.auth_failures, &address) {
                let _ = limiter.take(address);
            }
            let message = crate::ApiError::Core(e).view().error.message;
            Ok(field_error(
                StatusCode::UNAUTHORIZED,
                has_certificate,
                &message,
            ))
        }
        Err(e) => Err(e.into()),
    }
}

fn field_error(status: StatusCode, has_certificate: bool, message: &str) -> Response {
    (status, pages::sign_in(has_certificate, Some(message))).into_response()
}

fn signed_in(secret: &ConsoleSecret, tls: bool) -> Response {
    let mut response = Redirect::to("/ui/").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_set_cookie(secret, tls));
    response
}

async fn sign_in_certificate(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, UiError> {
    let (parts, _) = request.into_parts();
    same_origin(&parts)?;
    let tls = over_tls(&parts);
    let Some(der) = parts
        .extensions
        .get::<Peer>()
        .and_then(|p| p.certificate.clone())
    else {
        return Ok(field_error(
            StatusCode::UNAUTHORIZED,
            false,
            "this connection presented no client certificate: sign in with an API token",
        ));
    };
    match state.ca.console_sign_in_certificate(&der).await {
        Ok((secret, _)) => Ok(signed_in(&secret, tls)),
        Err(e @ ca_core::Error::Unauthenticated(_)) => {
            let message = crate::ApiError::Core(e).view().error.message;
            Ok(field_error(StatusCode::UNAUTHORIZED, true, &message))
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
struct Empty {}

async fn sign_out(
    State(state): State<AppState>,
    Checked(console, Empty {}): Checked<Empty>,
) -> Result<Response, UiError> {
    state
        .ca
        .console_sign_out(&console.secret, &console.who.actor())
        .await?;
    let mut response = Redirect::to("/ui/sign-in").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, clear_cookie());
    Ok(response)
}
