//! The ledger for reviewers: checkpoints, entries, proofs, keys and streamed bundles.

use super::{ApiError, AppState};
use crate::core::hash::{Hash, b64};
use crate::export::{self, BundlePlan};
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SizeQuery {
    size: Option<u64>,
}

/// The newest signed checkpoint (or the one at `size`) as the C2SP note text.
async fn checkpoint(
    State(state): State<AppState>,
    Query(q): Query<SizeQuery>,
) -> Result<Response, ApiError> {
    let cp = match q.size {
        Some(s) => state.store.checkpoint_at(s).await?,
        None => state.store.latest_checkpoint().await?,
    };
    let cp = cp.ok_or_else(|| ApiError::NotFound("no such checkpoint".into()))?;
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

/// Streams a bundle (LEDGER.md) as JSON Lines, page by page.
async fn bundle(
    State(state): State<AppState>,
    Query(q): Query<BundleQuery>,
) -> Result<Response, ApiError> {
    let plan: BundlePlan = export::plan(&state.store, q.from, q.to, q.consistency_from).await?;
    let rx = export::stream(
        state.store.clone(),
        plan.clone(),
        crate::util::rfc3339_now(),
    );
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
