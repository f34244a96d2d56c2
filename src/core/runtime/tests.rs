use super::suspects::{Candidate, Query, rank};
use super::*;

const T0: i64 = 1_800_000_000 * 1_000_000_000; // a minute boundary
const M: i64 = MINUTE_NS;

/// `n` spans a minute of `ms` each, `errors` of them failing with `kind`.
fn minute(
    service: &str,
    version: &str,
    at: i64,
    n: u64,
    errors: u64,
    ms: u64,
    kind: &str,
) -> Minute {
    let mut cell = Cell::default();
    for i in 0..n {
        let failed = i < errors;
        let trace = [i as u8 + 1; 16];
        cell.add(
            ms * 1_000_000,
            failed.then_some((kind, at + i as i64, &trace)),
        );
    }
    Minute {
        environment: "production".into(),
        service: service.into(),
        version: version.into(),
        minute_ns: at,
        cell,
    }
}

/// checkout's v2 deployed at T0 + 30 s: its errors go from 1 in 50 to 20 in 50 and a new kind
/// appears; payments (downstream) starts failing one minute later; search changes nothing.
fn scenario() -> BTreeMap<String, Vec<Minute>> {
    let mut s: BTreeMap<String, Vec<Minute>> = BTreeMap::new();
    for k in -20..10i64 {
        let at = T0 + k * M;
        let after = k >= 0;
        s.entry("checkout".into()).or_default().push(if after {
            minute("checkout", "2.0.0", at, 50, 20, 120, "ConnectionError")
        } else {
            minute("checkout", "1.9.0", at, 50, 1, 100, "Timeout")
        });
        s.entry("payments".into()).or_default().push(minute(
            "payments",
            "7",
            at,
            40,
            if k >= 1 { 10 } else { 0 },
            30,
            "UpstreamError",
        ));
        s.entry("search".into()).or_default().push(minute(
            "search",
            if k >= -5 { "3" } else { "2" },
            at,
            30,
            0,
            10,
            "-",
        ));
    }
    s
}

#[test]
fn a_clear_rise_after_a_deploy_is_a_regression_and_a_quiet_one_is_not() {
    let s = scenario();
    let th = Thresholds::default();
    let c = compare(
        &s["checkout"],
        ("production", "checkout"),
        T0 + 30_000_000_000,
        Some("2.0.0"),
        &th,
    );
    assert!(c.regression, "{c:?}");
    assert_eq!((c.before.spans, c.before.errors), (20 * 50, 20));
    assert_eq!((c.after.spans, c.after.errors), (10 * 50, 200));
    assert_eq!(c.version.as_deref(), Some("2.0.0"));
    assert_eq!(c.new_error_kinds, vec!["ConnectionError".to_string()]);
    assert!(
        c.reasons[0].starts_with("error rate rose from 2.0 % to 40.0 %"),
        "{:?}",
        c.reasons
    );
    let first = c.after.first_error.clone().unwrap();
    assert_eq!(first.time_ns, T0);

    let quiet = compare(
        &s["search"],
        ("production", "search"),
        T0 - 5 * M,
        Some("3"),
        &th,
    );
    assert!(!quiet.regression);
    assert!(
        quiet.reasons[0].starts_with("no clear rise"),
        "{:?}",
        quiet.reasons
    );

    // Too few spans judges nothing, however bad.
    let few = compare(
        &s["checkout"][..20],
        ("production", "checkout"),
        T0,
        None,
        &th,
    );
    assert!(
        !few.regression && few.reasons[0].starts_with("too few spans"),
        "{few:?}"
    );

    // Latency alone: 100 ms → 300 ms.
    let slow: Vec<Minute> = (-10..10i64)
        .map(|k| {
            minute(
                "api",
                "1",
                T0 + k * M,
                40,
                0,
                if k >= 0 { 300 } else { 100 },
                "-",
            )
        })
        .collect();
    let c = compare(&slow, ("production", "api"), T0, None, &th);
    assert!(
        c.regression && c.reasons[0].starts_with("p95 latency rose"),
        "{c:?}"
    );
}

