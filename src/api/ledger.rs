//! The ledger for reviewers: checkpoints, entries, proofs, keys and streamed bundles.

use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::core::ledger::hash::{Hash, b64};
use crate::core::ledger::verify::{Class, Options, Report};
use crate::read::export::{self, BundlePlan};
use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Entries per page at most.
const MAX_LIMIT: u64 = 1000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(checkpoint))
        .routes(routes!(entries))
        .routes(routes!(inclusion))
        .routes(routes!(consistency))
        .routes(routes!(keys))
        .routes(routes!(bundle))
        .routes(routes!(verify))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct SizeQuery {
    /// Tree size of an older checkpoint.
    size: Option<u64>,
}

/// The newest signed checkpoint (or the one at `size`) as the C2SP note text; as JSON with its
/// size, root and time beside the note when the caller accepts `application/json` (the console).
#[utoipa::path(
    get,
    path = "/v1/ledger/checkpoint",
    tag = "ledger",
    summary = "The newest (or size N) checkpoint as C2SP signed-note text; as JSON with Accept: application/json.",
    params(SizeQuery),
    responses(
        (status = 200, description = "the signed note; {size, root, key_id, created_ns, note} as JSON",
            content((String = "text/plain"), (Object = "application/json"))),
        (status = 400, description = "bad parameters", body = ErrorBody),
        (status = 404, description = "no such checkpoint", body = ErrorBody)
    )
)]
async fn checkpoint(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<SizeQuery>,
) -> Result<Response, ApiError> {
    let cp = match q.size {
        Some(s) => state.store.checkpoint_at(s).await?,
        None => state.store.latest_checkpoint().await?,
    };
    let cp = cp.ok_or_else(|| ApiError::NotFound("no such checkpoint".into()))?;
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    // The note every reader gets: the log's signature and the stored witness cosignatures.
    let note = crate::read::tlog::served_checkpoint_note(&state.store, &cp).await?;
    if wants_json {
        let cosignatures: Vec<String> = state
            .store
            .cosignatures(cp.size)
            .await?
            .into_iter()
            .map(|c| c.line)
            .collect();
        // null without a policy: "witnessed" means nothing until a quorum is stated.
        let witnessed = state
            .witnessing
            .as_ref()
            .map(|w| w.policy.check(&note).is_ok_and(|v| v.quorum_met));
        return Ok(Json(serde_json::json!({
            "size": cp.size,
            "root": cp.root.to_b64(),
            "key_id": cp.key_id,
            "created_ns": cp.created_ns,
            "note": note,
            "cosignatures": cosignatures,
            "witnessed": witnessed,
        }))
        .into_response());
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], note).into_response())
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct EntriesQuery {
    /// First sequence number (default 0).
    from: Option<u64>,
    /// Entries per page, at most 1000 (default 100).
    limit: Option<u64>,
}

