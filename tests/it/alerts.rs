//! Alerts (`[alerts]`): each production change's exception codes raised once, recorded in the
//! ledger, and delivered to real HTTP receivers started here (Alertmanager's API v2 shape, a
//! Slack incoming webhook's, changetrail's own JSON signed with HMAC-SHA256) and to a real
//! OTLP/HTTP logs receiver (decoding the protobuf the specification defines): once each, after
//! retries, across a `kill -9` between raise and delivery, and resolved when the evidence that
//! raised a code goes away.

use crate::support::scenario::{MIN, packet, scenario_config, send, send_scenarios, workflow};
use crate::support::server::{
    TestDb, alerts_settled, ct, eventually, serve_in, spawn_app_with, verify_store,
};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use changetrail::auth::Role;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use prost::Message as _;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

const HMAC_SECRET: &str = "hm-secret-123";
/// A webhook path that is a credential, as Slack's are.
const SECRET_PATH: &str = "s3cr3t-path-789";
const BEARER: &str = "am-token-456";

/// What the receivers took (2xx), by route, and how many requests they turned away.
#[derive(Default)]
struct Got {
    /// (route, headers, body) of each request taken.
    taken: Vec<(String, HeaderMap, Bytes)>,
    /// Requests answered 503 before taking any, per route.
    unavailable_left: BTreeMap<String, u32>,
    turned_away: u32,
    /// While true every route answers 503.
    down: bool,
}