#[test]
fn the_change_that_broke_the_service_ranks_first_with_its_blast_radius() {
    let s = scenario();
    let th = Thresholds::default();
    let candidates = vec![
        Candidate {
            change_id: "CHG-SEARCH".into(),
            service: "search".into(),
            version: Some("3".into()),
            deployed_ns: T0 - 5 * M,
        },
        Candidate {
            change_id: "CHG-CHECKOUT".into(),
            service: "checkout".into(),
            version: Some("2.0.0".into()),
            deployed_ns: T0 + 30_000_000_000,
        },
        Candidate {
            change_id: "CHG-LATER".into(),
            service: "search".into(),
            version: None,
            deployed_ns: T0 + 60 * M,
        },
    ];
    let q = Query {
        service: "payments",
        environment: "production",
        from_ns: T0 - 10 * M,
        to_ns: T0 + 10 * M,
    };
    let ranked = rank(&q, &candidates, &s, &th);
    let ids: Vec<&str> = ranked.iter().map(|r| r.change_id.as_str()).collect();
    assert_eq!(
        ids,
        ["CHG-CHECKOUT", "CHG-SEARCH"],
        "a deploy after the window is no suspect"
    );
    let top = &ranked[0];
    assert!(top.own.regression);
    assert_eq!(
        top.onset_ns,
        Some(T0 + M),
        "payments began failing a minute in"
    );
    let on = top.on_service.as_ref().unwrap();
    assert_eq!((on.before.errors, on.after.errors), (0, 90));
    let blast: Vec<&str> = top
        .blast_radius
        .iter()
        .map(|b| b.service.as_str())
        .collect();
    assert_eq!(blast, ["payments"]);
    assert_eq!(top.first_error.as_ref().unwrap().time_ns, T0);
    assert!(
        top.score > 3.0 * ranked[1].score,
        "{} vs {}",
        top.score,
        ranked[1].score
    );

    // Asked about checkout itself, the change is still first, with no separate figures.
    let q = Query {
        service: "checkout",
        ..q
    };
    let ranked = rank(&q, &candidates, &s, &th);
    assert_eq!(ranked[0].change_id, "CHG-CHECKOUT");
    assert!(ranked[0].on_service.is_none());
}

#[test]
fn cells_add_up_keep_few_kinds_and_check_themselves() {
    let mut a = Cell::default();
    for k in 0..12 {
        a.add(5_000_000, Some((&format!("E{k}"), 100 - k, &[k as u8; 16])));
    }
    assert_eq!(a.error_kinds.len(), MAX_KINDS + 1);
    assert_eq!(a.error_kinds[OTHER_KIND], 4);
    assert_eq!(a.first_error.as_ref().unwrap().time_ns, 89);
    let m = Minute {
        environment: "production".into(),
        service: "s".into(),
        version: "1".into(),
        minute_ns: T0,
        cell: a.clone(),
    };
    assert!(m.is_valid());
    let text = serde_json::to_string(&m).unwrap();
    let back: Minute = serde_json::from_str(&text).unwrap();
    assert_eq!(back, m);
    let mut forged = m.clone();
    forged.cell.errors += 1;
    assert!(!forged.is_valid(), "errors its kinds do not add up to");
    let mut forged = m.clone();
    forged.minute_ns += 1;
    assert!(!forged.is_valid(), "not a minute boundary");
    let mut forged = m;
    forged.cell.spans = 1;
    assert!(!forged.is_valid(), "more errors than spans");

    let mut b = a.clone();
    b.merge(&a);
    assert_eq!((b.spans, b.errors, b.latency_us.count()), (24, 24, 24));
}

#[test]
fn a_cell_gathered_from_many_exports_keeps_its_caps() {
    // Eight kinds in one export, two more in the next, six senders: the minute stays one this
    // code would write (a reader refusing it would lose every span of the minute).
    let mut shared = Cell::default();
    for (export, kinds) in [(0u8, 0..8), (1, 8..10)] {
        let mut c = Cell::default();
        c.sent_by(&format!("token-{export}"));
        for k in kinds {
            c.add(1_000_000, Some((&format!("E{k}"), 5, &[k as u8; 16])));
        }
        c.add(2_000_000, None);
        shared.absorb(&c);
    }
    for s in 2..6 {
        let mut c = Cell::default();
        c.sent_by(&format!("token-{s}"));
        c.add(1_000_000, None);
        shared.absorb(&c);
    }
    assert_eq!(shared.error_kinds.len(), MAX_KINDS + 1);
    assert_eq!(shared.error_kinds[OTHER_KIND], 2);
    assert_eq!(shared.senders.len(), MAX_SENDERS + 1);
    assert!(shared.senders.contains(OTHER_SENDERS));
    let m = Minute {
        environment: "production".into(),
        service: "s".into(),
        version: "1".into(),
        minute_ns: T0,
        cell: shared,
    };
    assert!(m.is_valid(), "{m:?}");
}

#[test]
fn a_window_of_many_minutes_signs_bounded_figures() {
    // 32 versions × 8 kinds each in the baseline: the figures keep the 8 most frequent kinds
    // and the rest as one count, so a comparison's fact stays small whatever was sent.
    let mut minutes = Vec::new();
    for v in 0..32u64 {
        let mut cell = Cell::default();
        for k in 0..8u64 {
            for _ in 0..=(v + k) {
                cell.add(1_000_000, Some((&format!("K{v}-{k}"), T0, &[1; 16])));
            }
        }
        cell.sent_by(&format!("token-{v}"));
        minutes.push(Minute {
            environment: "production".into(),
            service: "s".into(),
            version: format!("{v}"),
            minute_ns: T0 - M,
            cell,
        });
    }
    let c = compare(
        &minutes,
        ("production", "s"),
        T0,
        None,
        &Thresholds::default(),
    );
    assert_eq!(c.before.error_kinds.len(), MAX_KINDS + 1);
    assert_eq!(
        c.before.error_kinds.values().sum::<u64>(),
        c.before.errors,
        "every error is still counted"
    );
    assert!(
        c.before.error_kinds.contains_key("K31-7"),
        "the most frequent kind is named"
    );
    assert_eq!(c.before.senders.len(), MAX_WINDOW_SENDERS + 1);
}
