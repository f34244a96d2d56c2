//! `GET /v1/openapi.json`: the REST API described as OpenAPI 3.1 — every endpoint, the role its
//! token needs, its parameters and its answers, errors included. The description is data (the
//! table below), so a test can hold it against the routes the server really has.

use crate::auth::Role;
use axum::Json;
use axum::Router;
use axum::routing::get;
use serde_json::{Map, Value, json};

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/v1/openapi.json", get(|| async { Json(document()) }))
}

/// Where a parameter goes.
#[derive(Debug, Clone, Copy)]
pub enum In {
    Path,
    Query,
}

#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    pub at: In,
    pub required: bool,
    /// JSON Schema type: "string" or "integer".
    pub ty: &'static str,
    pub about: &'static str,
}

const fn q(name: &'static str, ty: &'static str, about: &'static str) -> Param {
    Param {
        name,
        at: In::Query,
        required: false,
        ty,
        about,
    }
}

const fn q_required(name: &'static str, ty: &'static str, about: &'static str) -> Param {
    Param {
        name,
        at: In::Query,
        required: true,
        ty,
        about,
    }
}

const fn path(name: &'static str, about: &'static str) -> Param {
    Param {
        name,
        at: In::Path,
        required: true,
        ty: "string",
        about,
    }
}

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token (health checks, this document, the console's static files).
    Open,
    /// Any valid token, whatever its role.
    AnyRole,
    /// A token of this role only.
    Role(Role),
}

/// One endpoint: method, path (OpenAPI template syntax, as axum routes it), who may call it, what
/// it answers on success, and which errors it can give.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
    pub summary: &'static str,
    pub params: &'static [Param],
    /// A JSON request body: its description.
    pub body: Option<&'static str>,
    /// (status, content type, description) of the successful answers.
    pub ok: &'static [(u16, &'static str, &'static str)],
    /// Error statuses besides the 401/403 every token-protected endpoint has.
    pub errors: &'static [u16],
}

const JSON: &str = "application/json";
const TEXT: &str = "text/plain";

