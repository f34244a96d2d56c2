//! The storage conformance suite, run against SQLite and PostgreSQL alike: every test is two,
//! `NAME::sqlite` and `NAME::postgres`, so a failure names its backend.

use crate::support::db::{disable_triggers, draft, exec, flip};
use crate::support::server::{TestDb, eventually, pg_base, verify_store};
use changetrail::app::keyfile::{self, FileKeySource};
use changetrail::core::ledger::batch::Draft;
use changetrail::core::ledger::verify::Class;
use changetrail::pipeline::{AppendError, LedgerWriter, SequencerConfig, spawn_sequencer};
use changetrail::storage::{Backend, Store};
use std::future::Future;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// `per_backend!(NAME)` makes the tests `NAME::sqlite` and `NAME::postgres`, each calling
/// `NAME(db)` on a fresh database of its backend; `per_backend!(NAME by backend)` calls
/// `NAME(backend)` instead, for a test that opens several databases. `tokio::test` arguments, if
/// any, follow a comma.
macro_rules! per_backend {
    ($name:ident by backend $(, $($arg:tt)+)?) => {
        per_backend!(@tests $name, on_backend $(, $($arg)+)?);
    };
    ($name:ident $(, $($arg:tt)+)?) => {
        per_backend!(@tests $name, on_fresh_db $(, $($arg)+)?);
    };
    (@tests $name:ident, $run:ident $(, $($arg:tt)+)?) => {
        mod $name {
            use super::*;

            #[tokio::test$(($($arg)+))?]
            async fn sqlite() {
                $run(Backend::Sqlite, stringify!($name), super::$name).await
            }

            #[tokio::test$(($($arg)+))?]
            async fn postgres() {
                $run(Backend::Postgres, stringify!($name), super::$name).await
            }
        }
    };
}

/// A fresh database of `backend`; `None` (printed SKIPPED) for PostgreSQL when
/// `TEST_DATABASE_URL` is unset.
async fn open(backend: Backend, test: &str) -> Option<TestDb> {
    match backend {
        Backend::Sqlite => Some(TestDb::sqlite().await),
        Backend::Postgres => TestDb::postgres(test).await,
    }
}

/// Runs `body` on a fresh database of `backend`, unless that is PostgreSQL and none is configured.
async fn on_fresh_db<F: Future<Output = ()>>(
    backend: Backend,
    test: &str,
    body: impl FnOnce(TestDb) -> F,
) {
    if let Some(db) = open(backend, test).await {
        body(db).await
    }
}

/// Runs `body` for `backend`, unless that is PostgreSQL and none is configured.
async fn on_backend<F: Future<Output = ()>>(
    backend: Backend,
    test: &str,
    body: impl FnOnce(Backend) -> F,
) {
    if backend == Backend::Sqlite || pg_base(test).is_some() {
        body(backend).await
    }
}

/// A writer on `db` with a key file in the test's directory (generated on first use).
pub async fn writer(db: &TestDb, checkpoint_every: u64) -> Arc<LedgerWriter> {
    let store = db.store().await;
    let path = db.path().join("ledger.key");
    if !path.exists() {
        let key = keyfile::generate(keyfile::generated_origin()).unwrap();
        keyfile::write_new_key(&path, &key).unwrap();
    }
    let key = keyfile::read_key(&path).unwrap();
    let w = Arc::new(LedgerWriter::new(
        store,
        key,
        Some(Box::new(FileKeySource(path))),
        checkpoint_every,
    ));
    w.ensure_ledger().await.unwrap();
    w
}

/// A ledger with ordinary entries, a key rotation and an erasure, fully checkpointed.
/// Returns the writer and the first key's vkey (what a reviewer pins).
pub async fn rich_ledger(db: &TestDb) -> (Arc<LedgerWriter>, String) {
    let w = writer(db, 10).await;
    let first = w.key().vkey().to_string();
    let drafts: Vec<Draft> = (1..=25).map(draft).collect();
    w.append(&drafts).await.unwrap();
    let new_key = keyfile::generate(w.key().origin().clone()).unwrap();
    w.rotate(new_key).await.unwrap();
    let drafts: Vec<Draft> = (26..=40).map(draft).collect();
    w.append(&drafts).await.unwrap();
    w.erase(3, "GDPR Art. 17 request", "dpo@example.com")
        .await
        .unwrap();
    w.checkpoint().await.unwrap();
    (w, first)
}

