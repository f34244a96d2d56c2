//! One change's receipt (`changetrail proof`, `GET /v1/changes/{id}/receipt`) checked offline by
//! `changetrail verify-proof` with only the file and the ledger's first vkey: across a key
//! rotation and an erasure, refused for every single-byte change (proptest), and refused with a
//! wrong key.

use crate::support::scenario::{CONDUCTOR, import_over_rest};
use crate::support::server::{TestApp, TestDb, ct, eventually, history_config, spawn_app_with};
use crate::support::witness::TestWitness;
use changetrail::app::config::WitnessConfig;
use changetrail::auth::Role;
use changetrail::core::ledger::entry::Entry;
use changetrail::core::ledger::hash::unb64;
use changetrail::core::ledger::keys::{LedgerKey, Vkey};
use changetrail::core::ledger::receipt::{self, Receipt};
use proptest::test_runner::{Config as PropConfig, TestRunner};
use reqwest::StatusCode;
use serde_json::Value;

const CHANGE: &str = "CHG-2041";

async fn fetch(app: &TestApp, change: &str, token: Option<&str>) -> (StatusCode, String) {
    let r = app
        .get(&format!("/v1/changes/{change}/receipt"), token)
        .await;
    (r.status(), r.text().await.unwrap())
}

fn key_ids(r: &Receipt) -> Vec<String> {
    r.entries
        .iter()
        .map(|e| {
            Entry::decode(&unb64(&e.entry).unwrap())
                .unwrap()
                .key_id
                .to_hex()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_verifies_offline_across_rotation_and_erasure_sqlite() {
    receipts(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_verifies_offline_across_rotation_and_erasure_postgres() {
    let Some(db) = TestDb::postgres("receipts").await else {
        eprintln!("SKIPPED: TEST_DATABASE_URL is not set");
        return;
    };
    receipts(db).await;
}

async fn receipts(db: TestDb) {
    let app = spawn_app_with(history_config(&db)).await;
    let auditor = app.token(Role::Auditor).await;
    let first = Vkey::parse(&app.vkey).unwrap();

    // The vector's execution, then the same run restarted with its history wiped: entries of the
    // change before and after a key rotation.
    let doc: Value = serde_json::from_str(CONDUCTOR).unwrap();
    assert!(import_over_rest(&app, &doc).await.0.is_success());
    // Nothing is covered by a checkpoint yet: a retryable answer, not an empty receipt.
    let (status, body) = fetch(&app, CHANGE, Some(&auditor)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let second = LedgerKey::from_seed(first.origin().clone(), [42; 32]).unwrap();
    let second_vkey = second.vkey().to_string();
    app.writer.rotate(second).await.unwrap();
    let mut restarted = doc.clone();
    restarted["tasks"].as_array_mut().unwrap().truncate(1);
    restarted["status"] = "RUNNING".into();
    assert!(import_over_rest(&app, &restarted).await.0.is_success());
    app.writer.checkpoint().await.unwrap();

    let (status, text) = fetch(&app, CHANGE, Some(&auditor)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let r: Receipt = serde_json::from_str(&text).unwrap();
    let ids = key_ids(&r);
    assert!(ids.contains(&first.key_id().to_hex()), "{ids:?}");
    assert!(
        ids.iter().any(|k| *k != first.key_id().to_hex()),
        "no entry after the rotation: {ids:?}"
    );
    assert!(r.entries.iter().any(|e| e.kind == "history.rewritten"));
    assert_eq!(r.key_chain.len(), 2, "entry 0 and the rotation");
    let v = receipt::verify(&text, std::slice::from_ref(&first)).unwrap();
    assert_eq!(v.entries, r.entries.len());
    assert_eq!(v.checkpoint_key, second_vkey);
    independent_check(&r, &second_vkey);

    // Who may read it, and an unknown change.
    for role in [Role::Ingest, Role::Admin, Role::Gate, Role::Metrics] {
        let t = app.token(role).await;
        assert_eq!(fetch(&app, CHANGE, Some(&t)).await.0, StatusCode::FORBIDDEN);
    }
    assert_eq!(
        fetch(&app, CHANGE, Some(&app.reviewer)).await.0,
        StatusCode::OK
    );
    assert_eq!(fetch(&app, CHANGE, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        fetch(&app, "CHG-NOPE", Some(&auditor)).await.0,
        StatusCode::NOT_FOUND
    );

    // An erased payload: still verifies, and the erasure is named.
    let erased = r.entries[0].seq;
    app.writer
        .erase(erased, "GDPR Art. 17", "dpo@example.com")
        .await
        .unwrap();
    app.writer.checkpoint().await.unwrap();
    let (_, text) = fetch(&app, CHANGE, Some(&auditor)).await;
    let v = receipt::verify(&text, std::slice::from_ref(&first)).unwrap();
    assert_eq!(v.erased, vec![erased]);
    let shown: Receipt = serde_json::from_str(&text).unwrap();
    assert_eq!(
        shown.erasures.len(),
        1,
        "the payload.erased entry comes with it"
    );
    assert_eq!(shown.erasures[0].kind, "payload.erased");

    every_byte_counts(&text, &first);
    the_command_line(&db, &app, &text).await;
}

/// Each entry's tlog-proof checked by code nobody here wrote: the checkpoint by `signed_note`
/// with the key that signed it, the inclusion by `tlog_tiles` (a port of Go's sumdb tlog) from
/// the entry bytes alone.
fn independent_check(r: &Receipt, signer: &str) {
    use signed_note::{Note, StandardVerifier, VerifierList};
    let verifiers = VerifierList::new(vec![Box::new(StandardVerifier::new(signer).unwrap())]);
    for e in r.entries.iter().chain(&r.key_chain) {
        let mut lines = e.proof.split('\n');
        assert_eq!(lines.next(), Some("c2sp.org/tlog-proof@v1"));
        let index: u64 = lines
            .next()
            .unwrap()
            .strip_prefix("index ")
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(index, e.seq);
        let mut proof = Vec::new();
        for l in lines.by_ref() {
            if l.is_empty() {
                break;
            }
            proof.push(tlog_tiles::Hash::parse_hash(l).unwrap());
        }
        let note_text = lines.collect::<Vec<_>>().join("\n");
        assert_eq!(note_text, r.checkpoint);
        let note = Note::from_bytes(note_text.as_bytes()).unwrap();
        note.verify(&verifiers).unwrap();
        let cp = tlog_tiles::Checkpoint::from_bytes(note.text()).unwrap();
        let leaf = tlog_tiles::record_hash(&unb64(&e.entry).unwrap());
        tlog_tiles::check_record(&proof, cp.size(), *cp.hash(), index, leaf).unwrap();
    }
}

/// Any single byte changed anywhere in the file is refused.
fn every_byte_counts(text: &str, first: &Vkey) {
    let bytes = text.as_bytes().to_vec();
    let mut runner = TestRunner::new(PropConfig {
        cases: 1500,
        failure_persistence: None,
        ..PropConfig::default()
    });
    let strategy = (0..bytes.len(), 1u8..=255);
    runner
        .run(&strategy, |(at, flip)| {
            let mut changed = bytes.clone();
            changed[at] ^= flip;
            // A change that is not UTF-8 cannot even be read as a receipt.
            if let Ok(s) = std::str::from_utf8(&changed) {
                proptest::prop_assert!(
                    receipt::verify(s, std::slice::from_ref(first)).is_err(),
                    "byte {at} ^ {flip:#04x} went unnoticed"
                );
            }
            Ok(())
        })
        .unwrap();
}

/// `proof` writes what the API serves; `verify-proof` runs in an empty directory, with no
/// configuration and no database: only the file and the key.
async fn the_command_line(db: &TestDb, app: &TestApp, served: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("chg.receipt.json");
    let o = ct(db.path())
        .args(["proof", CHANGE, "--out"])
        .arg(&out)
        .args(["--database-url", &db.url])
        .env("CHANGETRAIL_LEDGER__KEY_FILE", db.path().join("ledger.key"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), served);
    let verify = |key: &str| {
        ct(dir.path())
            .args(["verify-proof", "chg.receipt.json", "--trusted-key", key])
            .output()
            .unwrap()
    };
    let o = verify(&app.vkey);
    let said = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{said} {o:?}");
    assert!(
        said.starts_with("OK ") && said.contains("REDACTED"),
        "{said}"
    );
    let stranger =
        LedgerKey::from_seed(Vkey::parse(&app.vkey).unwrap().origin().clone(), [7; 32]).unwrap();
    let o = verify(&stranger.vkey().to_string());
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("not pinned"));
    let o = verify("not a vkey");
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    let o = ct(db.path())
        .args(["proof", "CHG-NOPE", "--out"])
        .arg(dir.path().join("nope.json"))
        .args(["--database-url", &db.url])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_carries_the_witnesses_cosignatures_and_meets_the_policy_sqlite() {
    witnessed_receipt(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_carries_the_witnesses_cosignatures_and_meets_the_policy_postgres() {
    let Some(db) = TestDb::postgres("receipts witnessed").await else {
        eprintln!("SKIPPED: TEST_DATABASE_URL is not set");
        return;
    };
    witnessed_receipt(db).await;
}

/// With a witness (not our code) cosigning, the receipt is against a cosigned checkpoint and
/// `verify-proof --policy` holds it to the policy offline; a policy asking for a witness that
/// never cosigned names it.
async fn witnessed_receipt(db: TestDb) {
    let witness = TestWitness::start("witness.test/r1", 61, &[]).await;
    let absent = TestWitness::start("witness.test/r2", 62, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("one.policy");
    std::fs::write(
        &policy,
        format!("witness R1 {}\nquorum R1\n", witness.vkey()),
    )
    .unwrap();
    let both = dir.path().join("both.policy");
    std::fs::write(
        &both,
        format!(
            "witness R1 {}\nwitness R2 {}\ngroup all-of-them all R1 R2\nquorum all-of-them\n",
            witness.vkey(),
            absent.vkey()
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("bad.policy"), "quorum nobody\n").unwrap();
    let mut cfg = history_config(&db);
    cfg.tlog.policy_file = policy.display().to_string();
    cfg.tlog.witnesses = vec![WitnessConfig {
        url: witness.url.clone(),
        vkey: witness.vkey(),
    }];
    let app = spawn_app_with(cfg).await;
    witness.trust(app.vkey.split('+').next().unwrap(), &app.vkey);
    let doc: Value = serde_json::from_str(CONDUCTOR).unwrap();
    assert!(import_over_rest(&app, &doc).await.0.is_success());
    app.writer.checkpoint().await.unwrap();
    let size = app.store.latest_checkpoint().await.unwrap().unwrap().size;
    eventually("the witness cosigns the checkpoint", || async {
        !app.store.cosignatures(size).await.unwrap().is_empty()
    })
    .await;

    let auditor = app.token(Role::Auditor).await;
    let (status, text) = fetch(&app, CHANGE, Some(&auditor)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let r: Receipt = serde_json::from_str(&text).unwrap();
    assert!(
        r.checkpoint.contains("\n\u{2014} witness.test/r1 "),
        "{}",
        r.checkpoint
    );
    std::fs::write(dir.path().join("r.json"), &text).unwrap();
    let verify = |policy: &str| {
        ct(dir.path())
            .args([
                "verify-proof",
                "r.json",
                "--trusted-key",
                &app.vkey,
                "--policy",
                policy,
            ])
            .output()
            .unwrap()
    };
    let o = verify("one.policy");
    let said = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(0), "{said} {o:?}");
    assert!(
        said.contains("witness quorum met (cosigned by R1)"),
        "{said}"
    );
    let o = verify("both.policy");
    let said = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(1), "{said} {o:?}");
    assert!(
        said.contains("UNWITNESSED") && said.contains("missing: R2"),
        "{said}"
    );
    assert_eq!(verify("bad.policy").status.code(), Some(3));

    // The witness stops cosigning (it no longer trusts our key): newer checkpoints go
    // unwitnessed, and the receipt stays on the newest witnessed one that covers the change.
    let origin = Vkey::parse(&app.vkey).unwrap().origin().clone();
    let stranger = LedgerKey::from_seed(origin.clone(), [9; 32]).unwrap();
    witness.trust(origin.as_str(), &stranger.vkey().to_string());
    let _ = app.token(Role::Metrics).await;
    app.writer.checkpoint().await.unwrap();
    let newest = app.store.latest_checkpoint().await.unwrap().unwrap().size;
    assert!(newest > size);
    let r = app
        .get(&format!("/v1/changes/{CHANGE}/receipt"), Some(&auditor))
        .await;
    assert_eq!(r.headers()["x-changetrail-witnessed"], "true");
    let r: Receipt = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    // (A timed checkpoint may have been cosigned after `size` too: any witnessed one older
    // than the newest will do.)
    let used: u64 = r.checkpoint.lines().nth(1).unwrap().parse().unwrap();
    assert!(used >= size && used < newest, "{used} {size} {newest}");
    assert!(
        r.checkpoint.contains("\n\u{2014} witness.test/r1 "),
        "{}",
        r.checkpoint
    );
    // A new entry of the change that no witnessed checkpoint covers: the newest, said so.
    let mut restarted = doc.clone();
    restarted["tasks"].as_array_mut().unwrap().truncate(1);
    restarted["status"] = "RUNNING".into();
    assert!(import_over_rest(&app, &restarted).await.0.is_success());
    app.writer.checkpoint().await.unwrap();
    let r = app
        .get(&format!("/v1/changes/{CHANGE}/receipt"), Some(&auditor))
        .await;
    assert_eq!(r.headers()["x-changetrail-witnessed"], "false");
    std::fs::write(dir.path().join("r.json"), r.text().await.unwrap()).unwrap();
    let o = verify("one.policy");
    let said = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(1), "{said}");
    assert!(
        said.contains("UNWITNESSED") && said.contains("missing: R1"),
        "{said}"
    );
    app.stop().await;
}
