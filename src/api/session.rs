//! `GET /v1/session`: who a token belongs to and which console pages its role opens. Any valid
//! token may ask; the answer never includes the secret.

use super::AppState;
use crate::auth::{Principal, Role};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Serialize;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/session", get(session))
}

#[derive(Debug, Serialize)]
struct Session {
    token_id: String,
    name: String,
    role: Role,
    /// Console pages this role may open; empty means the console has nothing for it.
    pages: &'static [&'static str],
}

/// The console pages each role opens: the same split as the API's role checks, so the console
/// never offers a page whose data calls would be refused.
pub fn pages(role: Role) -> &'static [&'static str] {
    match role {
        Role::Auditor => &["changes", "reports"],
        Role::Reviewer => &["ledger"],
        Role::Admin => &["tokens"],
        Role::Ingest | Role::Metrics => &[],
    }
}

async fn session(Extension(p): Extension<Principal>) -> Json<Session> {
    Json(Session {
        pages: pages(p.role),
        token_id: p.token_id,
        name: p.name,
        role: p.role,
    })
}
