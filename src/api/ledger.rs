//! The ledger for reviewers: checkpoints, entries, proofs, keys and streamed bundles.

use super::{ApiError, AppState};
use crate::core::ledger::hash::{Hash, b64};
use crate::core::ledger::verify::{Class, Options, Report};
use crate::read::export::{self, BundlePlan};
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

/// Entries per page at most.
const MAX_LIMIT: u64 = 1000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/ledger/checkpoint", get(checkpoint))
        .route("/v1/ledger/entries", get(entries))
        .route("/v1/ledger/proofs/inclusion", get(inclusion))
        .route("/v1/ledger/proofs/consistency", get(consistency))
        .route("/v1/ledger/keys", get(keys))
        .route("/v1/ledger/bundle", get(bundle))
        .route("/v1/ledger/verify", post(verify))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SizeQuery {
    size: Option<u64>,
}

/// The newest signed checkpoint (or the one at `size`) as the C2SP note text; as JSON with its
/// size, root and time beside the note when the caller accepts `application/json` (the console).
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
    if wants_json {
        return Ok(Json(serde_json::json!({
            "size": cp.size,
            "root": cp.root.to_b64(),
            "key_id": cp.key_id,
            "created_ns": cp.created_ns,
            "note": cp.note,
        }))
        .into_response());
    }
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        cp.note,
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntriesQuery {
    from: Option<u64>,
    limit: Option<u64>,
}

#[derive(Serialize)]
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InclusionQuery {
    seq: u64,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsistencyQuery {
    from: u64,
    to: Option<u64>,
}

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BundleQuery {
    from: Option<u64>,
    to: Option<u64>,
    consistency_from: Option<u64>,
}

/// Streams a bundle (src/core/ledger/FORMAT.md) as JSON Lines, page by page.
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
#[derive(Serialize)]
struct Verification {
    ok: bool,
    verdict: &'static str,
    exit_code: i32,
    summary: VerifySummary,
    findings: Vec<FindingView>,
    /// Findings beyond the verifier's per-class cap, by class.
    suppressed: std::collections::BTreeMap<&'static str, u64>,
    elapsed_ms: u128,
}

#[derive(Serialize)]
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

#[derive(Serialize)]
struct FindingView {
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