async fn ledger_is_created_once_with_a_first_checkpoint(db: TestDb) {
    let w = writer(&db, 1000).await;
    let again = w.ensure_ledger().await.unwrap();
    assert_eq!(again.head.size, 1, "{:?}", db.backend);
    let e0 = w.store().entry(0).await.unwrap().unwrap();
    assert_eq!(e0.kind, "ledger.created");
    assert!(e0.payload.unwrap().contains(&w.key().vkey().to_string()));
    assert_eq!(
        w.store().latest_checkpoint().await.unwrap().unwrap().size,
        1
    );
    let report = verify_store(w.store(), &[&w.key().vkey().to_string()]).await;
    assert_eq!(
        report.exit_code, 0,
        "{:?}: {:?}",
        db.backend, report.findings
    );
}
per_backend!(ledger_is_created_once_with_a_first_checkpoint);

/// Many concurrent callers through the sequencer: every seq exactly once, no gaps.
async fn concurrent_appends_are_gap_free(db: TestDb) {
    let w = writer(&db, 100).await;
    let stop = CancellationToken::new();
    let (appender, seq_task) = spawn_sequencer(w.clone(), SequencerConfig::default(), stop.clone());
    let mut tasks = Vec::new();
    for t in 0..16u64 {
        let a = appender.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for j in 0..20u64 {
                let drafts = (0..7).map(|k| draft(t * 1000 + j * 10 + k)).collect();
                seqs.extend(a.append_waiting(drafts).await.unwrap().seqs);
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    stop.cancel();
    seq_task.await.unwrap();
    all.sort_unstable();
    let expected: Vec<u64> = (1..=16 * 20 * 7).collect();
    assert_eq!(all, expected, "{:?}", db.backend);
    let head = w.store().head().await.unwrap().unwrap();
    assert_eq!(head.head.size, 16 * 20 * 7 + 1);
    // The sequencer's shutdown signs a final checkpoint: everything is covered.
    assert_eq!(head.checkpoint_size, head.head.size);
    let report = verify_store(w.store(), &[&w.key().vkey().to_string()]).await;
    assert_eq!(
        report.exit_code, 0,
        "{:?}: {:?}",
        db.backend, report.findings
    );
}
per_backend!(
    concurrent_appends_are_gap_free,
    flavor = "multi_thread",
    worker_threads = 4
);

async fn ledger_tables_refuse_update_and_delete(db: TestDb) {
    let (w, _) = rich_ledger(&db).await;
    let s = w.store();
    for sql in [
        "UPDATE entries SET kind = 'x' WHERE seq = 1",
        "DELETE FROM entries WHERE seq = 40",
        "UPDATE tree_nodes SET hash = hash WHERE level = 1",
        "DELETE FROM tree_nodes WHERE level = 1",
        "UPDATE checkpoints SET note = 'x' WHERE size = 1",
        "DELETE FROM checkpoints WHERE size = 1",
        "UPDATE signing_keys SET from_seq = 5",
        "DELETE FROM signing_keys",
        "UPDATE erasures SET erasure_seq = 1",
        "DELETE FROM erasures",
        "UPDATE payloads SET payload = '{}' WHERE seq = 5",
        // Deleting a payload is allowed only for a logged erasure.
        "DELETE FROM payloads WHERE seq = 5",
    ] {
        let err = exec(s, sql).await.expect_err(sql);
        let msg = err.to_string();
        assert!(
            msg.contains("append-only") || msg.contains("erased") || msg.contains("erasure"),
            "{:?} {sql}: {msg}",
            db.backend
        );
    }
    if db.backend == Backend::Postgres {
        for t in ["entries", "payloads", "tree_nodes", "checkpoints"] {
            assert!(
                exec(s, &format!("TRUNCATE {t}")).await.is_err(),
                "TRUNCATE {t}"
            );
        }
    }
    // Nothing changed: the ledger still verifies.
    assert_eq!(verify_store(s, &[]).await.exit_code, 0);
}
per_backend!(ledger_tables_refuse_update_and_delete);

async fn rotation_and_erasure_verify_with_the_first_key_pinned(db: TestDb) {
    let (w, first) = rich_ledger(&db).await;
    let report = verify_store(w.store(), &[&first]).await;
    assert_eq!(
        report.exit_code, 0,
        "{:?}: {:?}",
        db.backend, report.findings
    );
    assert!(report.has(Class::Redacted));
    assert_eq!(report.summary.redacted, 1);
    let keys = w.store().keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[1].rotation_seq, Some(26));
    assert_eq!(keys[1].from_seq, 27);
    assert_eq!(report.summary.keys.len(), 2);
    // The erased entry keeps its chain link but has no payload or salt any more.
    let e3 = w.store().entry(3).await.unwrap().unwrap();
    assert!(e3.payload.is_none() && e3.salt.is_none());
    // Erasing it again, or erasing what verification needs, is refused.
    assert!(matches!(
        w.erase(3, "again", "x").await,
        Err(AppendError::Erase(3, _))
    ));
    assert!(matches!(
        w.erase(26, "rotation", "x").await,
        Err(AppendError::Erase(26, _))
    ));
    assert!(matches!(
        w.erase(0, "genesis", "x").await,
        Err(AppendError::Erase(0, _))
    ));
    assert!(matches!(
        w.erase(9999, "none", "x").await,
        Err(AppendError::Erase(9999, _))
    ));
}
per_backend!(rotation_and_erasure_verify_with_the_first_key_pinned);

/// Another process rotated the key: this writer notices the mismatch, reloads the key file
/// (or its `.next`) and carries on signing with the new key.
async fn a_writer_follows_a_rotation_made_elsewhere(db: TestDb) {
    let w1 = writer(&db, 10).await;
    let w2 = writer(&db, 10).await;
    let first = w1.key().vkey().to_string();
    let new_key = keyfile::generate(w1.key().origin().clone()).unwrap();
    let path = db.path().join("ledger.key");
    keyfile::write_new_key(&keyfile::next_path(&path), &new_key).unwrap();
    let old_id = w1.key().key_id();
    w1.rotate(new_key).await.unwrap();
    // w2 still holds the old key; the .next file is not promoted yet: it must find it there.
    w2.append(&[draft(1)]).await.unwrap();
    keyfile::finish_rotation(&path, old_id).unwrap();
    w2.append(&[draft(2)]).await.unwrap();
    assert_ne!(w2.key().key_id(), old_id);
    w2.checkpoint().await.unwrap();
    let report = verify_store(w2.store(), &[&first]).await;
    assert_eq!(
        report.exit_code, 0,
        "{:?}: {:?}",
        db.backend, report.findings
    );
}
per_backend!(a_writer_follows_a_rotation_made_elsewhere);

/// The service refuses to sign a checkpoint that is not consistent with its previous one.
async fn an_inconsistent_tree_is_never_checkpointed(db: TestDb) {
    let w = writer(&db, 1000).await;
    let drafts: Vec<Draft> = (1..=20).map(draft).collect();
    w.append(&drafts).await.unwrap();
    w.checkpoint().await.unwrap();
    // Someone rewrites a stored tree node behind the service's back.
    let s = w.store();
    disable_triggers(s, "tree_nodes").await;
    // Leaves 0..16: part of every consistency proof from the checkpoint at 21.
    flip(s, "tree_nodes", "hash", "level = 4 AND idx = 0").await;
    let before = s.latest_checkpoint().await.unwrap().unwrap().size;
    w.append(&(21..=30).map(draft).collect::<Vec<_>>())
        .await
        .unwrap();
    let err = w
        .checkpoint()
        .await
        .expect_err("checkpoint over a rewritten tree");
    assert!(
        matches!(err, AppendError::CheckpointRefused(_)),
        "{:?}: {err}",
        db.backend
    );
    assert_eq!(s.latest_checkpoint().await.unwrap().unwrap().size, before);
    // And verification of the database names the damage.
    let report = verify_store(s, &[]).await;
    assert_eq!(report.exit_code, 1, "{:?}", report.findings);
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.class == Class::Modified && f.detail.contains("tree_nodes"))
    );
}
per_backend!(an_inconsistent_tree_is_never_checkpointed);

