//! `GET /v1/conductor`: how far Conductor reconciliation has imported (`[conductor]`), for the
//! console and for whoever watches the lag without scraping `/metrics`.

use super::AppState;
use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(status))
}

/// One Conductor server a reconciler follows.
#[derive(Serialize, ToSchema)]
struct Server {
    /// Its base URL, without credentials.
    server: String,
    /// Every execution Conductor updated before this time is imported (ns since the epoch).
    imported_through_ns: i64,
    /// Seconds from that time to now: how far the ledger trails Conductor at most.
    lag_seconds: i64,
    /// When the cursor last moved, by this service's clock.
    moved_ns: i64,
}

#[derive(Serialize, ToSchema)]
struct Status {
    /// Empty while no reconciler ever moved its cursor (or `[conductor] url` is unset).
    servers: Vec<Server>,
}

#[utoipa::path(
    get,
    path = "/v1/conductor",
    tag = "import",
    summary = "How far Conductor reconciliation has imported: per server, the update time through which every execution is in the ledger, and the lag to now.",
    description = "Read from the reconcilers' durable cursors (moved only after their imports commit), so it holds for every instance sharing the database. Rounds, errors and rewrites per kind are counted in /metrics (changetrail_conductor_*).",
    responses((status = 200, description = "the reconcilers' places", body = Status))
)]
async fn status(State(state): State<AppState>) -> Result<Json<Status>, super::ApiError> {
    let now_ns = crate::sys::now_ns();
    let servers = state
        .store
        .conductor_cursors()
        .await?
        .into_iter()
        .map(|(server, update_time_ms, moved_ns)| {
            let through = update_time_ms.saturating_mul(1_000_000);
            Server {
                server,
                imported_through_ns: through,
                lag_seconds: now_ns.saturating_sub(through).max(0) / 1_000_000_000,
                moved_ns,
            }
        })
        .collect();
    Ok(Json(Status { servers }))
}
