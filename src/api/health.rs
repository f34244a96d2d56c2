//! Liveness and readiness, without authentication (for load balancers and orchestrators).

use super::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(live))
        .routes(routes!(ready))
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    summary = "Liveness: the process answers.",
    responses((status = 200, description = "ok", body = String))
)]
async fn live() -> &'static str {
    "ok\n"
}

/// Ready when storage answers and the sequencer is accepting work.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    summary = "Readiness: storage answers and the sequencer runs.",
    responses(
        (status = 200, description = "ready", body = String),
        (status = 503, description = "storage unavailable, or the sequencer stopped", body = String)
    )
)]
async fn ready(State(state): State<AppState>) -> (StatusCode, String) {
    if let Err(e) = state.store.ping().await {
        tracing::warn!(error = %e, "Readiness check: storage does not answer.");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "storage unavailable\n".into(),
        );
    }
    if state.appender.as_ref().is_some_and(|a| !a.is_running()) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "sequencer stopped\n".into(),
        );
    }
    (StatusCode::OK, "ready\n".into())
}