/// Tamper catalogue A, in storage: one flipped byte (or changed value) in any stored column is
/// found by `verify --database-url`, with the class src/core/ledger/FORMAT.md names.
async fn a_change_to_any_stored_column_is_detected(backend: Backend) {
    // The class depends on what the changed byte meant; a note's middle byte is in its
    // signature line, so the signature no longer names a trusted key.
    let cases: &[(&str, &str, &str, Class)] = &[
        ("entries", "entry", "seq = 12", Class::Modified),
        ("entries", "sig", "seq = 12", Class::BadSignature),
        ("entries", "leaf_hash", "seq = 12", Class::Modified),
        ("entries", "time_ns", "seq = 12", Class::Modified),
        ("entries", "kind", "seq = 12", Class::Modified),
        ("entries", "subject", "seq = 12", Class::Modified),
        ("payloads", "salt", "seq = 12", Class::Modified),
        ("payloads", "payload", "seq = 12", Class::Modified),
        (
            "tree_nodes",
            "hash",
            "level = 2 AND idx = 1",
            Class::Modified,
        ),
        (
            "checkpoints",
            "note",
            "size = (SELECT MIN(size) FROM checkpoints WHERE size > 1)",
            Class::UnknownKey,
        ),
        (
            "checkpoints",
            "root",
            "size = (SELECT MIN(size) FROM checkpoints WHERE size > 1)",
            Class::Modified,
        ),
        ("signing_keys", "vkey", "from_seq = 0", Class::Modified),
        ("signing_keys", "from_seq", "from_seq = 27", Class::Modified),
        ("erasures", "erasure_seq", "seq = 3", Class::Modified),
        ("ledger_head", "last_leaf", "id = 1", Class::Modified),
        ("ledger_head", "frontier", "id = 1", Class::Modified),
        ("ledger_head", "key_id", "id = 1", Class::Modified),
    ];
    for db_case in cases {
        // A fresh ledger per case: the previous one was damaged on purpose.
        let Some(db) = open(backend, "a_change_to_any_stored_column_is_detected").await else {
            return;
        };
        let (w, first) = rich_ledger(&db).await;
        let s = w.store();
        let (table, column, filter, class) = db_case;
        assert_eq!(verify_store(s, &[&first]).await.exit_code, 0);
        disable_triggers(s, table).await;
        flip(s, table, column, filter).await;
        let report = verify_store(s, &[&first]).await;
        assert!(
            report.exit_code != 0 && report.has(*class),
            "{:?} {table}.{column}: expected {class:?}, got {:#?}",
            db.backend,
            report.findings
        );
    }
}
per_backend!(a_change_to_any_stored_column_is_detected by backend);

