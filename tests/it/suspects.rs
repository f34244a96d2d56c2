//! Suspect changes and CHANGE_REGRESSION, end to end: runtime spans around a deploy sent by the
//! real OpenTelemetry Python SDK exporter (tests/it/python/regression.py), the deploy itself over
//! OTLP/HTTP, then `GET /v1/suspects`, the change's `runtime.compared` fact, the alert it raises
//! at a real webhook and OTLP logs receiver (each exactly once), and the four keys counting it.

use crate::support::scenario::{MIN, codes, packet, scenario_config, send, workflow};
use crate::support::server::{TestApp, TestDb, eventually, spawn_app_with, verify_store};
use axum::body::Bytes;
use changetrail::auth::Role;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use prost::Message as _;
use serde_json::Value;
use std::sync::{Arc, Mutex};

/// Requests a webhook (`/hook`) and an OTLP logs receiver (`/v1/logs`) took: (route, body).
type Taken = Arc<Mutex<Vec<(&'static str, Bytes)>>>;

async fn receiver(taken: Taken) -> String {
    let take = |route: &'static str, taken: Taken| {
        axum::routing::post(move |body: Bytes| {
            let taken = taken.clone();
            async move {
                taken.lock().unwrap().push((route, body));
                axum::http::StatusCode::OK
            }
        })
    };
    let app = axum::Router::new()
        .route("/hook", take("hook", taken.clone()))
        .route("/v1/logs", take("otlp", taken.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn get_json(app: &TestApp, path: &str, token: &str) -> (reqwest::StatusCode, Value) {
    let r = app.get(path, Some(token)).await;
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn rfc(ns: i64) -> String {
    changetrail::core::time::rfc3339(ns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regression_is_ranked_first_recorded_and_alerted_once_sqlite() {
    a_regression_is_ranked_first_recorded_and_alerted_once(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regression_is_ranked_first_recorded_and_alerted_once_postgres() {
    let Some(db) = TestDb::postgres("suspects_regression").await else {
        return;
    };
    a_regression_is_ranked_first_recorded_and_alerted_once(db).await;
}

async fn a_regression_is_ranked_first_recorded_and_alerted_once(db: TestDb) {
    let Some(py) = crate::support::python::python("suspects::a_regression_is_ranked_first") else {
        return;
    };
    let taken: Taken = Arc::default();
    let base = receiver(taken.clone()).await;
    let mut cfg = scenario_config(&db);
    cfg.suspects.flush_interval = std::time::Duration::from_millis(100);
    cfg.suspects.interval = std::time::Duration::from_millis(100);
    cfg.suspects.settle = std::time::Duration::from_millis(300);
    cfg.alerts = serde_json::from_value(serde_json::json!({
        "interval": "100ms",
        "timeout": "2s",
        "max_backoff": "1s",
        "webhooks": [{ "name": "oncall", "url": format!("{base}/hook"), "format": "json" }],
        "unlinked_after": "5m",
        "otlp": { "endpoint": base, "headers": {} },
    }))
    .unwrap();
    let app = spawn_app_with(cfg).await;
    // On a minute boundary, so the figures below are exact.
    let deploy_ns =
        changetrail::core::runtime::minute_of(changetrail::sys::now_ns() - 20 * MIN as i64);

    // 1. The services' requests around the deploy, through the Python SDK's exporter.
    let out = tokio::process::Command::new(&py)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/it/python/regression.py"
        ))
        .args(["--endpoint", &app.otlp, "--token", &app.ingest])
        .args(["--deploy-ns", &deploy_ns.to_string()])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "regression.py failed:\n{stderr}");
    let sent: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sent["spans"], 25 * (25 + 20 + 15), "{sent}");
    let m = &app.ingestor.metrics;
    assert_eq!(
        m.get("changetrail_runtime_spans_total", &[]),
        25 * 60,
        "every production entry span is counted"
    );
    eventually("every minute is appended", || async {
        app.ingestor.runtime_cells() == 0 && m.get("changetrail_runtime_minutes_total", &[]) > 0
    })
    .await;
    // 25 minutes of each service (checkout changes version on a minute boundary)
    // (a minute whose spans came in two exports around a flush is two entries that add up);
    // the entries hold every span counted.
    assert!(m.get("changetrail_runtime_minutes_total", &[]) >= 25 * 3);
    let rows = app
        .store
        .runtime_minutes(None, "runtime:production/", (0, u64::MAX / 2), 10_000)
        .await
        .unwrap();
    let stored: u64 = rows
        .iter()
        .map(|(_, _, p)| {
            let m: changetrail::core::runtime::Minute =
                serde_json::from_str(p.as_deref().unwrap()).unwrap();
            assert!(m.is_valid());
            m.cell.spans
        })
        .sum();
    assert_eq!(stored, 25 * 60);

    // 2. The deploys: CHG-REG puts checkout 2.0.0 in place at `deploy_ns`, approved; CHG-QUIET
    //    put search 3 in place five minutes earlier.
    let t0 = (deploy_ns - 20 * MIN as i64) as u64;
    let at = |m: u64| (t0 + m * MIN) as i64;
    let token = crate::support::idp::token;
    let mut reg = workflow("CHG-REG", 81, t0);
    reg.service = "checkout".into();
    reg.version = "2.0.0".into();
    let mut quiet = workflow("CHG-QUIET", 82, t0);
    quiet.service = "search".into();
    quiet.version = "3".into();
    let mut items = Vec::new();
    // Each change's people carry tokens of their own (one token on two changes is TOKEN_REUSED).
    for (wf, end, n) in [(&mut reg, 20, 0), (&mut quiet, 15, 1)] {
        items.push(wf.run_span(
            "normal",
            "alice@example.com",
            Some(token("alice@example.com", &[], at(n))),
            vec![],
        ));
        items.push(wf.approval(
            "bob@example.com",
            Some(token("bob@example.com", &["approver"], at(5 + n))),
            "approved",
            MIN,
            5 * MIN,
        ));
        items.push(wf.deploy(0, "success", (end - 2) * MIN, end * MIN));
    }
    // A change that reports no deploy step, only its run's success, is compared at the run's end.
    let mut nostep = workflow("CHG-NOSTEP", 83, t0 - 25 * MIN);
    nostep.service = "search".into();
    items.push(nostep.run_span("normal", "dave@example.com", None, vec![]));
    send(&app, &items).await;

    // 3. Compared once its window has passed: CHANGE_REGRESSION on CHG-REG only.
    eventually("every deploy is compared", || async {
        let (a, b) = (
            packet(&app, "CHG-REG").await,
            packet(&app, "CHG-QUIET").await,
        );
        let c = packet(&app, "CHG-NOSTEP").await;
        a["runtime"].is_object() && b["runtime"].is_object() && c["runtime"].is_object()
    })
    .await;
    let p = packet(&app, "CHG-REG").await;
    let runtime = &p["runtime"];
    assert_eq!(runtime["regression"], true, "{runtime}");
    assert_eq!(runtime["version"], "2.0.0");
    assert_eq!(
        runtime["new_error_kinds"],
        serde_json::json!(["ConnectionError"])
    );
    // 10 minutes of 25 requests, 10 failing; 15 minutes of 25 before, 3 failing.
    assert_eq!(
        (
            &runtime["after"]["spans"],
            &runtime["after"]["errors"],
            &runtime["after"]["error_rate"]
        ),
        (
            &serde_json::json!(250),
            &serde_json::json!(100),
            &serde_json::json!(0.4)
        ),
        "{runtime}"
    );
    assert_eq!(
        (&runtime["before"]["spans"], &runtime["before"]["errors"]),
        (&serde_json::json!(375), &serde_json::json!(3)),
        "{runtime}"
    );
    assert_eq!(
        runtime["after"]["first_error"]["trace_id"],
        sent["first_error_trace"]
    );
    assert!(codes(&p).contains(&"CHANGE_REGRESSION".to_owned()), "{p}");
    // Who sent the spans is on record (the ingest token's id), and what the verdict was judged by.
    assert_eq!(
        runtime["after"]["senders"].as_array().map(Vec::len),
        Some(1),
        "{runtime}"
    );
    assert_eq!(runtime["thresholds"]["min_spans"], 20, "{runtime}");
    let q = packet(&app, "CHG-QUIET").await;
    assert_eq!(q["runtime"]["regression"], false);
    assert!(!codes(&q).contains(&"CHANGE_REGRESSION".to_owned()), "{q}");

    // 4. Asked which change broke payments (downstream of checkout): CHG-REG first, with its
    //    evidence; CHG-QUIET behind it.
    let auditor = app.token(Role::Auditor).await;
    let path = format!(
        "/v1/suspects?service=payments&environment=production&from={}&to={}",
        rfc(deploy_ns - 10 * MIN as i64),
        rfc(deploy_ns + 10 * MIN as i64)
    );
    let (status, v) = get_json(&app, &path, &auditor).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{v}");
    let ids: Vec<&str> = v["suspects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["change_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["CHG-REG", "CHG-QUIET"], "{v}");
    let top = &v["suspects"][0];
    assert_eq!(top["own"]["regression"], true);
    assert_eq!(top["on_service"]["before"]["errors"], 0, "{top}");
    assert!(top["on_service"]["after"]["errors"].as_u64().unwrap() > 0);
    let blast: Vec<&str> = top["blast_radius"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["service"].as_str().unwrap())
        .collect();
    assert_eq!(blast, ["payments"], "{top}");
    assert_eq!(top["first_error"]["trace_id"], sent["first_error_trace"]);
    assert_eq!(top["requester"], "alice@example.com");
    assert_eq!(top["approvers"], serde_json::json!(["bob@example.com"]));
    assert_eq!(top["attempts"].as_array().unwrap().len(), 1, "{top}");
    assert!(
        top["exceptions"]
            .as_array()
            .unwrap()
            .contains(&"CHANGE_REGRESSION".into())
    );
    assert!(
        top["score"].as_f64().unwrap() > 3.0 * v["suspects"][1]["score"].as_f64().unwrap(),
        "{v}"
    );
    assert_eq!(v["unreadable_minutes"], 0);
    // The reviewer may ask too; an ingest token may not; a staging question is refused.
    let (s, _) = get_json(&app, &path, &app.reviewer).await;
    assert_eq!(s, reqwest::StatusCode::OK);
    let (s, _) = get_json(&app, &path, &app.ingest).await;
    assert_eq!(s, reqwest::StatusCode::FORBIDDEN);
    let (s, e) = get_json(
        &app,
        "/v1/suspects?service=payments&environment=staging",
        &auditor,
    )
    .await;
    assert_eq!(s, reqwest::StatusCode::BAD_REQUEST, "{e}");

    // 5. The alert: once at the webhook, once as an OTLP log record, naming the code.
    eventually("the regression's alert is delivered", || async {
        let t = taken.lock().unwrap();
        t.iter().any(|(r, _)| *r == "hook") && t.iter().any(|(r, _)| *r == "otlp")
    })
    .await;
    crate::support::server::alerts_settled(&app.store).await;
    let t = taken.lock().unwrap().clone();
    let hooks: Vec<Value> = t
        .iter()
        .filter(|(r, _)| *r == "hook")
        .map(|(_, b)| serde_json::from_slice(b).unwrap())
        .filter(|b: &Value| b["subject"] == "CHG-REG")
        .collect();
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    let raised: Vec<&str> = hooks[0]["exceptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["code"].as_str().unwrap())
        .collect();
    assert!(raised.contains(&"CHANGE_REGRESSION"), "{raised:?}");
    let logs: Vec<String> = t
        .iter()
        .filter(|(r, _)| *r == "otlp")
        .map(|(_, b)| format!("{:?}", ExportLogsServiceRequest::decode(b.clone()).unwrap()))
        .filter(|l| l.contains("CHG-REG"))
        .collect();
    assert_eq!(logs.len(), 1, "{logs:#?}");
    assert!(logs[0].contains("CHANGE_REGRESSION"), "{}", logs[0]);

    // 6. The four keys count the regression as a failure.
    let (s, d) = get_json(
        &app,
        &format!(
            "/v1/delivery?service=checkout&from={}&to={}",
            rfc(deploy_ns - 60 * MIN as i64),
            rfc(deploy_ns + 60 * MIN as i64)
        ),
        &auditor,
    )
    .await;
    assert_eq!(s, reqwest::StatusCode::OK, "{d}");
    assert_eq!(d["failures"][0]["change_id"], "CHG-REG", "{d}");
    assert_eq!(d["failures"][0]["why"], "regression", "{d}");

    // The minutes and the comparisons are entries of one chain that verifies.
    let vkey = app.vkey.clone();
    let r = verify_store(&app.store, &[&vkey]).await;
    assert_eq!(r.exit_code, 0, "{:?}", r.findings);
    app.stop().await;
}
