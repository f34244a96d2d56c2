//! Conductor reconciliation (`[conductor]`, issue 19) against a stand-in Conductor server
//! (`support::conductor`): executions a dropped listener event left out are imported by the next
//! poll; every kind of rewritten history is recorded with its diff and raises HISTORY_REWRITTEN;
//! a summary after a full import raises nothing; a restart resumes from the durable cursor without
//! duplicate facts; faults (5xx, stalls, 429, 401, expired tokens) are retried, and a dead
//! Conductor leaves the rest of changetrail serving. Each on SQLite and PostgreSQL.

use crate::support::conductor::{StandIn, execution};
use crate::support::scenario::{import_over_rest, packet};
use crate::support::server::{TestApp, TestDb, ct, eventually, history_config, spawn_app_with};
use changetrail::conductor::{ClientSettings, KeySecret, Reconciler, Round, Settings, Sinks};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Reconciler settings for the stand-in: quick retries, a short deadline.
fn settings(url: &str) -> Settings {
    Settings {
        client: ClientSettings {
            url: url.to_owned(),
            key_id: String::new(),
            key_secret: KeySecret::default(),
            timeout: Duration::from_millis(500),
            attempts: 4,
            min_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_secs(2),
        },
        workflow_names: vec!["deploy_service".into()],
        poll_interval: Duration::from_millis(100),
        page_size: 100,
        lookback: Duration::from_secs(3600),
        recheck_per_round: 50,
        recheck_window: Duration::from_secs(3650 * 86_400),
        index_lag: Duration::ZERO,
    }
}

/// A reconciler in this test process, importing into `app` (as `serve` would spawn it).
fn reconciler(app: &TestApp, settings: Settings) -> Reconciler {
    let c = &app.ingestor.config;
    Reconciler::new(
        settings,
        Sinks {
            appender: app.appender.clone(),
            store: app.store.clone(),
            policy: c.policy.clone(),
            identity: c.identity.clone(),
            max_clock_skew_ns: c.max_clock_skew_ns,
            metrics: app.ingestor.metrics.clone(),
        },
    )
    .unwrap()
}

async fn round(r: &Reconciler) -> Round {
    r.round(&CancellationToken::new(), |_| {}).await.unwrap()
}

async fn ledger_size(app: &TestApp) -> u64 {
    app.store.head().await.unwrap().unwrap().head.size
}

fn codes(p: &Value) -> Vec<String> {
    p["exceptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}: {}",
                e["code"].as_str().unwrap(),
                e["evidence"].as_str().unwrap()
            )
        })
        .collect()
}

fn rewrite_evidence(p: &Value) -> Option<String> {
    codes(p)
        .into_iter()
        .find(|c| c.starts_with("HISTORY_REWRITTEN"))
}

fn tasks_mut(doc: &mut Value) -> &mut Vec<Value> {
    doc["tasks"].as_array_mut().unwrap()
}

macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::TestDb::sqlite().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let name = concat!("conductor_", stringify!($name));
                if let Some(db) = super::TestDb::postgres(name).await {
                    super::$name(db).await;
                }
            }
        }
    };
}

both!(every_kind_of_rewrite_is_recorded_with_its_diff);
both!(a_restart_resumes_from_the_cursor_without_duplicates);
both!(faults_are_retried_and_tokens_renewed);
both!(the_poller_fills_gaps_and_a_dead_conductor_harms_nothing_else);
both!(conductor_sync_backfills_without_moving_the_cursor);
both!(an_older_state_committed_last_is_not_a_rewrite);
both!(a_run_too_large_to_record_is_refused_and_passed);
both!(a_bad_or_failing_run_does_not_stall_rechecks);
both!(only_own_runs_are_rechecked_and_one_404_deletes_nothing);
both!(answers_are_held_to_their_limits);
both!(an_answer_naming_another_run_is_not_imported);