/// A writer's batches signed ahead: (used, thrown away).
fn prebuilt_counts(w: &LedgerWriter) -> (u64, u64) {
    use std::sync::atomic::Ordering::Relaxed;
    let m = &w.metrics;
    (
        m.prebuilt_used.load(Relaxed),
        m.prebuilt_discarded.load(Relaxed),
    )
}

/// A batch signed ahead of its transaction is used only on the head it was signed against: when
/// another writer appended in between, it is thrown away and the batch is built again on the
/// real head, so the chain stays one and gap-free and nothing signed ahead is stored.
async fn a_batch_signed_ahead_is_used_only_on_its_head(db: TestDb) {
    let none = changetrail::pipeline::Telemetry::default();
    let a = writer(&db, 1000).await;
    let b = writer(&db, 1000).await;
    a.append(&[draft(1)]).await.unwrap();
    // As predicted: the signed batch is stored as it was signed.
    let head = a.last_head().unwrap();
    let drafts: Vec<Draft> = (2..5).map(draft).collect();
    let p = a.prepare(&head, &drafts, &none).await.unwrap();
    let predicted = p.head_after().clone();
    let got = a.append_prepared(&drafts, &none, Some(p)).await.unwrap();
    assert_eq!(got.seqs, vec![2, 3, 4], "{:?}", db.backend);
    assert_eq!(prebuilt_counts(&a), (1, 0));
    assert_eq!(a.store().head().await.unwrap().unwrap().head, predicted);
    // Another writer moves the head after the batch was signed: built again, after its entries.
    let p = a
        .prepare(&a.last_head().unwrap(), &drafts, &none)
        .await
        .unwrap();
    b.append(&[draft(5), draft(6)]).await.unwrap();
    let got = a.append_prepared(&drafts, &none, Some(p)).await.unwrap();
    assert_eq!(got.seqs, vec![7, 8, 9]);
    assert_eq!(prebuilt_counts(&a), (1, 1));
    // Other drafts than those it was signed from: built again too.
    let p = a
        .prepare(&a.last_head().unwrap(), &drafts, &none)
        .await
        .unwrap();
    let other: Vec<Draft> = (10..13).map(draft).collect();
    let got = a.append_prepared(&other, &none, Some(p)).await.unwrap();
    assert_eq!(got.seqs, vec![10, 11, 12]);
    assert_eq!(prebuilt_counts(&a), (1, 2));
    assert_eq!(
        a.store().entry(11).await.unwrap().unwrap().subject,
        "CHG-11"
    );
    a.checkpoint().await.unwrap();
    let report = verify_store(a.store(), &[&a.key().vkey().to_string()]).await;
    assert_eq!(
        report.exit_code, 0,
        "{:?}: {:?}",
        db.backend, report.findings
    );
}
per_backend!(a_batch_signed_ahead_is_used_only_on_its_head);

