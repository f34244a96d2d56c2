//! Liveness and readiness, without authentication (for load balancers and orchestrators).

use super::AppState;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
}

/// Ready when storage answers and the sequencer is accepting work.
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
