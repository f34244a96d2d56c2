//! `POST /v1/gate` (role `gate`): may this change deploy this artifact to this environment now?
//! A workflow's HTTP task asks before its deploy step: 200 allows, 409 denies (so the task, and
//! the workflow, fail). Every decision is a ledger entry before it is answered (`read::gate`).

use super::AppState;
use super::error::{ApiError, ErrorBody};
use crate::auth::Principal;
use crate::core::evidence::SentBy;
use crate::core::evidence::gate::{GateReason, GateRequest};
use crate::read::gate::{self, GateError};
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(gate))
}

/// What a workflow asks.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct GateBody {
    /// The change about to deploy (as its facts name it: the workflow's change id).
    change_id: String,
    /// Where it is about to deploy.
    environment: String,
    /// What it is about to deploy (e.g. `sha256:…`).
    artifact_digest: String,
}

/// The decision.
#[derive(Serialize, ToSchema)]
struct GateAnswer {
    /// `allow` or `deny`.
    decision: String,
    /// Why: codes scripts match on (the report's exception codes and the gate's own), each
    /// with words for people.
    #[schema(value_type = Vec<Object>)]
    reasons: Vec<GateReason>,
    /// The ledger entry that records this decision.
    entry_seq: u64,
    /// The ledger size whose entries the decision read.
    evidence_size: u64,
    change_id: String,
}

/// Longest value a field may hold: ids and digests are short, and everything here is stored.
const MAX_FIELD: usize = 256;

fn field(v: &str, name: &str) -> Result<String, ApiError> {
    let v = v.trim();
    if v.is_empty() || v.len() > MAX_FIELD || v.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!(
            "{name} is required: 1 to {MAX_FIELD} bytes, no control characters"
        )));
    }
    Ok(v.to_owned())
}

#[utoipa::path(
    post,
    path = "/v1/gate",
    tag = "gate",
    summary = "May this change deploy this artifact to this environment now? Decided from the evidence committed so far, recorded as a ledger entry, then answered.",
    description = "Allows when the change's facts state this environment and artifact and, for a production environment, the requester is proven by a token and an approval says approved that is verified by a token, by someone other than the requester, holding an approver role for the service (when roles are configured), for this artifact (its approved subject, exactly or shortened to at least 12 hex digits with a trailing `...`, and the token's artifact and change claims, where stated), decided after the request and before now, not received late; the latest such approval counts and no rejection comes at or after it; and none of these is open against the change: SELF_APPROVAL, APPROVER_NOT_AUTHORIZED, APPROVED_SUBJECT_MISMATCH, APPROVAL_TOKEN_MISMATCH, APPROVAL_BYPASSED, TOKEN_REUSED, CREDENTIAL_NOT_ROTATED, CONFLICTING_EVIDENCE, HISTORY_REWRITTEN, EVIDENCE_GAP. A rollback needs an approval like any change. Any change to a non-production environment its facts state is allowed (NOT_PRODUCTION). Otherwise denies with every reason: also CHANGE_UNKNOWN, ENVIRONMENT_MISMATCH, ARTIFACT_MISMATCH, NO_APPROVAL, UNVERIFIED_IDENTITY, APPROVAL_DECISION_MISSING, APPROVAL_BEFORE_REQUEST, LATE_EVIDENCE, APPROVAL_REJECTED. 409 on deny so a Conductor HTTP task fails. Every decision is a `gate.decided` entry of the change, recorded before the answer; the report's population shows gate_decision and gate_seq.",
    request_body = GateBody,
    responses(
        (status = 200, description = "allow", body = GateAnswer),
        (status = 409, description = "deny", body = GateAnswer),
        (status = 400, description = "an empty, over-long or control-character field", body = ErrorBody),
        (status = 422, description = "the body lacks a field, has an unknown one or one of the wrong type (plain text)", body = String),
        (status = 503, description = "busy, or this process does not append: retry", body = ErrorBody,
            headers(("Retry-After" = u64, description = "seconds")))
    )
)]
async fn gate(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Json(body): Json<GateBody>,
) -> Result<(StatusCode, Json<GateAnswer>), ApiError> {
    let appender = state
        .appender
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("this process does not append".into()))?;
    let req = GateRequest {
        change_id: field(&body.change_id, "change_id")?,
        environment: field(&body.environment, "environment")?,
        artifact_digest: field(&body.artifact_digest, "artifact_digest")?,
    };
    let asked_by = SentBy {
        token_id: Some(principal.token_id.clone()),
        name: principal.name.clone(),
    };
    let d = gate::decide(
        &state.store,
        appender,
        &state.correlation.criteria,
        &req,
        asked_by,
    )
    .await
    .map_err(|e| match e {
        e if e.is_transient() => ApiError::Unavailable("changetrail is busy; retry shortly".into()),
        GateError::Storage(s) => s.into(),
        e => ApiError::Internal(e.to_string()),
    })?;
    let status = if d.fact.allowed() {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    Ok((
        status,
        Json(GateAnswer {
            decision: d.fact.decision,
            reasons: d.fact.reasons,
            entry_seq: d.entry_seq,
            evidence_size: d.fact.evidence_size,
            change_id: req.change_id,
        }),
    ))
}