/// Through the sequencer: the batch signed ahead after another writer moved the head is thrown
/// away and built again, and the batches after it are signed ahead again (the prediction
/// follows the head this writer committed, not the one it had predicted).
async fn signing_ahead_recovers_after_another_writer_appends(db: TestDb) {
    let a = writer(&db, 1000).await;
    let b = writer(&db, 1000).await;
    let stop = CancellationToken::new();
    let (appender, task) = spawn_sequencer(a.clone(), SequencerConfig::default(), stop.clone());
    let mut seqs = Vec::new();
    for i in [1, 2] {
        seqs.extend(appender.append_waiting(vec![draft(i)]).await.unwrap().seqs);
    }
    b.append(&[draft(3)]).await.unwrap();
    for i in [4, 5, 6] {
        seqs.extend(appender.append_waiting(vec![draft(i)]).await.unwrap().seqs);
    }
    stop.cancel();
    task.await.unwrap();
    assert_eq!(seqs, vec![1, 2, 4, 5, 6], "{:?}", db.backend);
    assert_eq!(
        prebuilt_counts(&a),
        (4, 1),
        "{:?}: (used, thrown away)",
        db.backend
    );
    let report = verify_store(a.store(), &[&a.key().vkey().to_string()]).await;
    assert_eq!(
        report.exit_code, 0,
        "{:?}: {:?}",
        db.backend, report.findings
    );
}
per_backend!(signing_ahead_recovers_after_another_writer_appends);