/// Each kind of rewrite Conductor can make, on its own run: the reconciler records it with a
/// before/after diff, and the change's evidence names it.
async fn every_kind_of_rewrite_is_recorded_with_its_diff(db: TestDb) {
    let app = spawn_app_with(history_config(&db)).await;
    let conductor = StandIn::start().await;
    let kinds = [
        "restart", "rerun", "retry", "skip", "remove", "edit", "delete",
    ];
    for k in kinds {
        conductor.put(execution(&format!("wf-{k}"), &format!("CHG-{k}")));
    }
    let r = reconciler(&app, settings(&conductor.url));
    let first = round(&r).await;
    assert_eq!(first.imported as usize, kinds.len());
    assert_eq!(first.rechecked as usize, kinds.len());
    assert_eq!(first.rewrites, 0);
    for k in kinds {
        let p = packet(&app, &format!("CHG-{k}")).await;
        assert_eq!(rewrite_evidence(&p), None, "{k}: {:?}", codes(&p));
    }

    // A status-listener summary after the full import lists no tasks: nothing vanished.
    let mut summary = conductor.get("wf-edit");
    summary.as_object_mut().unwrap().remove("tasks");
    summary["input"] = json!(summary["input"].to_string());
    let (status, r2) = import_over_rest(&app, &json!({"payload": summary})).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{r2}");
    assert_eq!(r2["history_rewritten"], false, "{r2}");
    assert_eq!(r2["facts_recorded"], 0, "{r2}");

    // restart: every task replaced by a new one.
    conductor.edit("wf-restart", |d| {
        d["status"] = json!("RUNNING");
        let first = tasks_mut(d)[0].clone();
        *tasks_mut(d) = vec![first];
        tasks_mut(d)[0]["taskId"] = json!("wf-restart-new-1");
        tasks_mut(d)[0]["status"] = json!("IN_PROGRESS");
    });
    // rerun from the deploy: the tasks from it on replaced.
    conductor.edit("wf-rerun", |d| {
        d["status"] = json!("RUNNING");
        tasks_mut(d).truncate(3);
        let mut again = execution("x", "x")["tasks"][3].clone();
        again["taskId"] = json!("wf-rerun-new-4");
        again["status"] = json!("SCHEDULED");
        tasks_mut(d).push(again);
    });
    // retry: the finished run runs again, its history kept.
    conductor.edit("wf-retry", |d| {
        d["status"] = json!("RUNNING");
        let mut again = d["tasks"][5].clone();
        again["taskId"] = json!("wf-retry-new-7");
        again["status"] = json!("SCHEDULED");
        tasks_mut(d).push(again);
    });
    // skip: the approval, after the fact, marked skipped.
    conductor.edit("wf-skip", |d| d["tasks"][1]["status"] = json!("SKIPPED"));
    // remove: the routing decision vanished from the middle.
    conductor.edit("wf-remove", |d| {
        tasks_mut(d).remove(2);
    });
    // edit: the verification's output rewritten in place, behind Conductor's back (updateTime
    // stays: only the re-check sees it).
    conductor.edit_quietly("wf-edit", |d| {
        d["tasks"][5]["outputData"] = json!({"healthy": true, "edited": "after the fact"});
    });
    conductor.delete("wf-delete");
    let second = round(&r).await;
    // A deletion takes a 404 in two rounds.
    assert_eq!(second.rewrites as usize, kinds.len() - 1, "{second:?}");
    let confirmed = round(&r).await;
    assert_eq!(confirmed.rewrites, 1, "{confirmed:?}");

    for k in kinds {
        let p = packet(&app, &format!("CHG-{k}")).await;
        let rewrites = p["history_rewrites"].as_array().unwrap();
        assert_eq!(rewrites.len(), 1, "{k}: {rewrites:?}");
        let rw = &rewrites[0];
        assert_eq!(rw["kinds"][0], k, "{k}: {rw}");
        assert_eq!(rw["operation"], k, "{k}: {rw}");
        let evidence = rewrite_evidence(&p).unwrap_or_else(|| panic!("{k}: {:?}", codes(&p)));
        assert!(evidence.contains(k), "{k}: {evidence}");
        let changed = rw["tasks"].as_array().cloned().unwrap_or_default();
        match k {
            "retry" => {
                assert_eq!(rw["run_status_before"], "COMPLETED");
                assert_eq!(rw["run_status_after"], "RUNNING");
            }
            "delete" | "restart" => {
                assert_eq!(changed.len(), 6, "{k}: {rw}");
                assert_eq!(rw["vanished_tasks"].as_array().unwrap().len(), 6);
            }
            "rerun" => {
                let gone: Vec<&str> = changed
                    .iter()
                    .map(|c| c["task_id"].as_str().unwrap())
                    .collect();
                assert_eq!(gone, ["wf-rerun-4", "wf-rerun-5", "wf-rerun-6"]);
            }
            "remove" => assert_eq!(changed[0]["reference"], "route_decision"),
            "skip" => {
                assert_eq!(changed[0]["before"]["status"], "COMPLETED");
                assert_eq!(changed[0]["after"]["status"], "SKIPPED");
            }
            "edit" => {
                assert_eq!(changed[0]["changed"], json!(["outputData"]));
                assert_ne!(
                    changed[0]["before"]["output_digest"],
                    changed[0]["after"]["output_digest"]
                );
                assert_eq!(
                    changed[0]["before"]["status"],
                    changed[0]["after"]["status"]
                );
            }
            _ => unreachable!(),
        }
    }
    // Seen again, nothing is recorded twice.
    let size = ledger_size(&app).await;
    let third = round(&r).await;
    assert_eq!((third.rewrites, third.facts_recorded), (0, 0), "{third:?}");
    assert_eq!(ledger_size(&app).await, size);
    app.stop().await;
}

