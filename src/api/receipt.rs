//! `GET /v1/changes/{id}/receipt`: one change's self-contained receipt (`read::receipt`), the
//! file `changetrail proof` writes, checked offline by `changetrail verify-proof`.

use super::AppState;
use super::error::{ApiError, ErrorBody};
use crate::read::receipt::ReceiptError;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(receipt))
}

#[utoipa::path(
    get,
    path = "/v1/changes/{id}/receipt",
    tag = "changes",
    summary = "One change's self-contained receipt: its entries, a C2SP tlog-proof for each against the cosigned checkpoint, and the key chain; check it offline with `changetrail verify-proof`.",
    params(("id" = String, Path, description = "the change id")),
    responses(
        (status = 200, description = "the receipt (changetrail-receipt/v1, canonical JSON: save the bytes as they are); header X-Changetrail-Witnessed: true, false (no checkpoint covering the change meets [tlog] policy_file's quorum yet) or no-policy", body = Object),
        (status = 400, description = "more entries than a receipt holds: export a bundle", body = ErrorBody),
        (status = 404, description = "no such change", body = ErrorBody),
        (status = 503, description = "none of the change's entries is covered by a checkpoint yet; retry after the next one", body = ErrorBody)
    )
)]
async fn receipt(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let policy = state.witnessing.as_ref().map(|w| w.policy.as_ref());
    let r = crate::read::receipt::receipt(&state.store, &id, &state.correlation.criteria, policy)
        .await
        .map_err(|e| match e {
            ReceiptError::NotYet(m) => ApiError::Unavailable(m),
            ReceiptError::TooLarge(m) => ApiError::BadRequest(m),
            ReceiptError::Faulty(m) => ApiError::Internal(m),
            ReceiptError::Storage(s) => s.into(),
            ReceiptError::Export(x) => x.into(),
        })?
        .ok_or_else(|| ApiError::NotFound(format!("no change {id:?}")))?;
    let witnessed = match r.witnessed {
        None => "no-policy",
        Some(true) => "true",
        Some(false) => "false",
    };
    let r = r.receipt;
    let disposition = format!("attachment; filename=\"{}.receipt.json\"", safe_name(&id));
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
            // Whether the checkpoint meets [tlog] policy_file's quorum (none did, when false).
            (
                header::HeaderName::from_static("x-changetrail-witnessed"),
                witnessed.to_owned(),
            ),
        ],
        r.to_text(),
    ))
}

/// The change id as a file name: anything but letters, digits, `-`, `_` and `.` becomes `_`.
fn safe_name(id: &str) -> String {
    id.chars()
        .take(100)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}
