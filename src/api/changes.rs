//! Changes for auditors: the list, one change's evidence packet, unlinked deploys; and the
//! Conductor import for the `ingest` role.

use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::auth::Principal;
use crate::core::evidence::rules;
use crate::core::evidence::{Intake, SentBy};
use crate::core::time::parse_rfc3339;
use crate::ingest::conductor;
use crate::read::changes::{self, ChangeFilter};
use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(one))
        .routes(routes!(unlinked))
        .routes(routes!(delivery))
}

pub fn import_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(import_conductor))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// RFC 3339 time or nanoseconds since the epoch.
    from: Option<String>,
    /// RFC 3339 time or nanoseconds since the epoch.
    to: Option<String>,
    /// Deployment environment (case-insensitive).
    environment: Option<String>,
    /// Target service (case-insensitive).
    service: Option<String>,
    /// normal, standard, emergency or rollback.
    kind: Option<String>,
    /// Only changes the report's rules give this exception code (NO_APPROVAL, SELF_APPROVAL, ...).
    exception: Option<String>,
    /// Changes per page, 1 to 500 (default 50).
    #[param(value_type = Option<u64>)]
    limit: Option<String>,
    /// Changes to skip (default 0).
    #[param(value_type = Option<u64>)]
    offset: Option<String>,
}

/// Changes per page when the caller does not say, and at most.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;

/// A paging number: digits only, so `limit=-1` or `offset=ten` is a clear 400, not a default.
fn count(q: &Option<String>, default: usize, name: &str) -> Result<usize, ApiError> {
    match q {
        None => Ok(default),
        Some(s) => s
            .parse::<usize>()
            .map_err(|_| ApiError::BadRequest(format!("{name} must be a whole number, not {s:?}"))),
    }
}

/// An exception code the rules know (any case), as the rules spell it.
fn exception_code(q: &Option<String>) -> Result<Option<&'static str>, ApiError> {
    let Some(s) = q else {
        return Ok(None);
    };
    rules::ALL
        .into_iter()
        .find(|c| c.eq_ignore_ascii_case(s.trim()))
        .map(Some)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "exception {s:?} is not an exception code: use one of {}",
                rules::ALL.join(", ")
            ))
        })
}

pub(super) fn time(q: &Option<String>, default: i64, name: &str) -> Result<i64, ApiError> {
    match q {
        None => Ok(default),
        Some(s) => parse_rfc3339(s)
            .or_else(|| s.parse::<i64>().ok())
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "{name} must be an RFC 3339 time or nanoseconds since the epoch"
                ))
            }),
    }
}

#[utoipa::path(
    get,
    path = "/v1/changes",
    tag = "changes",
    summary = "Changes requested in a period, each folded from its facts, with the SOC 2 report's exceptions (production changes only). Filtered, ordered and counted from the per-change summary (kept caught up with the chain, recomputed by verify); the page's changes are folded as they stand.",
    params(ListQuery),
    responses(
        (status = 200, description = "{changes: [... each with exceptions: [{code, evidence}]], total, offset, limit}", body = Object),
        (status = 400, description = "bad parameters", body = ErrorBody)
    )
)]
async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let filter = ChangeFilter {
        from_ns: time(&q.from, i64::MIN, "from")?,
        to_ns: time(&q.to, i64::MAX, "to")?,
        environment: q.environment,
        service: q.service,
        kind: q.kind,
    };
    if filter.from_ns >= filter.to_ns {
        return Err(ApiError::BadRequest("from must be before to".into()));
    }
    let exception = exception_code(&q.exception)?;
    let limit = count(&q.limit, DEFAULT_LIMIT, "limit")?;
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    let offset = count(&q.offset, 0, "offset")?;
    let (list, total) = changes::list_judged(
        &state.store,
        &filter,
        &state.correlation.criteria,
        exception,
        offset,
        limit,
    )
    .await?;
    Ok(Json(serde_json::json!({
        "changes": list,
        "total": total,
        "offset": offset,
        "limit": limit,
    })))
}

#[utoipa::path(
    get,
    path = "/v1/changes/{id}",
    tag = "changes",
    summary = "One change's evidence packet: facts folded, spans, versions, entries with inclusion proofs.",
    description = "With `[links] trace_url` set, `trace_links` maps each trace id the packet names to its page in the team's tracing UI.",
    params(("id" = String, Path, description = "the change id")),
    responses(
        (status = 200, description = "evidence packet", body = Object),
        (status = 404, description = "no such change", body = ErrorBody)
    )
)]
async fn one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<changes::Packet>, ApiError> {
    let mut packet = changes::packet(&state.store, &id, &state.correlation.criteria)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no change {id:?}")))?;
    if let Some(url) = &state.correlation.trace_url {
        packet.link_traces(url);
    }
    Ok(Json(packet))
}

