//! Reports for auditors: `POST /v1/reports/soc2` builds the report against the newest checkpoint
//! and answers the whole directory as one zip (or tar), signed manifest included.

use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::report::{self, Query, ReportError};
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What a process that serves reports holds: the settings and the ledger key that signs them.
pub struct ReportContext {
    pub settings: report::Settings,
    pub key: crate::pipeline::KeyHandle,
    /// One report at a time: a second request is told to retry instead of doubling the load.
    pub running: tokio::sync::Semaphore,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(soc2))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Soc2Request {
    #[serde(flatten)]
    query: Query,
    /// `zip` (default) or `tar`.
    #[serde(default)]
    format: Option<String>,
}

impl From<ReportError> for ApiError {
    fn from(e: ReportError) -> ApiError {
        match e {
            ReportError::Invalid(m) => ApiError::BadRequest(m),
            ReportError::NoCheckpoint => ApiError::Unavailable(e.to_string()),
            ReportError::Storage(s) => s.into(),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

#[utoipa::path(
    post,
    path = "/v1/reports/soc2",
    tag = "reports",
    summary = "The SOC 2 evidence report over a period, as one zip (or tar), built against the newest checkpoint.",
    request_body(
        content = Object,
        description = "{from, to, environment?, service?, sample?, seed?, format?: zip|tar}; sample and seed go together"
    ),
    responses(
        (status = 200, description = "the report directory, manifest signed; a tar with format tar",
            content(("application/zip"), ("application/x-tar"))),
        (status = 400, description = "bad period, filter, sample or format", body = ErrorBody),
        (status = 422, description = "the body lacks a field or has one of the wrong type (plain text)", body = String),
        (status = 503, description = "a report is being built, no checkpoint yet, or this process does not sign reports",
            body = ErrorBody, headers(("Retry-After" = u64, description = "seconds")))
    )
)]
async fn soc2(
    State(state): State<AppState>,
    Json(req): Json<Soc2Request>,
) -> Result<Response, ApiError> {
    let ctx = state
        .reports
        .clone()
        .ok_or_else(|| ApiError::Unavailable("this process does not sign reports".into()))?;
    let tar = match req.format.as_deref() {
        None | Some("zip") => false,
        Some("tar") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "format {other:?}: use \"zip\" or \"tar\""
            )));
        }
    };
    req.query.period()?;
    let _permit = ctx.running.try_acquire().map_err(|_| {
        ApiError::Unavailable("a report is being built; retry when it is done".into())
    })?;
    let tmp = tempfile::tempdir().map_err(|e| ApiError::Internal(e.to_string()))?;
    let dir = tmp.path().join("report");
    let key = ctx.key.current();
    let job = report::Job {
        store: &state.store,
        key: &key,
        query: &req.query,
        settings: &ctx.settings,
        out: &dir,
        now_ns: crate::sys::now_ns(),
    };
    let out = report::build(job, Arc::new(report::NoProgress)).await?;
    let name = format!(
        "changetrail-soc2-{}-{}",
        &out.manifest.period_start.get(..10).unwrap_or("from"),
        &out.manifest.period_end.get(..10).unwrap_or("to")
    );
    // Pack into a file beside the report (reports can be large), then stream it; the temporary
    // directory lives until the body is sent.
    let packed = tmp.path().join("packed");
    let dir2 = dir.clone();
    let packed2 = packed.clone();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let f = std::io::BufWriter::new(std::fs::File::create(&packed2)?);
        if tar {
            report::archive::tar_dir(&dir2, f)
        } else {
            report::archive::zip_dir(&dir2, f)
        }
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let file = tokio::fs::File::open(&packed)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let len = file
        .metadata()
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .len();
    let stream = futures::stream::unfold(
        (tokio_util::io::ReaderStream::new(file), tmp),
        |(mut s, tmp)| async move {
            use futures::StreamExt;
            s.next().await.map(|chunk| (chunk, (s, tmp)))
        },
    );
    let (ctype, ext) = if tar {
        ("application/x-tar", "tar")
    } else {
        ("application/zip", "zip")
    };
    Ok((
        [
            (header::CONTENT_TYPE, ctype.to_owned()),
            (header::CONTENT_LENGTH, len.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}.{ext}\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
