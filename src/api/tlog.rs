//! The ledger as a C2SP tlog-tiles log (<https://c2sp.org/tlog-tiles>): `<prefix>checkpoint`,
//! `<prefix>tile/<L>/<N>[.p/<W>]` and `<prefix>tile/entries/<N>[.p/<W>]`, so tools nobody here
//! wrote can read and check it. Only what the newest checkpoint covers is served; tiles never
//! change once served, so they are cached for a year.
//!
//! The routes are declared (and documented) at the default prefix `/tlog/`; another configured
//! prefix is mapped onto it before routing by `mount`, and the default paths then answer 404.

use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::core::ledger::tiles::{Tile, TileKind};
use crate::read::tlog::{served_checkpoint_note, tile_bytes};
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use std::io::Write;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Where the routes are declared; `[tlog] prefix` moves them.
pub const DEFAULT_PREFIX: &str = "/tlog/";

/// Tiles and bundles never change once a checkpoint covers them.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Entry bundles behind the reviewer role: a shared cache (a CDN, a proxy) must not keep one
/// answered to a reviewer and hand it to anyone (`public` would allow exactly that).
const IMMUTABLE_PRIVATE: &str = "private, max-age=31536000, immutable";

/// How the tlog-tiles view is served (`[tlog]`).
#[derive(Debug, Clone)]
pub struct TlogAccess {
    /// Where the routes are mounted: starts and ends with '/'.
    pub prefix: String,
    /// Entry bundles without the reviewer role.
    pub public_entries: bool,
}

impl Default for TlogAccess {
    fn default() -> Self {
        TlogAccess {
            prefix: DEFAULT_PREFIX.to_owned(),
            public_entries: false,
        }
    }
}

/// The checkpoint and the tree's tiles: hashes only, open to anyone.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(checkpoint))
        .routes(routes!(tile))
}

/// The entry bundles: our entry bytes, for reviewers unless `public_entries`.
pub fn entries_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(entries))
}

/// `app` with the tlog routes answering under `prefix` instead of the default: requests under
/// `prefix` are rewritten to the default paths before routing, and requests to the default paths
/// are turned away (404), so the log has one address.
pub fn mount(app: Router, prefix: &str) -> Router {
    if prefix == DEFAULT_PREFIX {
        return app;
    }
    let prefix = prefix.to_owned();
    let rewritten = tower::ServiceExt::map_request(app, move |mut req: Request| {
        let Some(path) = routed_path(&prefix, req.uri().path()) else {
            return req;
        };
        let pq = match req.uri().query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        let mut parts = req.uri().clone().into_parts();
        // Built from a URI that parsed, with an ASCII prefix: it parses too.
        parts.path_and_query = pq.parse().ok();
        match axum::http::Uri::from_parts(parts) {
            Ok(uri) => *req.uri_mut() = uri,
            Err(_) => *req.uri_mut() = axum::http::Uri::from_static(UNMOUNTED),
        }
        req
    });
    Router::new().fallback_service(rewritten)
}

/// Where nothing is routed: default-prefix requests go here when another prefix is configured.
const UNMOUNTED: &str = "/.unmounted";

/// The path a request to `path` is routed by when the log is mounted at `prefix` (not the
/// default): under `prefix`, the same under the default; under the default, nowhere; otherwise
/// unchanged (`None`).
fn routed_path(prefix: &str, path: &str) -> Option<String> {
    if let Some(rest) = path.strip_prefix(prefix) {
        Some(format!("{DEFAULT_PREFIX}{rest}"))
    } else {
        path.starts_with(DEFAULT_PREFIX)
            .then(|| format!("{UNMOUNTED}{path}"))
    }
}

/// The newest checkpoint, as the tlog-tiles spec serves it.
#[utoipa::path(
    get,
    path = "/tlog/checkpoint",
    tag = "tlog",
    summary = "The newest checkpoint (C2SP tlog-checkpoint signed note). The prefix /tlog/ is [tlog] prefix.",
    responses(
        (status = 200, description = "the signed note", content_type = "text/plain; charset=utf-8", body = String),
        (status = 404, description = "no checkpoint yet", body = ErrorBody)
    )
)]
async fn checkpoint(State(state): State<AppState>) -> Result<Response, ApiError> {
    let cp = state
        .store
        .latest_checkpoint()
        .await?
        .ok_or_else(|| ApiError::NotFound("no checkpoint yet".into()))?;
    let note = served_checkpoint_note(&state.store, &cp).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            // Mutable: a new checkpoint may come any second.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        note,
    )
        .into_response())
}

