//! The per-change summary: the list it answers is the list folding the period answers (every
//! filter, every exception code, paging), and `verify` recomputes every row, naming one that was
//! changed, removed or added behind its back.

use crate::support::db::exec;
use crate::support::otlp::kv;
use crate::support::scenario::{MIN, T0, packet, scenario_config, send, send_scenarios, workflow};
use crate::support::server::{TestDb, spawn_app_with};
use changetrail::read::changes::{ChangeFilter, Judged, list_folded, list_judged};
use changetrail::read::summary::{audit_summary, catch_up, catch_up_by};
use std::collections::BTreeSet;

fn shape(page: &(Vec<Judged>, usize)) -> (Vec<(String, Vec<&'static str>)>, usize) {
    (
        page.0
            .iter()
            .map(|j| {
                (
                    j.evidence.change.id.clone(),
                    j.exceptions.iter().map(|x| x.code).collect(),
                )
            })
            .collect(),
        page.1,
    )
}

async fn the_summary_lists_what_folding_lists_and_verify_recomputes_it(db: TestDb) {
    let mut cfg = scenario_config(&db);
    // No background summarizer: the steps below are the test's own (one entry at a time).
    cfg.reports.summary_refresh = std::time::Duration::ZERO;
    let criteria = cfg.criteria();
    let app = spawn_app_with(cfg).await;
    let expect = send_scenarios(&app).await;
    let store = &app.store;
    // A dependency arriving after what depends on it: a rollback naming a change not seen yet,
    // summarised, then that change. The rollback's row must move when the target arrives.
    let day = 24 * 60 * MIN;
    let mut rb = workflow("CHG-RB-EARLY", 60, T0 + 20 * day);
    send(
        &app,
        &[rb.run_span(
            "rollback",
            "alice@example.com",
            None,
            vec![kv("changetrail.change.rollback_of", "CHG-TARGET-LATER")],
        )],
    )
    .await;
    catch_up(store, &criteria, None).await.unwrap();
    let rollbacks = ChangeFilter {
        kind: Some("rollback".into()),
        from_ns: i64::MIN,
        to_ns: i64::MAX,
        ..Default::default()
    };
    let before = list_judged(store, &rollbacks, &criteria, None, 0, 100)
        .await
        .unwrap();
    let mut late = workflow("CHG-TARGET-LATER", 61, T0 + 19 * day);
    send(
        &app,
        &[late.run_span("normal", "alice@example.com", None, vec![])],
    )
    .await;
    catch_up(store, &criteria, None).await.unwrap();
    let after = list_judged(store, &rollbacks, &criteria, None, 0, 100)
        .await
        .unwrap();
    let codes_of = |page: &(Vec<Judged>, usize)| {
        page.0
            .iter()
            .find(|j| j.evidence.change.id == "CHG-RB-EARLY")
            .map(|j| j.exceptions.iter().map(|x| x.code).collect::<Vec<_>>())
            .unwrap()
    };
    assert_ne!(
        codes_of(&before),
        codes_of(&after),
        "the target's arrival changes the judgement"
    );
    let (_, caught_up) = catch_up(store, &criteria, None).await.unwrap().unwrap();
    assert!(caught_up);

    let codes: BTreeSet<&str> = expect.values().flatten().copied().collect();
    let all = ChangeFilter {
        from_ns: i64::MIN,
        to_ns: i64::MAX,
        environment: None,
        service: None,
        kind: None,
    };
    let mut filters = vec![(all.clone(), None)];
    for code in &codes {
        filters.push((all.clone(), Some(*code)));
    }
    filters.push((
        ChangeFilter {
            environment: Some("PRODUCTION".into()),
            ..all.clone()
        },
        None,
    ));
    filters.push((
        ChangeFilter {
            kind: Some("rollback".into()),
            ..all.clone()
        },
        None,
    ));
    // A period holding some of the scenarios (they are a day apart from January 2026 on).
    let some = list_folded(store, &all, &criteria, None, 0, 1000)
        .await
        .unwrap();
    let times: Vec<i64> = some
        .0
        .iter()
        .filter_map(|j| j.evidence.change.requested_ns)
        .collect();
    let mid = times[times.len() / 2];
    filters.push((
        ChangeFilter {
            from_ns: mid,
            ..all.clone()
        },
        None,
    ));
    // A change requested twice, days apart: periods between, around and over its requests.
    let mut first = workflow("CHG-TWICE", 62, T0 + 30 * day);
    let mut again = workflow("CHG-TWICE", 63, T0 + 32 * day);
    send(
        &app,
        &[
            first.run_span("normal", "alice@example.com", None, vec![]),
            again.run_span("normal", "alice@example.com", None, vec![]),
        ],
    )
    .await;
    let at = |d: u64| (T0 + d * day / 2) as i64;
    for (from, to) in [(61, 63), (59, 61), (63, 66), (59, 66), (66, 70)] {
        filters.push((
            ChangeFilter {
                from_ns: at(from),
                to_ns: at(to),
                ..all.clone()
            },
            None,
        ));
    }
    for (f, code) in &filters {
        for (offset, limit) in [(0, 1000), (1, 2), (3, 1)] {
            let summarised = list_judged(store, f, &criteria, *code, offset, limit)
                .await
                .unwrap();
            let folded = list_folded(store, f, &criteria, *code, offset, limit)
                .await
                .unwrap();
            assert_eq!(
                shape(&summarised),
                shape(&folded),
                "{:?}: {f:?} {code:?} {offset} {limit}",
                db.backend
            );
        }
    }
    // The exception filters above were not vacuous: the list judges many codes, and each
    // filtered list holds every change the whole list gives that code.
    let some = list_folded(store, &all, &criteria, None, 0, 1000)
        .await
        .unwrap();
    let listed: BTreeSet<&str> = some
        .0
        .iter()
        .flat_map(|j| j.exceptions.iter().map(|x| x.code))
        .collect();
    assert!(listed.len() >= 4, "{:?}: {listed:?}", db.backend);
    for code in &listed {
        let (page, total) = list_judged(store, &all, &criteria, Some(code), 0, 1000)
            .await
            .unwrap();
        let want: Vec<&str> = some
            .0
            .iter()
            .filter(|j| j.exceptions.iter().any(|x| x.code == *code))
            .map(|j| j.evidence.change.id.as_str())
            .collect();
        let got: Vec<&str> = page.iter().map(|j| j.evidence.change.id.as_str()).collect();
        assert_eq!(
            (got, total),
            (want.clone(), want.len()),
            "{:?}: {code}",
            db.backend
        );
    }

    // The verifier recomputes every row: none differs now...
    let (findings, note) = audit_summary(store, &criteria).await.unwrap();
    assert!(findings.is_empty(), "{:?}: {findings:?}", db.backend);
    assert_eq!(note, None);
    // ... nor when the summary followed the chain one entry at a time, each row refreshed only
    // when an entry could move it (a missed refresh leaves a row the recomputation disagrees
    // with).
    exec(store, "DELETE FROM summary_state").await.unwrap();
    let (state, done) = catch_up_by(store, &criteria, None, 1, true)
        .await
        .unwrap()
        .unwrap();
    assert!(done && state.through.is_some_and(|t| t > 50), "{state:?}");
    let (findings, _) = audit_summary(store, &criteria).await.unwrap();
    assert!(
        findings.is_empty(),
        "{:?}: entry by entry: {findings:?}",
        db.backend
    );
    // Two summarizers at once (two instances, or a request beside the background one), each an
    // entry at a time from nothing: whoever moves the cursor first wins each step, the other
    // goes on from there, and the rows verify.
    exec(store, "DELETE FROM summary_state").await.unwrap();
    let (a, b) = tokio::join!(
        catch_up_by(store, &criteria, None, 3, true),
        catch_up_by(store, &criteria, None, 5, true)
    );
    assert!(a.unwrap().unwrap().1 && b.unwrap().unwrap().1);
    let (findings, _) = audit_summary(store, &criteria).await.unwrap();
    assert!(
        findings.is_empty(),
        "{:?}: two summarizers: {findings:?}",
        db.backend
    );

    // An erasure removes a fact (and the rows it named): the summary is rebuilt from what
    // remains, the list follows it, and it still verifies.
    let ok = packet(&app, "CHG-OK").await;
    let seq = ok["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "approval.decided")
        .unwrap()["seq"]
        .as_u64()
        .unwrap();
    let codes_of_ok = || async {
        let (page, _) = list_judged(store, &all, &criteria, None, 0, 1000)
            .await
            .unwrap();
        page.iter()
            .find(|j| j.evidence.change.id == "CHG-OK")
            .map(|j| j.exceptions.iter().map(|x| x.code).collect::<Vec<_>>())
            .unwrap()
    };
    let before = codes_of_ok().await;
    app.writer
        .erase(seq, "GDPR request", "dpo@example.com")
        .await
        .unwrap();
    catch_up(store, &criteria, None).await.unwrap();
    assert_ne!(
        codes_of_ok().await,
        before,
        "{:?}: the erased approval counts",
        db.backend
    );
    for code in [None, Some("NO_APPROVAL")] {
        let summarised = list_judged(store, &all, &criteria, code, 0, 1000)
            .await
            .unwrap();
        let folded = list_folded(store, &all, &criteria, code, 0, 1000)
            .await
            .unwrap();
        assert_eq!(
            shape(&summarised),
            shape(&folded),
            "{:?}: {code:?}",
            db.backend
        );
    }
    let (findings, _) = audit_summary(store, &criteria).await.unwrap();
    assert!(
        findings.is_empty(),
        "{:?}: after an erasure: {findings:?}",
        db.backend
    );

    // ... and each kind of tampering is named.
    let (victim, _) = expect.iter().find(|(_, c)| !c.is_empty()).unwrap();
    let tampered = [
        format!("UPDATE change_summary SET exceptions = '' WHERE change_id = '{victim}'"),
        format!("DELETE FROM change_summary WHERE change_id = '{victim}'"),
        "INSERT INTO change_summary (change_id, requested_ns, first_request, last_request, environment, service, kind, version, exceptions) \
         VALUES ('CHG-FORGED', 0, 0, 0, 'production', 'api', 'normal', '', '')"
            .to_owned(),
    ];
    for sql in &tampered {
        // Rebuilt from a clean state each time.
        exec(store, "DELETE FROM summary_state").await.unwrap();
        catch_up(store, &criteria, None).await.unwrap();
        assert!(audit_summary(store, &criteria).await.unwrap().0.is_empty());
        exec(store, sql).await.unwrap();
        let (findings, _) = audit_summary(store, &criteria).await.unwrap();
        assert_eq!(findings.len(), 1, "{:?}: {sql}: {findings:?}", db.backend);
        let text = format!("{:?}", findings[0]);
        assert!(
            text.contains("DerivedMismatch") && text.contains("change_summary"),
            "{text}"
        );
        assert!(
            text.contains(victim.as_str()) || text.contains("CHG-FORGED"),
            "{text}"
        );
    }
    // Editing the summary's state does not silence the check: a summary this configuration
    // cannot recompute is a finding, as are rows without a cursor and a cursor past the head.
    exec(store, "DELETE FROM summary_state").await.unwrap();
    catch_up(store, &criteria, None).await.unwrap();
    let mut other = criteria.clone();
    other.judging.max_lateness_ns += 1;
    let (findings, _) = audit_summary(store, &other).await.unwrap();
    assert_eq!(findings.len(), 1, "{findings:?}");
    for sql in [
        "UPDATE summary_state SET through_seq = -1",
        "DELETE FROM summary_state",
        "UPDATE summary_state SET through_seq = 99999999",
    ] {
        exec(store, "DELETE FROM summary_state").await.unwrap();
        catch_up(store, &criteria, None).await.unwrap();
        exec(store, sql).await.unwrap();
        let (findings, _) = audit_summary(store, &criteria).await.unwrap();
        assert_eq!(findings.len(), 1, "{:?}: {sql}: {findings:?}", db.backend);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_lists_what_folding_lists_and_verify_recomputes_it_sqlite() {
    the_summary_lists_what_folding_lists_and_verify_recomputes_it(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_lists_what_folding_lists_and_verify_recomputes_it_postgres() {
    if let Some(db) =
        TestDb::postgres("the_summary_lists_what_folding_lists_and_verify_recomputes_it_postgres")
            .await
    {
        the_summary_lists_what_folding_lists_and_verify_recomputes_it(db).await;
    }
}