/// Webhook routes (`/am`, `/slack`, `/json`) and an OTLP logs route (`/v1/logs`) on a free port.
async fn receivers(got: Arc<Mutex<Got>>) -> String {
    let take = |route: &'static str, got: Arc<Mutex<Got>>| {
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let got = got.clone();
            async move {
                let mut g = got.lock().unwrap();
                let down = g.down;
                let left = g.unavailable_left.entry(route.to_owned()).or_default();
                if down || *left > 0 {
                    *left = left.saturating_sub(1);
                    g.turned_away += 1;
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                g.taken.push((route.to_owned(), headers, body));
                StatusCode::OK
            }
        })
    };
    let app = axum::Router::new()
        .route("/am", take("am", got.clone()))
        .route("/slack", take("slack", got.clone()))
        .route("/json", take("json", got.clone()))
        .route(
            &format!("/services/T0/B0/{SECRET_PATH}"),
            take("json", got.clone()),
        )
        .route("/v1/logs", take("otlp", got.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// The scenarios' server alerting to every receiver at `base`.
fn alerting(db: &TestDb, base: &str) -> changetrail::app::config::Config {
    let mut cfg = scenario_config(db);
    cfg.links.console_url = "https://ct.example/".into();
    cfg.alerts = serde_json::from_value(serde_json::json!({
        "interval": "100ms",
        "timeout": "2s",
        "max_backoff": "1s",
        "unlinked_after": "0s",
        "webhooks": [
            { "name": "oncall", "url": format!("{base}/am"), "format": "alertmanager", "bearer_token": BEARER },
            { "name": "chat", "url": format!("{base}/slack"), "format": "slack" },
            { "name": "audit", "url": format!("{base}/json"), "format": "json", "hmac_secret": HMAC_SECRET },
        ],
        "otlp": { "endpoint": base, "headers": { "x-api-key": "k-789" } },
    }))
    .unwrap();
    cfg
}

/// `GET /v1/alerts` with `token`.
async fn alerts(base: &str, token: &str, query: &str) -> (StatusCode, Value) {
    try_alerts(base, token, query)
        .await
        .expect("the server answers")
}

/// `alerts`, `None` while nothing listens (a server restarting).
async fn try_alerts(base: &str, token: &str, query: &str) -> Option<(StatusCode, Value)> {
    let r = reqwest::Client::new()
        .get(format!("{base}/v1/alerts{query}"))
        .bearer_auth(token)
        .send()
        .await
        .ok()?;
    let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
    Some((status, r.json().await.unwrap_or(Value::Null)))
}

/// The (subject, code) pairs a list says are open.
fn open_codes(list: &Value) -> BTreeSet<(String, String)> {
    list["open"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["change_id"].as_str().unwrap().to_owned(),
                o["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn hmac_hex(body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, HMAC_SECRET.as_bytes());
    format!(
        "sha256={}",
        hex::encode(ring::hmac::sign(&key, body).as_ref())
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_every_destination_once_sqlite() {
    alerts_reach_every_destination_once(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_every_destination_once_postgres() {
    if let Some(db) = TestDb::postgres("alerts_reach_every_destination_once_postgres").await {
        alerts_reach_every_destination_once(db).await;
    }
}

async fn alerts_reach_every_destination_once(db: TestDb) {
    let got = Arc::new(Mutex::new(Got::default()));
    got.lock()
        .unwrap()
        .unavailable_left
        .insert("json".into(), 2);
    let base = receivers(got.clone()).await;
    let app = spawn_app_with(alerting(&db, &base)).await;
    eventually("the alerter starts", || async {
        app.store.alert_cursor().await.unwrap().is_some()
    })
    .await;
    send_scenarios(&app).await;
    alerts_settled(&app.store).await;

    // What should be open: every production change's exception codes, as its packet says.
    let auditor = app.token(Role::Auditor).await;
    let list: Value = app
        .get("/v1/changes?limit=500", Some(&auditor))
        .await
        .json()
        .await
        .unwrap();
    let mut want = BTreeSet::new();
    for c in list["changes"].as_array().unwrap() {
        let id = c["change"]["id"].as_str().unwrap();
        let p = packet(&app, id).await;
        if p["change"]["production"] == true {
            for x in p["exceptions"].as_array().unwrap() {
                want.insert((id.to_owned(), x["code"].as_str().unwrap().to_owned()));
            }
        }
    }
    assert!(want.len() > 5, "{want:?}");
    assert!(
        !want.iter().any(|(c, _)| c == "CHG-STAGING"),
        "staging is not production"
    );
    // And every production version no change explains, under its own subject.
    let unlinked: Value = app
        .get("/v1/deploys/unlinked", Some(&auditor))
        .await
        .json()
        .await
        .unwrap();
    let unlinked = unlinked["unlinked_deploys"].as_array().unwrap();
    assert!(!unlinked.is_empty());
    for v in unlinked {
        want.insert((
            format!(
                "unlinked:{}/{}/{}",
                v["environment"].as_str().unwrap().to_lowercase(),
                v["service"].as_str().unwrap(),
                v["version"].as_str().unwrap()
            ),
            "UNLINKED_DEPLOY".to_owned(),
        ));
    }
    // Sightings are judged once the change summary reflects them: awaited, then settled again.
    let open_now =
        || async { open_codes(&alerts(&app.base, &app.reviewer, "?limit=1000").await.1) };
    eventually("the open alerts are the production exceptions", || async {
        open_now().await == want
    })
    .await;
    alerts_settled(&app.store).await;
    // A change a sender names like an unlinked deploy's subject cannot resolve its alert.
    let forged = want
        .iter()
        .find(|(s, _)| s.starts_with("unlinked:"))
        .map(|(s, _)| s.clone())
        .unwrap();
    let mut wf = workflow(
        &forged,
        90,
        crate::support::scenario::T0 + 25 * 24 * 60 * MIN,
    );
    let mut run = wf.run_span("normal", "alice@example.com", None, vec![]);
    run.set("deployment.environment.name", "staging");
    send(&app, &[run]).await;
    alerts_settled(&app.store).await;
    assert_eq!(open_now().await, want, "the forged change resolved nothing");

    // The list: reviewers and auditors read it, nobody else.
    let (status, listed) = alerts(&app.base, &app.reviewer, "?limit=1000").await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(alerts(&app.base, &auditor, "").await.0, StatusCode::OK);
    assert_eq!(
        alerts(&app.base, &app.ingest, "").await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        alerts(&app.base, &app.reviewer, "?status=open").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        open_codes(&listed),
        want,
        "open alerts are the production exceptions"
    );
    let events = listed["alerts"].as_array().unwrap();
    assert_eq!(listed["total"], events.len());
    // Every event reached every destination, each recorded by an alert.delivered entry.
    for e in events {
        let dests: Vec<(&str, &str)> = e["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                assert!(d["delivered_seq"].as_u64().unwrap() > e["entry_seq"].as_u64().unwrap());
                (
                    d["destination"].as_str().unwrap(),
                    d["state"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            dests,
            vec![
                ("audit", "delivered"),
                ("chat", "delivered"),
                ("oncall", "delivered"),
                ("otlp", "delivered")
            ],
            "{e}"
        );
    }
    // A code is raised once per change: the raised events' codes never repeat.
    let mut raised = BTreeSet::new();
    for e in events.iter().filter(|e| e["status"] == "firing") {
        for c in e["codes"].as_array().unwrap() {
            let key = (
                e["change_id"].as_str().unwrap(),
                c["code"].as_str().unwrap(),
            );
            assert!(raised.insert(key), "raised twice: {key:?}");
        }
    }

    let (all, turned_away) = {
        let g = got.lock().unwrap();
        (g.taken.clone(), g.turned_away)
    };
    assert_eq!(turned_away, 2, "the JSON receiver's two 503s were retried");
    let taken = |route: &str| all.iter().filter(|(r, ..)| r == route).collect::<Vec<_>>();
    // changetrail's JSON: one body per event, signed, named by its delivery id.
    let json = taken("json");
    assert_eq!(json.len(), events.len());
    let mut seqs = BTreeSet::new();
    for (_, headers, body) in &json {
        assert_eq!(headers["x-changetrail-signature"], hmac_hex(body).as_str());
        let b: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(b["source"], "changetrail");
        let seq = b["entry_seq"].as_u64().unwrap();
        assert!(seqs.insert(seq), "event {seq} twice");
        assert_eq!(
            headers["x-changetrail-delivery"],
            format!("{seq}/audit").as_str()
        );
        if b["subject"].as_str().unwrap().starts_with("unlinked:") {
            assert!(b["link"].is_null() && b["change"]["id"].is_null(), "{b}");
        } else {
            assert!(
                b["link"]
                    .as_str()
                    .unwrap()
                    .starts_with("https://ct.example/#/changes/CHG-"),
                "{b}"
            );
        }
    }
    // Alertmanager: one alert per firing code, the bearer token on each request.
    let mut am = BTreeSet::new();
    for (_, headers, body) in taken("am") {
        assert_eq!(
            headers["authorization"],
            format!("Bearer {BEARER}").as_str()
        );
        for a in serde_json::from_slice::<Value>(body)
            .unwrap()
            .as_array()
            .unwrap()
        {
            let ends = a["endsAt"].as_str().unwrap();
            assert!(ends >= a["startsAt"].as_str().unwrap());
            let about = a["labels"]
                .get("change_id")
                .unwrap_or(&a["labels"]["subject"]);
            am.insert((
                about.as_str().unwrap().to_owned(),
                a["labels"]["alertname"].as_str().unwrap().to_owned(),
                ends.to_owned(),
            ));
        }
    }
    assert!(am.len() >= want.len());
    for (change, code) in &want {
        assert!(
            am.iter().any(|(c, n, _)| c == change && n == code),
            "{change} {code} reached Alertmanager"
        );
    }
    // Slack: one message per event, as text.
    assert_eq!(taken("slack").len(), events.len());
    for (_, _, body) in taken("slack") {
        let text = serde_json::from_slice::<Value>(body).unwrap()["text"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(text.contains("changetrail"), "{text}");
    }
    // OTLP logs: one record per event, on the change's service, with its codes.
    let otlp = taken("otlp");
    assert_eq!(otlp.len(), events.len());
    for (_, headers, body) in &otlp {
        assert_eq!(headers["x-api-key"], "k-789");
        let req = ExportLogsServiceRequest::decode(body.clone()).unwrap();
        let rl = &req.resource_logs[0];
        let log = &rl.scope_logs[0].log_records[0];
        assert_eq!(log.event_name, "changetrail.alert");
        assert!(log.severity_number == 13 || log.severity_number == 9);
        assert!(
            log.attributes
                .iter()
                .any(|kv| kv.key == "changetrail.alert.codes"),
            "{log:?}"
        );
    }

    // /metrics counts them.
    let metrics = app.token(Role::Metrics).await;
    let scraped = reqwest::Client::new()
        .get(format!("{}/metrics", app.base))
        .bearer_auth(&metrics)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| -> f64 {
        scraped
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} is not in /metrics"))
    };
    assert_eq!(value("changetrail_alerts_enabled"), 1.0);
    assert_eq!(
        value("changetrail_alerts_raised_total") + value("changetrail_alerts_resolved_total"),
        events.len() as f64
    );
    assert_eq!(
        value("changetrail_alerts_delivered_total"),
        4.0 * events.len() as f64
    );
    assert_eq!(value("changetrail_alerts_failed_total"), 2.0);
    let vkey = app.vkey.clone();
    app.stop().await;

    // The alerts are ledger entries like any other: the chain verifies with them.
    let store = db.store().await;
    let report = verify_store(&store, &[&vkey]).await;
    assert_eq!(report.exit_code, 0, "{:?}", report.findings);
}

/// The outbox on both backends: a claim is the holder's until its deadline; a release makes it
/// due again at its backoff; a refusal closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_hands_each_delivery_to_one_holder() {
    for db in [
        Some(TestDb::sqlite().await),
        TestDb::postgres("the_outbox_hands_each_delivery_to_one_holder").await,
    ]
    .into_iter()
    .flatten()
    {
        let store = db.store().await;
        let mut tx = store.begin_append().await.unwrap();
        tx.insert_alert_outbox(7, &["a".into(), "b".into(), "c".into()], 100)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let ab = ["a".to_owned(), "b".to_owned()];
        let claim = |now, token, deadline| {
            let (store, ab) = (store.clone(), ab.clone());
            async move {
                store
                    .claim_alert_deliveries(&ab, now, token, deadline, 10)
                    .await
                    .unwrap()
            }
        };
        assert!(claim(99, 1, 500).await.is_empty(), "not due yet");
        let first = claim(100, 1, 500).await;
        // Only this instance's destinations: "c" is left for an instance that has it.
        assert_eq!(
            first
                .iter()
                .map(|d| d.destination.as_str())
                .collect::<Vec<_>>(),
            vec!["a", "b"]
        );
        assert_eq!(first[0].attempts, 1);
        // Held until the deadline, then another holder may take it.
        assert!(claim(499, 2, 900).await.is_empty());
        let (a, b) = (&first[0], &first[1]);
        assert!(store.renew_alert_claim(a, 1, 550).await.unwrap());
        assert!(
            !store.renew_alert_claim(a, 9, 550).await.unwrap(),
            "not the holder"
        );
        assert!(
            store
                .release_alert_delivery(a, 1, false, true, 600, "HTTP 503")
                .await
                .unwrap()
        );
        assert!(
            store
                .release_alert_delivery(b, 1, true, true, 0, "HTTP 400")
                .await
                .unwrap()
        );
        // A holder whose claim is gone cannot release it again.
        assert!(
            !store
                .release_alert_delivery(a, 1, false, true, 0, "late")
                .await
                .unwrap()
        );
        assert_eq!(store.alert_outbox_counts().await.unwrap(), (2, 1));
        assert!(claim(599, 3, 900).await.is_empty());
        let again = claim(600, 3, 900).await;
        assert_eq!(again.len(), 1);
        assert_eq!((again[0].destination.as_str(), again[0].attempts), ("a", 2));
        // Put off without being sent: the attempt is not counted.
        assert!(
            store
                .release_alert_delivery(&again[0], 3, false, false, 700, "waiting")
                .await
                .unwrap()
        );
        let again = claim(700, 3, 900).await;
        assert_eq!(again[0].attempts, 2);
        // Lapsed: taken by the next holder; the first can neither renew nor record it.
        let taken = claim(901, 4, 2000).await;
        assert_eq!(taken.len(), 1);
        assert!(!store.renew_alert_claim(&taken[0], 3, 2500).await.unwrap());
        let mut tx = store.begin_append().await.unwrap();
        assert!(!tx.take_alert_claim(7, "a", 3).await.unwrap());
        assert!(tx.take_alert_claim(7, "a", 4).await.unwrap());
        assert!(!tx.take_alert_claim(7, "a", 4).await.unwrap(), "taken once");
        tx.mark_alert_delivered(7, "a", 42).await.unwrap();
        tx.commit().await.unwrap();
        assert!(
            claim(i64::MAX, 5, i64::MAX).await.is_empty(),
            "delivered and refused stay closed"
        );
    }
}

/// Two instances on one PostgreSQL database alerting to one receiver: each code is raised once
/// and each event reaches the receiver once, whichever instance raised or delivered it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_raise_and_deliver_each_alert_once() {
    let Some(db) = TestDb::postgres("two_instances_raise_and_deliver_each_alert_once").await else {
        return;
    };
    let got = Arc::new(Mutex::new(Got::default()));
    let base = receivers(got.clone()).await;
    let mut cfg = alerting(&db, &base);
    cfg.alerts.webhooks.retain(|w| w.name == "audit");
    cfg.alerts.otlp.endpoint.clear();
    cfg.alerts.interval = std::time::Duration::from_millis(20);
    let one = spawn_app_with(cfg.clone()).await;
    cfg.otlp.journal_dir = db.path().join("second.journal");
    let two = changetrail::app::startup::App::build(cfg).await.unwrap();
    let two_stop = two.shutdown_token();
    let two_running = tokio::spawn(async move { two.run().await.unwrap() });
    send_scenarios(&one).await;
    alerts_settled(&one.store).await;
    let (_, listed) = alerts(&one.base, &one.reviewer, "?limit=1000").await;
    let events = listed["alerts"].as_array().unwrap();
    assert!(events.len() > 5, "{listed}");
    let mut raised = BTreeSet::new();
    for e in events.iter().filter(|e| e["status"] == "firing") {
        for c in e["codes"].as_array().unwrap() {
            let key = (e["change_id"].to_string(), c["code"].to_string());
            assert!(raised.insert(key.clone()), "raised twice: {key:?}");
        }
    }
    let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
    for (_, _, body) in &got.lock().unwrap().taken {
        let b: Value = serde_json::from_slice(body).unwrap();
        *seen.entry(b["entry_seq"].as_u64().unwrap()).or_default() += 1;
    }
    let listed_seqs: BTreeMap<u64, u32> = events
        .iter()
        .map(|e| (e["entry_seq"].as_u64().unwrap(), 1))
        .collect();
    assert_eq!(seen, listed_seqs, "each event delivered once");
    one.stop().await;
    two_stop.cancel();
    two_running.await.unwrap();
}

/// A production change deployed without an approval raises NO_APPROVAL; the approval arriving
/// late (its token verifying) resolves it, and the resolution is delivered too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_approval_resolves_its_alert() {
    let db = TestDb::sqlite().await;
    let got = Arc::new(Mutex::new(Got::default()));
    let base = receivers(got.clone()).await;
    let mut cfg = alerting(&db, &base);
    cfg.alerts.webhooks.retain(|w| w.name == "audit");
    cfg.alerts.otlp.endpoint.clear();
    let app = spawn_app_with(cfg).await;
    eventually("the alerter starts", || async {
        app.store.alert_cursor().await.unwrap().is_some()
    })
    .await;
    let t0 = crate::support::scenario::T0 + 3 * 24 * 60 * MIN;
    let mut wf = workflow("CHG-WAIT", 61, t0);
    let at = |m: u64| (t0 + m * MIN) as i64;
    let run = wf.run_span(
        "normal",
        "alice@example.com",
        Some(crate::support::idp::token("alice@example.com", &[], at(0))),
        vec![],
    );
    let approval = wf.approval(
        "bob@example.com",
        Some(crate::support::idp::token(
            "bob@example.com",
            &["approver"],
            at(5),
        )),
        "approved",
        MIN,
        5 * MIN,
    );
    let deploy = wf.deploy(0, "success", 6 * MIN, 7 * MIN);
    send(&app, &[run, deploy]).await;
    let bodies = |status: &'static str| {
        let got = got.clone();
        move || {
            got.lock()
                .unwrap()
                .taken
                .iter()
                .map(|(_, _, b)| serde_json::from_slice::<Value>(b).unwrap())
                .filter(|b| b["status"] == status)
                .collect::<Vec<_>>()
        }
    };
    let (firing, resolved) = (bodies("firing"), bodies("resolved"));
    eventually("NO_APPROVAL is raised and delivered", || {
        let firing = firing.clone();
        async move {
            firing()
                .iter()
                .any(|b| b["exceptions"].to_string().contains("NO_APPROVAL"))
        }
    })
    .await;
    send(&app, &[approval]).await;
    eventually("NO_APPROVAL is resolved and delivered", || {
        let resolved = resolved.clone();
        async move {
            resolved().iter().any(|b| {
                b["change"]["id"] == "CHG-WAIT"
                    && b["exceptions"].to_string().contains("NO_APPROVAL")
            })
        }
    })
    .await;
    let (_, listed) = alerts(&app.base, &app.reviewer, "?change_id=CHG-WAIT").await;
    assert!(
        !listed["open"].to_string().contains("NO_APPROVAL"),
        "{listed}"
    );
    // Two looks at one subject in one append raise its code once.
    let look = changetrail::core::alerts::Look {
        event: changetrail::core::alerts::AlertEvent {
            codes: vec![changetrail::core::alerts::AlertCode {
                code: "NO_APPROVAL".into(),
                evidence: "twice".into(),
            }],
            ..changetrail::core::alerts::AlertEvent::about("CHG-TWICE")
        },
        as_of: None,
    };
    let appended = app
        .writer
        .alerts(&[look.clone(), look], &["audit".to_owned()])
        .await
        .unwrap();
    assert_eq!(appended.seqs.len(), 1, "raised once");
    let r = resolved();
    let b = r.iter().find(|b| b["change"]["id"] == "CHG-WAIT").unwrap();
    assert!(b["exceptions"][0]["raised"].as_str().is_some(), "{b}");
    assert_eq!(
        firing()
            .iter()
            .filter(|b| b["exceptions"].to_string().contains("NO_APPROVAL"))
            .count(),
        1,
        "raised once"
    );
    app.stop().await;
}

/// `kill -9` between raise and delivery: the alert is raised and its deliveries fail (the
/// receiver is down); the server is killed, the receiver comes back, the server restarts, and
/// each event arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_raised_before_kill_9_is_delivered_once_after_restart() {
    let got = Arc::new(Mutex::new(Got {
        down: true,
        ..Default::default()
    }));
    let base = receivers(got.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("changetrail.toml"),
        format!(
            "[alerts]\ninterval = \"100ms\"\ntimeout = \"2s\"\nmax_backoff = \"500ms\"\n\
             [[alerts.webhooks]]\nname = \"audit\"\nurl = \"{base}/services/T0/B0/{SECRET_PATH}\"\nformat = \"json\"\n\
             [suspects]\nsettle = \"1s\"\ninterval = \"100ms\"\nflush_interval = \"100ms\"\n"
        ),
    )
    .unwrap();
    let served = serve_in(dir.path(), &[], Some("info"), &[]);
    let http = reqwest::Client::new();
    let api = format!("http://{}", served.addr("http").await);
    let otlp = format!("http://{}", served.addr("otlp_http").await);
    let ingest =
        crate::support::server::create_token(&http, &api, &served.admin, "ingest", "i").await;
    let reviewer =
        crate::support::server::create_token(&http, &api, &served.admin, "reviewer", "r").await;
    // A production change deployed 23 minutes ago with no approval (NO_APPROVAL), after which
    // its service's errors rose (CHANGE_REGRESSION): its requests are sent first.
    let now = changetrail::sys::now_ns() as u64 - 25 * MIN;
    let export = |items: Vec<changetrail::demo::scenario::Item>| {
        let (http, otlp, ingest) = (http.clone(), otlp.clone(), ingest.clone());
        async move {
            let r = http
                .post(format!("{otlp}/v1/traces"))
                .header("content-type", "application/x-protobuf")
                .bearer_auth(&ingest)
                .body(changetrail::demo::scenario::export_request(&items).encode_to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), reqwest::StatusCode::OK);
        }
    };
    export(requests_around(now + 2 * MIN)).await;
    let mut wf = changetrail::demo::scenario::Workflow::new("CHG-KILL", 62, now);
    export(vec![
        wf.run_span("normal", "alice@example.com", None, vec![]),
        wf.deploy(0, "success", MIN, 2 * MIN),
    ])
    .await;
    // Both raised, and tried at least once against the receiver that is down.
    eventually("the alerts are raised and their delivery tried", || async {
        let (_, l) = alerts(&api, &reviewer, "?change_id=CHG-KILL").await;
        let open = open_codes(&l);
        open.contains(&("CHG-KILL".into(), "NO_APPROVAL".into()))
            && open.contains(&("CHG-KILL".into(), "CHANGE_REGRESSION".into()))
            && got.lock().unwrap().turned_away > 0
    })
    .await;
    let (_, before) = alerts(&api, &reviewer, "?change_id=CHG-KILL").await;
    let events: Vec<u64> = before["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["entry_seq"].as_u64().unwrap())
        .collect();
    assert!(
        before["alerts"][0]["deliveries"][0]["state"] != "delivered",
        "{before}"
    );
    let mut child = served.child;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    served.reader.join().unwrap();
    // The webhook's path is its credential (as Slack's are): no log line shows it.
    let logs = served.lines.lock().unwrap().join("\n");
    assert!(logs.contains("Alerts go to these destinations"), "{logs}");
    assert!(!logs.contains(SECRET_PATH), "{logs}");
    got.lock().unwrap().down = false;
    // Restarted on the same directory (no bootstrap token this time).
    let mut again = ct(dir.path())
        .arg("serve")
        .env(
            "CHANGETRAIL_HTTP__LISTEN",
            api.trim_start_matches("http://"),
        )
        .env("CHANGETRAIL_OTLP__GRPC_LISTEN", "127.0.0.1:0")
        .env("CHANGETRAIL_OTLP__HTTP_LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually("every event is delivered after the restart", || async {
        let Some((_, l)) = try_alerts(&api, &reviewer, "?change_id=CHG-KILL").await else {
            return false;
        };
        l["alerts"].as_array().is_some_and(|a| {
            !a.is_empty() && a.iter().all(|e| e["deliveries"][0]["state"] == "delivered")
        })
    })
    .await;
    let (_, after) = alerts(&api, &reviewer, "?change_id=CHG-KILL").await;
    again.kill().unwrap();
    again.wait().unwrap();
    let g = got.lock().unwrap();
    let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
    for (_, _, body) in &g.taken {
        let b: Value = serde_json::from_slice(body).unwrap();
        *seen.entry(b["entry_seq"].as_u64().unwrap()).or_default() += 1;
    }
    let listed: Vec<u64> = after["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["entry_seq"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, events, "no event was raised twice by the restart");
    assert_eq!(
        seen,
        events.iter().map(|s| (*s, 1)).collect::<BTreeMap<_, _>>(),
        "each event arrived exactly once"
    );
    let regressions = g
        .taken
        .iter()
        .filter(|(_, _, b)| {
            let b: Value = serde_json::from_slice(b).unwrap();
            b["exceptions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["code"] == "CHANGE_REGRESSION")
        })
        .count();
    assert_eq!(
        regressions, 1,
        "the regression's alert arrived exactly once"
    );
}

/// Requests `payments-api` served around a deploy at `deployed` (ns): 15 minutes of 1.41.0, 5 in
/// 200 failing, then 10 minutes of 1.42.0, 80 in 200 failing; SERVER spans, a trace each.
fn requests_around(deployed: u64) -> Vec<changetrail::demo::scenario::Item> {
    use opentelemetry_proto::tonic::trace::v1::{Span, Status};
    let mut items = Vec::new();
    for m in 0..25u64 {
        let (version, failing) = if m < 15 { ("1.41.0", 1) } else { ("1.42.0", 8) };
        for i in 0..20u64 {
            let start = deployed - 15 * MIN + m * MIN + i * 2_000_000_000;
            items.push(changetrail::demo::scenario::Item {
                resource: vec![
                    ("service.name".into(), "payments-api".into()),
                    ("service.version".into(), version.into()),
                    ("deployment.environment.name".into(), "production".into()),
                ],
                span: Span {
                    trace_id: crate::support::otlp::trace().to_vec(),
                    span_id: (m * 100 + i + 1).to_be_bytes().to_vec(),
                    name: "POST /v1/payments".into(),
                    kind: 2,
                    start_time_unix_nano: start,
                    end_time_unix_nano: start + 30_000_000,
                    status: (i < failing).then(|| Status {
                        code: 2,
                        message: String::new(),
                    }),
                    ..Default::default()
                },
            });
        }
    }
    items
}