/// Under continuous load (a batch signed while another commits): one append by another writer
/// costs one or two batches signed in vain, not every batch until the queue runs dry.
async fn one_foreign_append_costs_at_most_two_batches_signed_in_vain(db: TestDb) {
    let a = writer(&db, 1000).await;
    let b = writer(&db, 1000).await;
    let stop = CancellationToken::new();
    let (appender, task) = spawn_sequencer(a.clone(), SequencerConfig::default(), stop.clone());
    let (third, third_rx) = tokio::sync::oneshot::channel::<()>();
    let mut third = Some(third);
    let mut producers = Vec::new();
    for p in 0..16u64 {
        let appender = appender.clone();
        // The first producer says when it is a third of the way, so the other writer appends
        // while the load goes on.
        let signal = if p == 0 { third.take() } else { None };
        producers.push(tokio::spawn(async move {
            let mut signal = signal;
            for j in 0..30u64 {
                let drafts = (0..4).map(|k| draft(p * 1000 + j * 10 + k)).collect();
                appender.append_waiting(drafts).await.unwrap();
                if j == 10
                    && let Some(s) = signal.take()
                {
                    let _ = s.send(());
                }
            }
        }));
    }
    third_rx.await.unwrap();
    b.append(&[draft(999_999)]).await.unwrap();
    for p in producers {
        p.await.unwrap();
    }
    stop.cancel();
    task.await.unwrap();
    let (used, discarded) = prebuilt_counts(&a);
    // Whether the foreign append lands while a batch is signed ahead is up to timing (it did not
    // in one CI run: 0 in vain, 80 used); the case where it does is pinned exactly by
    // `signing_ahead_recovers_after_another_writer_appends`. What must hold here is the bound.
    assert!(
        discarded <= 2,
        "{:?}: {discarded} batches signed in vain ({used} used)",
        db.backend
    );
    assert!(
        used >= 5,
        "{:?}: only {used} batches signed ahead",
        db.backend
    );
    let report = verify_store(a.store(), &[&a.key().vkey().to_string()]).await;
    assert_eq!(
        report.exit_code, 0,
        "{:?}: {:?}",
        db.backend, report.findings
    );
}
per_backend!(
    one_foreign_append_costs_at_most_two_batches_signed_in_vain,
    flavor = "multi_thread",
    worker_threads = 4
);

/// Two writers with separate connection pools (as two processes would have) appending to one
/// PostgreSQL ledger at once: the head row serialises them into one gap-free chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_writers_share_one_postgres_chain() {
    let Some(db) = TestDb::postgres("two_writers_share_one_postgres_chain").await else {
        return;
    };
    let a = writer(&db, 100).await;
    let b = writer(&db, 100).await;
    let run = |w: Arc<LedgerWriter>, base: u64| {
        tokio::spawn(async move {
            let mut seqs = Vec::new();
            for j in 0..40u64 {
                let drafts: Vec<Draft> = (0..25).map(|k| draft(base + j * 100 + k)).collect();
                seqs.extend(w.append(&drafts).await.unwrap().seqs);
            }
            seqs
        })
    };
    let (sa, sb) = (run(a.clone(), 0), run(b.clone(), 1_000_000));
    let mut all = sa.await.unwrap();
    all.extend(sb.await.unwrap());
    all.sort_unstable();
    assert_eq!(all, (1..=2000).collect::<Vec<u64>>());
    a.checkpoint().await.unwrap();
    let report = verify_store(a.store(), &[&a.key().vkey().to_string()]).await;
    assert_eq!(report.exit_code, 0, "{:?}", report.findings);
}

