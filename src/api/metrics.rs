//! `/metrics` (role `metrics`): ingest counters, queue, commits, parking, memory; in OpenMetrics
//! for a scraper that asks for it (Prometheus does), else in the Prometheus text format.

use super::error::ErrorBody;
use super::{ApiError, AppState};
use axum::extract::State;
use axum::http::{HeaderMap, header};
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
    summary = "Prometheus text or OpenMetrics (by Accept): OTLP requests by transport, signal and outcome; spans and log records received, accepted, rejected (by reason), parked, dropped (expired, overflow) and duplicate; queue depth; commits, rows per commit, commit latency; parked spans and bytes; bound traces; deploy annotations sent, refused, stalled and their lag; alerts raised, resolved, delivered, failed attempts, refused and their lag; Conductor reconciliation rounds, witness cosignatures and errors (by witness and reason), whether the newest checkpoint is witnessed, executions imported, runs re-checked, rewrites by kind, errors by kind and cursor lag; memory; connections open and closed per listener (by reason: cap, idle, header_timeout, body_rate, deadline, ...) and requests cut off.",
    responses(
        (status = 200, description = "Prometheus text format, or OpenMetrics text when the scraper asks for it", body = String, content_type = "text/plain; version=0.0.4"),
        (status = 404, description = "this process does not ingest", body = ErrorBody)
    )
)]
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let Some((ing, writer)) = &state.metrics else {
        return Err(ApiError::NotFound("this process does not ingest".into()));
    };
    let w = &writer.metrics;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
    let b = ing.binder_stats();
    let (rss, peak) = crate::sys::metrics::memory();
    let queue = state.appender.as_ref().map_or(0, |a| a.queue_depth()) as f64;
    let mut extra = vec![
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
            "changetrail_spans_dropped_reset_total",
            "counter",
            "Parked spans set aside after a panic left parking untrustworthy (still journaled: a restart parks them again).",
            b.dropped_reset as f64,
        ),
        (
            "changetrail_journal_bytes",
            "gauge",
            "Bytes the parking journal holds on disk (otlp.journal_max_bytes bounds it).",
            ing.journal_bytes() as f64,
        ),
        (
            "changetrail_binding_sync_lag_entries",
            "gauge",
            "Committed entries the binding sync has not looked at yet (other instances' bindings reach this one after them).",
            ing.binding_lag() as f64,
        ),
        (
            "changetrail_runtime_cells",
            "gauge",
            "Runtime minute cells held in memory until appended (suspects.max_cells bounds it).",
            ing.runtime_cells() as f64,
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
    extra.extend(annotation_metrics(&state));
    extra.extend(alert_metrics(&state));
    extra.extend(witness_metrics(&state));
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (content_type, body) = if wants_openmetrics(accept) {
        (
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ing.metrics.render_openmetrics(&extra),
        )
    } else {
        (
            "text/plain; version=0.0.4; charset=utf-8",
            ing.metrics.render(&extra),
        )
    };
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

/// Whether the newest checkpoint meets the tlog-policy quorum (`[tlog] policy_file`); -1 without
/// a policy or before the first look. Cosignature and witness error counters are labelled and
/// kept by the witness client in the registry.
fn witness_metrics(state: &AppState) -> [(&'static str, &'static str, &'static str, f64); 3] {
    let get = |f: fn(&crate::tlog::witness::Witnessing) -> f64, none: f64| {
        state.witnessing.as_ref().map_or(none, |w| f(&w.state))
    };
    [
        (
            "changetrail_tlog_latest_witnessed",
            "gauge",
            "1 when the newest checkpoint carries the policy's quorum of cosignatures, 0 when not, -1 without a policy ([tlog] policy_file).",
            get(|w| w.latest_witnessed.load(Ordering::Relaxed) as f64, -1.0),
        ),
        (
            "changetrail_tlog_unwitnessed_checkpoint_size",
            "gauge",
            "The newest checkpoint's size while it lacks the policy's quorum, else 0.",
            get(|w| w.unwitnessed_size.load(Ordering::Relaxed) as f64, 0.0),
        ),
        (
            "changetrail_tlog_witness_lag_entries",
            "gauge",
            "Entries beyond the newest checkpoint that met the policy's quorum.",
            get(|w| w.lag_entries.load(Ordering::Relaxed) as f64, 0.0),
        ),
    ]
}

/// The deploy annotator's counters (zero when `[annotations.otlp]` is off).
fn annotation_metrics(state: &AppState) -> [(&'static str, &'static str, &'static str, f64); 5] {
    let annotation = |f: fn(&crate::notify::annotate::Stats) -> &std::sync::atomic::AtomicU64| {
        state
            .annotations
            .as_ref()
            .map_or(0.0, |a| f(a).load(Ordering::Relaxed) as f64)
    };
    [
        (
            "changetrail_annotations_enabled",
            "gauge",
            "1 when this instance sends deploy annotations ([annotations.otlp] names an endpoint).",
            f64::from(u8::from(state.annotations.is_some())),
        ),
        (
            "changetrail_annotations_sent_total",
            "counter",
            "Deploy annotations the OTLP endpoint took ([annotations.otlp]).",
            annotation(|a| &a.sent),
        ),
        (
            "changetrail_annotations_refused_total",
            "counter",
            "Deploy annotations the OTLP endpoint refused for good (a 4xx about the record).",
            annotation(|a| &a.refused),
        ),
        (
            "changetrail_annotations_stalled_total",
            "counter",
            "Deploy annotation exports that did not go through yet (endpoint down, or turned away: check [annotations.otlp]); each is tried again.",
            annotation(|a| &a.stalled),
        ),
        (
            "changetrail_annotations_lag_entries",
            "gauge",
            "Committed entries the deploy annotator has not looked at yet.",
            annotation(|a| &a.lag_entries),
        ),
    ]
}

/// Whether an Accept header prefers OpenMetrics to the Prometheus text format: named with a
/// weight above zero and at least text/plain's (a bare `*/*` keeps the text format).
fn wants_openmetrics(accept: &str) -> bool {
    let (mut openmetrics, mut plain) = (0.0_f32, 0.0_f32);
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.strip_prefix("q="))
            .find_map(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "application/openmetrics-text" => openmetrics = openmetrics.max(q),
            "text/plain" | "text/*" | "*/*" => plain = plain.max(q),
            _ => {}
        }
    }
    openmetrics > 0.0 && openmetrics >= plain
}

/// The alerter's counters (zero when `[alerts]` names no destination).
fn alert_metrics(state: &AppState) -> [(&'static str, &'static str, &'static str, f64); 7] {
    let alert = |f: fn(&crate::notify::alerts::Stats) -> &std::sync::atomic::AtomicU64| {
        state
            .alerts
            .as_ref()
            .map_or(0.0, |a| f(a).load(Ordering::Relaxed) as f64)
    };
    [
        (
            "changetrail_alerts_enabled",
            "gauge",
            "1 when this instance raises and delivers alerts ([alerts] names a destination).",
            f64::from(u8::from(state.alerts.is_some())),
        ),
        (
            "changetrail_alerts_raised_total",
            "counter",
            "alert.raised entries this instance appended.",
            alert(|a| &a.raised),
        ),
        (
            "changetrail_alerts_resolved_total",
            "counter",
            "alert.resolved entries this instance appended.",
            alert(|a| &a.resolved),
        ),
        (
            "changetrail_alerts_delivered_total",
            "counter",
            "Alert deliveries a destination took (each recorded as alert.delivered).",
            alert(|a| &a.delivered),
        ),
        (
            "changetrail_alerts_failed_total",
            "counter",
            "Alert delivery attempts that failed and are retried with backoff (destination down, or turned away: check [alerts]).",
            alert(|a| &a.failed),
        ),
        (
            "changetrail_alerts_refused_total",
            "counter",
            "Alert deliveries a destination refused for good (a 4xx about the request).",
            alert(|a| &a.refused),
        ),
        (
            "changetrail_alerts_lag_entries",
            "gauge",
            "Committed entries the alerter has not looked at yet.",
            alert(|a| &a.lag_entries),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::wants_openmetrics;

    #[test]
    fn negotiates_openmetrics() {
        // Prometheus 2's and 3's default scrape protocols.
        assert!(wants_openmetrics(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ));
        assert!(wants_openmetrics(
            "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
        ));
        assert!(wants_openmetrics("application/openmetrics-text"));
        assert!(!wants_openmetrics(""));
        assert!(!wants_openmetrics("*/*"));
        assert!(!wants_openmetrics("text/plain"));
        assert!(!wants_openmetrics(
            "text/plain;version=0.0.4;q=0.9,application/openmetrics-text;version=1.0.0;q=0.5"
        ));
        assert!(!wants_openmetrics("application/openmetrics-text;q=0"));
    }
}
