//! The four keys (`GET /v1/delivery`) of a fixed week of one service, sent through the real
//! OTLP/HTTP listener, against figures worked out by hand.

use crate::support::scenario::{MIN, T0, scenario_config, send, workflow};
use crate::support::server::{TestDb, spawn_app_with};
use changetrail::auth::Role;
use reqwest::StatusCode;
use serde_json::Value;

const HOUR: u64 = 60 * MIN;
const DAY: u64 = 24 * HOUR;

/// `cart`'s week: A deployed 2 h after its request; B deployed after 30 min and rolled back by
/// R (requested 1 h after B, deployed 20 min later: B restored 50 min after its deploy); C's
/// deploy failed 40 min after its request and D, requested an hour after C, deployed `cart`
/// 3 h after C's request (C restored 2 h 20 min after its failure).
async fn send_week(app: &crate::support::server::TestApp) {
    let change = |id: &str, n: u8, t0: u64| {
        let mut wf = workflow(id, n, t0);
        wf.service = "cart".into();
        wf
    };
    let mut items = Vec::new();
    let mut a = change("DLV-A", 70, T0);
    items.push(a.run_span("normal", "alice@example.com", None, vec![]));
    items.push(a.deploy(0, "success", 100 * MIN, 2 * HOUR));
    let mut b = change("DLV-B", 71, T0 + DAY);
    items.push(b.run_span("normal", "alice@example.com", None, vec![]));
    items.push(b.deploy(0, "success", 20 * MIN, 30 * MIN));
    let mut r = change("DLV-R", 72, T0 + DAY + HOUR);
    items.push(r.run_span(
        "rollback",
        "alice@example.com",
        None,
        vec![crate::support::otlp::kv(
            "changetrail.change.rollback_of",
            "DLV-B",
        )],
    ));
    items.push(r.deploy(0, "success", 10 * MIN, 20 * MIN));
    let mut c = change("DLV-C", 73, T0 + 2 * DAY);
    items.push(c.run_span("normal", "alice@example.com", None, vec![]));
    items.push(c.deploy(0, "failure", 30 * MIN, 40 * MIN));
    let mut d = change("DLV-D", 74, T0 + 2 * DAY + HOUR);
    items.push(d.run_span("normal", "alice@example.com", None, vec![]));
    items.push(d.deploy(0, "success", 100 * MIN, 2 * HOUR));
    // Staging deploys are not delivery to production.
    let mut s = change("DLV-S", 75, T0 + 3 * DAY);
    let mut run = s.run_span("normal", "alice@example.com", None, vec![]);
    run.set("deployment.environment.name", "staging");
    items.push(run);
    items.push(s.deploy(0, "success", 10 * MIN, 20 * MIN));
    send(app, &items).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_four_keys_of_a_week_match_a_hand_count() {
    let db = TestDb::sqlite().await;
    let cfg = scenario_config(&db);
    let app = spawn_app_with(cfg.clone()).await;
    send_week(&app).await;
    // The SOC 2 report of January holds the same figures in delivery.csv (4 deployments over
    // 31 days), hashed in its signed manifest.
    app.writer.checkpoint().await.unwrap();
    let out = db.path().join("january");
    let settings = cfg.report_settings(None).unwrap();
    crate::support::report::build_january(&app, &settings, &out, None)
        .await
        .unwrap();
    const HEADER: &str = "service,deployments,deployments_per_day,lead_time_median_s,lead_time_p90_s,landed,failed,change_failure_rate,restored,time_to_restore_median_s,time_to_restore_max_s";
    const CART: &str = "4,0.129,1800,7200,5,2,0.400,2,3000,8400";
    assert_eq!(
        std::fs::read_to_string(out.join("delivery.csv")).unwrap(),
        format!("{HEADER}\r\ncart,{CART}\r\n*,{CART}\r\n")
    );
    // The page a person reads: the same figures, and two charts of them.
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    let section = html
        .split("<section id=\"delivery\">")
        .nth(1)
        .and_then(|s| s.split("</section>").next())
        .expect("a delivery section");
    for want in [
        "<td>cart</td><td class=\"num\">4</td><td class=\"num\">0.13</td><td class=\"num\">30.0 min</td><td class=\"num\">2 / 5</td><td class=\"num\">40.0 %</td><td class=\"num\">50.0 min</td>",
        "id=\"chart-deploys\"",
        "id=\"chart-change-lead\"",
    ] {
        assert!(section.contains(want), "{want} in {section}");
    }
    let manifest = std::fs::read_to_string(out.join("manifest.json")).unwrap();
    assert!(manifest.contains("\"delivery.csv\""), "{manifest}");
    let auditor = app.token(Role::Auditor).await;
    let week = "from=2026-01-01T00:00:00Z&to=2026-01-08T00:00:00Z";
    let r = app
        .get(&format!("/v1/delivery?{week}"), Some(&auditor))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let d: Value = r.json().await.unwrap();
    let cart = &d["services"]["cart"];
    assert_eq!(d["services"].as_object().unwrap().len(), 1, "{d}");
    // Deployments A, B, R, D: lead times 2 h, 30 min, 20 min, 2 h.
    assert_eq!(cart["deployments"], 4);
    assert_eq!(cart["lead_time_median_s"], 30 * 60);
    assert_eq!(cart["lead_time_p90_s"], 2 * 3600);
    // Landed A, B, R, C, D; failed B (rolled back) and C (deploy failed).
    assert_eq!(cart["landed"], 5);
    assert_eq!(cart["failed"], 2);
    assert_eq!(cart["change_failure_rate"], 0.4);
    // Restored: B in 50 min (by R), C in 2 h 20 min (by D).
    assert_eq!(cart["restored"], 2);
    assert_eq!(cart["time_to_restore_median_s"], 50 * 60);
    assert_eq!(cart["time_to_restore_max_s"], 140 * 60);
    let failures: Vec<(&str, &str, &str)> = d["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["change_id"].as_str().unwrap(),
                f["why"].as_str().unwrap(),
                f["restored_by"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        failures,
        vec![
            ("DLV-B", "rolled_back", "DLV-R"),
            ("DLV-C", "deploy_failed", "DLV-D")
        ]
    );
    assert_eq!(d["all"], *cart, "one service: the same figures");
    // No approval anywhere: each of the five production changes is NO_APPROVAL (the staging
    // one is not counted), whichever week it was requested in.
    let weeks = d["exceptions_by_week"].as_object().unwrap();
    let no_approval: u64 = weeks
        .values()
        .map(|w| w["NO_APPROVAL"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(no_approval, 5, "{weeks:?}");
    // A service filter, in any case; a period with nothing in it.
    let r = app
        .get(&format!("/v1/delivery?{week}&service=CART"), Some(&auditor))
        .await;
    let one: Value = r.json().await.unwrap();
    assert_eq!(one["all"], *cart);
    let r = app
        .get(
            "/v1/delivery?from=2025-01-01T00:00:00Z&to=2025-01-08T00:00:00Z",
            Some(&auditor),
        )
        .await;
    let empty: Value = r.json().await.unwrap();
    assert_eq!(empty["all"]["deployments"], 0);
    assert!(empty["all"]["change_failure_rate"].is_null());
    // Bad periods are 400s; other roles are refused.
    for bad in [
        "from=2026-01-08T00:00:00Z&to=2026-01-01T00:00:00Z",
        "from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
        "from=yesterday",
    ] {
        let r = app
            .get(&format!("/v1/delivery?{bad}"), Some(&auditor))
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    let r = app
        .get(&format!("/v1/delivery?{week}"), Some(&app.ingest))
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    app.stop().await;
}
