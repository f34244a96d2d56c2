//! The web console and what it stands on, through the real server: `GET /v1/session` for any
//! role, the change list's exception filter and paging, exceptions on a change's packet,
//! `POST /v1/ledger/verify`; then the console itself in headless Chromium, driven by Playwright
//! (tests/console/console.mjs), with a screenshot of every page for a person to look at.

use crate::support::browser::{chromium, decode_png};
use crate::support::db::{disable_triggers, exec, flip};
use crate::support::scenario::{scenario_config, send_scenarios};
use crate::support::server::{TestApp, TestDb, spawn_app, spawn_app_with};
use changetrail::auth::Role;
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

async fn json(app: &TestApp, path: &str, token: &str) -> (StatusCode, Value) {
    let r = app.get(path, Some(token)).await;
    let status = r.status();
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

/// The scenarios' server, with the approver role the report tests configure.
fn console_config(db: &TestDb) -> changetrail::app::config::Config {
    let mut cfg = scenario_config(db);
    cfg.reports.approver_roles = vec!["release-approver".into()];
    cfg.links.trace_url = TRACE_URL.into();
    cfg
}

/// The tracing UI the console links trace ids into.
const TRACE_URL: &str = "https://tracing.example/trace/{trace_id}?from=changetrail";

fn ids(list: &Value) -> Vec<String> {
    list["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["change"]["id"].as_str().unwrap().to_owned())
        .collect()
}

fn codes(change: &Value) -> BTreeSet<String> {
    change["exceptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["code"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_names_any_role_and_the_pages_it_opens() {
    let db = TestDb::sqlite().await;
    let app = spawn_app(&db).await;
    let want: [(Role, &[&str]); 5] = [
        (
            Role::Auditor,
            &["dashboard", "changes", "alerts", "reports"],
        ),
        (Role::Reviewer, &["ledger", "alerts"]),
        (Role::Admin, &["tokens"]),
        (Role::Ingest, &[]),
        (Role::Metrics, &[]),
    ];
    for (role, pages) in want {
        let token = app.token(role).await;
        let r = app.get("/v1/session", Some(&token)).await;
        assert_eq!(r.status(), StatusCode::OK, "{role}");
        let text = r.text().await.unwrap();
        // The secret is everything after ct_<id>_ (it may itself contain '_').
        let secret = token.splitn(3, '_').nth(2).unwrap();
        assert!(
            !text.contains(secret),
            "{role}: the secret came back: {text}"
        );
        let s: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(s["role"], role.as_str());
        assert_eq!(s["name"], format!("test-{role}"));
        assert_eq!(token.split('_').nth(1).unwrap(), s["token_id"]);
        assert_eq!(s["pages"], serde_json::json!(pages), "{role}");
    }
    // A valid token is still needed: none, garbage, a changed secret and a revoked one are 401.
    assert_eq!(
        app.get("/v1/session", None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get("/v1/session", Some("garbage")).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let wrong = format!("{}x", &app.reviewer[..app.reviewer.len() - 1]);
    assert_eq!(
        app.get("/v1/session", Some(&wrong)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let auditor = app.token(Role::Auditor).await;
    let id = auditor.split('_').nth(1).unwrap();
    assert_eq!(app.revoke(id).await, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get("/v1/session", Some(&auditor)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_carry_the_reports_exceptions_and_page_sqlite() {
    changes_carry_the_reports_exceptions_and_page(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_carry_the_reports_exceptions_and_page_postgres() {
    if let Some(db) =
        TestDb::postgres("changes_carry_the_reports_exceptions_and_page_postgres").await
    {
        changes_carry_the_reports_exceptions_and_page(db).await;
    }
}

/// The list carries the report's exceptions, filters by code and pages; on both backends.
async fn changes_carry_the_reports_exceptions_and_page(db: TestDb) {
    let app = spawn_app_with(console_config(&db)).await;
    let expect = send_scenarios(&app).await;
    let auditor = app.token(Role::Auditor).await;
    let backend = format!("{:?}", db.backend);

    // January's production changes: each with exactly the codes the report gives it.
    let period = "from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z";
    let (status, all) = json(
        &app,
        &format!("/v1/changes?{period}&environment=production"),
        &auditor,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{backend}: {all}");
    let total = all["total"].as_u64().unwrap() as usize;
    assert_eq!(all["offset"], 0);
    assert_eq!(all["limit"], 50);
    assert_eq!(ids(&all).len(), total);
    let got: BTreeMap<String, BTreeSet<String>> = all["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["change"]["id"].as_str().unwrap().to_owned(), codes(c)))
        .collect();
    for (id, want) in &expect {
        let want: BTreeSet<String> = want.iter().map(|c| c.to_string()).collect();
        assert_eq!(got.get(id), Some(&want), "{backend}: {id}");
    }
    // Each exception says what shows it.
    let first = &all["changes"][0]["exceptions"];
    for x in first.as_array().unwrap() {
        assert!(!x["evidence"].as_str().unwrap().is_empty(), "{x}");
    }

    // A staging change is not in the report's population, so it carries no exception.
    let (_, staging) = json(&app, "/v1/changes?environment=staging", &auditor).await;
    assert_eq!(ids(&staging), vec!["CHG-STAGING"]);
    assert!(codes(&staging["changes"][0]).is_empty(), "{staging}");

    // Pages of 3 cover the list once, in order; past the end is an empty page.
    let mut paged = Vec::new();
    for offset in (0..total + 3).step_by(3) {
        let (status, page) = json(
            &app,
            &format!("/v1/changes?{period}&environment=production&limit=3&offset={offset}"),
            &auditor,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(page["total"].as_u64().unwrap() as usize, total);
        assert_eq!(page["offset"].as_u64().unwrap() as usize, offset);
        assert_eq!(page["limit"], 3);
        let n = ids(&page).len();
        assert_eq!(n, total.saturating_sub(offset).min(3), "offset {offset}");
        paged.extend(ids(&page));
    }
    assert_eq!(paged, ids(&all), "{backend}");

    // The exception filter, in any case, and combined with the other filters.
    let (_, selfies) = json(&app, "/v1/changes?exception=self_approval", &auditor).await;
    assert_eq!(ids(&selfies), vec!["CHG-SELF"]);
    assert_eq!(selfies["total"], 1);
    let unverified: BTreeSet<String> = ids(&json(
        &app,
        &format!("/v1/changes?{period}&exception=UNVERIFIED_IDENTITY"),
        &auditor,
    )
    .await
    .1)
    .into_iter()
    .collect();
    for (id, want) in &expect {
        assert_eq!(
            unverified.contains(id),
            want.contains("UNVERIFIED_IDENTITY"),
            "{backend}: {id}"
        );
    }
    let (_, none) = json(
        &app,
        "/v1/changes?exception=SELF_APPROVAL&service=no-such-service",
        &auditor,
    )
    .await;
    assert_eq!(none["total"], 0);

    // The packet carries the same exceptions as the list.
    let (status, p) = json(&app, "/v1/changes/CHG-SWAP", &auditor).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        codes(&p),
        BTreeSet::from(["APPROVED_SUBJECT_MISMATCH".to_owned()])
    );
    let (_, p) = json(&app, "/v1/changes/CHG-OK", &auditor).await;
    assert!(codes(&p).is_empty(), "{p}");
    // Every trace the packet names links into the tracing UI by the configured template.
    let links = p["trace_links"].as_object().expect("trace_links");
    let traces = p["spans"]["traces"].as_array().unwrap();
    assert!(!traces.is_empty(), "{p}");
    for t in traces {
        let t = t.as_str().unwrap();
        assert_eq!(links[t], TRACE_URL.replace("{trace_id}", t), "{t}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_change_list_parameters_are_400_and_say_why() {
    let db = TestDb::sqlite().await;
    let app = spawn_app(&db).await;
    let auditor = app.token(Role::Auditor).await;
    for (query, says) in [
        ("exception=NOPE", "use one of NO_APPROVAL, SELF_APPROVAL"),
        ("exception=", "is not an exception code"),
        ("limit=0", "limit must be between 1 and 500"),
        ("limit=501", "limit must be between 1 and 500"),
        ("limit=ten", "limit must be a whole number"),
        ("offset=-1", "offset must be a whole number"),
        ("offset=1.5", "offset must be a whole number"),
        (
            "from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z",
            "from must be before to",
        ),
    ] {
        let (status, body) = json(&app, &format!("/v1/changes?{query}"), &auditor).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(body["error"], "bad_request", "{query}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(says), "{query}: {message}");
    }
    // The limits themselves are fine, and an empty ledger is an empty first page.
    for query in ["limit=1", "limit=500&offset=0", "offset=1000"] {
        let (status, body) = json(&app, &format!("/v1/changes?{query}"), &auditor).await;
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
        assert_eq!(body["total"], 0);
    }
    // Auditors only, whatever the parameters.
    let (status, _) = json(&app, "/v1/changes?limit=0", &app.reviewer).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_verify_passes_for_reviewers_only_sqlite() {
    ledger_verify_passes_for_reviewers_only(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_verify_passes_for_reviewers_only_postgres() {
    if let Some(db) = TestDb::postgres("ledger_verify_passes_for_reviewers_only_postgres").await {
        ledger_verify_passes_for_reviewers_only(db).await;
    }
}

/// "Verify now": the verifier over the stored ledger passes, for reviewers only.
async fn ledger_verify_passes_for_reviewers_only(db: TestDb) {
    let app = spawn_app_with(scenario_config(&db)).await;
    send_scenarios(&app).await;
    let post = |token: Option<&str>| {
        let mut r = app.http.post(format!("{}/v1/ledger/verify", app.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let r = post(Some(&app.reviewer)).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["ok"], true, "{:?}: {v}", db.backend);
    assert_eq!(v["exit_code"], 0);
    assert!(v["verdict"].as_str().unwrap().starts_with("OK"), "{v}");
    assert!(v["findings"].as_array().unwrap().is_empty(), "{v}");
    let s = &v["summary"];
    let size = app.store.latest_checkpoint().await.unwrap().unwrap().size;
    assert_eq!(s["entries"].as_u64().unwrap(), size);
    assert!(s["signatures"].as_u64().unwrap() >= size);
    assert_eq!(s["newest_size"].as_u64().unwrap(), size);
    assert!(s["checkpoints_valid"].as_u64().unwrap() >= 1);
    assert!(v["elapsed_ms"].is_u64());

    for role in [Role::Auditor, Role::Admin, Role::Ingest] {
        let t = app.token(role).await;
        assert_eq!(
            post(Some(&t)).await.unwrap().status(),
            StatusCode::FORBIDDEN,
            "{role}"
        );
    }
    assert_eq!(post(None).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    app.stop().await;
}

/// One verification at a time: a request while one runs is told to retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verification_requested_while_one_runs_is_told_to_retry() {
    let db = TestDb::sqlite().await;
    let app = spawn_app(&db).await;
    app.writer.checkpoint().await.unwrap();
    // The server's router on a port of its own, so the test can hold the permit a run holds.
    let state = changetrail::api::AppState::new(app.store.clone(), None);
    let running = state.verifying.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, changetrail::api::router(state)).await });
    let post = || {
        app.http
            .post(format!("{base}/v1/ledger/verify"))
            .bearer_auth(&app.reviewer)
            .send()
    };
    let held = running.try_acquire().unwrap();
    let r = post().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("a verification is running"),
        "{body}"
    );
    drop(held);
    let r = post().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["ok"], true);
    assert_eq!(running.available_permits(), 1);
    app.stop().await;
}

/// The checkpoint as JSON for the console; as note text for everyone else, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkpoint_is_json_when_asked() {
    let db = TestDb::sqlite().await;
    let app = spawn_app(&db).await;
    app.writer.checkpoint().await.unwrap();
    let url = format!("{}/v1/ledger/checkpoint", app.base);
    let text = app
        .http
        .get(&url)
        .bearer_auth(&app.reviewer)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = app
        .http
        .get(&url)
        .bearer_auth(&app.reviewer)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["note"], text);
    let cp = app.store.latest_checkpoint().await.unwrap().unwrap();
    assert_eq!(v["size"], cp.size);
    assert_eq!(v["root"], cp.root.to_b64());
    assert!(v["created_ns"].as_i64().unwrap() > 0);
    app.stop().await;
}

/// tests/console with its node_modules installed (`npm ci --prefix tests/console`), or `None`
/// with a clear note that the browser test is skipped.
fn playwright() -> Option<PathBuf> {
    let Some(dir) = std::env::var_os("CHANGETRAIL_TEST_PLAYWRIGHT").map(PathBuf::from) else {
        eprintln!(
            "SKIPPED (console browser test): CHANGETRAIL_TEST_PLAYWRIGHT is not set; run `npm ci --prefix tests/console` and set it to that folder (.ci/run does both)"
        );
        return None;
    };
    if !dir
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        eprintln!(
            "SKIPPED (console browser test): no playwright-core in {}/node_modules; run `npm ci --prefix tests/console`",
            dir.display()
        );
        return None;
    }
    Some(dir)
}

/// The console as a person uses it: sign in, filter, page, open a change, download a report,
/// verify the ledger, list tokens, be signed out when the token is revoked, be refused with the
/// wrong role; every page photographed at 1280 and 800 px.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_browser() {
    let (Some(dir), Some(browser)) = (playwright(), chromium()) else {
        return;
    };
    let db = TestDb::sqlite().await;
    // Alerts go to a receiver that takes everything, so the alerts page has deliveries to show.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    let receiver = axum::Router::new().route("/hook", axum::routing::post(|| async { "ok" }));
    tokio::spawn(async move { axum::serve(listener, receiver).await.unwrap() });
    let mut cfg = console_config(&db);
    cfg.alerts = serde_json::from_value(serde_json::json!({
        "interval": "100ms", "timeout": "2s", "max_backoff": "1s", "unlinked_after": "1h",
        "webhooks": [{ "name": "oncall", "url": hook, "format": "json" }],
        "otlp": { "endpoint": "", "headers": {} },
    }))
    .unwrap();
    let app = spawn_app_with(cfg).await;
    let expect = send_scenarios(&app).await;
    let auditor = app.token(Role::Auditor).await;
    crate::support::server::alerts_settled(&app.store).await;
    let (_, alerts) = json(&app, "/v1/alerts?limit=200", &auditor).await;
    let (_, delivery) = json(
        &app,
        "/v1/delivery?from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z",
        &auditor,
    )
    .await;
    let (_, january) = json(
        &app,
        "/v1/changes?from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z&environment=production&limit=500",
        &auditor,
    )
    .await;
    let (_, everything) = json(&app, "/v1/changes?limit=1", &auditor).await;
    let with = |code: &str| -> Vec<&String> {
        expect
            .iter()
            .filter(|(_, codes)| codes.contains(code))
            .map(|(id, _)| id)
            .collect()
    };
    let expectations = serde_json::json!({
        "from": "2026-01-01",
        "to": "2026-01-31",
        "production_total": january["total"],
        "trace_url": TRACE_URL,
        "all_total": everything["total"],
        "exceptions": expect,
        "filters": [
            { "exception": "SELF_APPROVAL", "ids": with("SELF_APPROVAL") },
            { "exception": "UNVERIFIED_IDENTITY", "from": "2026-01-01", "to": "2026-01-31",
              "ids": with("UNVERIFIED_IDENTITY") },
            // The only change of this service was requested the evening before January.
            { "service": "ledger-api", "ids": ["CHG-DEC"] },
        ],
        // The normal change: bob approved (verified), the first deploy attempt timed out.
        "retried": {
            "id": "CHG-OK",
            "approver": "bob@example.com",
            "requester": "alice@example.com",
            "retries": "2 attempts: 1 failed, 1 succeeded",
            "attempts": 2,
            // Who sent the evidence: the ingest token the test exports with.
            "sender": "test-ingest",
        },
        // The codes the exception filter must offer, the evidence rules' newest among them.
        "codes": changetrail::core::evidence::rules::ALL,
        "delivery": {
            "deployments": delivery["all"]["deployments"],
            "failures": delivery["failures"].as_array().unwrap().len(),
            "codes": delivery["exceptions_by_week"]
                .as_object()
                .unwrap()
                .values()
                .flat_map(|w| w.as_object().unwrap().keys().cloned())
                .collect::<BTreeSet<_>>(),
        },
        "alerts": {
            "open": alerts["open"].as_array().unwrap().len(),
            "events": alerts["alerts"].as_array().unwrap().len(),
            "self_codes": alerts["open"].as_array().unwrap().iter()
                .filter(|o| o["change_id"] == "CHG-SELF")
                .map(|o| o["code"].clone())
                .collect::<Vec<_>>(),
        },
        "flagged": {
            "id": "CHG-SELF",
            "codes": expect["CHG-SELF"],
            "step": "approval",
            "step_code": "SELF_APPROVAL",
        },
    });
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let shots = target.join("console-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    let downloads = tempfile::tempdir().unwrap();
    let tokens = serde_json::json!({
        "auditor": auditor,
        "reviewer": app.reviewer,
        "admin": app.admin,
        "ingest": app.ingest,
    });
    let script = dir.join("console.mjs");
    let base = app.base.clone();
    let (shots2, downloads2) = (shots.clone(), downloads.path().to_path_buf());
    let run = move |phase: &'static str| {
        let (script, dir, base, shots, downloads, browser) = (
            script.clone(),
            dir.clone(),
            base.clone(),
            shots2.clone(),
            downloads2.clone(),
            browser.clone(),
        );
        let (tokens, expectations) = (tokens.to_string(), expectations.to_string());
        // The script waits on the server this runtime serves: run it off the runtime's workers.
        async move {
            let out = tokio::task::spawn_blocking(move || {
                Command::new("node")
                    .arg(&script)
                    .current_dir(&dir)
                    .env("CONSOLE_BASE_URL", base)
                    .env("CONSOLE_TOKENS", tokens)
                    .env("CONSOLE_EXPECT", expectations)
                    .env("CONSOLE_SCREENSHOTS", &shots)
                    .env("CONSOLE_DOWNLOADS", &downloads)
                    .env("CONSOLE_PHASE", phase)
                    .env("CHROMIUM", browser)
                    .output()
            })
            .await
            .unwrap()
            .expect("node runs (node 20 is needed for the console test)");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success(),
                "the console test ({phase}) failed:\n{stdout}\n{stderr}"
            );
            eprintln!("{stdout}");
        }
    };
    run("all").await;

    // The downloaded report is the real thing: a zip with the signed manifest.
    let name = std::fs::read_to_string(downloads.path().join("report-name.txt")).unwrap();
    let bytes = std::fs::read(downloads.path().join(name.trim())).unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let manifest: Value = serde_json::from_reader(zip.by_name("manifest.json").unwrap()).unwrap();
    assert!(
        manifest["period_start"]
            .as_str()
            .unwrap()
            .starts_with("2026-01-01")
    );
    assert!(zip.by_name("manifest.sig").is_ok());

    // Every page at both widths, each a real picture: many colours, and the colours that carry
    // meaning where they must be (green for a pass, red for exceptions and refusals).
    let green = [0xe3, 0xf4, 0xe8];
    let red = [0xfc, 0xeb, 0xea];
    for (page, must) in [
        ("01-sign-in", None),
        ("02-changes", None),
        ("03-changes-filtered", None),
        ("04-change", Some(green)),
        ("05-change-exceptions", Some(red)),
        ("06-reports", Some(green)),
        ("07-ledger", Some(green)),
        ("08-tokens", None),
        ("09-refused", Some(red)),
    ] {
        for width in [1280, 800] {
            let path = shots.join(format!("{page}-{width}.png"));
            let img = decode_png(&std::fs::read(&path).unwrap_or_else(|e| {
                panic!("{}: {e}", path.display());
            }));
            assert_eq!(img.width, width, "{page}");
            assert!(img.height >= 400, "{page}-{width}: {} px high", img.height);
            assert!(img.colours() > 50, "{page}-{width} looks blank");
            if let Some(c) = must {
                assert!(
                    img.count(c) > 2000,
                    "{page}-{width}: the verdict colour is missing"
                );
            }
        }
    }

    // Damage the ledger behind the server's back (one stored payload, triggers dropped as an
    // attacker with database access would): verify now must fail, in red, naming the entry.
    disable_triggers(&app.store, "payloads").await;
    flip(
        &app.store,
        "payloads",
        "payload",
        "seq = (SELECT MIN(seq) FROM payloads WHERE seq > 0)",
    )
    .await;
    run("tampered").await;
    for width in [1280, 800] {
        let path = shots.join(format!("10-ledger-tampered-{width}.png"));
        let img = decode_png(&std::fs::read(&path).unwrap());
        // The red panel (the key table's small "current" badge stays green).
        assert!(img.count(red) > 20000, "{}: no red verdict", path.display());
    }
    eprintln!("screenshots of the console: {}", shots.display());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_fact_is_an_evidence_gap_in_the_list_sqlite() {
    an_unreadable_fact_is_an_evidence_gap_in_the_list(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_fact_is_an_evidence_gap_in_the_list_postgres() {
    if let Some(db) =
        TestDb::postgres("an_unreadable_fact_is_an_evidence_gap_in_the_list_postgres").await
    {
        an_unreadable_fact_is_an_evidence_gap_in_the_list(db).await;
    }
}

/// A stored fact that no longer parses (changed behind the server's back) is an EVIDENCE_GAP on
/// its change in the list, as the report says it; the rest of the list is served as before.
async fn an_unreadable_fact_is_an_evidence_gap_in_the_list(db: TestDb) {
    let app = spawn_app_with(console_config(&db)).await;
    let expect = send_scenarios(&app).await;
    let auditor = app.token(Role::Auditor).await;
    let path = "/v1/changes?from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z&limit=500";
    let (_, before) = json(&app, path, &auditor).await;
    disable_triggers(&app.store, "facts").await;
    exec(
        &app.store,
        "UPDATE facts SET payload = 'not json' WHERE change_id = 'CHG-OK' AND kind = 'approval.decided'",
    )
    .await
    .unwrap();
    // A facts row edited outside the chain is not an entry the summary follows: it is built
    // again from the facts as they now stand (the list folds the period meanwhile).
    exec(&app.store, "DELETE FROM summary_state").await.unwrap();
    let (status, after) = json(&app, path, &auditor).await;
    assert_eq!(status, StatusCode::OK, "{after}");
    assert_eq!(after["total"], before["total"], "{:?}", db.backend);
    for c in after["changes"].as_array().unwrap() {
        let id = c["change"]["id"].as_str().unwrap();
        let codes: BTreeSet<&str> = c["exceptions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["code"].as_str().unwrap())
            .collect();
        if id == "CHG-OK" {
            // Its approval cannot be read: a gap, and so no approval before the deploy.
            assert!(codes.contains("EVIDENCE_GAP"), "{codes:?}");
        } else {
            // Changes outside the report's population (staging) carry none.
            let want: BTreeSet<&str> = expect
                .get(id)
                .map(|w| w.iter().copied().collect())
                .unwrap_or_default();
            assert_eq!(codes, want, "{id}");
        }
    }
    let (_, gaps) = json(
        &app,
        "/v1/changes?from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z&exception=EVIDENCE_GAP",
        &auditor,
    )
    .await;
    assert_eq!(gaps["total"], 1, "{gaps}");
    // The change's own page says the same, instead of failing.
    let (status, packet) = json(&app, "/v1/changes/CHG-OK", &auditor).await;
    assert_eq!(status, StatusCode::OK, "{packet}");
    let codes: Vec<&str> = packet["exceptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"EVIDENCE_GAP"), "{codes:?}");
    app.stop().await;
}