/// Executions sharing a timestamp across small pages, a failure in the middle of a round, and a
/// new reconciler (a restart) picking up where the committed cursor stands.
async fn a_restart_resumes_from_the_cursor_without_duplicates(db: TestDb) {
    let app = spawn_app_with(history_config(&db)).await;
    let conductor = StandIn::start().await;
    conductor.cap_page(2);
    let t = changetrail::sys::now_ns() / 1_000_000 - 60_000;
    conductor.put_at(execution("wf-1", "CHG-1"), t);
    for i in 2..=4 {
        conductor.put_at(execution(&format!("wf-{i}"), &format!("CHG-{i}")), t + 1);
    }
    conductor.put_at(execution("wf-5", "CHG-5"), t + 2);
    let mut s = settings(&conductor.url);
    s.client.attempts = 1;
    s.page_size = 10;
    s.recheck_per_round = 0;
    conductor.fail_workflow("wf-3", 1);
    let first = reconciler(&app, s.clone());
    let e = first
        .round(&CancellationToken::new(), |_| {})
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("wf-3") || e.to_string().contains("500"),
        "{e}"
    );
    // Imported before the failure: wf-1 and, of those at t+1, whichever came first; the
    // cursor stands at what committed.
    let stored = app
        .store
        .conductor_cursor(&changetrail::conductor::shown_url(&conductor.url))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.0, t + 1, "{stored:?}");
    assert_eq!(stored.1, r#"["wf-2"]"#);
    let size = ledger_size(&app).await;

    // A restart: a new reconciler, nothing in memory.
    let again = reconciler(&app, s.clone());
    let r = round(&again).await;
    assert_eq!(r.imported, 3, "{r:?}");
    assert_eq!((r.cursor.update_time_ms, r.cursor.ids_at.len()), (t + 2, 1));
    for id in ["wf-1", "wf-2"] {
        assert_eq!(conductor.workflow_calls(id), 1, "{id} fetched again");
    }
    assert!(ledger_size(&app).await > size);
    for i in 1..=5 {
        let p = packet(&app, &format!("CHG-{i}")).await;
        let requested = p["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "change.requested")
            .count();
        assert_eq!(requested, 1, "CHG-{i}");
    }
    // Nothing new: nothing fetched, nothing appended. One more at the cursor's own time: only
    // it is fetched.
    let size = ledger_size(&app).await;
    assert_eq!(round(&again).await.imported, 0);
    assert_eq!(ledger_size(&app).await, size);
    conductor.put_at(execution("wf-6", "CHG-6"), t + 2);
    let r = round(&again).await;
    assert_eq!(r.imported, 1);
    assert_eq!(conductor.workflow_calls("wf-5"), 1);
    assert!(
        conductor
            .queries()
            .iter()
            .all(|q| q.ends_with("AND workflowType IN (deploy_service)"))
    );
    // An update younger than the index lag waits for a later round; the cursor stays before it.
    conductor.put(execution("wf-7", "CHG-7"));
    let mut lagging = s.clone();
    lagging.index_lag = Duration::from_secs(30);
    let r = round(&reconciler(&app, lagging)).await;
    assert_eq!((r.imported, r.cursor.update_time_ms), (0, t + 2), "{r:?}");
    assert_eq!(conductor.workflow_calls("wf-7"), 0);
    assert_eq!(round(&again).await.imported, 1);
    app.stop().await;
}

/// 5xx, a stall past the deadline and a 429 are retried within a round; Orkes tokens are
/// fetched once, renewed after they expire, and a wrong key fails the round without its secret
/// in the error.
async fn faults_are_retried_and_tokens_renewed(db: TestDb) {
    let app = spawn_app_with(history_config(&db)).await;
    let conductor = StandIn::orkes("app-key", "app-secret-9c1e").await;
    let mut s = settings(&conductor.url);
    s.client.key_id = "app-key".into();
    s.client.key_secret = KeySecret::new("app-secret-9c1e");
    let r = reconciler(&app, s.clone());
    conductor.put(execution("wf-a", "CHG-A"));
    conductor.fail_next(2);
    assert_eq!(round(&r).await.imported, 1);
    assert_eq!(conductor.calls("refused"), 2);
    assert_eq!(conductor.calls("token"), 1);

    conductor.put(execution("wf-b", "CHG-B"));
    conductor.stall_next(1);
    let started = std::time::Instant::now();
    assert_eq!(round(&r).await.imported, 1);
    assert!(
        started.elapsed() < crate::support::conductor::STALL,
        "the stall was waited out"
    );

    conductor.put(execution("wf-c", "CHG-C"));
    conductor.rate_limit_next(1);
    let started = std::time::Instant::now();
    assert_eq!(round(&r).await.imported, 1);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was not honoured"
    );

    conductor.expire_tokens();
    conductor.put(execution("wf-d", "CHG-D"));
    assert_eq!(round(&r).await.imported, 1);
    assert_eq!(conductor.calls("token"), 2);
    // A 401 gets one new token, not a loop of them.
    conductor.unauthorized_next(2);
    let e = r
        .round(&CancellationToken::new(), |_| {})
        .await
        .unwrap_err();
    assert!(e.to_string().contains("401"), "{e}");
    assert_eq!(conductor.calls("token"), 3);

    // Down for longer than the attempts: the round fails and the cursor stays.
    let before = r
        .round(&CancellationToken::new(), |_| {})
        .await
        .unwrap()
        .cursor;
    conductor.fail_next(10);
    let e = r
        .round(&CancellationToken::new(), |_| {})
        .await
        .unwrap_err();
    assert!(e.to_string().contains("500"), "{e}");
    conductor.fail_next(0);
    assert_eq!(round(&r).await.cursor, before);

    let mut wrong = s.clone();
    wrong.client.key_secret = KeySecret::new("not-the-secret-77");
    let e = reconciler(&app, wrong)
        .round(&CancellationToken::new(), |_| {})
        .await
        .unwrap_err();
    let text = format!("{e} {e:?}");
    assert!(text.contains("credentials"), "{text}");
    assert!(!text.contains("not-the-secret-77"), "{text}");
    assert_eq!(
        app.ingestor.metrics.get(
            "changetrail_conductor_errors_total",
            &[("kind", "unauthorized")]
        ),
        2
    );
    app.stop().await;
}