#[derive(Serialize, ToSchema)]
struct EntryView {
    seq: u64,
    time_ns: i64,
    kind: String,
    subject: String,
    entry: String,
    sig: String,
    leaf_hash: String,
    salt: Option<String>,
    payload: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/ledger/entries",
    tag = "ledger",
    summary = "Entries with their bytes, signature, salt, payload and leaf hash, a page at a time.",
    params(EntriesQuery),
    responses(
        (status = 200, description = "{entries: [EntryView], next_from}", body = Object),
        (status = 400, description = "bad parameters", body = ErrorBody)
    )
)]
async fn entries(
    State(state): State<AppState>,
    Query(q): Query<EntriesQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let from = q.from.unwrap_or(0);
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    let rows = state.store.entries(from, limit).await?;
    let next = rows.last().map(|r| r.seq + 1);
    let views: Vec<EntryView> = rows
        .into_iter()
        .map(|r| EntryView {
            seq: r.seq,
            time_ns: r.time_ns,
            kind: r.kind,
            subject: r.subject,
            entry: b64(&r.entry),
            sig: b64(&r.sig),
            leaf_hash: r.leaf_hash.to_b64(),
            salt: r.salt.as_deref().map(b64),
            payload: r.payload,
        })
        .collect();
    Ok(Json(
        serde_json::json!({ "entries": views, "next_from": next }),
    ))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct InclusionQuery {
    /// The entry.
    seq: u64,
    /// Tree size (default: the newest checkpoint, whose note is included).
    size: Option<u64>,
}

/// Default tree size for proofs: the newest checkpoint, whose root a client can verify.
async fn latest_size(state: &AppState) -> Result<u64, ApiError> {
    state
        .store
        .latest_checkpoint()
        .await?
        .map(|c| c.size)
        .ok_or_else(|| ApiError::NotFound("the ledger has no checkpoint yet".into()))
}

fn hashes(h: &[Hash]) -> Vec<String> {
    h.iter().map(Hash::to_b64).collect()
}

#[utoipa::path(
    get,
    path = "/v1/ledger/proofs/inclusion",
    tag = "ledger",
    summary = "RFC 9162 inclusion proof of one entry.",
    params(InclusionQuery),
    responses(
        (status = 200, description = "{seq, size, leaf_hash, hashes: [...], checkpoint}", body = Object),
        (status = 400, description = "bad parameters or range", body = ErrorBody),
        (status = 404, description = "no such entry, or no checkpoint yet", body = ErrorBody)
    )
)]
async fn inclusion(
    State(state): State<AppState>,
    Query(q): Query<InclusionQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let size = match q.size {
        Some(s) => s,
        None => latest_size(&state).await?,
    };
    let proof = export::inclusion_proof(&state.store, q.seq, size).await?;
    let entry = state
        .store
        .entry(q.seq)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no entry {}", q.seq)))?;
    let note = state.store.checkpoint_at(size).await?.map(|c| c.note);
    Ok(Json(serde_json::json!({
        "seq": q.seq,
        "size": size,
        "leaf_hash": entry.leaf_hash.to_b64(),
        "hashes": hashes(&proof),
        "checkpoint": note,
    })))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ConsistencyQuery {
    /// Older tree size.
    from: u64,
    /// Newer tree size (default: the newest checkpoint).
    to: Option<u64>,
}

#[utoipa::path(
    get,
    path = "/v1/ledger/proofs/consistency",
    tag = "ledger",
    summary = "RFC 9162 consistency proof between two tree sizes.",
    params(ConsistencyQuery),
    responses(
        (status = 200, description = "{from, to, hashes: [...]}", body = Object),
        (status = 400, description = "bad parameters or range", body = ErrorBody),
        (status = 404, description = "no checkpoint yet", body = ErrorBody)
    )
)]
async fn consistency(
    State(state): State<AppState>,
    Query(q): Query<ConsistencyQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let to = match q.to {
        Some(t) => t,
        None => latest_size(&state).await?,
    };
    let proof = export::consistency_proof(&state.store, q.from, to).await?;
    Ok(Json(
        serde_json::json!({ "from": q.from, "to": to, "hashes": hashes(&proof) }),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/ledger/keys",
    tag = "ledger",
    summary = "The origin, the current key and every key with its sequence range and rotation entry.",
    responses(
        (status = 200, description = "{origin, current_key_id, keys: [...]}", body = Object),
        (status = 404, description = "the ledger has not been created", body = ErrorBody)
    )
)]
async fn keys(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let head = state
        .store
        .head()
        .await?
        .ok_or_else(|| ApiError::NotFound("the ledger has not been created".into()))?;
    let keys = state.store.keys().await?;
    let list: Vec<serde_json::Value> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            serde_json::json!({
                "key_id": k.key_id,
                "vkey": k.vkey,
                "from_seq": k.from_seq,
                "to_seq": keys.get(i + 1).map(|n| n.from_seq - 1),
                "rotation_seq": k.rotation_seq,
            })
        })
        .collect();
    Ok(Json(
        serde_json::json!({ "origin": head.head.origin.as_str(), "current_key_id": head.head.key_id.to_hex(), "keys": list }),
    ))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct BundleQuery {
    /// First sequence number.
    from: Option<u64>,
    /// Last sequence number (extended to the next checkpoint).
    to: Option<u64>,
    /// Include a consistency proof from this tree size.
    consistency_from: Option<u64>,
}

/// Streams a bundle (src/core/ledger/FORMAT.md) as JSON Lines, page by page.
#[utoipa::path(
    get,
    path = "/v1/ledger/bundle",
    tag = "ledger",
    summary = "An offline evidence bundle (src/core/ledger/FORMAT.md), streamed page by page.",
    params(BundleQuery),
    responses(
        (status = 200, description = "JSON Lines bundle", content_type = "application/x-ndjson"),
        (status = 400, description = "bad parameters or range", body = ErrorBody),
        (status = 404, description = "no ledger or no checkpoint yet", body = ErrorBody)
    )
)]
async fn bundle(
    State(state): State<AppState>,
    Query(q): Query<BundleQuery>,
) -> Result<Response, ApiError> {
    let plan: BundlePlan = export::plan(&state.store, q.from, q.to, q.consistency_from).await?;
    let rx = export::stream(state.store.clone(), plan.clone(), crate::sys::rfc3339_now());
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| {
            let chunk = item.map(axum::body::Bytes::from).map_err(|e| {
                // The status line has gone out; a broken stream is all a client can see now.
                tracing::error!(error = %e, "Bundle stream failed.");
                std::io::Error::other(e.to_string())
            });
            (chunk, rx)
        })
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"changetrail-{}-{}.jsonl\"",
                    plan.start,
                    plan.end - 1
                ),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// What `POST /v1/ledger/verify` answers: the verifier's verdict over every entry the newest
