//! `GET /v1/alerts`: alerts raised and resolved, and where each was delivered (`read::alerts`).

use super::AppState;
use super::error::{ApiError, ErrorBody};
use crate::read::alerts::{self, AlertList};
use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AlertQuery {
    /// Only this change's alerts.
    change_id: Option<String>,
    /// `firing` (alert.raised) or `resolved` (alert.resolved).
    status: Option<String>,
    /// At most this many events (default 100, at most 1000).
    limit: Option<usize>,
    /// Only events before this entry seq (the next page: the last one's `entry_seq`).
    before: Option<u64>,
}

#[utoipa::path(
    get,
    path = "/v1/alerts",
    tag = "alerts",
    summary = "Alerts raised and resolved, newest first, with each destination's delivery state and the codes open now.",
    description = "What an alert said and that a destination took it come from the signed ledger entries (`alert.raised`, `alert.resolved`, `alert.delivered`); deliveries still under way or refused come from the outbox.",
    params(AlertQuery),
    responses(
        (status = 200, description = "{alerts: [...], total, open: [...]}", body = Object),
        (status = 400, description = "a bad status or limit", body = ErrorBody)
    )
)]
async fn list(
    State(state): State<AppState>,
    Query(q): Query<AlertQuery>,
) -> Result<Json<AlertList>, ApiError> {
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s @ ("firing" | "resolved")) => Some(s),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "status must be firing or resolved, not {other:?}"
            )));
        }
    };
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::BadRequest(
            "limit must be between 1 and 1000".into(),
        ));
    }
    let change = q.change_id.as_deref().filter(|c| !c.is_empty());
    let before = q.before.unwrap_or(u64::MAX >> 1);
    Ok(Json(
        alerts::list(&state.store, change, status, before, limit).await?,
    ))
}
