//! Token management for the `admin` role: create (shown once), list, revoke.

use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::auth::{self, Principal, Role};
use crate::pipeline::{AppendError, LedgerWriter};
use crate::sys::now_ns;
use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(revoke))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    /// ingest, auditor, reviewer, admin, metrics or gate.
    #[schema(value_type = String)]
    role: Role,
    /// 1-200 printable characters.
    name: String,
}

#[derive(Serialize, ToSchema)]
struct TokenInfo {
    id: String,
    name: String,
    role: String,
    created_ns: i64,
    revoked_ns: Option<i64>,
}

/// The writer that records token changes in the ledger; a process without one cannot change
/// tokens.
fn writer(state: &AppState) -> Result<&LedgerWriter, ApiError> {
    state
        .writer
        .as_deref()
        .ok_or_else(|| ApiError::Unavailable("this process does not write the ledger".into()))
}

/// "admin token ab12cd (ops)": who made a token change, as the ledger records it.
fn by(p: &Principal) -> String {
    format!("{} token {} ({})", p.role, p.token_id, p.name)
}

fn append_error(e: AppendError) -> ApiError {
    match e {
        AppendError::NoActiveToken(id) => {
            ApiError::NotFound(format!("no active token with id {id}"))
        }
        e if e.is_transient() => ApiError::Unavailable("the ledger is busy; retry shortly".into()),
        e => ApiError::Internal(e.to_string()),
    }
}

#[utoipa::path(
    post,
    path = "/v1/admin/tokens",
    tag = "admin",
    summary = "Create a token; the token is in this answer only.",
    request_body = CreateToken,
    responses(
        (status = 201, description = "{id, name, role, token}", body = Object),
        (status = 400, description = "bad role or name", body = ErrorBody),
        (status = 422, description = "the body lacks a field or has one of the wrong type (plain text)", body = String),
        (status = 503, description = "the ledger is busy, or this process does not write it", body = ErrorBody,
            headers(("Retry-After" = u64, description = "seconds")))
    )
)]
async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Json(req): Json<CreateToken>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let name = req.name.trim();
    if name.is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "name must be 1-200 printable characters".into(),
        ));
    }
    let (row, token) = auth::issue(name, req.role, now_ns());
    writer(&state)?
        .create_token(&row, &by(&principal))
        .await
        .map_err(append_error)?;
    tracing::info!(token_id = %row.id, role = %req.role, "Token created.");
    Ok((
        StatusCode::CREATED,
        Json(
            serde_json::json!({ "id": row.id, "name": row.name, "role": row.role, "token": token }),
        ),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/admin/tokens",
    tag = "admin",
    summary = "Every token: id, name, role, created, revoked (never a secret).",
    responses((status = 200, description = "every token", body = Vec<TokenInfo>))
)]
async fn list(State(state): State<AppState>) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    let rows = state.store.tokens().await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| TokenInfo {
                id: r.id,
                name: r.name,
                role: r.role,
                created_ns: r.created_ns,
                revoked_ns: r.revoked_ns,
            })
            .collect(),
    ))
}

#[utoipa::path(
    delete,
    path = "/v1/admin/tokens/{id}",
    tag = "admin",
    summary = "Revoke a token.",
    params(("id" = String, Path, description = "the token id (the 12 hex digits after ct_)")),
    responses(
        (status = 204, description = "revoked"),
        (status = 404, description = "no active token with this id", body = ErrorBody),
        (status = 503, description = "the ledger is busy, or this process does not write it", body = ErrorBody,
            headers(("Retry-After" = u64, description = "seconds")))
    )
)]
async fn revoke(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    writer(&state)?
        .revoke_token(&id, &by(&principal))
        .await
        .map_err(append_error)?;
    tracing::info!(token_id = %id, "Token revoked.");
    Ok(StatusCode::NO_CONTENT)
}
