//! `GET /v1/openapi.json` against the routes the server really has: every route in src/api is
//! described, every described operation exists with the role it states, and the document is valid
//! OpenAPI (checked by openapi-spec-validator when the test venv is there).

use crate::support::python::python;
use crate::support::server::{TestDb, spawn_app};
use changetrail::api::openapi::{Access, OPERATIONS, document};
use changetrail::auth::Role;
use std::collections::BTreeSet;

/// The `.rs` files under `dir`, its subdirectories included (`api/console/mod.rs`).
fn rust_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for f in std::fs::read_dir(dir).unwrap() {
        let path = f.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// (method, path) of every `.route(…)` in the REST API's source.
fn routes_in_source() -> BTreeSet<(String, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/api");
    let mut out = BTreeSet::new();
    for f in rust_files(std::path::Path::new(dir)) {
        let text = std::fs::read_to_string(f).unwrap();
        for (at, _) in text.match_indices(".route(") {
            // The call's arguments, up to its closing parenthesis.
            let rest = &text[at + ".route(".len()..];
            let mut depth = 1;
            let end = rest
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '(' => 1,
                        ')' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map(|(i, _)| i)
                .unwrap();
            let args = &rest[..end];
            let path = args.split('"').nth(1).unwrap().to_owned();
            let mut found = false;
            for m in ["get", "post", "put", "patch", "delete"] {
                let call = format!("{m}(");
                let mut from = 0;
                while let Some(i) = args[from..].find(&call) {
                    let i = from + i;
                    let before = args[..i].chars().last().unwrap_or(' ');
                    if !(before.is_alphanumeric() || before == '_') {
                        out.insert((m.to_owned(), path.clone()));
                        found = true;
                    }
                    from = i + call.len();
                }
            }
            assert!(found, "no method in .route({args})");
        }
    }
    out
}

#[test]
fn every_route_in_the_source_is_described_and_nothing_else() {
    let routes = routes_in_source();
    let described: BTreeSet<(String, String)> = OPERATIONS
        .iter()
        .map(|o| (o.method.to_owned(), o.path.to_owned()))
        .collect();
    let missing: Vec<_> = routes.difference(&described).collect();
    let extra: Vec<_> = described.difference(&routes).collect();
    assert!(
        missing.is_empty(),
        "routes missing from the OpenAPI document: {missing:?}"
    );
    assert!(extra.is_empty(), "described but not routed: {extra:?}");
    assert!(routes.len() >= 18, "{routes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_document_matches_the_server() {
    let db = TestDb::sqlite().await;
    let app = spawn_app(&db).await;
    let r = app.get("/v1/openapi.json", None).await;
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let served: serde_json::Value = r.json().await.unwrap();
    assert_eq!(served, document());

    // Each operation exists with the method and role it states: no token is 401 (not 404 or
    // 405), a token of another role is 403; an open one answers without a token.
    let mut tokens = std::collections::BTreeMap::new();
    for role in Role::ALL {
        tokens.insert(role.as_str(), app.token(role).await);
    }
    for op in OPERATIONS {
        let path = op.path.replace("{id}", "000000000000");
        let url = format!("{}{path}", app.base);
        let send = |token: Option<&str>| {
            let mut r = app
                .http
                .request(op.method.to_uppercase().parse().unwrap(), &url);
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            if op.body.is_some() {
                r = r.json(&serde_json::json!({}));
            }
            r.send()
        };
        let status = send(None).await.unwrap().status();
        match op.access {
            Access::Open => assert!(status.is_success(), "{} {path}: {status}", op.method),
            Access::AnyRole => {
                assert_eq!(status, 401, "{} {path} without a token", op.method);
                for role in Role::ALL {
                    let status = send(Some(&tokens[role.as_str()])).await.unwrap().status();
                    assert!(
                        status.is_success(),
                        "{} {path} as {role}: {status}",
                        op.method
                    );
                }
            }
            Access::Role(role) => {
                assert_eq!(status, 401, "{} {path} without a token", op.method);
                let other = if role == Role::Auditor {
                    Role::Reviewer
                } else {
                    Role::Auditor
                };
                let status = send(Some(&tokens[other.as_str()])).await.unwrap().status();
                assert_eq!(status, 403, "{} {path} with a {other} token", op.method);
                let status = send(Some(&tokens[role.as_str()])).await.unwrap().status();
                assert!(
                    status != 401 && status != 403 && status != 404 || op.errors.contains(&404),
                    "{} {path} with a {role} token: {status}",
                    op.method
                );
            }
        }
    }

    // A real OpenAPI validator, when the test venv has it.
    let Some(python) = python("the_served_document_matches_the_server (validator)") else {
        return;
    };
    let file = db.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec(&served).unwrap()).unwrap();
    let o = std::process::Command::new(python)
        .args([
            "-c",
            "import json, sys\nfrom openapi_spec_validator import validate\nvalidate(json.load(open(sys.argv[1])))\nprint('valid')",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("valid"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    app.stop().await;
}