/// A tile of tree hashes.
#[utoipa::path(
    get,
    path = "/tlog/tile/{*tile}",
    tag = "tlog",
    summary = "A tile of tree hashes (C2SP tlog-tiles): <L>/<N>[.p/<W>], e.g. 0/x001/234.p/17.",
    params(("*tile" = String, Path, description = "<L>/<N>[.p/<W>] as C2SP tlog-tiles spells it")),
    responses(
        (status = 200, description = "W (256 for a full tile) hashes of 32 bytes", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 404, description = "a malformed path, or a tile the newest checkpoint does not contain", body = ErrorBody)
    )
)]
async fn tile(
    State(state): State<AppState>,
    Path(rest): Path<String>,
) -> Result<Response, ApiError> {
    let tile = match parse(&format!("tile/{rest}")) {
        // `tile/entries/…` has a route of its own; this one only sees it spelt oddly.
        Ok(t) if t.kind() == TileKind::Entries => Err(ApiError::NotFound("not a tile path".into())),
        other => other,
    };
    Ok(not_cached(match tile {
        Ok(t) => serve(&state, &t, &HeaderMap::new()).await,
        Err(e) => Err(e),
    }))
}

/// An entry bundle.
#[utoipa::path(
    get,
    path = "/tlog/tile/entries/{*bundle}",
    tag = "tlog",
    summary = "An entry bundle (C2SP tlog-tiles): <N>[.p/<W>]; gzip when accepted. Open to all with [tlog] public_entries.",
    params(("*bundle" = String, Path, description = "<N>[.p/<W>] as C2SP tlog-tiles spells it")),
    responses(
        (status = 200, description = "W entries, each a big-endian u16 length and the entry bytes", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 404, description = "a malformed path, or a bundle the newest checkpoint does not contain", body = ErrorBody)
    )
)]
async fn entries(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(rest): Path<String>,
) -> Result<Response, ApiError> {
    Ok(not_cached(match parse(&format!("tile/entries/{rest}")) {
        Ok(t) => serve(&state, &t, &headers).await,
        Err(e) => Err(e),
    }))
}

fn parse(path: &str) -> Result<Tile, ApiError> {
    Tile::parse(path).map_err(|e| ApiError::NotFound(e.to_string()))
}

/// A 404 no cache may keep: the tile it names exists once a later checkpoint covers it.
fn not_cached(r: Result<Response, ApiError>) -> Response {
    let mut resp = r.into_response();
    if resp.status() == axum::http::StatusCode::NOT_FOUND {
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

async fn serve(state: &AppState, tile: &Tile, headers: &HeaderMap) -> Result<Response, ApiError> {
    let size = state
        .store
        .latest_checkpoint()
        .await?
        .map_or(0, |cp| cp.size);
    let body = tile_bytes(&state.store, tile, size)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("{tile} is not in the newest checkpoint")))?;
    let mut resp_headers = HeaderMap::new();
    resp_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    let cache = if tile.kind() == TileKind::Entries && !state.tlog.public_entries {
        IMMUTABLE_PRIVATE
    } else {
        IMMUTABLE
    };
    resp_headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    let mut body = body;
    if tile.kind() == TileKind::Entries {
        resp_headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        if accepts_gzip(headers) {
            body = gzip(&body).map_err(|e| ApiError::Internal(format!("gzip: {e}")))?;
            resp_headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
    }
    Ok((resp_headers, body).into_response())
}

/// Whether `Accept-Encoding` names gzip without refusing it (`gzip;q=0`).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            coding.eq_ignore_ascii_case("gzip") && !refused
        })
}

/// `bytes` gzip-compressed: the spec asks bundles to be compressed on the wire (tiles of hashes
/// would not compress).
fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes)?;
    gz.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_prefix_moves_the_log_and_nothing_else() {
        let at = |p| routed_path("/logs/prod/", p);
        assert_eq!(
            at("/logs/prod/checkpoint").as_deref(),
            Some("/tlog/checkpoint")
        );
        assert_eq!(
            at("/logs/prod/tile/0/000").as_deref(),
            Some("/tlog/tile/0/000")
        );
        assert_eq!(
            at("/tlog/checkpoint").as_deref(),
            Some("/.unmounted/tlog/checkpoint")
        );
        assert_eq!(at("/v1/ledger/checkpoint"), None);
        assert_eq!(at("/logs/prodcheckpoint"), None);
        // A prefix below the default one still moves it.
        let at = |p| routed_path("/tlog/v2/", p);
        assert_eq!(
            at("/tlog/v2/checkpoint").as_deref(),
            Some("/tlog/checkpoint")
        );
        assert_eq!(
            at("/tlog/checkpoint").as_deref(),
            Some("/.unmounted/tlog/checkpoint")
        );
    }

    #[test]
    fn gzip_is_used_only_when_accepted() {
        let h = |v: &'static str| {
            let mut m = HeaderMap::new();
            m.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(v));
            m
        };
        assert!(accepts_gzip(&h("gzip")));
        assert!(accepts_gzip(&h("br, GZIP;q=0.5, identity")));
        assert!(!accepts_gzip(&h("gzip;q=0")));
        assert!(!accepts_gzip(&h("identity")));
        assert!(!accepts_gzip(&h("x-gzip")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
