//! `GET /v1/session`: who a token belongs to and which console pages its role opens. Any valid
//! token may ask; the answer never includes the secret.

use super::AppState;
use crate::auth::{Principal, Role};
use axum::{Extension, Json};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(session))
}

#[derive(Debug, Serialize, ToSchema)]
struct Session {
    token_id: String,
    name: String,
    /// ingest, auditor, reviewer, admin, metrics or gate.
    #[schema(value_type = String)]
    role: Role,
    /// Console pages this role may open; empty means the console has nothing for it.
    #[schema(value_type = Vec<String>)]
    pages: &'static [&'static str],
}

/// The console pages each role opens: the same split as the API's role checks, so the console
/// never offers a page whose data calls would be refused.
pub fn pages(role: Role) -> &'static [&'static str] {
    match role {
        Role::Auditor => &["dashboard", "changes", "alerts", "reports"],
        Role::Reviewer => &["ledger", "alerts"],
        Role::Admin => &["tokens"],
        Role::Ingest | Role::Metrics | Role::Gate => &[],
    }
}

#[utoipa::path(
    get,
    path = "/v1/session",
    tag = "session",
    summary = "Who the token is: id, name, role and the console pages that role opens (never the secret).",
    responses((status = 200, description = "the token's identity", body = Session))
)]
async fn session(Extension(p): Extension<Principal>) -> Json<Session> {
    Json(Session {
        pages: pages(p.role),
        token_id: p.token_id,
        name: p.name,
        role: p.role,
    })
}