pub const OPERATIONS: &[Operation] = &[
    Operation {
        method: "get",
        path: "/",
        access: Access::Open,
        summary: "The web console (its data calls carry the signed-in token).",
        params: &[],
        body: None,
        ok: &[
            (200, "text/html", "the console page"),
            (304, "", "not modified (ETag)"),
        ],
        errors: &[],
    },
    Operation {
        method: "get",
        path: "/console/app.js",
        access: Access::Open,
        summary: "The console's script.",
        params: &[],
        body: None,
        ok: &[
            (200, "text/javascript", "script"),
            (304, "", "not modified (ETag)"),
        ],
        errors: &[],
    },
    Operation {
        method: "get",
        path: "/console/app.css",
        access: Access::Open,
        summary: "The console's style sheet.",
        params: &[],
        body: None,
        ok: &[
            (200, "text/css", "style sheet"),
            (304, "", "not modified (ETag)"),
        ],
        errors: &[],
    },
    Operation {
        method: "get",
        path: "/v1/session",
        access: Access::AnyRole,
        summary: "Who the token is: id, name, role and the console pages that role opens (never the secret).",
        params: &[],
        body: None,
        ok: &[(200, JSON, "{token_id, name, role, pages: [...]}")],
        errors: &[],
    },
    Operation {
        method: "get",
        path: "/healthz",
        access: Access::Open,
        summary: "Liveness: the process answers.",
        params: &[],
        body: None,
        ok: &[(200, TEXT, "ok")],
        errors: &[],
    },
    Operation {
        method: "get",
        path: "/readyz",
        access: Access::Open,
        summary: "Readiness: storage answers and the sequencer runs.",
        params: &[],
        body: None,
        ok: &[(200, TEXT, "ready")],
        errors: &[503],
    },
    Operation {
        method: "get",
        path: "/v1/openapi.json",
        access: Access::Open,
        summary: "This description of the REST API.",
        params: &[],
        body: None,
        ok: &[(200, JSON, "OpenAPI 3.1 document")],
        errors: &[],
    },
    Operation {
        method: "get",
        path: "/metrics",
        access: Access::Role(Role::Metrics),
        summary: "Prometheus text: OTLP requests by transport, signal and outcome; spans and log records received, accepted, rejected (by reason), parked, dropped (expired, overflow) and duplicate; queue depth; commits, rows per commit, commit latency; parked spans and bytes; bound traces; memory; connections open and closed per listener (by reason: cap, idle, header_timeout, body_rate, deadline, ...) and requests cut off.",
        params: &[],
        body: None,
        ok: &[(200, "text/plain; version=0.0.4", "Prometheus text format")],
        errors: &[404],
    },
    Operation {
        method: "get",
        path: "/v1/ledger/checkpoint",
        access: Access::Role(Role::Reviewer),
        summary: "The newest (or size N) checkpoint as C2SP signed-note text; as JSON with Accept: application/json.",
        params: &[q("size", "integer", "tree size of an older checkpoint")],
        body: None,
        ok: &[
            (200, TEXT, "signed note"),
            (200, JSON, "{size, root, key_id, created_ns, note}"),
        ],
        errors: &[400, 404],
    },
    Operation {
        method: "get",
        path: "/v1/ledger/entries",
        access: Access::Role(Role::Reviewer),
        summary: "Entries with their bytes, signature, salt, payload and leaf hash, a page at a time.",
        params: &[
            q("from", "integer", "first sequence number (default 0)"),
            q("limit", "integer", "entries per page, at most 1000"),
        ],
        body: None,
        ok: &[(200, JSON, "{entries: [...], next_from}")],
        errors: &[400],
    },
    Operation {
        method: "get",
        path: "/v1/ledger/proofs/inclusion",
        access: Access::Role(Role::Reviewer),
        summary: "RFC 9162 inclusion proof of one entry.",
        params: &[
            q_required("seq", "integer", "the entry"),
            q(
                "size",
                "integer",
                "tree size (default: the newest checkpoint, whose note is included)",
            ),
        ],
        body: None,
        ok: &[(
            200,
            JSON,
            "{seq, size, leaf_hash, proof: [...], checkpoint}",
        )],
        errors: &[400, 404],
    },
    Operation {
        method: "get",
        path: "/v1/ledger/proofs/consistency",
        access: Access::Role(Role::Reviewer),
        summary: "RFC 9162 consistency proof between two tree sizes.",
        params: &[
            q_required("from", "integer", "older tree size"),
            q(
                "to",
                "integer",
                "newer tree size (default: the newest checkpoint)",
            ),
        ],
        body: None,
        ok: &[(200, JSON, "{from, to, proof: [...]}")],
        errors: &[400, 404],
    },
    Operation {
        method: "get",
        path: "/v1/ledger/keys",
        access: Access::Role(Role::Reviewer),
        summary: "The origin, the current key and every key with its sequence range and rotation entry.",
        params: &[],
        body: None,
        ok: &[(200, JSON, "{origin, current, keys: [...]}")],
        errors: &[404],
    },
    Operation {
        method: "get",
        path: "/v1/ledger/bundle",
        access: Access::Role(Role::Reviewer),
        summary: "An offline evidence bundle (src/core/ledger/FORMAT.md), streamed page by page.",
        params: &[
            q("from", "integer", "first sequence number"),
            q(
                "to",
                "integer",
                "last sequence number (extended to the next checkpoint)",
            ),
            q(
                "consistency_from",
                "integer",
                "include a consistency proof from this tree size",
            ),
        ],
        body: None,
        ok: &[(200, "application/x-ndjson", "JSON Lines bundle")],
        errors: &[400, 404],
    },
    Operation {
        method: "post",
        path: "/v1/ledger/verify",
        access: Access::Role(Role::Reviewer),
        summary: "Run the verifier over the stored ledger now (every entry the newest checkpoint covers, pinned to the ledger's first key, with the stored-data audit); one at a time (503 while another runs).",
        params: &[],
        body: None,
        ok: &[(
            200,
            JSON,
            "{ok, verdict, exit_code, summary, findings: [{class, seq, detail}], suppressed, elapsed_ms}",
        )],
        errors: &[503],
    },
    Operation {
        method: "get",
        path: "/v1/admin/tokens",
        access: Access::Role(Role::Admin),
        summary: "Every token: id, name, role, created, revoked (never a secret).",
        params: &[],
        body: None,
        ok: &[(200, JSON, "{tokens: [...]}")],
        errors: &[],
    },
    Operation {
        method: "post",
        path: "/v1/admin/tokens",
        access: Access::Role(Role::Admin),
        summary: "Create a token; the token is in this answer only.",
        params: &[],
        body: Some("{role: ingest|auditor|reviewer|admin|metrics, name}"),
        ok: &[(201, JSON, "{id, name, role, token}")],
        errors: &[400],
    },
    Operation {
        method: "delete",
        path: "/v1/admin/tokens/{id}",
        access: Access::Role(Role::Admin),
        summary: "Revoke a token.",
        params: &[path("id", "the token id (the 12 hex digits after ct_)")],
        body: None,
        ok: &[(204, "", "revoked")],
        errors: &[404],
    },
    Operation {
        method: "get",
        path: "/v1/changes",
        access: Access::Role(Role::Auditor),
        summary: "Changes requested in a period, each folded from its facts, with the SOC 2 report's exceptions (production changes only). Without from and to: every change, which costs what folding them all costs.",
        params: &[
            q(
                "from",
                "string",
                "RFC 3339 time or nanoseconds since the epoch",
            ),
            q(
                "to",
                "string",
                "RFC 3339 time or nanoseconds since the epoch",
            ),
            q(
                "environment",
                "string",
                "deployment environment (case-insensitive)",
            ),
            q("service", "string", "target service (case-insensitive)"),
            q("kind", "string", "normal, standard, emergency or rollback"),
            q(
                "exception",
                "string",
                "only changes with this exception code (NO_APPROVAL, SELF_APPROVAL, ...)",
            ),
            q(
                "limit",
                "integer",
                "changes per page, 1 to 500 (default 50)",
            ),
            q("offset", "integer", "changes to skip (default 0)"),
        ],
        body: None,
        ok: &[(
            200,
            JSON,
            "{changes: [... each with exceptions: [{code, evidence}]], total, offset, limit}",
        )],
        errors: &[400],
    },
    Operation {
        method: "get",
        path: "/v1/changes/{id}",
        access: Access::Role(Role::Auditor),
        summary: "One change's evidence packet: facts folded, spans, versions, entries with inclusion proofs.",
        params: &[path("id", "the change id")],
        body: None,
        ok: &[(200, JSON, "evidence packet")],
        errors: &[404],
    },
    Operation {
        method: "get",
        path: "/v1/deploys/unlinked",
        access: Access::Role(Role::Auditor),
        summary: "Production versions seen in runtime spans that no change explains.",
        params: &[],
        body: None,
        ok: &[(200, JSON, "{unlinked_deploys: [...]}")],
        errors: &[],
    },
    Operation {
        method: "post",
        path: "/v1/reports/soc2",
        access: Access::Role(Role::Auditor),
        summary: "The SOC 2 evidence report over a period, as one zip (or tar), built against the newest checkpoint.",
        params: &[],
        body: Some(
            "{from, to, environment?, service?, sample?, seed?, format?: zip|tar}; sample and seed go together",
        ),
        ok: &[
            (
                200,
                "application/zip",
                "the report directory, manifest signed",
            ),
            (200, "application/x-tar", "the same, with format tar"),
        ],
        errors: &[400, 503],
    },
    Operation {
        method: "post",
        path: "/v1/import/conductor",
        access: Access::Role(Role::Ingest),
        summary: "Import one Conductor execution or status-listener message; idempotent.",
        params: &[q(
            "max_lateness",
            "string",
            "how long after the times they state the facts may arrive without LATE_EVIDENCE (a backfill), e.g. 7d; at most 31d here",
        )],
        body: Some("Conductor workflow execution JSON (GET /api/workflow/{id}?includeTasks=true)"),
        ok: &[
            (201, JSON, "facts were added"),
            (200, JSON, "already known"),
        ],
        errors: &[400, 503],
    },
];

