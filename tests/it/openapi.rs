//! `GET /v1/openapi.json` against the routes the server really has: every route in src/api is
//! described, every described operation exists with the role it states, and the document is valid
//! OpenAPI (checked by openapi-spec-validator when the test venv is there).

use crate::support::server::{TestDb, spawn_app};
use changetrail::api::openapi::document;
use changetrail::auth::Role;
use std::collections::BTreeSet;

/// The text of a call's arguments: from just after its opening parenthesis to the matching
/// closing one.
fn arguments(rest: &str) -> &str {
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
    &rest[..end]
}

/// (method, path) of every route the REST API's source declares: each handler's
/// `#[utoipa::path(…)]` (routed by `routes!`) and each plain `.route(…)`, which the document
/// would not know.
fn routes_in_source() -> BTreeSet<(String, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/api");
    let mut out = BTreeSet::new();
    // Files of src/api and its subfolders (console/ holds a module too).
    let mut files = Vec::new();
    let mut dirs = vec![std::path::PathBuf::from(dir)];
    while let Some(d) = dirs.pop() {
        for f in std::fs::read_dir(d).unwrap() {
            let p = f.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                files.push(p);
            }
        }
    }
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        // Routes these add would be served but never described. The one exception wraps the
        // whole router to move the documented /tlog/ routes to `[tlog] prefix`: it adds none.
        let checked = text.replacen("Router::new().fallback_service(rewritten)", "", 1);
        for call in [".route_service(", ".nest(", ".nest_service(", ".fallback"] {
            assert!(!checked.contains(call), "{call} in {}", f.display());
        }
        for (at, _) in text.match_indices("#[utoipa::path(") {
            let args = arguments(&text[at + "#[utoipa::path(".len()..]);
            let method = args.split(',').next().unwrap().trim().to_owned();
            let path = args
                .split("path = \"")
                .nth(1)
                .and_then(|p| p.split('"').next())
                .unwrap_or_else(|| panic!("no path in #[utoipa::path({args})]"));
            out.insert((method, path.to_owned()));
        }
        for (at, _) in text.match_indices(".route(") {
            let args = arguments(&text[at + ".route(".len()..]);
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

/// (method, path, operation) of every operation the document describes.
fn operations(doc: &serde_json::Value) -> Vec<(String, String, serde_json::Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            out.push((method.clone(), path.clone(), op.clone()));
        }
    }
    out
}

#[test]
fn every_route_in_the_source_is_described_and_nothing_else() {
    let routes = routes_in_source();
    let doc = serde_json::to_value(document()).unwrap();
    let described: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(method, path, _)| (method, path))
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
    assert_eq!(served, serde_json::to_value(document()).unwrap());

    // Each operation exists with the method and role it states: no token is 401 (not 404 or
    // 405), a token of another role is 403; an open one answers without a token.
    let mut tokens = std::collections::BTreeMap::new();
    for role in Role::ALL {
        tokens.insert(role.as_str(), app.token(role).await);
    }
    for (method, path, op) in operations(&served) {
        // The tlog paths with the first tile and bundle any checkpoint contains.
        let path = path
            .replace("{id}", "000000000000")
            .replace("{*tile}", "0/000.p/1")
            .replace("{*bundle}", "000.p/1");
        let url = format!("{}{path}", app.base);
        let send = |token: Option<&str>| {
            let mut r = app
                .http
                .request(method.to_uppercase().parse().unwrap(), &url);
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            if op.get("requestBody").is_some() {
                r = r.json(&serde_json::json!({}));
            }
            r.send()
        };
        let status = send(None).await.unwrap().status();
        match op["x-changetrail-role"].as_str() {
            None => {
                assert!(op["security"] == serde_json::json!([]), "{method} {path}");
                assert!(status.is_success(), "{method} {path}: {status}");
            }
            Some("any") => {
                assert_eq!(status, 401, "{method} {path} without a token");
                for role in Role::ALL {
                    let status = send(Some(&tokens[role.as_str()])).await.unwrap().status();
                    assert!(status.is_success(), "{method} {path} as {role}: {status}");
                }
            }
            Some(roles) => {
                // One role, or several separated by commas: each admitted, every other one 403.
                let admitted: Vec<Role> = roles.split(',').map(|r| r.parse().unwrap()).collect();
                let documents_404 = op["responses"].get("404").is_some();
                assert_eq!(status, 401, "{method} {path} without a token");
                for other in Role::ALL.iter().filter(|r| !admitted.contains(r)) {
                    let status = send(Some(&tokens[other.as_str()])).await.unwrap().status();
                    assert_eq!(status, 403, "{method} {path} with a {other} token");
                }
                for role in &admitted {
                    let status = send(Some(&tokens[role.as_str()])).await.unwrap().status();
                    assert!(
                        status != 401 && status != 403 && status != 404 || documents_404,
                        "{method} {path} with a {role} token: {status}"
                    );
                    // Every status it answered is one the document lists.
                    assert!(
                        op["responses"].get(status.as_str()).is_some(),
                        "{method} {path} with a {role} token answered {status}, not documented"
                    );
                }
            }
        }
    }

    // A real OpenAPI validator, when the test venv has it.
    let Some(python) =
        crate::support::python::python("the_served_document_matches_the_server (validator)")
    else {
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
