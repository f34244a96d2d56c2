//! Witness cosigning (issue 20): the service asks a witness that is not our code (written in
//! `support::witness` from the C2SP text) to cosign each checkpoint, stores and serves the
//! cosignatures, copes with a witness that knows an older size (409), is refused when its
//! history forks (422), and `verify --policy` holds the checkpoints to the policy's quorum, on
//! the database and on an exported bundle.

use crate::support::db::draft;
use crate::support::server::{TestApp, TestDb, config, ct, eventually, spawn_app_with};
use crate::support::witness::TestWitness;
use changetrail::app::config::{Config, WitnessConfig};
use changetrail::tlog::witness::ERRORS_TOTAL;
use std::path::Path;
use std::process::Output;

const ORIGIN_SEED: u8 = 41;

/// A witness, and a server configured to ask it, with a policy requiring it; the witness is
/// then told the ledger's key (created at the server's first start).
async fn start(db: &TestDb, seed: u8) -> (TestApp, TestWitness, Config) {
    let witness = TestWitness::start("witness.test/w1", seed, &[]).await;
    let mut cfg = config(db);
    let policy = db.path().join("serve.policy");
    std::fs::write(
        &policy,
        format!("witness W1 {}\nquorum W1\n", witness.vkey()),
    )
    .unwrap();
    cfg.tlog.policy_file = policy.display().to_string();
    cfg.tlog.witnesses = vec![WitnessConfig {
        url: witness.url.clone(),
        vkey: witness.vkey(),
    }];
    let app = spawn_app_with(cfg.clone()).await;
    witness.trust(&origin(&app), &app.vkey);
    (app, witness, cfg)
}

fn origin(app: &TestApp) -> String {
    app.vkey.split('+').next().unwrap().to_owned()
}

/// Appends `n` entries and signs a checkpoint over them; its size.
async fn grow(app: &TestApp, from: u64, n: u64) -> u64 {
    app.appender
        .append((from..from + n).map(draft).collect())
        .await
        .unwrap();
    app.writer.checkpoint().await.unwrap();
    app.store.latest_checkpoint().await.unwrap().unwrap().size
}

async fn await_cosigned(app: &TestApp, w: &TestWitness, size: u64) {
    let o = origin(app);
    eventually(&format!("the witness cosigns size {size}"), || async {
        w.size(&o) == size
            && !app.store.cosignatures(size).await.unwrap().is_empty()
            && app.store.witness_known_size(&w.vkey()).await.unwrap() == Some(size)
    })
    .await;
}