fn error_response(status: u16) -> Value {
    let about = match status {
        400 => "Bad parameters or body; the message says what is wrong.",
        401 => "Missing, malformed, unknown or revoked token (WWW-Authenticate: Bearer).",
        403 => "A valid token of another role.",
        404 => "Not found.",
        503 => "Busy or temporarily unavailable: retry after the Retry-After seconds.",
        _ => "Internal error (logged by the server; the message says nothing internal).",
    };
    let mut r = json!({
        "description": about,
        "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}},
    });
    if status == 503 {
        r["headers"] =
            json!({"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}});
    }
    r
}

/// The OpenAPI document.
pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for op in OPERATIONS {
        let mut responses = Map::new();
        for (status, ctype, about) in op.ok {
            let entry = responses
                .entry(status.to_string())
                .or_insert_with(|| json!({"description": about}));
            if !ctype.is_empty() {
                entry["content"][*ctype] = json!({});
            }
        }
        let mut errors: Vec<u16> = op.errors.to_vec();
        match op.access {
            Access::Open => {}
            Access::AnyRole => errors.push(401),
            Access::Role(_) => errors.extend([401, 403]),
        }
        errors.push(500);
        errors.sort_unstable();
        errors.dedup();
        for s in errors {
            responses.insert(s.to_string(), error_response(s));
        }
        let params: Vec<Value> = op
            .params
            .iter()
            .map(|p| {
                json!({
                    "name": p.name,
                    "in": match p.at { In::Path => "path", In::Query => "query" },
                    "required": p.required,
                    "description": p.about,
                    "schema": {"type": p.ty},
                })
            })
            .collect();
        let (role_note, role) = match op.access {
            Access::Role(r) => (format!("Needs a token of role `{r}`."), Some(r.as_str())),
            Access::AnyRole => ("Needs a valid token of any role.".to_owned(), Some("any")),
            Access::Open => ("No token needed.".to_owned(), None),
        };
        let mut o = json!({
            "summary": op.summary,
            "description": role_note,
            "operationId": operation_id(op),
            "parameters": params,
            "responses": responses,
            "security": match op.access {
                Access::Open => json!([]),
                _ => json!([{"bearer": []}]),
            },
            "x-changetrail-role": role,
        });
        if let Some(b) = op.body {
            o["requestBody"] = json!({
                "required": true,
                "description": b,
                "content": {JSON: {"schema": {"type": "object"}}},
            });
        }
        paths
            .entry(op.path.to_owned())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .map(|m| m.insert(op.method.to_owned(), o));
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "changetrail REST API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Signed, hash-chained audit evidence for production changes. Every endpoint but the health checks and this document needs `Authorization: Bearer <token>` of the one role it names; roles are narrow (ingest, auditor, reviewer, admin, metrics). OTLP is served on its own ports (gRPC :4317, HTTP :4318) and described by the OTLP specification.",
        },
        "servers": [{"url": "http://localhost:8080"}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "ct_<id>_<secret>"}},
            "schemas": {"Error": {
                "type": "object",
                "required": ["error", "message"],
                "properties": {
                    "error": {"type": "string", "enum": ["bad_request", "unauthorized", "forbidden", "not_found", "unavailable", "internal"]},
                    "message": {"type": "string"},
                },
            }},
        },
    })
}