/// `serve` with `[conductor]`: an execution no listener event announced is imported by the next
/// poll, and its later update too; with Conductor down, the REST API and ingest go on.
async fn the_poller_fills_gaps_and_a_dead_conductor_harms_nothing_else(db: TestDb) {
    let conductor = StandIn::start().await;
    let mut cfg = history_config(&db);
    cfg.conductor = serde_json::from_value(json!({
        "url": conductor.url, "key_id": "", "key_secret": "", "workflow_names": [],
        "poll_interval": "100ms", "page_size": 100, "lookback": "1h", "timeout": "300ms",
        "attempts": 2, "max_backoff": "300ms", "recheck_window": "3650d", "index_lag": "0s",
        // Without re-checks: the gap must be filled by the search.
        "recheck_per_round": 0,
    }))
    .unwrap();
    let app = spawn_app_with(cfg).await;
    let auditor = app.token(changetrail::auth::Role::Auditor).await;
    let mut running = execution("wf-gap", "CHG-GAP");
    running["status"] = json!("RUNNING");
    tasks_mut(&mut running).truncate(2);
    conductor.put(running);
    eventually("the running execution is imported", || async {
        app.get("/v1/changes/CHG-GAP", Some(&auditor))
            .await
            .status()
            == 200
    })
    .await;
    // The run finishes; no listener event says so.
    conductor.put(execution("wf-gap", "CHG-GAP"));
    eventually("the finished execution is imported", || async {
        let p: Value = app
            .get("/v1/changes/CHG-GAP", Some(&auditor))
            .await
            .json()
            .await
            .unwrap();
        p["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "change.finished")
    })
    .await;
    let p = packet(&app, "CHG-GAP").await;
    assert_eq!(
        rewrite_evidence(&p),
        None,
        "growth is no rewrite: {:?}",
        codes(&p)
    );

    conductor.set_down(true);
    let refused = conductor.calls("refused");
    eventually("the poller keeps asking a dead Conductor", || async {
        conductor.calls("refused") > refused + 2
    })
    .await;
    let (status, body) = import_over_rest(&app, &execution("wf-rest", "CHG-REST")).await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
    assert_eq!(app.get("/healthz", None).await.status(), 200);
    let scraper = app.token(changetrail::auth::Role::Metrics).await;
    let metrics = app
        .get("/metrics", Some(&scraper))
        .await
        .text()
        .await
        .unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("changetrail_conductor_errors_total{kind=\"unavailable\"}"))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(!line.ends_with(" 0"), "{line}");
    assert!(
        metrics.contains("changetrail_conductor_cursor_lag_seconds"),
        "{metrics}"
    );
    let imported = metrics
        .lines()
        .find(|l| l.starts_with("changetrail_conductor_executions_imported_total"))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert_eq!(imported, "2", "each update imported once");
    app.stop().await;
}