#[utoipa::path(
    get,
    path = "/v1/deploys/unlinked",
    tag = "changes",
    summary = "Production versions seen in runtime spans that no change explains.",
    responses((status = 200, description = "{unlinked_deploys: [...]}", body = Object))
)]
async fn unlinked(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let v = changes::unlinked_versions(&state.store, &state.correlation.criteria).await?;
    Ok(Json(serde_json::json!({ "unlinked_deploys": v })))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DeliveryQuery {
    /// RFC 3339 time or nanoseconds since the epoch (default: 30 days before `to`).
    from: Option<String>,
    /// RFC 3339 time or nanoseconds since the epoch (default: now).
    to: Option<String>,
    /// One service (case-insensitive); all when absent.
    service: Option<String>,
}

/// The longest period one request may ask for: the work grows with the changes in it.
const MAX_DELIVERY_PERIOD_NS: i64 = 366 * 24 * 3600 * 1_000_000_000;

#[utoipa::path(
    get,
    path = "/v1/delivery",
    tag = "changes",
    summary = "The four keys of a period, per service and for all: deployment frequency, lead time for changes, change failure rate, time to restore; with each failed change and what restored it.",
    description = "A deployment is a production change whose first successful deploy ended in the period; lead time runs from its request to then; a change landed when it deployed or all its deploy attempts failed in the period; it failed when its deploy failed or a later change rolled it back; time to restore runs to the rollback's (or the service's next) successful deploy. Changes requested up to 90 days before the period (and 30 after, as restores) are looked at. Times in seconds; the period is at most 366 days.",
    params(DeliveryQuery),
    responses(
        (status = 200, description = "{from_ns, to_ns, all: {...}, services: {name: {...}}, failures: [...], exceptions_by_week: {week: {code: changes}}}", body = Object),
        (status = 400, description = "bad parameters", body = ErrorBody)
    )
)]
async fn delivery(
    State(state): State<AppState>,
    Query(q): Query<DeliveryQuery>,
) -> Result<Json<crate::read::delivery::DeliveryView>, ApiError> {
    let to_ns = time(&q.to, crate::sys::now_ns(), "to")?;
    let from_ns = time(
        &q.from,
        to_ns.saturating_sub(30 * 24 * 3600 * 1_000_000_000),
        "from",
    )?;
    if from_ns >= to_ns {
        return Err(ApiError::BadRequest("from must be before to".into()));
    }
    if to_ns.saturating_sub(from_ns) > MAX_DELIVERY_PERIOD_NS {
        return Err(ApiError::BadRequest(
            "the period may be at most 366 days".into(),
        ));
    }
    let service = q.service.as_deref().filter(|s| !s.is_empty());
    Ok(Json(
        crate::read::delivery::delivery(
            &state.store,
            &state.correlation.criteria,
            from_ns,
            to_ns,
            service,
        )
        .await?,
    ))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ImportQuery {
    /// How long after the times they state the facts may arrive without LATE_EVIDENCE (a
    /// backfill), e.g. `7d`; at most 31d here.
    max_lateness: Option<String>,
}

/// One execution per request (`GET /api/workflow/{id}?includeTasks=true` output or a
/// status-listener message). Re-importing is idempotent; vanished history is recorded. Every fact
/// records the token that sent it.
#[utoipa::path(
    post,
    path = "/v1/import/conductor",
    tag = "import",
    summary = "Import one Conductor execution or status-listener message; idempotent.",
    params(ImportQuery),
    request_body(
        content = Object,
        description = "Conductor workflow execution JSON (GET /api/workflow/{id}?includeTasks=true)"
    ),
    responses(
        (status = 201, description = "facts were added", body = Object),
        (status = 200, description = "already known", body = Object),
        (status = 400, description = "not a Conductor execution, or a bad max_lateness", body = ErrorBody),
        (status = 503, description = "busy, or this process does not append", body = ErrorBody,
            headers(("Retry-After" = u64, description = "seconds")))
    )
)]
async fn import_conductor(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(q): Query<ImportQuery>,
    Json(doc): Json<serde_json::Value>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let appender = state
        .appender
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("this process does not append".into()))?;
    let c = &state.correlation;
    let max_lateness_ns = q
        .max_lateness
        .as_deref()
        .map(conductor::parse_max_lateness)
        .transpose()
        .map_err(ApiError::BadRequest)?;
    // Any ingest token may backfill a month; older history goes through the command line, run
    // by someone with the database (and recorded in each fact either way).
    if max_lateness_ns.is_some_and(|n| n > conductor::MAX_API_LATENESS_NS) {
        return Err(ApiError::BadRequest(
            "max_lateness may be at most 31d here; import older history with \
             `changetrail import conductor --max-lateness`"
                .into(),
        ));
    }
    let intake = Intake {
        received_ns: crate::sys::now_ns(),
        sent_by: Some(SentBy {
            token_id: Some(principal.token_id.clone()),
            name: principal.name.clone(),
        }),
        max_lateness_ns,
        max_clock_skew_ns: c.max_clock_skew_ns,
    };
    let history = crate::read::history::History::new(state.store.clone());
    let done = conductor::import(
        appender,
        &history,
        &doc,
        &c.criteria.policy,
        &c.identity,
        &intake,
    )
    .await
    .map_err(|e| match e {
        conductor::ImportError::Invalid(m) => ApiError::BadRequest(m),
        e if e.is_transient() => ApiError::Unavailable("changetrail is busy; retry shortly".into()),
        e => ApiError::Internal(e.to_string()),
    })?;
    let p = &done.prepared;
    Ok((
        if done.facts_stored > 0 {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(serde_json::json!({
            "run_id": p.run_id,
            "change_id": p.change_id,
            "facts_recorded": done.facts_stored,
            "facts_already_known": done.facts_duplicate,
            "history_rewritten": p.rewrite.is_some(),
            "vanished_tasks": p.vanished,
            "rewrite": p.rewrite,
        })),
    ))
}
