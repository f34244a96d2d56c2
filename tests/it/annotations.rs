//! Deploy annotations (`[annotations.otlp]`): each production deploy reaches a real OTLP/HTTP
//! logs receiver (this test's own server, decoding the protobuf the specification defines) once,
//! with the change's requester and approver on the deployed service's resource; a receiver that
//! is briefly unavailable gets it on a retry.

use crate::support::scenario::{scenario_config, send_scenarios};
use crate::support::server::{TestDb, eventually, spawn_app_with};
use axum::body::Bytes;
use axum::http::StatusCode;
use changetrail::storage::Store;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use prost::Message as _;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the receiver got: every request decoded, and how many it turned away first.
#[derive(Default)]
struct Received {
    requests: Vec<ExportLogsServiceRequest>,
    unavailable_left: u32,
    turned_away: u32,
}

/// What the receiver answers in, as an OTLP/HTTP server does.
const PROTOBUF: [(axum::http::HeaderName, &str); 1] =
    [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")];

/// The change whose record the receiver takes with a 200 and rejects in `partial_success`.
const REJECTED: &str = "CHG-SELF";

/// An OTLP/HTTP logs receiver on a free port; answers 503 to the first `unavailable` requests,
/// and rejects `REJECTED`'s record inside a 200 (OTLP partial success).
async fn receiver(unavailable: u32) -> (String, Arc<Mutex<Received>>) {
    let got = Arc::new(Mutex::new(Received {
        unavailable_left: unavailable,
        ..Default::default()
    }));
    let state = got.clone();
    let app = axum::Router::new().route(
        "/v1/logs",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: Bytes| {
            let state = state.clone();
            async move {
                assert_eq!(headers["content-type"], "application/x-protobuf");
                assert_eq!(
                    headers["x-api-key"], "k-123",
                    "the configured header is sent"
                );
                let mut s = state.lock().unwrap();
                if s.unavailable_left > 0 {
                    s.unavailable_left -= 1;
                    s.turned_away += 1;
                    return (StatusCode::SERVICE_UNAVAILABLE, PROTOBUF, Vec::new());
                }
                let req = ExportLogsServiceRequest::decode(body).expect("valid OTLP protobuf");
                let rejected = req
                    .resource_logs
                    .iter()
                    .flat_map(|r| &r.scope_logs)
                    .flat_map(|s| &s.log_records)
                    .any(|l| text(&l.attributes, "changetrail.change.id") == REJECTED);
                s.requests.push(req);
                let answer = ExportLogsServiceResponse {
                    partial_success: rejected.then(|| ExportLogsPartialSuccess {
                        rejected_log_records: 1,
                        error_message: "not this one".into(),
                    }),
                };
                (StatusCode::OK, PROTOBUF, answer.encode_to_vec())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), got)
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn text<'a>(attrs: &'a [KeyValue], key: &str) -> &'a str {
    match attr(attrs, key) {
        Some(any_value::Value::StringValue(s)) => s,
        other => panic!("{key}: {other:?}"),
    }
}

/// The scenarios' server, annotating to `endpoint` every `interval` with the receiver's API key.
fn annotating(
    db: &TestDb,
    endpoint: String,
    interval: Duration,
) -> changetrail::app::config::Config {
    let mut cfg = scenario_config(db);
    cfg.annotations.otlp.endpoint = endpoint;
    cfg.annotations.otlp.interval = interval;
    cfg.annotations.otlp.headers =
        serde_json::from_value(serde_json::json!({ "x-api-key": "k-123" })).unwrap();
    cfg
}

/// Waits until the annotator has started (its cursor is set).
async fn started(store: &Store) {
    eventually("the annotator starts", || async move {
        store.annotation_cursor().await.unwrap().is_some()
    })
    .await;
}

/// Waits until the annotator has looked at every entry up to `head` and finished every claim.
async fn settled(store: &Store, head: i64) {
    eventually(
        "every entry is looked at and every claim finished",
        || async move {
            store
                .annotation_cursor()
                .await
                .unwrap()
                .is_some_and(|c| c >= head)
                && store.annotations_claimed().await.unwrap() == 0
        },
    )
    .await;
}

/// One instance's `/metrics` text.
async fn scrape(base: &str, token: &str) -> String {
    reqwest::Client::new()
        .get(format!("{base}/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A sample's value in a scrape.
fn metric(scraped: &str, name: &str) -> f64 {
    scraped
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} is not in /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_production_deploy_reaches_the_otlp_receiver_once_sqlite() {
    each_production_deploy_reaches_the_otlp_receiver_once(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_production_deploy_reaches_the_otlp_receiver_once_postgres() {
    if let Some(db) =
        TestDb::postgres("each_production_deploy_reaches_the_otlp_receiver_once_postgres").await
    {
        each_production_deploy_reaches_the_otlp_receiver_once(db).await;
    }
}

async fn each_production_deploy_reaches_the_otlp_receiver_once(db: TestDb) {
    let (endpoint, got) = receiver(1).await;
    let cfg = annotating(&db, endpoint, Duration::from_millis(100));
    let app = spawn_app_with(cfg).await;
    // The annotator starts at the head: history before it is not replayed.
    started(&app.store).await;
    send_scenarios(&app).await;
    let head = app.store.head().await.unwrap().unwrap().head.size as i64 - 1;
    settled(&app.store, head).await;

    let (requests, turned_away) = {
        let g = got.lock().unwrap();
        (g.requests.clone(), g.turned_away)
    };
    assert_eq!(turned_away, 1, "the first export met a 503");
    let mut by_change: BTreeMap<String, u32> = BTreeMap::new();
    let mut ok = None;
    for req in &requests {
        for rl in &req.resource_logs {
            let resource = &rl.resource.as_ref().unwrap().attributes;
            for sl in &rl.scope_logs {
                assert_eq!(sl.scope.as_ref().unwrap().name, "changetrail");
                for log in &sl.log_records {
                    assert_eq!(log.event_name, "changetrail.deploy");
                    let id = text(&log.attributes, "changetrail.change.id").to_owned();
                    *by_change.entry(id.clone()).or_default() += 1;
                    if id == "CHG-OK" {
                        ok = Some((resource.clone(), log.clone()));
                    }
                }
            }
        }
    }
    assert!(
        by_change.values().all(|&n| n == 1),
        "each deploy once: {by_change:?}"
    );
    assert!(
        !by_change.contains_key("CHG-STAGING"),
        "staging is not production: {by_change:?}"
    );
    // Exactly the production changes with a successful deploy attempt, as their packets say.
    let auditor = app.token(changetrail::auth::Role::Auditor).await;
    let list: serde_json::Value = app
        .get("/v1/changes?limit=500", Some(&auditor))
        .await
        .json()
        .await
        .unwrap();
    let mut deployed = std::collections::BTreeSet::new();
    for c in list["changes"].as_array().unwrap() {
        let id = c["change"]["id"].as_str().unwrap();
        let p: serde_json::Value = app
            .get(&format!("/v1/changes/{id}"), Some(&auditor))
            .await
            .json()
            .await
            .unwrap();
        let succeeded = p["steps"].as_array().unwrap().iter().any(|s| {
            s["attempts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["result"] == "success")
        });
        if p["change"]["production"] == true && succeeded {
            deployed.insert(id.to_owned());
        }
    }
    assert!(deployed.len() > 3, "{deployed:?}");
    assert_eq!(
        by_change
            .keys()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        deployed
    );
    let (resource, log) = ok.expect("CHG-OK was announced");
    assert_eq!(text(&resource, "service.name"), "payments-api");
    assert_eq!(text(&resource, "service.version"), "1.42.0");
    assert_eq!(text(&resource, "deployment.environment.name"), "production");
    let a = &log.attributes;
    assert_eq!(
        text(a, "changetrail.change.requested_by"),
        "alice@example.com"
    );
    assert_eq!(text(a, "changetrail.change.approved_by"), "bob@example.com");
    assert_eq!(text(a, "changetrail.change.approval"), "approved");
    for who in ["requested_by", "approved_by"] {
        assert_eq!(
            attr(a, &format!("changetrail.change.{who}.verified")),
            Some(&any_value::Value::BoolValue(true)),
            "{who}"
        );
    }
    assert_eq!(log.trace_id.len(), 16, "the deploy attempt's trace");
    assert!(log.time_unix_nano > 0 && log.observed_time_unix_nano > log.time_unix_nano);
    // /metrics counts them; nothing is left behind the head.
    let metrics = app.token(changetrail::auth::Role::Metrics).await;
    let scraped = scrape(&app.base, &metrics).await;
    let value = |name: &str| metric(&scraped, name);
    // Every record reached the receiver; the one it rejected in a 200 is refused, not sent.
    assert!(by_change.contains_key(REJECTED), "{by_change:?}");
    assert_eq!(
        value("changetrail_annotations_sent_total"),
        by_change.len() as f64 - 1.0
    );
    assert_eq!(value("changetrail_annotations_refused_total"), 1.0);
    // Caught up: at most the entries appended since (the metrics token's own, a heartbeat).
    assert!(value("changetrail_annotations_lag_entries") < 5.0);
    // A change announced is not claimed again, for any attempt (by a restart or a second
    // instance).
    let attempt = text(a, "changetrail.deploy.attempt");
    assert!(
        !app.store
            .claim_annotation("CHG-OK", &format!("{attempt}-another"), 1)
            .await
            .unwrap()
    );
    app.stop().await;

    // The outbox: a claim left unsent (its sender stopped) is taken again once stale, and only
    // then; a sent one never.
    let store = db.store().await;
    assert!(store.claim_annotation("CHG-X", "a1", 10).await.unwrap());
    assert!(
        store
            .reclaim_annotations(10, 20, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.reclaim_annotations(11, 20, 10).await.unwrap(),
        vec![("CHG-X".to_owned(), "a1".to_owned())]
    );
    assert!(
        store
            .reclaim_annotations(20, 30, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Only the holder of the latest token finishes or renews it.
    store
        .finish_annotation("CHG-X", 10, "sent", 35)
        .await
        .unwrap();
    assert!(!store.renew_annotation("CHG-X", "a1", 10, 36).await.unwrap());
    assert_eq!(store.annotations_claimed().await.unwrap(), 1);
    // Renewed by its holder, naming the attempt now first (a later fact showed an earlier one).
    assert!(store.renew_annotation("CHG-X", "a0", 20, 37).await.unwrap());
    assert!(store.annotation_exists("CHG-X").await.unwrap());
    store
        .finish_annotation("CHG-X", 37, "sent", 40)
        .await
        .unwrap();
    assert!(
        store
            .reclaim_annotations(i64::MAX, 50, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.annotations_claimed().await.unwrap(), 0);
    assert!(
        !store.claim_annotation("CHG-X", "a2", 60).await.unwrap(),
        "one marker per change"
    );
}

/// Two instances on one PostgreSQL database, both annotating to one receiver: the claims keep
/// them apart, so each deploy still arrives once, and their counters add up to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_announce_each_deploy_once() {
    let Some(db) = TestDb::postgres("two_instances_announce_each_deploy_once").await else {
        return;
    };
    let (endpoint, got) = receiver(0).await;
    let mut cfg = annotating(&db, endpoint, Duration::from_millis(20));
    let one = spawn_app_with(cfg.clone()).await;
    cfg.otlp.journal_dir = db.path().join("second.journal");
    // The second instance joins the ledger the first created (no bootstrap token of its own).
    let two = changetrail::app::startup::App::build(cfg).await.unwrap();
    let two_base = format!("http://{}", two.http_addr);
    let two_stop = two.shutdown_token();
    let two_running = tokio::spawn(async move { two.run().await.unwrap() });
    started(&one.store).await;
    send_scenarios(&one).await;
    let head = one.store.head().await.unwrap().unwrap().head.size as i64 - 1;
    settled(&one.store, head).await;
    let mut by_change: BTreeMap<String, u32> = BTreeMap::new();
    for req in &got.lock().unwrap().requests {
        for log in req
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .flat_map(|s| &s.log_records)
        {
            *by_change
                .entry(text(&log.attributes, "changetrail.change.id").to_owned())
                .or_default() += 1;
        }
    }
    assert!(by_change.len() > 3, "{by_change:?}");
    assert!(
        by_change.values().all(|&n| n == 1),
        "each deploy once: {by_change:?}"
    );
    let mut total = 0.0;
    let metrics = one.token(changetrail::auth::Role::Metrics).await;
    for base in [one.base.clone(), two_base] {
        let scraped = scrape(&base, &metrics).await;
        assert_eq!(
            metric(&scraped, "changetrail_annotations_enabled"),
            1.0,
            "{base}: the annotator runs"
        );
        total += metric(&scraped, "changetrail_annotations_sent_total");
    }
    // The record the receiver rejects in its 200 is refused, not sent.
    assert_eq!(
        total,
        by_change.len() as f64 - 1.0,
        "the two counters add up"
    );
    one.stop().await;
    two_stop.cancel();
    two_running.await.unwrap();
}