fn run_verify(dir: &Path, args: &[&str]) -> Output {
    ct(dir).args(args).output().unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

async fn cosigns_and_verifies_with_policy(db: TestDb) {
    let (app, witness, cfg) = start(&db, ORIGIN_SEED).await;
    let first = grow(&app, 0, 30).await;
    await_cosigned(&app, &witness, first).await;
    // A second checkpoint reaches the witness with a consistency proof from the first.
    let second = grow(&app, 30, 25).await;
    assert!(second > first);
    await_cosigned(&app, &witness, second).await;
    assert!(witness.refused().is_empty(), "{:?}", witness.refused());

    // The served note carries the log's signature and the cosignature; the independent
    // signed_note crate verifies both, the cosignature with a verifier written from the spec.
    let served = app
        .get("/v1/ledger/checkpoint", Some(&app.reviewer))
        .await
        .text()
        .await
        .unwrap();
    let note = signed_note::Note::from_bytes(served.as_bytes()).unwrap();
    let cosigners = signed_note::VerifierList::new(vec![Box::new(witness.verifier())]);
    let (verified, _) = note.verify(&cosigners).unwrap();
    assert_eq!(verified.len(), 1);
    assert_eq!(verified[0].name(), "witness.test/w1");
    let log = signed_note::VerifierList::new(vec![Box::new(
        signed_note::StandardVerifier::new(&app.vkey).unwrap(),
    )]);
    assert_eq!(note.verify(&log).unwrap().0.len(), 1);
    assert!(served.starts_with(&format!("{}\n{second}\n", origin(&app))));
    // A tampered cosignature is caught by the independent verifier too.
    let line = served.lines().last().unwrap();
    let tampered = served.replace(line, &line.replace('A', "B").replace('a', "A"));
    if tampered != served {
        let t = signed_note::Note::from_bytes(tampered.as_bytes());
        assert!(t.is_err() || t.unwrap().verify(&cosigners).is_err());
    }

    let json: serde_json::Value = app
        .http
        .get(format!("{}/v1/ledger/checkpoint", app.base))
        .bearer_auth(&app.reviewer)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(json["witnessed"], true, "{json}");
    assert_eq!(json["cosignatures"].as_array().unwrap().len(), 1);
    assert_eq!(json["note"].as_str().unwrap(), served);

    let state = app.ingestor.metrics.clone();
    let scraper = app.token(changetrail::auth::Role::Metrics).await;
    eventually("the newest checkpoint counts as witnessed", || async {
        let m = app
            .get("/metrics", Some(&scraper))
            .await
            .text()
            .await
            .unwrap();
        m.lines()
            .any(|l| l == "changetrail_tlog_latest_witnessed 1")
    })
    .await;
    assert_eq!(
        state.get(
            changetrail::tlog::witness::COSIGNATURES_TOTAL,
            &[("witness", "witness.test/w1")]
        ),
        2
    );

    // verify --policy: passes on the database and on an exported bundle; a policy that needs a
    // witness that never cosigned fails with UNWITNESSED, naming it.
    let dir = db.path();
    let policy = dir.join("verify.policy");
    std::fs::write(
        &policy,
        format!(
            "log {}\nwitness W1 {}\nquorum W1\n",
            app.vkey,
            witness.vkey()
        ),
    )
    .unwrap();
    let other = TestWitness::start("witness.test/w2", 77, &[]).await;
    let strict = dir.join("strict.policy");
    std::fs::write(
        &strict,
        format!(
            "witness W1 {}\nwitness W2 {}\ngroup both all W1 W2\nquorum both\n",
            witness.vkey(),
            other.vkey()
        ),
    )
    .unwrap();
    // Verified while the server runs: stopping it signs a last checkpoint no witness saw.
    let (p, s) = (policy.display().to_string(), strict.display().to_string());
    let base = ["verify", "--database-url", &db.url, "--trusted-key"];
    let vk = app.vkey.clone();
    let o = run_verify(dir, &[&base[..], &[vk.as_str(), "--policy", &p]].concat());
    assert_eq!(code(&o), 0, "{}", text(&o));
    let o = run_verify(dir, &[&base[..], &[vk.as_str(), "--policy", &s]].concat());
    assert_eq!(code(&o), 1, "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("UNWITNESSED") && out.contains("W2"), "{out}");
    assert!(
        out.contains("no checkpoint given meets the quorum"),
        "{out}"
    );

    let bundle = dir.join("b.jsonl");
    let o = ct(dir)
        .args(["export", "--database-url", &db.url, "--out"])
        .arg(&bundle)
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", text(&o));
    let b = bundle.display().to_string();
    let args = [
        "verify",
        &b,
        "--trusted-key",
        &vk,
        "--max-age",
        "off",
        "--policy",
    ];
    let o = run_verify(dir, &[&args[..], &[p.as_str()]].concat());
    assert_eq!(code(&o), 0, "{}", text(&o));
    let o = run_verify(dir, &[&args[..], &[s.as_str()]].concat());
    assert_eq!(code(&o), 1, "{}", text(&o));
    // A bad policy file is a usage error, never a pass.
    let bad = dir.join("bad.policy");
    std::fs::write(&bad, "quorum W9\n").unwrap();
    let o = run_verify(dir, &[&args[..], &[bad.to_str().unwrap()]].concat());
    assert_eq!(code(&o), 3, "{}", text(&o));

    // verify-report --policy: the report rests on a checkpoint; its cosigned copy in the
    // database carries the quorum, the strict policy's is missing W2.
    let report = dir.join("january");
    let settings = cfg.report_settings(None).unwrap();
    crate::support::report::build_january(&app, &settings, &report, None)
        .await
        .unwrap();
    let newest = app.store.latest_checkpoint().await.unwrap().unwrap().size;
    await_cosigned(&app, &witness, newest).await;
    let r = report.display().to_string();
    let args = [
        "verify-report",
        &r,
        "--trusted-key",
        &vk,
        "--database-url",
        &db.url,
        "--policy",
    ];
    let o = run_verify(dir, &[&args[..], &[p.as_str()]].concat());
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(
        text(&o).contains("carries the policy's quorum"),
        "{}",
        text(&o)
    );
    let o = run_verify(dir, &[&args[..], &[s.as_str()]].concat());
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(
        text(&o).contains("UNWITNESSED") && text(&o).contains("W2"),
        "{}",
        text(&o)
    );

    // Stopping signs a last checkpoint the witness never saw: verify walks back to the newest
    // witnessed one and says how many entries lie beyond it.
    app.stop().await;
    let o = run_verify(dir, &[&base[..], &[vk.as_str(), "--policy", &p]].concat());
    assert_eq!(code(&o), 1, "{}", text(&o));
    let want = format!("the newest witnessed checkpoint is size {second}");
    assert!(text(&o).contains(&want), "{}", text(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_witness_cosigns_and_verify_policy_holds_sqlite() {
    cosigns_and_verifies_with_policy(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_witness_cosigns_and_verify_policy_holds_postgres() {
    let Some(db) = TestDb::postgres("witness_cosigns").await else {
        return;
    };
    cosigns_and_verifies_with_policy(db).await;
}

/// The client forgot what the witness knows (a restored database): the witness answers 409
/// with its size and the client retries from there with a consistency proof.
async fn conflict_then_retry(db: TestDb) {
    let (app, witness, _) = start(&db, 42).await;
    let first = grow(&app, 0, 20).await;
    await_cosigned(&app, &witness, first).await;
    app.store
        .set_witness_known_size(&witness.vkey(), 0, 0)
        .await
        .unwrap();
    let second = grow(&app, 20, 13).await;
    await_cosigned(&app, &witness, second).await;
    let refused = witness.refused();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].0, 409);
    assert_eq!(
        app.store.witness_known_size(&witness.vkey()).await.unwrap(),
        Some(second)
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_witness_that_knows_more_answers_409_and_the_client_catches_up_sqlite() {
    conflict_then_retry(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_witness_that_knows_more_answers_409_and_the_client_catches_up_postgres() {
    let Some(db) = TestDb::postgres("witness_conflict").await else {
        return;
    };
    conflict_then_retry(db).await;
}

/// A fork: the test signs, with the ledger's own key, another checkpoint of a size the witness
/// cosigned, and the witness refuses it; then a second ledger with the same key and origin but
/// another history asks the same witness, is refused as inconsistent (422), reports it, and
/// `verify --policy` of that forked ledger fails.
async fn fork_is_refused(db: TestDb, forked_db: TestDb) {
    let (app, witness, cfg) = start(&db, 43).await;
    let size = grow(&app, 0, 20).await;
    await_cosigned(&app, &witness, size).await;
    let cp = app.store.latest_checkpoint().await.unwrap().unwrap();
    let body = &cp.note[..cp.note.find("\n\n").unwrap() + 1];
    let forked_body = body.replace(
        &cp.root.to_b64(),
        &changetrail::core::ledger::hash::Hash::of(&[b"fork"]).to_b64(),
    );
    let forked_note = changetrail::core::ledger::note::Note::sign(&forked_body, &app.writer.key());
    let http = reqwest::Client::new();
    let answer = http
        .post(format!("{}add-checkpoint", witness.url))
        .body(format!("old {size}\n\n{forked_note}"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 422);
    assert!(
        witness
            .refused()
            .iter()
            .any(|(s, why)| *s == 422 && why.contains("fork"))
    );
    // The same checkpoint again is fine (same size, same root).
    let again = http
        .post(format!("{}add-checkpoint", witness.url))
        .body(format!("old {size}\n\n{}", cp.note))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 200);

    // A second ledger: same key file and origin, another history, more entries.
    std::fs::copy(&cfg.ledger.key_file, forked_db.path().join("ledger.key")).unwrap();
    let mut fcfg = config(&forked_db);
    fcfg.ledger.origin = cfg.ledger.origin.clone();
    fcfg.tlog = cfg.tlog.clone();
    let forked = spawn_app_with(fcfg).await;
    assert_eq!(forked.vkey, app.vkey);
    let name = "witness.test/w1";
    // While it is smaller than what the witness cosigned, the witness's 409 names a larger
    // tree than the forked ledger has: reported as `ahead` (rollback or fork).
    forked.writer.checkpoint().await.unwrap();
    assert!(
        forked
            .store
            .latest_checkpoint()
            .await
            .unwrap()
            .unwrap()
            .size
            < size
    );
    eventually(
        "the forked ledger's service reports the conflict",
        || async {
            let labels = [("witness", name), ("reason", "ahead")];
            forked.ingestor.metrics.get(ERRORS_TOTAL, &labels) > 0
        },
    )
    .await;
    // At exactly the size the witness cosigned, with another root: the two different
    // checkpoints of one size the witness must refuse (422), reported by the forked service.
    let refused_before = witness.refused().iter().filter(|(s, _)| *s == 422).count();
    let at = forked.store.head().await.unwrap().unwrap().head.size;
    let equal = grow(&forked, 500, size - at).await;
    assert_eq!(
        equal, size,
        "the forked ledger grew to exactly the cosigned size"
    );
    eventually(
        "the witness refuses the same-size fork and the forked service reports it",
        || async {
            witness.refused().iter().filter(|(s, _)| *s == 422).count() > refused_before
                && forked.ingestor.metrics.get(
                    ERRORS_TOTAL,
                    &[("witness", name), ("reason", "inconsistent")],
                ) > 0
        },
    )
    .await;
    assert!(forked.store.cosignatures(size).await.unwrap().is_empty());
    let fsize = grow(&forked, 1000, 40).await;
    assert!(fsize > size);
    eventually(
        "the forked ledger's service reports the witness's refusal",
        || async {
            forked.ingestor.metrics.get(
                ERRORS_TOTAL,
                &[("witness", name), ("reason", "inconsistent")],
            ) > 0
        },
    )
    .await;
    assert!(forked.store.cosignatures(fsize).await.unwrap().is_empty());
    assert_eq!(witness.size(&origin(&app)), size);
    let vk = forked.vkey.clone();
    forked.stop().await;
    app.stop().await;
    let policy = forked_db.path().join("p.policy");
    std::fs::write(
        &policy,
        format!("witness W1 {}\nquorum W1\n", witness.vkey()),
    )
    .unwrap();
    let p = policy.display().to_string();
    let o = run_verify(
        forked_db.path(),
        &[
            "verify",
            "--database-url",
            &forked_db.url,
            "--trusted-key",
            &vk,
            "--policy",
            &p,
        ],
    );
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(text(&o).contains("UNWITNESSED"), "{}", text(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_shown_to_the_witness_is_refused_and_reported_sqlite() {
    fork_is_refused(TestDb::sqlite().await, TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_shown_to_the_witness_is_refused_and_reported_postgres() {
    let (Some(a), Some(b)) = (
        TestDb::postgres("witness_fork_a").await,
        TestDb::postgres("witness_fork_b").await,
    ) else {
        return;
    };
    fork_is_refused(a, b).await;
}

/// The test witness itself answers each case as tlog-witness says, so the tests above rest on a
/// witness that behaves like one; two different checkpoints of one size: the second is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_witness_answers_as_the_spec_says() {
    use changetrail::core::ledger::hash::Hash;
    use changetrail::core::ledger::keys::{LedgerKey, Origin};
    use changetrail::core::ledger::note::Checkpoint;
    use sha2::Digest as _;
    let origin = "witness-test.example/log";
    let key = LedgerKey::from_seed(Origin::parse(origin).unwrap(), [9; 32]).unwrap();
    let stranger = LedgerKey::from_seed(Origin::parse(origin).unwrap(), [10; 32]).unwrap();
    let w = TestWitness::start(
        "witness.test/spec",
        50,
        &[(origin, &key.vkey().to_string())],
    )
    .await;
    let note = |size: u64, root: Hash, k: &LedgerKey| {
        Checkpoint {
            origin: Origin::parse(origin).unwrap(),
            size,
            root,
        }
        .sign(k)
    };
    let http = reqwest::Client::new();
    let post = |body: String| {
        let (http, url) = (http.clone(), format!("{}add-checkpoint", w.url));
        async move {
            let r = http.post(url).body(body).send().await.unwrap();
            let ct = r
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned());
            (r.status().as_u16(), ct, r.text().await.unwrap())
        }
    };
    let r5 = Hash::of(&[b"five"]);
    let other = Checkpoint {
        origin: Origin::parse("other.example/log").unwrap(),
        size: 5,
        root: r5,
    };
    let other_key =
        LedgerKey::from_seed(Origin::parse("other.example/log").unwrap(), [9; 32]).unwrap();
    assert_eq!(
        post(format!("old 0\n\n{}", other.sign(&other_key))).await.0,
        404
    );
    assert_eq!(
        post(format!("old 0\n\n{}", note(5, r5, &stranger))).await.0,
        403
    );
    assert_eq!(post(format!("old 6\n\n{}", note(5, r5, &key))).await.0, 400);
    let proof_line = format!("{}\n", r5.to_b64());
    assert_eq!(
        post(format!("old 0\n{proof_line}\n{}", note(5, r5, &key)))
            .await
            .0,
        422
    );
    assert_eq!(post(format!("old 0\n\n{}", note(0, r5, &key))).await.0, 422);
    // Accepted: the answer is a cosignature line the independent crate verifies.
    let (status, _, line) = post(format!("old 0\n\n{}", note(5, r5, &key))).await;
    assert_eq!(status, 200);
    let cosigned = format!("{}{line}", note(5, r5, &key));
    let n = signed_note::Note::from_bytes(cosigned.as_bytes()).unwrap();
    let v = signed_note::VerifierList::new(vec![Box::new(w.verifier())]);
    assert_eq!(n.verify(&v).unwrap().0.len(), 1);
    // A stale old size: 409 with the size it knows, as text/x.tlog.size.
    let (status, ct, body) = post(format!("old 0\n\n{}", note(7, r5, &key))).await;
    assert_eq!(
        (status, ct.as_deref(), body.as_str()),
        (409, Some("text/x.tlog.size"), "5\n")
    );
    // The same size again: the same root is fine, another root is a fork and refused.
    assert_eq!(post(format!("old 5\n\n{}", note(5, r5, &key))).await.0, 200);
    let fork = Hash::of(&[b"fork"]);
    assert_eq!(
        post(format!("old 5\n\n{}", note(5, fork, &key))).await.0,
        422
    );
    // A proof that does not connect the sizes.
    assert_eq!(
        post(format!("old 5\n{proof_line}\n{}", note(8, fork, &key)))
            .await
            .0,
        422
    );
    assert_eq!(w.size(origin), 5);
    let refused: Vec<u16> = w.refused().iter().map(|r| r.0).collect();
    assert_eq!(refused, [404, 403, 400, 422, 422, 409, 422, 422]);
    // The monitoring endpoint serves the cosigned checkpoint.
    let hash = hex::encode(sha2::Sha256::digest(origin.as_bytes()));
    let got = http
        .get(format!("{}{hash}/checkpoint", w.url))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status().as_u16(), 200);
    let served = got.text().await.unwrap();
    assert!(
        served.contains("witness.test/spec") && served.contains("\n5\n"),
        "{served}"
    );
    let none = http
        .get(format!("{}{}/checkpoint", w.url, "00".repeat(32)))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status().as_u16(), 404);
}

/// A witness vkey that is not a cosigner key, or a policy file that does not parse, stops the
/// start with the reason (running unwitnessed while the operator asked for witnesses would
/// look witnessed and not be); the same vkey is refused when the configuration loads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_witness_key_or_policy_stops_the_start() {
    let db = TestDb::sqlite().await;
    let witness = TestWitness::start("witness.test/w1", 44, &[]).await;
    let v = witness.vkey();
    let parts: Vec<&str> = v.splitn(3, '+').collect();
    let log_style = format!("{}+00000000+{}", parts[0], parts[2]);
    let mut cfg = config(&db);
    cfg.tlog.witnesses = vec![WitnessConfig {
        url: witness.url.clone(),
        vkey: log_style,
    }];
    let err = match changetrail::app::startup::App::build(cfg).await {
        Ok(_) => panic!("started with a bad witness vkey"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("tlog.witnesses[0].vkey"), "{err}");

    let mut cfg = config(&db);
    let policy = db.path().join("bad.policy");
    std::fs::write(
        &policy,
        format!("witness W1 {}\ngroup G 2 W1\nquorum G\n", witness.vkey()),
    )
    .unwrap();
    cfg.tlog.policy_file = policy.display().to_string();
    let err = match changetrail::app::startup::App::build(cfg).await {
        Ok(_) => panic!("started with a bad policy"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("policy line 2") && err.contains("threshold"),
        "{err}"
    );

    let toml = db.path().join("changetrail.toml");
    let bad = witness.vkey().replace("witness.test/w1", "witness.test/w9");
    std::fs::write(
        &toml,
        format!(
            "[[tlog.witnesses]]\nurl = \"{}\"\nvkey = \"{bad}\"\n",
            witness.url
        ),
    )
    .unwrap();
    let o = ct(db.path())
        .arg("--config")
        .arg(&toml)
        .arg("migrate")
        .output()
        .unwrap();
    assert_ne!(code(&o), 0, "{}", text(&o));
    assert!(text(&o).contains("tlog.witnesses: vkey"), "{}", text(&o));
}