/// checkpoint covers, pinned to the ledger's first key.
#[derive(Serialize, ToSchema)]
struct Verification {
    ok: bool,
    #[schema(value_type = String)]
    verdict: &'static str,
    exit_code: i32,
    summary: VerifySummary,
    findings: Vec<FindingView>,
    /// Findings beyond the verifier's per-class cap, by class.
    #[schema(value_type = std::collections::BTreeMap<String, u64>)]
    suppressed: std::collections::BTreeMap<&'static str, u64>,
    #[schema(value_type = u64)]
    elapsed_ms: u128,
}

#[derive(Serialize, ToSchema)]
struct VerifySummary {
    origin: Option<String>,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    entries: u64,
    signatures: u64,
    checkpoints: u64,
    checkpoints_valid: u64,
    redacted: u64,
    covered_to: Option<u64>,
    newest_size: Option<u64>,
    newest_root: Option<String>,
    keys: usize,
    /// Entries newer than the newest checkpoint: not covered yet, so not checked.
    uncovered: u64,
}

#[derive(Serialize, ToSchema)]
struct FindingView {
    #[schema(value_type = String)]
    class: &'static str,
    seq: Option<u64>,
    detail: String,
}

/// The verdict in the words of `changetrail verify`, for a check pinned to the first key.
fn verdict(report: &Report) -> &'static str {
    match report.exit_code {
        0 if report.has(Class::Unpinned) => "OK, but UNPINNED: trust came from the ledger itself",
        0 => "OK: intact and covered by signed checkpoints",
        2 => {
            "INCOMPLETE or STALE: what is present is intact, but coverage or freshness is not proven"
        }
        _ => "FAILED: the ledger was modified, reordered, truncated or signed by an untrusted key",
    }
}

/// Runs the stored-ledger verifier now. It reads every entry, so one runs at a time: a second
/// request is told to retry (503) instead of halving both.
#[utoipa::path(
    post,
    path = "/v1/ledger/verify",
    tag = "ledger",
    summary = "Run the verifier over the stored ledger now (every entry the newest checkpoint covers, pinned to the ledger's first key, with the stored-data audit); one at a time (503 while another runs).",
    responses(
        (status = 200, description = "the verdict", body = Verification),
        (status = 503, description = "a verification is running; retry when it is done", body = ErrorBody,
            headers(("Retry-After" = u64, description = "seconds")))
    )
)]
async fn verify(State(state): State<AppState>) -> Result<Json<Verification>, ApiError> {
    // Owned, so a run whose caller went away still holds it until the run ends.
    let permit = state.verifying.clone().try_acquire_owned().map_err(|_| {
        ApiError::Unavailable("a verification is running; retry when it is done".into())
    })?;
    let started = std::time::Instant::now();
    let opts = Options {
        trusted: crate::read::audit::first_key(&state.store)
            .await?
            .into_iter()
            .collect(),
        state: None,
        // Freshness is a monitoring question; this asks whether what is stored is intact.
        max_age_ns: None,
        now_ns: crate::sys::now_ns(),
        threads: 0,
    };
    // The whole run on a blocking thread: besides the signature checks (already on threads of
    // their own) the stored-data audit hashes every entry, which must not hold a runtime worker.
    let store = state.store.clone();
    let runtime = tokio::runtime::Handle::current();
    let (report, uncovered) = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        runtime.block_on(crate::read::audit::verify_store(&store, opts, None))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    let s = &report.summary;
    Ok(Json(Verification {
        ok: report.exit_code == 0,
        verdict: verdict(&report),
        exit_code: report.exit_code,
        summary: VerifySummary {
            origin: s.origin.clone(),
            first_seq: s.first_seq,
            last_seq: s.last_seq,
            entries: s.entries,
            signatures: s.signatures,
            checkpoints: s.checkpoints,
            checkpoints_valid: s.checkpoints_valid,
            redacted: s.redacted,
            covered_to: s.covered_to,
            newest_size: s.newest.as_ref().map(|n| n.size),
            newest_root: s.newest.as_ref().map(|n| n.root.to_b64()),
            keys: s.keys.len(),
            uncovered,
        },
        findings: report
            .findings
            .iter()
            .map(|f| FindingView {
                class: f.class.as_str(),
                seq: f.seq,
                detail: f.detail.clone(),
            })
            .collect(),
        suppressed: report
            .suppressed
            .iter()
            .map(|(c, n)| (c.as_str(), *n))
            .collect(),
        elapsed_ms: started.elapsed().as_millis(),
    }))
}
