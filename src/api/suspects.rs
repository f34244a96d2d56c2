//! `GET /v1/suspects`: the changes most likely behind a service's errors or latency in a window
//! (`read::suspects`, `core::runtime::suspects`).

use super::AppState;
use super::changes::time;
use super::error::{ApiError, ErrorBody};
use crate::read::suspects::{self, SuspectsView};
use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(suspects))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct SuspectsQuery {
    /// The service whose errors or latency are asked about (`service.name`, exact).
    service: String,
    /// Its deployment environment (case-insensitive); a production one.
    environment: String,
    /// RFC 3339 time or nanoseconds since the epoch (default: 1 hour before `to`).
    from: Option<String>,
    /// RFC 3339 time or nanoseconds since the epoch (default: now).
    to: Option<String>,
}

/// The longest window one request may ask about: the minutes read grow with it.
const MAX_WINDOW_NS: i64 = 24 * 3600 * 1_000_000_000;

#[utoipa::path(
    get,
    path = "/v1/suspects",
    tag = "changes",
    summary = "The production changes most likely behind a service's errors or latency in a window, ranked, each with its evidence.",
    description = "Each production change whose deploy completed in the window (or one `[suspects] window` before it) is compared: its own service's entry spans in the window after the deploy against the baseline before it, and the asked service's the same way. score = proximity × (rise on the asked service + ½ × rise on its own service if another) × (1 + ¼ × blast radius), where a rise is measured in thresholds (error rate, p95 latency, new error kinds), proximity is exp(−Δt / window) from the deploy to the first minute the asked service's error rate rose, and the blast radius is the other services whose comparison around the deploy is a regression. Read from the signed runtime.minute entries (at most 100,000, the latest kept: `truncated`); at most 100 candidates, the latest deploys (`candidates_truncated`); at most 20 suspects, none with a score of zero; the window is at most 24 hours.",
    params(SuspectsQuery),
    responses(
        (status = 200, description = "{service, environment, from_ns, to_ns, suspects: [{change_id, service, version, deployed_ns, score, proximity, onset_ns, own: {before, after, new_error_kinds, regression, reasons}, on_service, blast_radius: [...], first_error: {time_ns, trace_id}, requester, approvers, attempts, exceptions}], candidates, minutes_read, unreadable_minutes, truncated}", body = Object),
        (status = 400, description = "bad parameters", body = ErrorBody),
        (status = 404, description = "[suspects] is switched off", body = ErrorBody)
    )
)]
async fn suspects(
    State(state): State<AppState>,
    Query(q): Query<SuspectsQuery>,
) -> Result<Json<SuspectsView>, ApiError> {
    let Some(reading) = &state.correlation.suspects else {
        return Err(ApiError::NotFound(
            "runtime summaries are switched off ([suspects] enabled = false)".into(),
        ));
    };
    let to_ns = time(&q.to, crate::sys::now_ns(), "to")?;
    let from_ns = time(&q.from, to_ns.saturating_sub(3_600_000_000_000), "from")?;
    if from_ns >= to_ns {
        return Err(ApiError::BadRequest("from must be before to".into()));
    }
    if to_ns.saturating_sub(from_ns) > MAX_WINDOW_NS {
        return Err(ApiError::BadRequest(
            "the window may be at most 24 hours".into(),
        ));
    }
    let (service, environment) = (q.service.trim(), q.environment.trim());
    if service.is_empty()
        || environment.is_empty()
        || service.len() > 256
        || environment.len() > 256
    {
        return Err(ApiError::BadRequest(
            "service and environment are required (at most 256 bytes each)".into(),
        ));
    }
    if !state.correlation.criteria.policy.is_production(environment) {
        return Err(ApiError::BadRequest(format!(
            "{environment} is not a production environment ([correlation] production_environments): only production runtime spans are summarised"
        )));
    }
    Ok(Json(
        suspects::suspects(
            &state.store,
            &state.correlation.criteria,
            reading,
            (service, environment),
            (from_ns, to_ns),
        )
        .await?,
    ))
}