/// `changetrail conductor sync`: with `--since` a backfill that leaves the durable cursor alone;
/// without, one round from the cursor that moves it. The Orkes secret comes from the
/// environment and is never printed.
async fn conductor_sync_backfills_without_moving_the_cursor(db: TestDb) {
    const SECRET: &str = "orkes-secret-from-env-5d2a";
    let app = spawn_app_with(history_config(&db)).await;
    app.stop().await;
    let store = db.store().await;
    let conductor = StandIn::orkes("cli-key", SECRET).await;
    let now_ms = changetrail::sys::now_ns() / 1_000_000;
    conductor.put_at(execution("wf-old", "CHG-OLD"), now_ms - 3 * 86_400_000);
    conductor.put(execution("wf-new", "CHG-NEW"));
    let sync = |args: &'static [&'static str]| {
        let mut c = ct(db.path());
        c.args(["conductor", "sync"])
            .args(args)
            .env("CHANGETRAIL_DATABASE_URL", &db.url)
            .env("CHANGETRAIL_LEDGER__KEY_FILE", db.path().join("ledger.key"))
            .env("CHANGETRAIL_CONDUCTOR__URL", &conductor.url)
            .env("CHANGETRAIL_CONDUCTOR__KEY_ID", "cli-key")
            .env("CHANGETRAIL_CONDUCTOR__KEY_SECRET", SECRET)
            .env("CHANGETRAIL_CONDUCTOR__INDEX_LAG", "0s");
        async move {
            let o = tokio::task::spawn_blocking(move || c.output().unwrap())
                .await
                .unwrap();
            let err = String::from_utf8_lossy(&o.stderr).into_owned();
            assert_eq!(o.status.code(), Some(0), "{err}");
            assert!(!err.contains(SECRET), "{err}");
            err
        }
    };
    let server = changetrail::conductor::shown_url(&conductor.url);
    let err = sync(&["--since", "7d"]).await;
    assert!(err.contains("done: 2 executions imported"), "{err}");
    assert!(err.contains("the durable cursor was left alone"), "{err}");
    assert_eq!(store.conductor_cursor(&server).await.unwrap(), None);
    // A round from the (absent) cursor looks back 24 h: the old execution is not asked for.
    let err = sync(&[]).await;
    assert!(err.contains("done: 1 executions imported"), "{err}");
    assert_eq!(conductor.workflow_calls("wf-old"), 1, "{err}");
    let (t, ids) = store.conductor_cursor(&server).await.unwrap().unwrap();
    assert!(t > now_ms - 60_000, "{t}");
    assert_eq!(ids, r#"["wf-new"]"#);
    assert!(packet_exists(&store, "CHG-OLD").await);
}

