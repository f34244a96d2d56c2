//! `GET /v1/openapi.json`: the REST API described as OpenAPI 3.1 — every endpoint, the role its
//! token needs, its parameters and its answers, errors included. Each handler describes itself
//! (`#[utoipa::path]`) and is routed by the same `routes!` call that documents it; the role comes
//! from the list in `api/mod.rs` that also decides which check guards it, so the document cannot
//! drift from what the server does.

use super::error::ErrorBody;
use crate::auth::Role;
use axum::Json;
use std::sync::LazyLock;
use utoipa::OpenApi;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Ref, ResponseBuilder};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Who may call a part of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token (health checks, this document, the console's static files).
    Open,
    /// Any valid token, whatever its role.
    AnyRole,
    /// A token of this role only.
    Role(Role),
    /// A token of any of these roles.
    Roles(&'static [Role]),
}

/// What the document says beyond the operations: title, server, the bearer scheme.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "changetrail REST API",
        description = "Signed, hash-chained audit evidence for production changes. Every endpoint but the health checks and this document needs `Authorization: Bearer <token>` of the one role it names; roles are narrow (ingest, auditor, reviewer, admin, metrics, gate). OTLP is served on its own ports (gRPC :4317, HTTP :4318) and described by the OTLP specification."
    ),
    servers((url = "http://localhost:8080")),
    components(schemas(ErrorBody)),
    modifiers(&Bearer)
)]
struct ApiDoc;

struct Bearer;

impl utoipa::Modify for Bearer {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("ct_<id>_<secret>"))
            .build();
        api.components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

pub fn router<S: Clone + Send + Sync + 'static>() -> OpenApiRouter<S> {
    OpenApiRouter::new().routes(routes!(openapi_json))
}

/// Built once: it depends on the code only, never on the state.
static DOCUMENT: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(document);

#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "meta",
    summary = "This description of the REST API.",
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object))
)]
async fn openapi_json() -> Json<&'static utoipa::openapi::OpenApi> {
    Json(&DOCUMENT)
}

/// The OpenAPI document: every part of the API, each operation marked with the access its part
/// is served with.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    for (access, part) in super::parts() {
        let (_, mut api) = part.split_for_parts();
        describe_access(&mut api, access);
        doc.merge(api);
    }
    doc
}

/// Adds to every operation of one part what its access implies: the role (as the description
/// says it and as `x-changetrail-role` for tools), the bearer requirement, the 401/403 answers
/// the role check gives and the 500 any handler may; and an `operationId` from method and path,
/// unique where handler names are not.
fn describe_access(api: &mut utoipa::openapi::OpenApi, access: Access) {
    let (note, role) = match access {
        Access::Role(r) => (
            format!("Needs a token of role `{r}`."),
            Some(r.as_str().to_owned()),
        ),
        Access::Roles(rs) => (
            format!(
                "Needs a token of role {}.",
                rs.iter()
                    .map(|r| format!("`{r}`"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
            Some(rs.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(",")),
        ),
        Access::AnyRole => (
            "Needs a valid token of any role.".to_owned(),
            Some("any".to_owned()),
        ),
        Access::Open => ("No token needed.".to_owned(), None),
    };
    for (path, item) in api.paths.paths.iter_mut() {
        let ops = [
            ("get", &mut item.get),
            ("put", &mut item.put),
            ("post", &mut item.post),
            ("delete", &mut item.delete),
            ("patch", &mut item.patch),
        ];
        for (method, op) in ops {
            let Some(op) = op.as_mut() else { continue };
            op.operation_id = Some(operation_id(method, path));
            op.description = Some(match op.description.take() {
                Some(d) if !d.is_empty() => format!("{d}\n\n{note}"),
                _ => note.clone(),
            });
            op.extensions
                .get_or_insert_with(Default::default)
                .insert("x-changetrail-role".into(), role.clone().into());
            op.security = Some(match access {
                Access::Open => vec![],
                _ => vec![SecurityRequirement::new("bearer", Vec::<String>::new())],
            });
            match access {
                Access::Open => {}
                Access::AnyRole => error(op, 401),
                Access::Role(_) | Access::Roles(_) => {
                    error(op, 401);
                    error(op, 403);
                }
            }
            error(op, 500);
        }
    }
}

/// A shared error answer, unless the handler already describes that status.
fn error(op: &mut Operation, status: u16) {
    let about = match status {
        401 => "Missing, malformed, unknown or revoked token (WWW-Authenticate: Bearer).",
        403 => "A valid token of another role.",
        _ => "Internal error (logged by the server; the message says nothing internal).",
    };
    op.responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| {
            ResponseBuilder::new()
                .description(about)
                .content(
                    "application/json",
                    utoipa::openapi::ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Error")))
                        .build(),
                )
                .build()
                .into()
        });
}

/// `get_v1_changes_id` style: unique per method and path.
fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_owned();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        id.push('_');
        id.extend(
            part.chars()
                .filter(|c| !matches!(c, '{' | '}'))
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
        );
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_operation_has_a_unique_id_its_role_and_its_errors() {
        let doc = serde_json::to_value(document()).unwrap();
        let mut ids = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, o) in item.as_object().unwrap() {
                assert!(ids.insert(o["operationId"].as_str().unwrap().to_owned()));
                let responses = o["responses"].as_object().unwrap();
                assert!(responses.contains_key("500"), "{method} {path}");
                match o["x-changetrail-role"].as_str() {
                    None => assert!(!responses.contains_key("401"), "{method} {path}"),
                    Some("any") => assert!(!responses.contains_key("403")),
                    Some(_) => assert!(responses.contains_key("403"), "{method} {path}"),
                }
                // Every path template parameter is declared, and only those.
                let declared: BTreeSet<&str> = o["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["in"] == "path")
                    .filter_map(|p| p["name"].as_str())
                    .collect();
                let in_path: BTreeSet<&str> = path
                    .split('/')
                    .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                    .collect();
                assert_eq!(declared, in_path, "{path}");
            }
        }
        assert!(ids.len() >= 23, "{ids:?}");
        assert!(
            doc["paths"]["/v1/reports/soc2"]["post"]["responses"]["503"]["headers"]["Retry-After"]
                .is_object()
        );
    }
}
