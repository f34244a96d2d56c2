//! SOC 2 reports end to end: the correlation scenarios sent through the real listeners, the
//! report downloaded over REST, its exceptions and control counts checked, its CSV snapshotted,
//! the HTML rendered in headless Chromium, and `verify-report` catching every kind of tampering.

use crate::support::db::exec;
use crate::support::idp;
use crate::support::report::{build_january, codes_by_change, csv_rows};
use crate::support::scenario::{
    T0, normal_change, scenario_config, send, send_scenarios, workflow,
};
use crate::support::server::{TestApp, TestDb, bin, spawn_app_with};
use changetrail::app::commands::bench_report;
use changetrail::auth::Role;
use changetrail::core::evidence::report::{Catalogue, SOC2_CATALOGUE};
use changetrail::demo::scenario::{Synthetic, Tokens};
use changetrail::pipeline::Telemetry;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

fn unzip(bytes: &[u8], dir: &Path) {
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..z.len() {
        let mut f = z.by_index(i).unwrap();
        let name = f.name().unwrap().into_owned();
        assert!(!name.contains('/') && !name.starts_with('.'), "{name}");
        let mut out = std::fs::File::create(dir.join(&name)).unwrap();
        std::io::copy(&mut f, &mut out).unwrap();
    }
}

fn verify_report(dir: &Path, vkey: &str, ledger: &[&str]) -> Output {
    let mut c = Command::new(bin());
    c.arg("verify-report")
        .arg(dir)
        .args(["--trusted-key", vkey])
        .args(ledger)
        .env("RUST_LOG", "warn");
    let o = c.output().unwrap();
    eprintln!(
        "$ verify-report {} {ledger:?}\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scenario_report_names_every_exception_and_verifies_sqlite() {
    the_scenario_report_names_every_exception_and_verifies(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scenario_report_names_every_exception_and_verifies_postgres() {
    if let Some(db) =
        TestDb::postgres("the_scenario_report_names_every_exception_and_verifies_postgres").await
    {
        the_scenario_report_names_every_exception_and_verifies(db).await;
    }
}

/// The scenario suite's full report: right codes on the right changes, counts per control, the
/// CSV as snapshots, a reproducible sample, and verify-report against the database and a bundle.
async fn the_scenario_report_names_every_exception_and_verifies(db: TestDb) {
    let mut cfg = scenario_config(&db);
    cfg.reports.approver_roles = vec!["release-approver".into()];
    let app = spawn_app_with(cfg).await;
    let expect = send_scenarios(&app).await;

    let auditor = app.token(Role::Auditor).await;
    let post = |body: Value, token: String| {
        app.http
            .post(format!("{}/v1/reports/soc2", app.base))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let query = serde_json::json!({"from": "2026-01-01", "to": "2026-01-31", "sample": 3, "seed": "audit-2026"});
    // Auditors only; a bad period is a clear 400.
    let r = post(query.clone(), app.reviewer.clone()).await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::FORBIDDEN);
    let r = post(
        serde_json::json!({"from": "2026-02-01", "to": "2026-01-01"}),
        auditor.clone(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("the period is empty"));
    let r = post(
        serde_json::json!({"from": "2026-01-01", "to": "2026-01-31", "sample": 3}),
        auditor.clone(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST);

    let r = post(query, auditor.clone()).await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/zip");
    let zip = r.bytes().await.unwrap();
    let dir = db.path().join("report");
    unzip(&zip, &dir);

    // One population row per production change in the period, with its codes.
    let pop = csv_rows(&dir.join("population.csv"));
    let got = codes_by_change(&pop);
    let want: BTreeMap<String, BTreeSet<String>> = expect
        .iter()
        .map(|(k, v)| (k.clone(), v.iter().map(|c| c.to_string()).collect()))
        .collect();
    assert_eq!(got, want);
    let ok = pop.iter().find(|r| r["change_id"] == "CHG-OK").unwrap();
    assert_eq!(
        ok["deploy_attempts"], "2",
        "the retry is counted, not flagged"
    );
    assert_eq!(ok["approved_by"], "bob@example.com");
    assert_eq!(ok["approved_by_verified"], "true");
    assert_eq!(ok["approved_before_deploy"], "true");
    assert_eq!(ok["deployer_identity"], "spiffe://example.com/deployer");
    assert_eq!(ok["linked_spans"], "7");
    assert_eq!(ok["rolled_back_by"], "CHG-RB2");
    let rb2 = pop.iter().find(|r| r["change_id"] == "CHG-RB2").unwrap();
    assert_eq!(rb2["rollback_of"], "CHG-OK");
    assert!(ok["requested_at"].ends_with('Z') && ok["requested_at"].contains('.'));

    // exceptions.csv: the same codes on the same changes, plus the unlinked deploy.
    let exc = csv_rows(&dir.join("exceptions.csv"));
    let mut by_change: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in &exc {
        by_change
            .entry(r["change_id"].clone())
            .or_default()
            .insert(r["code"].clone());
        assert!(!r["evidence"].is_empty() && !r["audit_seq_first"].is_empty());
    }
    assert_eq!(
        by_change.remove(""),
        Some(["UNLINKED_DEPLOY".to_string()].into())
    );
    by_change.retain(|_, v| !v.is_empty());
    let mut nonempty = want.clone();
    nonempty.retain(|_, v| !v.is_empty());
    assert_eq!(by_change, nonempty);
    let unlinked: Vec<_> = exc
        .iter()
        .filter(|r| r["code"] == "UNLINKED_DEPLOY")
        .collect();
    assert_eq!(
        unlinked.len(),
        1,
        "ledger-api 2.0.0 is explained by CHG-DEC: {unlinked:?}"
    );
    assert!(unlinked[0]["evidence"].contains("checkout 7.0.1"));

    // controls.csv: each control's count is the sum of its codes' exceptions.
    let mut per_code: BTreeMap<String, u64> = BTreeMap::new();
    for r in &exc {
        *per_code.entry(r["code"].clone()).or_default() += 1;
    }
    let cat = Catalogue::parse(SOC2_CATALOGUE).unwrap();
    let controls = csv_rows(&dir.join("controls.csv"));
    assert_eq!(controls.len(), cat.controls.len());
    for (c, row) in cat.controls.iter().zip(&controls) {
        let n: u64 = c
            .codes
            .iter()
            .map(|k| per_code.get(k).copied().unwrap_or(0))
            .sum();
        assert_eq!(row["control_id"], c.id);
        assert_eq!(row["exceptions"], n.to_string(), "{}", c.id);
        assert_eq!(
            row["result"],
            if n > 0 { "exceptions" } else { "pass" },
            "{}",
            c.id
        );
        if c.population == "changes" {
            assert_eq!(row["population_tested"], pop.len().to_string());
        }
    }
    let ledger_ctl = controls
        .iter()
        .find(|r| r["control_id"] == "CC2.1 / CC4.1")
        .unwrap();
    assert_eq!(ledger_ctl["result"], "pass", "the ledger verifies");

    // The manifest names the query, the checkpoint and the counts.
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["query"]["from"], "2026-01-01");
    assert_eq!(manifest["period_end"], "2026-02-01T00:00:00Z");
    assert_eq!(manifest["rows"]["population"], pop.len());
    assert_eq!(manifest["rows"]["exceptions"], exc.len());
    assert_eq!(manifest["ledger"]["vkey"], app.vkey.as_str());
    assert!(
        manifest["selection"]
            .as_str()
            .unwrap()
            .contains("production")
    );
    let sample = csv_rows(&dir.join("sample.csv"));
    assert_eq!(sample.len(), 3);
    assert_eq!(manifest["sample"]["seed"], "audit-2026");

    // Snapshots with times, ids and hashes redacted: the columns and what each row says.
    let redact = |path: &str| {
        let text = std::fs::read_to_string(dir.join(path)).unwrap();
        let mut settings = insta::Settings::clone_current();
        settings.add_filter(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", "[time]");
        settings.add_filter(r"\b[0-9a-f]{64}\b", "[hash]");
        settings.add_filter(r"\b[0-9a-f]{32}\b", "[trace]");
        // Sequence numbers depend on how the sequencer batched the exports; verify-report checks them.
        settings.add_filter(r"(?m),\d+,\d+,(\d+),\[hash\]\r?$", ",[seq],[seq],$1,[hash]");
        settings.add_filter(r"(?m)^([A-Z_]+,.*),\d+,\d+\r?$", "$1,[seq],[seq]");
        // The ledger's size depends on batching too; the test checks the control's result.
        settings.add_filter(r"(?m)^(CC2\.1 / CC4\.1,[^,]+,ledger,)\d+", "$1[entries]");
        settings.add_filter(r"\r\n", "\n");
        settings.bind(|| insta::assert_snapshot!(path.replace('.', "_"), text));
    };
    redact("population.csv");
    redact("exceptions.csv");
    redact("controls.csv");

    // verify-report: intact against the manifest alone, the database and a bundle.
    let vkey = app.vkey.clone();
    let url = db.url.clone();
    let o = verify_report(&dir, &vkey, &[]);
    assert_eq!(o.status.code(), Some(0));
    let o = verify_report(&dir, &vkey, &["--database-url", &url]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("rows cite entries the ledger holds"));
    let bundle = db.path().join("ledger.jsonl");
    let e = Command::new(bin())
        .args(["export", "--out"])
        .arg(&bundle)
        .args(["--database-url", &url])
        .output()
        .unwrap();
    assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
    let o = verify_report(&dir, &vkey, &["--bundle", bundle.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("re-derived from the bundle's entries alone"),
        "the rows were re-derived offline and agree"
    );
    // A key nobody trusts.
    let other = changetrail::core::ledger::keys::LedgerKey::from_seed(
        changetrail::core::ledger::keys::Origin::parse("other.example/x").unwrap(),
        [7; 32],
    )
    .unwrap();
    let o = verify_report(&dir, &other.vkey().to_string(), &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("UNKNOWN_KEY"));

    tampering_is_caught(&dir, &db, &app, &vkey, &bundle).await;
    app.stop().await;
}

/// A copy of the report with one thing changed, and the finding verify-report must name.
async fn tampering_is_caught(dir: &Path, db: &TestDb, app: &TestApp, vkey: &str, bundle: &Path) {
    let url = db.url.clone();
    let case = |name: &str| -> PathBuf {
        let d = db.path().join(format!("tampered-{name}"));
        copy_dir(dir, &d);
        d
    };
    let expect = |d: &Path, ledger: &[&str], code: &str| {
        let o = verify_report(d, vkey, ledger);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert_eq!(o.status.code(), Some(1), "{}: {out}", d.display());
        assert!(
            out.contains(code),
            "{}: expected {code}: {out}",
            d.display()
        );
    };

    // An edited CSV cell: the approver of the self-approval becomes someone else.
    let d = case("cell");
    let p = d.join("population.csv");
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.contains("alice@example.com,true"));
    std::fs::write(&p, text.replacen("SELF_APPROVAL", "", 1)).unwrap();
    expect(&d, &[], "FILE_MODIFIED");

    // A removed row.
    let d = case("row");
    let p = d.join("exceptions.csv");
    let text = std::fs::read_to_string(&p).unwrap();
    let mut lines: Vec<&str> = text.split_inclusive("\r\n").collect();
    lines.remove(2);
    std::fs::write(&p, lines.concat()).unwrap();
    expect(&d, &[], "FILE_MODIFIED");

    // A swapped file: controls.csv where population.csv should be.
    let d = case("swap");
    std::fs::copy(d.join("controls.csv"), d.join("population.csv")).unwrap();
    expect(&d, &[], "FILE_MODIFIED");

    // A forged manifest: counts and hashes made to match a trimmed population, signature kept.
    let d = case("forged");
    let p = d.join("population.csv");
    let text = std::fs::read_to_string(&p).unwrap();
    let mut lines: Vec<&str> = text.split_inclusive("\r\n").collect();
    lines.remove(1);
    std::fs::write(&p, lines.concat()).unwrap();
    let mut m: Value =
        serde_json::from_slice(&std::fs::read(d.join("manifest.json")).unwrap()).unwrap();
    let h = changetrail::report::hash_file(&p, "population.csv").unwrap();
    for f in m["files"].as_array_mut().unwrap() {
        if f["name"] == "population.csv" {
            f["sha256"] = h.sha256.clone().into();
            f["bytes"] = h.bytes.into();
        }
    }
    m["rows"]["population"] = (m["rows"]["population"].as_u64().unwrap() - 1).into();
    std::fs::write(
        d.join("manifest.json"),
        serde_json::to_vec_pretty(&m).unwrap(),
    )
    .unwrap();
    expect(&d, &[], "BAD_SIGNATURE");

    // Built against a checkpoint the ledger does not contain: the key holder signs a checkpoint
    // of a rewritten history and a manifest naming it. Only the ledger can tell.
    let d = case("checkpoint");
    let key = changetrail::app::keyfile::read_key(&db.path().join("ledger.key")).unwrap();
    let mut m: changetrail::report::Manifest =
        serde_json::from_slice(&std::fs::read(d.join("manifest.json")).unwrap()).unwrap();
    let fake = changetrail::core::ledger::note::Checkpoint {
        origin: key.origin().clone(),
        size: m.ledger.checkpoint.size,
        root: changetrail::core::ledger::hash::Hash::of(&[b"another history"]),
    };
    m.ledger.checkpoint.root = fake.root.to_b64();
    m.ledger.checkpoint.note = fake.sign(&key);
    changetrail::report::write_manifest(&d, &m, &key).unwrap();
    let o = verify_report(&d, vkey, &[]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "without a ledger a key holder's forgery holds"
    );
    expect(&d, &["--database-url", &url], "CHECKPOINT_NOT_IN_LEDGER");
    expect(
        &d,
        &["--bundle", bundle.to_str().unwrap()],
        "CHECKPOINT_NOT_IN_LEDGER",
    );

    // A row citing an entry about another change (re-signed by the key holder): only the
    // ledger shows the row is not what the entry says.
    let d = case("citation");
    let p = d.join("population.csv");
    let rows = csv_rows(&p);
    let ok = rows.iter().find(|r| r["change_id"] == "CHG-OK").unwrap();
    let other = rows.iter().find(|r| r["change_id"] == "CHG-SELF").unwrap();
    let text = std::fs::read_to_string(&p).unwrap().replacen(
        &format!(",{},{},", ok["audit_seq_first"], ok["audit_seq_last"]),
        &format!(",{},{},", other["audit_seq_first"], ok["audit_seq_last"]),
        1,
    );
    std::fs::write(&p, &text).unwrap();
    let mut m: changetrail::report::Manifest =
        serde_json::from_slice(&std::fs::read(d.join("manifest.json")).unwrap()).unwrap();
    let h = changetrail::report::hash_file(&p, "population.csv").unwrap();
    for f in &mut m.files {
        if f.name == "population.csv" {
            *f = h.clone();
        }
    }
    changetrail::report::write_manifest(&d, &m, &key).unwrap();
    expect(&d, &["--database-url", &url], "ROW_MISMATCH");

    // A sample that is not what its recorded seed draws (a hand-picked sample, re-signed).
    let d = case("sample");
    let mut m: changetrail::report::Manifest =
        serde_json::from_slice(&std::fs::read(d.join("manifest.json")).unwrap()).unwrap();
    m.sample.as_mut().unwrap().seed = "another-seed".into();
    changetrail::report::write_manifest(&d, &m, &key).unwrap();
    expect(&d, &[], "SAMPLE_MISMATCH");

    // The signature removed.
    let d = case("nosig");
    std::fs::remove_file(d.join("manifest.sig")).unwrap();
    expect(&d, &[], "MISSING_FILE");

    // An extra file slipped in.
    let d = case("extra");
    std::fs::write(d.join("notes.txt"), "all good").unwrap();
    expect(&d, &[], "UNLISTED_FILE");
    let _ = app;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_built_from_a_tampered_database_fails_offline_verification_sqlite() {
    a_report_built_from_a_tampered_database_fails_offline_verification(TestDb::sqlite().await)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_built_from_a_tampered_database_fails_offline_verification_postgres() {
    if let Some(db) = TestDb::postgres(
        "a_report_built_from_a_tampered_database_fails_offline_verification_postgres",
    )
    .await
    {
        a_report_built_from_a_tampered_database_fails_offline_verification(db).await;
    }
}

/// A database writer forges an approval into the facts table (no key needed). The service builds
/// and signs a report from it — which says so itself (its ledger check finds the row) — and
/// verify-report fails against the database and, offline, against a bundle: the rows re-derived
/// from the signed entries are not the report's.
async fn a_report_built_from_a_tampered_database_fails_offline_verification(db: TestDb) {
    let mut cfg = scenario_config(&db);
    cfg.reports.approver_roles = vec!["release-approver".into()];
    let app = spawn_app_with(cfg.clone()).await;
    send_scenarios(&app).await;
    // CHG-REJ was rejected and deployed (NO_APPROVAL). The forger copies CHG-OK's approval
    // onto it, under a key of its own, naming an existing entry.
    exec(
        &app.store,
        "INSERT INTO facts (fact_key, kind, change_id, run_id, source, time_ns, payload, entry_seq, received_ns) \
         SELECT 'approval:CHG-REJ:forged', kind, 'CHG-REJ', 'wf-CHG-REJ', source, time_ns, \
                replace(payload, 'CHG-OK', 'CHG-REJ'), entry_seq, received_ns \
         FROM facts WHERE change_id = 'CHG-OK' AND kind = 'approval.decided'",
    )
    .await
    .unwrap();
    let dir = db.path().join("tampered-report");
    let settings = cfg.report_settings(None).unwrap();
    let outcome = build_january(&app, &settings, &dir, None).await.unwrap();
    assert!(
        outcome.manifest.ledger.verification.starts_with("FAILED"),
        "{:?}: the report's own ledger check names the forged row: {}",
        db.backend,
        outcome.manifest.ledger.verification
    );
    let pop = csv_rows(&dir.join("population.csv"));
    let rej = pop.iter().find(|r| r["change_id"] == "CHG-REJ").unwrap();
    assert!(
        !rej["exception_codes"].contains("NO_APPROVAL"),
        "the forged approval shows in the report: {rej:?}"
    );
    let vkey = app.vkey.clone();
    let url = db.url.clone();
    let bundle = db.path().join("tampered.jsonl");
    let e = Command::new(bin())
        .args(["export", "--out"])
        .arg(&bundle)
        .args(["--database-url", &url])
        .output()
        .unwrap();
    assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
    app.stop().await;

    let o = verify_report(&dir, &vkey, &["--database-url", &url]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(
        text.contains("DERIVED_MISMATCH facts row \"approval:CHG-REJ:forged\""),
        "{text}"
    );

    let o = verify_report(&dir, &vkey, &["--bundle", bundle.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{text}");
    // The bundle itself is intact: the entries are what the service signed.
    assert!(text.contains("ok    ledger verifies"), "{text}");
    for named in [
        "population.csv row CHG-REJ: approval_decision is \"approved\", the entries give \"rejected\"",
        "exceptions.csv lacks NO_APPROVAL on CHG-REJ (deployed, but the approvals on record are: rejected)",
        "exceptions.csv lists EVIDENCE_GAP about the ledger (ledger DERIVED_MISMATCH: facts row \"approval:CHG-REJ:forged\"",
        "controls.csv lists control CC2.1 / CC4.1 as exceptions",
        "controls.csv lacks control CC8.1 as exceptions with 7 exceptions",
    ] {
        assert!(
            text.contains(named),
            "{:?}: {named:?} in\n{text}",
            db.backend
        );
    }
}

/// The command line builds the same report into a directory, refuses to overwrite one, and a
/// team's own catalogue re-maps a code without touching Rust.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_writes_the_report_and_takes_a_custom_catalogue() {
    let db = TestDb::sqlite().await;
    let mut cfg = scenario_config(&db);
    cfg.reports.approver_roles = vec!["release-approver".into()];
    let app = spawn_app_with(cfg).await;
    send_scenarios(&app).await;
    app.stop().await;

    let jwks = idp::jwks_path();
    let config = db.path().join("changetrail.toml");
    std::fs::write(
        &config,
        format!(
            "[ledger]\nkey_file = {:?}\n[reports]\napprover_roles = [\"release-approver\"]\n[[identity.issuers]]\nissuer = {:?}\naudience = {:?}\njwks_file = {:?}\n",
            db.path().join("ledger.key"),
            idp::ISSUER,
            idp::AUDIENCE,
            jwks
        ),
    )
    .unwrap();
    // Self-approval no longer tests CC6.3 in this team's catalogue; CC9.9 is theirs.
    let custom = db.path().join("catalogue.toml");
    std::fs::write(
        &custom,
        SOC2_CATALOGUE.replace(
            "codes = [\"SELF_APPROVAL\", \"APPROVER_NOT_AUTHORIZED\"]",
            "codes = [\"APPROVER_NOT_AUTHORIZED\"]",
        ) + "\n[[controls]]\nid = \"CC9.9\"\ntitle = \"Ours\"\ndescription = \"Segregation of duties, our way.\"\npopulation = \"changes\"\ncodes = [\"SELF_APPROVAL\"]\n",
    )
    .unwrap();
    let run = |out: &Path, extra: &[&str]| {
        let o = Command::new(bin())
            .arg("--config")
            .arg(&config)
            .args([
                "--database-url",
                &db.url,
                "report",
                "soc2",
                "--from",
                "2026-01-01",
                "--to",
                "2026-01-31",
                "--out",
            ])
            .arg(out)
            .args(extra)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        eprintln!("{}", String::from_utf8_lossy(&o.stderr));
        o
    };
    let out = db.path().join("cli-report");
    let o = run(&out, &["--catalogue", custom.to_str().unwrap()]);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("verify-report"), "{err}");
    let controls = csv_rows(&out.join("controls.csv"));
    let get = |id: &str| {
        controls
            .iter()
            .find(|r| r["control_id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(get("CC9.9")["exceptions"], "1");
    assert_eq!(
        get("CC6.3")["exceptions"],
        "2",
        "APPROVER_NOT_AUTHORIZED on CHG-SELF and CHG-2041"
    );
    let o = run(&out, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not empty"));
    let o = run(&db.path().join("x"), &["--sample", "2"]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "--sample without --seed is a usage error"
    );
    let bad = db.path().join("bad.toml");
    std::fs::write(
        &bad,
        SOC2_CATALOGUE.replace("\"NO_APPROVAL\"", "\"NO_APROVAL\""),
    )
    .unwrap();
    let o = run(
        &db.path().join("y"),
        &["--catalogue", bad.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("NO_APROVAL"));
}

/// A build that fails part-way (here: a broken template) leaves neither the report directory nor
/// its work directory behind, and says what failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_build_leaves_nothing_behind() {
    let db = TestDb::sqlite().await;
    let cfg = scenario_config(&db);
    let app = spawn_app_with(cfg.clone()).await;
    let mut wf = workflow("CHG-ONE", 60, T0);
    send(&app, &normal_change(&mut wf)).await;
    app.writer.checkpoint().await.unwrap();
    let mut settings = cfg.report_settings(None).unwrap();
    settings.template = "{% if %}".into();
    let out = db.path().join("r");
    let e = build_january(&app, &settings, &out, None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("template"), "{e}");
    assert!(!out.exists());
    assert!(!db.path().join("r.partial").exists());
    app.stop().await;
}

/// One report at a time: a request while another builds is told to retry (503 with Retry-After),
/// nothing is built for it, and once the first is done the next request is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_requested_while_one_builds_is_told_to_retry() {
    let db = TestDb::sqlite().await;
    let cfg = scenario_config(&db);
    let app = spawn_app_with(cfg.clone()).await;
    app.writer.checkpoint().await.unwrap();
    // The same router the server runs, on its own port, so the test can hold the build permit a
    // running report holds.
    let state = changetrail::api::AppState::new(app.store.clone(), None)
        .with_reports(cfg.report_settings(None).unwrap(), app.writer.clone());
    let ctx = state.reports.clone().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, changetrail::api::router(state)).await });
    let auditor = app.token(Role::Auditor).await;
    let post = || {
        app.http
            .post(format!("{base}/v1/reports/soc2"))
            .bearer_auth(&auditor)
            .json(&serde_json::json!({"from": "2026-01-01", "to": "2026-01-31"}))
            .send()
    };

    let building = ctx.running.try_acquire().unwrap();
    let r = post().await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "unavailable");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("a report is being built"),
        "{body}"
    );
    // The refused request took no permit of its own.
    assert_eq!(ctx.running.available_permits(), 0);
    drop(building);

    let r = post().await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let bytes = r.bytes().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    unzip(&bytes, dir.path());
    assert!(dir.path().join("manifest.json").exists());
    assert_eq!(ctx.running.available_permits(), 1);
    app.stop().await;
}

/// `bench report` states its synthetic changes as facts straight through the writer; the same
/// changes sent as spans through the OTLP listener (with tokens of the test issuer) must get the
/// same exceptions, change by change, and those its population is made to raise: the bench's
/// shortcut measures what the service would judge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_reports_changes_are_judged_as_their_spans_are() {
    const CHANGES: u64 = 520;
    const DAYS: u64 = 31;
    let mut judged = Vec::new();
    for as_spans in [true, false] {
        let db = TestDb::sqlite().await;
        let mut cfg = scenario_config(&db);
        cfg.reports.approver_roles = vec!["release-approver".into()];
        let app = spawn_app_with(cfg.clone()).await;
        let changes: Vec<u64> = (0..CHANGES).collect();
        for chunk in changes.chunks(40) {
            let changes = chunk.iter().map(|&i| Synthetic::new(i, DAYS));
            if as_spans {
                let tokens: Tokens = Arc::new(idp::token);
                let items: Vec<_> = changes
                    .flat_map(|c| c.items(DAYS, Some(tokens.clone())))
                    .collect();
                send(&app, &items).await;
            } else {
                let facts = changes.flat_map(|c| bench_report::facts(&c)).collect();
                let telemetry = Telemetry {
                    facts,
                    ..Default::default()
                };
                app.writer
                    .append_with_telemetry(&[], &telemetry)
                    .await
                    .unwrap();
            }
        }
        app.writer.checkpoint().await.unwrap();
        let dir = db.path().join("report");
        let settings = cfg.report_settings(None).unwrap();
        build_january(&app, &settings, &dir, None).await.unwrap();
        app.stop().await;
        // "svc-13 1.0.13" of "svc-13 1.0.13 first seen in production …": the span path also
        // names the version before (its sightings remember it), the bench's facts do not.
        let unlinked: BTreeSet<String> = csv_rows(&dir.join("exceptions.csv"))
            .into_iter()
            .filter(|r| r["code"] == "UNLINKED_DEPLOY")
            .map(|r| {
                let words: Vec<&str> = r["evidence"].split(' ').take(2).collect();
                words.join(" ")
            })
            .collect();
        let codes = codes_by_change(&csv_rows(&dir.join("population.csv")));
        judged.push((codes, unlinked));
    }
    assert_eq!(judged[0], judged[1], "as spans, then as the bench's facts");
    // What the population is made to raise: emergencies here were reviewed, rollbacks name the
    // change they roll back, and a rejected change explains no version it deployed.
    let (codes, unlinked) = &judged[0];
    let every = |n: u64, at: u64, code: &'static str, i: u64| (i % n == at).then_some(code);
    let want: BTreeMap<String, BTreeSet<String>> = (0..CHANGES)
        .map(|i| {
            let codes = [
                every(50, 3, "SELF_APPROVAL", i),
                every(97, 11, "APPROVAL_AFTER_DEPLOY", i),
                every(131, 13, "NO_APPROVAL", i),
                every(300, 17, "CREDENTIAL_NOT_ROTATED", i),
            ];
            let codes = codes.into_iter().flatten().map(String::from).collect();
            (format!("CHG-{i:06}"), codes)
        })
        .collect();
    assert_eq!(codes, &want);
    let want: BTreeSet<String> = (0..CHANGES)
        .map(|i| Synthetic::new(i, DAYS))
        .flat_map(|c| {
            let rejected = (c.decision == "rejected").then(|| c.version.clone());
            let hotfix = c.seen.get(1).map(|(v, _)| v.clone());
            [rejected, hotfix]
                .into_iter()
                .flatten()
                .map(move |v| format!("{} {v}", c.service))
        })
        .collect();
    assert_eq!(unlinked, &want);
}
