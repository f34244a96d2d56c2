//! The real OpenTelemetry Python SDK exporters (gRPC and HTTP/protobuf, gzip, bearer token)
//! against the real server. `.ci/run` installs them into a venv and sets CHANGETRAIL_TEST_PYTHON.

use crate::support::db::hold_write_lock;
use crate::support::python::{CLIENT, python};
use crate::support::server::{TestApp, TestDb, config, eventually, spawn_app_with, verify_store};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, serde::Deserialize)]
struct Exported {
    trace_id: String,
    span_id: String,
    name: String,
    result: String,
}

async fn run_client(py: &PathBuf, app: &TestApp, transport: &str, args: &[&str]) -> Vec<Exported> {
    let endpoint = if transport == "grpc" {
        app.grpc.clone()
    } else {
        app.otlp.clone()
    };
    let mut cmd = tokio::process::Command::new(py);
    cmd.arg(CLIENT)
        .args([
            "--transport",
            transport,
            "--endpoint",
            &endpoint,
            "--token",
            &app.ingest,
        ])
        .args(args);
    let out = cmd.output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python client failed:\n{stderr}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{stderr}")))
        .collect()
}

fn by_trace(exported: &[Exported]) -> BTreeMap<String, Vec<&Exported>> {
    let mut m: BTreeMap<String, Vec<&Exported>> = BTreeMap::new();
    for e in exported {
        m.entry(e.trace_id.clone()).or_default().push(e);
    }
    m
}

fn trace_bytes(hex_id: &str) -> [u8; 16] {
    hex::decode(hex_id).unwrap().try_into().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_exporters_over_grpc_and_http_sqlite() {
    python_sdk_exporters_over_grpc_and_http(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_exporters_over_grpc_and_http_postgres() {
    if let Some(db) = TestDb::postgres("python_sdk_exporters_over_grpc_and_http_postgres").await {
        python_sdk_exporters_over_grpc_and_http(db).await;
    }
}

async fn python_sdk_exporters_over_grpc_and_http(db: TestDb) {
    let Some(py) = python("python_sdk_exporters_over_grpc_and_http") else {
        return;
    };
    let app = spawn_app_with(config(&db)).await;
    for transport in ["grpc", "http"] {
        let change = format!("CHG-PY-{transport}");
        let exported = run_client(
            &py,
            &app,
            transport,
            &[
                "--change",
                &change,
                "--deploys",
                "2",
                "--children",
                "3",
                "--unrelated",
                "3",
                "--logs",
            ],
        )
        .await;
        assert_eq!(exported.len(), 2 * 4 + 3);
        assert!(
            exported.iter().all(|e| e.result == "SUCCESS"),
            "{exported:?}"
        );
        for (trace, spans) in by_trace(&exported) {
            let stored = app
                .store
                .spans_of_trace(&trace_bytes(&trace))
                .await
                .unwrap();
            let deploy = spans.iter().any(|s| s.name == "deploy");
            if deploy {
                // The deploy span and its service spans: kept, for this change.
                let ids: HashSet<String> = stored.iter().map(|s| hex::encode(s.span_id)).collect();
                let sent: HashSet<String> = spans.iter().map(|s| s.span_id.clone()).collect();
                assert_eq!(ids, sent, "{transport}");
                assert!(stored.iter().all(|s| s.subject == change));
                let body = String::from_utf8_lossy(
                    &stored.iter().find(|s| s.name == "deploy").unwrap().body,
                )
                .to_string();
                assert!(
                    !body.contains("must-not-be-stored"),
                    "the authorization header was stored"
                );
            } else {
                assert!(
                    stored.is_empty(),
                    "unrelated traffic is not stored ({transport})"
                );
            }
        }
    }
    let logs = app.store.log_records(100).await.unwrap();
    assert_eq!(logs.len(), 2, "one approval event per transport");
    for l in &logs {
        assert_eq!(l.event_name, "changetrail.approval");
        let body = String::from_utf8_lossy(&l.body).to_string();
        assert!(!body.contains("not-a-real-token"), "a token was stored");
    }
    let report = verify_store(&app.store, &[&app.vkey]).await;
    assert_eq!(report.exit_code, 0, "{:?}", report.findings);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_span_is_lost_when_storage_fails_sqlite() {
    no_acknowledged_span_is_lost_when_storage_fails(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_span_is_lost_when_storage_fails_postgres() {
    if let Some(db) =
        TestDb::postgres("no_acknowledged_span_is_lost_when_storage_fails_postgres").await
    {
        no_acknowledged_span_is_lost_when_storage_fails(db).await;
    }
}

/// Storage fails for a while (another writer holds the lock) while a real exporter sends: the
/// exporter is told to retry, and afterwards every span it was told was accepted is stored
/// exactly once — nothing acknowledged is lost, nothing is stored twice.
async fn no_acknowledged_span_is_lost_when_storage_fails(db: TestDb) {
    let Some(py) = python("no_acknowledged_span_is_lost_when_storage_fails") else {
        return;
    };
    let mut cfg = config(&db);
    cfg.storage.lock_timeout = Duration::from_millis(300);
    let app = spawn_app_with(cfg).await;
    for transport in ["grpc", "http"] {
        let change = format!("CHG-FAULT-{transport}");
        let args = [
            "--change",
            &change,
            "--deploys",
            "24",
            "--children",
            "2",
            "--unrelated",
            "0",
            "--batch",
            "3",
            "--pause",
            "0.1",
        ];
        let size = || async { app.store.head().await.unwrap().unwrap().head.size };
        let before = size().await;
        let client = run_client(&py, &app, transport, &args);
        // The outage starts once the client's first export is committed, mid-run.
        let outage = async {
            eventually("the client's first export is committed", || async {
                size().await > before
            })
            .await;
            hold_write_lock(&db, Duration::from_millis(2500))
                .await
                .await
                .unwrap();
        };
        let (exported, ()) = tokio::join!(client, outage);
        let accepted: Vec<&Exported> = exported.iter().filter(|e| e.result == "SUCCESS").collect();
        assert!(
            accepted.len() >= exported.len() * 9 / 10,
            "{transport}: most exports should get through after retrying"
        );
        for (trace, spans) in by_trace(&exported) {
            let stored = app
                .store
                .spans_of_trace(&trace_bytes(&trace))
                .await
                .unwrap();
            let stored_ids: Vec<String> = stored.iter().map(|s| hex::encode(s.span_id)).collect();
            let unique: HashSet<&String> = stored_ids.iter().collect();
            assert_eq!(unique.len(), stored_ids.len(), "a span stored twice");
            for s in spans.iter().filter(|s| s.result == "SUCCESS") {
                assert!(
                    stored_ids.contains(&s.span_id),
                    "{transport}: acknowledged span {} was lost",
                    s.span_id
                );
            }
        }
    }
    let m = app.ingestor.metrics.render(&[]);
    let retried: u64 = m
        .lines()
        .filter(|l| {
            l.starts_with("changetrail_otlp_requests_total") && l.contains("outcome=\"retryable\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(retried > 0, "the outage never reached a client:\n{m}");
    app.stop().await;
}