/// `get_v1_changes_id` style: unique per method and path.
fn operation_id(op: &Operation) -> String {
    let mut id = op.method.to_owned();
    for part in op.path.split('/').filter(|p| !p.is_empty()) {
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
    fn every_operation_is_listed_once_with_its_role_and_errors() {
        let doc = document();
        let mut ids = BTreeSet::new();
        for op in OPERATIONS {
            let o = &doc["paths"][op.path][op.method];
            assert!(o.is_object(), "{} {}", op.method, op.path);
            assert!(ids.insert(o["operationId"].as_str().unwrap().to_owned()));
            let responses = o["responses"].as_object().unwrap();
            assert!(responses.contains_key("500"));
            match op.access {
                Access::Role(r) => {
                    assert_eq!(o["x-changetrail-role"], r.as_str());
                    assert!(responses.contains_key("401") && responses.contains_key("403"));
                }
                Access::AnyRole => {
                    assert_eq!(o["x-changetrail-role"], "any");
                    assert!(responses.contains_key("401") && !responses.contains_key("403"));
                }
                Access::Open => assert!(!responses.contains_key("401")),
            }
            // Every path template parameter is declared, and only those.
            let declared: BTreeSet<&str> = op
                .params
                .iter()
                .filter(|p| matches!(p.at, In::Path))
                .map(|p| p.name)
                .collect();
            let in_path: BTreeSet<&str> = op
                .path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            assert_eq!(declared, in_path, "{}", op.path);
        }
        assert!(
            doc["paths"]["/v1/reports/soc2"]["post"]["responses"]["503"]["headers"]["Retry-After"]
                .is_object()
        );
    }
}