async fn packet_exists(store: &changetrail::storage::Store, change: &str) -> bool {
    store
        .changes_between(0, i64::MAX)
        .await
        .unwrap()
        .iter()
        .any(|c| c == change)
}

/// Two fetches racing: the newer state (S2) commits first, then the older one (S1, fetched
/// earlier) arrives. S1 is neither compared nor the baseline, so nothing is "rewritten"; a later
/// edit of S2 is still noticed against S2.
async fn an_older_state_committed_last_is_not_a_rewrite(db: TestDb) {
    let app = spawn_app_with(history_config(&db)).await;
    let newer = execution("wf-race", "CHG-RACE");
    let update_ms = newer["updateTime"].as_i64().unwrap();
    let mut older = newer.clone();
    older["status"] = json!("RUNNING");
    older["updateTime"] = json!(update_ms - 60_000);
    older.as_object_mut().unwrap().remove("endTime");
    tasks_mut(&mut older).truncate(3);
    tasks_mut(&mut older)[2]["status"] = json!("IN_PROGRESS");

    let (status, body) = import_over_rest(&app, &newer).await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
    let (status, body) = import_over_rest(&app, &older).await;
    assert!(status.is_success(), "{body}");
    assert_eq!(body["history_rewritten"], false, "{body}");
    let p = packet(&app, "CHG-RACE").await;
    assert_eq!(rewrite_evidence(&p), None, "{:?}", codes(&p));

    // The baseline is still S2: the same state again is nothing, an edit of it is an edit.
    let (_, body) = import_over_rest(&app, &newer).await;
    assert_eq!(body["history_rewritten"], false, "{body}");
    let mut edited = newer.clone();
    edited["tasks"][5]["outputData"] = json!({"healthy": false});
    let (_, body) = import_over_rest(&app, &edited).await;
    assert_eq!(body["history_rewritten"], true, "{body}");
    let p = packet(&app, "CHG-RACE").await;
    let rw = &p["history_rewrites"][0];
    assert_eq!(rw["kinds"], json!(["edit"]), "{rw}");
    app.stop().await;
}

/// A run whose observation can never be an entry (over the 1 MiB limit) is refused, counted
/// and passed: the round succeeds and the cursor moves on to the runs after it.
async fn a_run_too_large_to_record_is_refused_and_passed(db: TestDb) {
    let app = spawn_app_with(history_config(&db)).await;
    let conductor = StandIn::start().await;
    let mut huge = execution("wf-huge", "CHG-HUGE");
    let template = tasks_mut(&mut huge)[0].clone();
    *tasks_mut(&mut huge) = (0..300)
        .map(|i| {
            let mut t = template.clone();
            t["taskId"] = json!(format!("wf-huge-{i}"));
            t["taskType"] = json!("SIMPLE");
            t["referenceTaskName"] = json!(format!("step_{i}_{}", "x".repeat(4000)));
            t
        })
        .collect();
    conductor.put(huge);
    conductor.put(execution("wf-after", "CHG-AFTER"));
    let r = reconciler(&app, settings(&conductor.url));
    let first = round(&r).await;
    assert_eq!((first.imported, first.refused), (1, 1), "{first:?}");
    assert!(packet_exists(&app.store, "CHG-AFTER").await);
    assert!(!packet_exists(&app.store, "CHG-HUGE").await);
    // Passed for good: the next round does not fetch it again.
    let again = round(&r).await;
    assert_eq!((again.imported, again.refused), (0, 0), "{again:?}");
    app.stop().await;
}

/// A workflow id that cannot be fetched is refused at import (REST or reconciler), and a run
/// whose re-check keeps failing is counted and stepped over: the round still succeeds and the
/// other runs are re-checked.
async fn a_bad_or_failing_run_does_not_stall_rechecks(db: TestDb) {
    let app = spawn_app_with(history_config(&db)).await;
    let (status, body) = import_over_rest(&app, &execution("..", "CHG-DOTS")).await;
    assert!(status.is_client_error(), "{status} {body}");
    let (status, body) = import_over_rest(&app, &execution("wf/../x", "CHG-SLASH")).await;
    assert!(status.is_client_error(), "{status} {body}");

    let conductor = StandIn::start().await;
    conductor.put(execution("wf-a", "CHG-A"));
    conductor.put(execution("wf-b", "CHG-B"));
    let r = reconciler(&app, settings(&conductor.url));
    assert_eq!(round(&r).await.imported, 2);
    conductor.fail_workflow("wf-a", 1000);
    let second = round(&r).await;
    assert_eq!(second.rechecked, 1, "{second:?}");
    assert!(conductor.workflow_calls("wf-a") > 1);
    let third = round(&r).await;
    assert_eq!(third.rechecked, 1, "{third:?}");
    app.stop().await;
}