/// Entries arriving below the every-N threshold still get a checkpoint after T; an idle ledger
/// gets a heartbeat entry and a checkpoint after H, so quiet can be told from truncated.
async fn timed_checkpoints_and_idle_heartbeats(db: TestDb) {
    let w = writer(&db, 1000).await;
    let cfg = SequencerConfig {
        checkpoint_interval: std::time::Duration::from_millis(300),
        heartbeat_interval: std::time::Duration::from_secs(2),
        tick: std::time::Duration::from_millis(50),
        ..SequencerConfig::default()
    };
    let stop = CancellationToken::new();
    let (a, task) = spawn_sequencer(w.clone(), cfg, stop.clone());
    let done = a.append(vec![draft(1), draft(2)]).await.unwrap();
    assert_eq!(
        done.checkpoint, None,
        "2 entries are far below checkpoint_every"
    );
    let s = w.store().clone();
    eventually("a timed checkpoint over the 3 entries", || {
        let s = s.clone();
        async move { s.latest_checkpoint().await.unwrap().unwrap().size == 3 }
    })
    .await;
    eventually("an idle heartbeat, checkpointed", || {
        let s = s.clone();
        async move {
            let h = s.head().await.unwrap().unwrap();
            let last = s.entry(h.head.size - 1).await.unwrap().unwrap();
            last.kind == "heartbeat" && h.checkpoint_size == h.head.size
        }
    })
    .await;
    stop.cancel();
    task.await.unwrap();
    let report = verify_store(w.store(), &[&w.key().vkey().to_string()]).await;
    assert_eq!(
        report.exit_code, 0,
        "{:?}: {:?}",
        db.backend, report.findings
    );
}
per_backend!(
    timed_checkpoints_and_idle_heartbeats,
    flavor = "multi_thread",
    worker_threads = 2
);

/// The change list and the report find rollbacks with `ROLLBACK_FACTS`; on a large ledger that is
/// fast only while the planner answers it from the partial index of migration 0005, which it does
/// only while the query's predicate is the index's. PostgreSQL is asked with sequential scans off:
/// an empty table would otherwise be scanned, which says nothing about the index matching.
async fn the_rollback_lookup_is_answered_from_its_index(db: TestDb) {
    use changetrail::storage::ROLLBACK_FACTS;
    let store = db.store().await;
    let plan: Vec<String> = match &store {
        Store::Sqlite(p) => {
            let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "EXPLAIN QUERY PLAN {ROLLBACK_FACTS}"
            )))
            .bind(i64::MAX)
            .fetch_all(p)
            .await
            .unwrap();
            rows.into_iter().map(|r| r.3).collect()
        }
        Store::Postgres(p) => {
            let mut conn = p.acquire().await.unwrap();
            sqlx::query("SET enable_seqscan = off")
                .execute(&mut *conn)
                .await
                .unwrap();
            let rows: Vec<(String,)> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN {ROLLBACK_FACTS}")))
                    .bind(i64::MAX)
                    .fetch_all(&mut *conn)
                    .await
                    .unwrap();
            sqlx::query("RESET enable_seqscan")
                .execute(&mut *conn)
                .await
                .unwrap();
            rows.into_iter().map(|r| r.0).collect()
        }
    };
    assert!(
        plan.iter().any(|l| l.contains("facts_rollbacks")),
        "{:?}: the rollback lookup does not use its index: {plan:?}",
        db.backend
    );
}
per_backend!(the_rollback_lookup_is_answered_from_its_index);

/// Several instances on one database: an idle ledger gets one heartbeat, whichever instance's
/// timer fires first; the others see under the head lock that it is no longer idle.
async fn one_heartbeat_for_an_idle_ledger_whoever_asks(db: TestDb) {
    let a = writer(&db, 1000).await;
    let b = writer(&db, 1000).await;
    a.append(&[draft(1)]).await.unwrap();
    let idle = std::time::Duration::from_millis(200);
    // Not idle yet: nothing.
    let early = a.heartbeat(idle).await.unwrap();
    assert!(early.seqs.is_empty(), "{:?}", db.backend);
    tokio::time::sleep(idle).await; // the idle time itself is what is tested
    let (ra, rb) = tokio::join!(a.heartbeat(idle), b.heartbeat(idle));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(
        ra.seqs.len() + rb.seqs.len(),
        1,
        "{:?}: one heartbeat between two instances",
        db.backend
    );
    let head = a.store().head().await.unwrap().unwrap();
    assert_eq!(
        head.head.size, 3,
        "{:?}: created, draft, heartbeat",
        db.backend
    );
    assert_eq!(
        head.checkpoint_size, 3,
        "{:?}: the heartbeat is covered",
        db.backend
    );
}
per_backend!(one_heartbeat_for_an_idle_ledger_whoever_asks);
