//! API tokens over HTTP (role admin): create (the secret shown once), list,
//! revoke. Every change is audited by `ca_core` with the caller as actor.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use ca_core::{Action, Error, Role, TokenRecord};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zeroize::Zeroizing;

use crate::error::ApiError;
use crate::extract::{Auth, JsonBody};
use crate::AppState;

/// The routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tokens", get(list).post(create))
        .route("/v1/tokens/{id}", delete(revoke))
}

/// Body of a token creation.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenBody {
    /// admin, operator, renewer or auditor.
    pub role: Option<String>,
    /// Limit an operator or renewer token to this tenant.
    pub tenant: Option<String>,
    /// A name to recognise it by.
    pub name: Option<String>,
    /// Lifetime, e.g. `90d` or `12h`; never expires when absent.
    pub expires_in: Option<String>,
}

/// A token (never its secret, except in the answer to its creation).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    /// Public id (for listing, revoking and logs).
    pub id: String,
    /// Role.
    pub role: String,
    /// Tenant scope.
    pub tenant: Option<String>,
    /// Name.
    pub name: String,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Expiry (RFC 3339); `null`: never.
    pub expires_at: Option<String>,
    /// Revocation time (RFC 3339).
    pub revoked_at: Option<String>,
}

impl From<&TokenRecord> for TokenView {
    fn from(r: &TokenRecord) -> Self {
        TokenView {
            id: r.id.clone(),
            role: r.role.name().to_owned(),
            tenant: r.tenant.clone(),
            name: r.name.clone(),
            created_at: r.created_at.clone(),
            expires_at: r.expires_at.map(ca_core::rfc3339),
            revoked_at: r.revoked_at.clone(),
        }
    }
}

/// A new token with its secret, shown this once.
#[derive(Serialize, ToSchema)]
pub struct CreatedToken {
    /// The token.
    #[serde(flatten)]
    pub record: TokenView,
    /// The bearer token (only its hash is stored).
    #[schema(value_type = String)]
    pub token: Zeroizing<String>,
}

/// Every token.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenList {
    /// Tokens, oldest first.
    pub items: Vec<TokenView>,
}

/// A revoked token.
#[derive(Debug, Serialize, ToSchema)]
pub struct RevokedToken {
    /// Its id.
    pub id: String,
    /// Always true.
    pub revoked: bool,
}

/// Creates a token (role admin); the secret is in this answer only.
#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", request_body = CreateTokenBody, security(("bearer" = [])),
    responses((status = 201, body = CreatedToken), (status = 401), (status = 403), (status = 422)))]
pub async fn create(
    State(state): State<AppState>,
    Auth(who): Auth,
    JsonBody(body): JsonBody<CreateTokenBody>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    who.authorize(Action::ManageTokens, None)?;
    let role = body
        .role
        .as_deref()
        .ok_or_else(|| {
            Error::InvalidInput("role is required: admin, operator, renewer or auditor".into())
        })
        .and_then(Role::parse)?;
    let expires_in = body
        .expires_in
        .as_deref()
        .map(|d| {
            d.parse::<ca_core::Duration>()
                .map_err(|e| Error::InvalidInput(format!("expires_in: {e}")))
        })
        .transpose()?;
    let created = state
        .ca
        .create_token_expiring(
            role,
            body.tenant.as_deref(),
            body.name.as_deref().unwrap_or(""),
            expires_in,
            &who.actor(),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            record: TokenView::from(&created.record),
            token: created.token,
        }),
    ))
}

/// Lists tokens (role admin), never their secrets.
#[utoipa::path(get, path = "/v1/tokens", tag = "tokens", security(("bearer" = [])),
    responses((status = 200, body = TokenList), (status = 401), (status = 403)))]
pub async fn list(
    State(state): State<AppState>,
    Auth(who): Auth,
) -> Result<Json<TokenList>, ApiError> {
    who.authorize(Action::ManageTokens, None)?;
    let items = state
        .ca
        .tokens()
        .await?
        .iter()
        .map(TokenView::from)
        .collect();
    Ok(Json(TokenList { items }))
}

/// Revokes a token (role admin); every replica refuses it within 250 ms.
#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "tokens", security(("bearer" = [])),
    params(("id" = String, Path, description = "token id")),
    responses((status = 200, body = RevokedToken), (status = 401), (status = 403), (status = 404), (status = 409)))]
pub async fn revoke(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> Result<Json<RevokedToken>, ApiError> {
    who.authorize(Action::ManageTokens, None)?;
    state.ca.revoke_token(&id, &who.actor()).await?;
    Ok(Json(RevokedToken { id, revoked: true }))
}
