//! The web console: three static files compiled into the binary, so it works offline and shows
//! exactly what was released. They hold no data and need no token; every call they make sends
//! one. A strict Content-Security-Policy allows only our own script and style (no inline code),
//! so text that reaches the page from telemetry can never run.

use super::AppState;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::sync::LazyLock;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

const INDEX: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

/// Our own files only; `connect-src 'self'` keeps the token from being sent anywhere else, and
/// `frame-ancestors 'none'` keeps another site from framing the sign-in form.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: String,
}

impl Asset {
    fn new(body: &'static str, content_type: &'static str) -> Asset {
        let digest = Sha256::digest(body.as_bytes());
        Asset {
            body,
            content_type,
            etag: format!("\"{}\"", hex::encode(&digest[..12])),
        }
    }
}

static ASSETS: LazyLock<[Asset; 3]> = LazyLock::new(|| {
    [
        Asset::new(INDEX, "text/html; charset=utf-8"),
        Asset::new(APP_JS, "text/javascript; charset=utf-8"),
        Asset::new(APP_CSS, "text/css; charset=utf-8"),
    ]
});

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(index))
        .routes(routes!(script))
        .routes(routes!(style))
}

#[utoipa::path(
    get,
    path = "/",
    tag = "console",
    summary = "The web console (its data calls carry the signed-in token).",
    responses(
        (status = 200, description = "the console page", content_type = "text/html"),
        (status = 304, description = "not modified (ETag)")
    )
)]
async fn index(h: HeaderMap) -> Response {
    serve(&ASSETS[0], &h)
}

#[utoipa::path(
    get,
    path = "/console/app.js",
    tag = "console",
    summary = "The console's script.",
    responses(
        (status = 200, description = "script", content_type = "text/javascript"),
        (status = 304, description = "not modified (ETag)")
    )
)]
async fn script(h: HeaderMap) -> Response {
    serve(&ASSETS[1], &h)
}

#[utoipa::path(
    get,
    path = "/console/app.css",
    tag = "console",
    summary = "The console's style sheet.",
    responses(
        (status = 200, description = "style sheet", content_type = "text/css"),
        (status = 304, description = "not modified (ETag)")
    )
)]
async fn style(h: HeaderMap) -> Response {
    serve(&ASSETS[2], &h)
}

/// The file, or 304 when the browser holds this very version. `no-cache` makes the browser ask
/// each time (a cheap 304), so an upgraded server never runs with yesterday's script.
fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == asset.etag));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(etag) = HeaderValue::from_str(&asset.etag) {
        h.insert(header::ETAG, etag);
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn app() -> Router {
        let (router, _) = router().split_for_parts();
        router.with_state(AppState::new(
            crate::storage::Store::Sqlite(
                sqlx::sqlite::SqlitePoolOptions::new()
                    .connect_lazy("sqlite::memory:")
                    .unwrap(),
            ),
            None,
        ))
    }

    async fn get(path: &str, etag: Option<&str>) -> Response {
        let mut req = Request::get(path);
        if let Some(e) = etag {
            req = req.header(header::IF_NONE_MATCH, e);
        }
        app()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn the_files_are_served_with_their_types_and_a_strict_policy() {
        for (path, ctype) in [
            ("/", "text/html"),
            ("/console/app.js", "text/javascript"),
            ("/console/app.css", "text/css"),
        ] {
            let r = get(path, None).await;
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            let h = r.headers();
            assert!(h[header::CONTENT_TYPE].to_str().unwrap().starts_with(ctype));
            assert_eq!(h[header::CACHE_CONTROL], "no-cache");
            let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(csp.starts_with("default-src 'self'"), "{csp}");
            assert!(!csp.contains("unsafe"), "{csp}");
            let etag = h[header::ETAG].to_str().unwrap().to_owned();
            assert_eq!(
                get(path, Some(&etag)).await.status(),
                StatusCode::NOT_MODIFIED
            );
            assert_eq!(get(path, Some("\"other\"")).await.status(), StatusCode::OK);
        }
        assert_eq!(
            get("/console/nope.js", None).await.status(),
            StatusCode::NOT_FOUND
        );
    }

    /// Nothing is loaded from elsewhere, and nothing inline that the policy would block.
    #[test]
    fn the_page_loads_only_our_own_files() {
        for text in [INDEX, APP_JS, APP_CSS] {
            assert!(!text.contains("http://") && !text.contains("https://"));
        }
        assert!(!INDEX.contains("style="), "inline style");
        assert!(!INDEX.contains("<style"), "inline style");
        let scripts: Vec<&str> = INDEX.split("<script").skip(1).collect();
        assert_eq!(scripts.len(), 1);
        assert!(
            scripts[0]
                .trim_start()
                .starts_with("src=\"/console/app.js\"")
        );
        // Data goes in as text: the script never parses markup.
        assert!(!APP_JS.contains("innerHTML") && !APP_JS.contains("insertAdjacentHTML"));
    }

    /// The console's exception filter offers exactly the codes the rules produce.
    #[test]
    fn the_console_knows_every_exception_code() {
        let start = APP_JS.find("const EXCEPTION_CODES = [").unwrap();
        let list = &APP_JS[start..start + APP_JS[start..].find("];").unwrap()];
        let codes: Vec<&str> = list.split('\'').skip(1).step_by(2).collect();
        assert_eq!(codes, crate::core::evidence::rules::ALL);
    }
}