/// A run an ingest token stated is not the reconciler's to re-check (a forged run must not
/// become a trusted `delete`), and a single 404 deletes nothing: a run that answers again in
/// between starts the count over.
async fn only_own_runs_are_rechecked_and_one_404_deletes_nothing(db: TestDb) {
    let app = spawn_app_with(history_config(&db)).await;
    let (status, body) = import_over_rest(&app, &execution("wf-forged", "CHG-FORGED")).await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
    let conductor = StandIn::start().await;
    conductor.put(execution("wf-flaky", "CHG-FLAKY"));
    let r = reconciler(&app, settings(&conductor.url));
    assert_eq!(round(&r).await.imported, 1);
    let doc = conductor.get("wf-flaky");
    for _ in 0..2 {
        conductor.delete("wf-flaky");
        let missing = round(&r).await;
        assert_eq!(missing.rewrites, 0, "{missing:?}");
        conductor.put(doc.clone());
        let back = round(&r).await;
        assert_eq!(back.rewrites, 0, "{back:?}");
    }
    assert_eq!(conductor.workflow_calls("wf-forged"), 0);
    for change in ["CHG-FORGED", "CHG-FLAKY"] {
        let p = packet(&app, change).await;
        assert_eq!(rewrite_evidence(&p), None, "{change}: {:?}", codes(&p));
    }
    app.stop().await;
}

/// A page larger than asked is cut to the page size, and an execution over 16 MiB is never read
/// whole: refused and passed.
async fn answers_are_held_to_their_limits(db: TestDb) {
    let app = spawn_app_with(history_config(&db)).await;
    let conductor = StandIn::start().await;
    let mut vast = execution("wf-vast", "CHG-VAST");
    vast["tasks"][5]["outputData"] = json!({"log": "x".repeat(17 << 20)});
    conductor.put(vast);
    for i in 0..3 {
        conductor.put(execution(&format!("wf-{i}"), &format!("CHG-{i}")));
    }
    conductor.ignore_size();
    let mut small = settings(&conductor.url);
    small.page_size = 1;
    // Building a 17 MiB answer takes the debug stand-in a while.
    small.client.timeout = Duration::from_secs(30);
    let r = reconciler(&app, small);
    let first = round(&r).await;
    assert_eq!((first.imported, first.refused), (3, 1), "{first:?}");
    // One execution per page (answered whole, it would be one page).
    assert!(first.pages >= 4, "{first:?}");
    assert!(!packet_exists(&app.store, "CHG-VAST").await);
    let metrics = app.ingestor.metrics.render(&[]);
    assert!(
        metrics.contains("changetrail_conductor_errors_total{kind=\"refused\"} 1"),
        "{metrics}"
    );
    app.stop().await;
}

/// An execution answered under another workflowId than asked is an invalid answer: counted,
/// not imported as the run it names.
async fn an_answer_naming_another_run_is_not_imported(db: TestDb) {
    let app = spawn_app_with(history_config(&db)).await;
    let conductor = StandIn::start().await;
    conductor.put(execution("wf-asked", "CHG-ASKED"));
    let r = reconciler(&app, settings(&conductor.url));
    assert_eq!(round(&r).await.imported, 1);
    conductor.edit_quietly("wf-asked", |d| d["workflowId"] = json!("wf-named"));
    let second = round(&r).await;
    assert_eq!(second.rechecked, 0, "{second:?}");
    assert!(
        app.store
            .last_observation("wf-named")
            .await
            .unwrap()
            .is_none()
    );
    let metrics = app.ingestor.metrics.render(&[]);
    assert!(
        metrics.contains("changetrail_conductor_errors_total{kind=\"invalid_answer\"} 1"),
        "{metrics}"
    );
    app.stop().await;
}
