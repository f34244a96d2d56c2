//! `/metrics` in Prometheus text format (role `metrics`): ingest counters, queue, commits,
//! parking, memory.

use super::error::ErrorBody;
use super::{ApiError, AppState};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::sync::atomic::Ordering;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "metrics",
    summary = "Prometheus text: OTLP requests by transport, signal and outcome; spans and log records received, accepted, rejected (by reason), parked, dropped (expired, overflow) and duplicate; queue depth; commits, rows per commit, commit latency; parked spans and bytes; bound traces; memory; connections open and closed per listener (by reason: cap, idle, header_timeout, body_rate, deadline, ...) and requests cut off.",
    responses(
        (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain; version=0.0.4"),
        (status = 404, description = "this process does not ingest", body = ErrorBody)
    )
)]
async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let Some((ing, writer)) = &state.metrics else {
        return Err(ApiError::NotFound("this process does not ingest".into()));
    };
    let w = &writer.metrics;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
    let b = ing.binder_stats();
    let (rss, peak) = crate::sys::metrics::memory();
    let queue = state.appender.as_ref().map_or(0, |a| a.queue_depth()) as f64;
    let extra = [
        (
            "changetrail_queue_depth",
            "gauge",
            "Append requests waiting for the sequencer.",
            queue,
        ),
        (
            "changetrail_commits_total",
            "counter",
            "Sequencer transactions.",
            load(&w.commits),
        ),
        (
            "changetrail_commit_rows_total",
            "counter",
            "Entries, spans and log records given to sequencer transactions (mean batch size = rows / commits).",
            load(&w.commit_rows),
        ),
        (
            "changetrail_commit_seconds_total",
            "counter",
            "Time spent in sequencer transactions (mean latency = seconds / commits).",
            load(&w.commit_ns) / 1e9,
        ),
        (
            "changetrail_commit_seconds_max",
            "gauge",
            "The longest sequencer transaction so far.",
            load(&w.commit_max_ns) / 1e9,
        ),
        (
            "changetrail_ledger_entries_total",
            "counter",
            "Ledger entries appended by this process.",
            load(&w.entries),
        ),
        (
            "changetrail_checkpoints_total",
            "counter",
            "Checkpoints signed by this process.",
            load(&w.checkpoints),
        ),
        (
            "changetrail_parked_spans",
            "gauge",
            "Spans waiting for their trace to be bound.",
            b.parked_spans as f64,
        ),
        (
            "changetrail_parked_bytes",
            "gauge",
            "Memory held by parked spans (estimate).",
            b.parked_bytes as f64,
        ),
        (
            "changetrail_bound_traces",
            "gauge",
            "Traces known to be bound to a change.",
            b.bound_traces as f64,
        ),
        (
            "changetrail_spans_dropped_expired_total",
            "counter",
            "Parked spans dropped when the late-binding window passed.",
            b.dropped_expired as f64,
        ),
        (
            "changetrail_spans_dropped_overflow_total",
            "counter",
            "Parked spans dropped to stay within max_parked_bytes.",
            b.dropped_overflow as f64,
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory.",
            rss as f64,
        ),
        (
            "changetrail_peak_resident_memory_bytes",
            "gauge",
            "Peak resident memory since start.",
            peak as f64,
        ),
    ];
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        ing.metrics.render(&extra),
    )
        .into_response())
}
