//! `changetrail demo` end to end, as a person runs it: the binary starts its scratch service, sends
//! the scenarios over OTLP/gRPC, prints the summary and serves until SIGTERM. The report it built
//! must name exactly the exceptions the scenarios were made to raise, and verify.

use crate::support::report::{codes_by_change, csv_rows};
use crate::support::server::{bin, sigterm};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_a_report_whose_exceptions_match_its_scenarios() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("demo");
    let mut c = Command::new(bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("CHANGETRAIL_") {
            c.env_remove(k);
        }
    }
    let mut child = c
        .args(["demo", "--weeks", "1", "--dir"])
        .arg(&dir)
        .args(["--http-listen", "127.0.0.1:0"])
        .args(["--otlp-grpc-listen", "127.0.0.1:0"])
        .args(["--otlp-http-listen", "127.0.0.1:0"])
        // The demo's own quiet default, not the caller's filter.
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The summary, up to the line saying it keeps serving.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut summary = Vec::new();
    loop {
        let left = Duration::from_secs(120).saturating_sub(started.elapsed());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no summary in time:\n{}", summary.join("\n")));
        let done = line.starts_with("Serving until Ctrl-C");
        summary.push(line);
        if done {
            break;
        }
    }
    let text = summary.join("\n");
    let field = |prefix: &str| -> String {
        summary
            .iter()
            .find_map(|l| l.trim_start().strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in:\n{text}"))
            .trim()
            .to_owned()
    };
    assert!(text.contains("as the scenarios expect"), "{text}");
    assert!(text.contains("verified, intact"), "{text}");
    // The delivery figures, with the rolled-back change and what restored it.
    assert!(text.contains("  delivery   "), "{text}");
    assert!(
        text.contains("CHG-1004     rolled back → restored by "),
        "{text}"
    );
    // The regression: the suspect found for checkout's errors, and the rollback that restored it.
    assert!(
        text.contains("CHG-CO-2     rolled back → restored by CHG-CO-3 after 30 min"),
        "{text}"
    );
    assert!(
        text.contains("  suspects   checkout's errors from ")
            && text.contains(": CHG-CO-2 ranked first of "),
        "{text}"
    );
    let console = field("console");
    let auditor = field("tokens     auditor");
    let vkey = field("vkey");
    assert!(console.starts_with("http://127.0.0.1:"), "{console}");

    // It is a running service: the console's address answers, with the tokens it printed.
    let http = reqwest::Client::new();
    let r = http.get(format!("{console}healthz")).send().await.unwrap();
    assert!(r.status().is_success());
    let list: serde_json::Value = http
        .get(format!("{console}v1/changes"))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["changes"].as_array().map(Vec::len), Some(16), "{list}");

    sigterm(&child);
    assert!(child.wait().unwrap().success());

    // The report: every change of the week, the problem cases with exactly their codes.
    let report = dir.join("report-soc2");
    let rows = csv_rows(&report.join("population.csv"));
    let got = codes_by_change(&rows);
    let mut want: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let codes = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    for n in 1001..=1005 {
        want.insert(format!("CHG-{n}"), codes(&[]));
    }
    want.insert(
        "CHG-SELF-1".into(),
        codes(&["SELF_APPROVAL", "APPROVER_NOT_AUTHORIZED"]),
    );
    want.insert(
        "CHG-LATE-1".into(),
        codes(&["APPROVAL_AFTER_DEPLOY", "UNVERIFIED_IDENTITY"]),
    );
    want.insert(
        "CHG-EMERG-1".into(),
        codes(&["EMERGENCY_NO_REVIEW", "UNVERIFIED_IDENTITY"]),
    );
    want.insert("CHG-EMERG-2".into(), codes(&[]));
    want.insert("CHG-RB-1".into(), codes(&[]));
    want.insert("CHG-TOKEN-1".into(), codes(&[]));
    want.insert("CHG-REPLAY-1".into(), codes(&["TOKEN_REUSED"]));
    want.insert("CHG-KEY-1".into(), codes(&["CREDENTIAL_NOT_ROTATED"]));
    want.insert("CHG-CO-1".into(), codes(&[]));
    want.insert("CHG-CO-2".into(), codes(&["CHANGE_REGRESSION"]));
    want.insert("CHG-CO-3".into(), codes(&[]));
    assert_eq!(got, want);
    // The replayed token names the change it was issued on; the key is in the rotation table.
    let exceptions = csv_rows(&report.join("exceptions.csv"));
    let replay = exceptions
        .iter()
        .find(|r| r["code"] == "TOKEN_REUSED")
        .unwrap();
    assert_eq!(replay["change_id"], "CHG-REPLAY-1");
    assert!(
        replay["evidence"].contains("used first on CHG-TOKEN-1"),
        "{replay:?}"
    );
    let rotation = csv_rows(&report.join("rotation.csv"));
    let key = rotation
        .iter()
        .find(|r| r["credential"] == "key:deploy-key-chg-1004")
        .unwrap();
    assert_eq!(
        (key["service"].as_str(), key["changes"].as_str()),
        ("search", "2")
    );
    assert_eq!(
        (key["first_change"].as_str(), key["last_change"].as_str()),
        ("CHG-1004", "CHG-KEY-1")
    );
    // The retried deploys are attempts, not exceptions; the rollback is linked both ways.
    let row = |id: &str| rows.iter().find(|r| r["change_id"] == id).unwrap();
    assert_eq!(row("CHG-1003")["deploy_attempts"], "2");
    assert_eq!(row("CHG-RB-1")["rollback_of"], "CHG-1004");
    assert_eq!(row("CHG-1004")["rolled_back_by"], "CHG-RB-1");
    assert_eq!(row("CHG-LATE-1")["requested_by_verified"], "false");
    assert_eq!(row("CHG-1001")["deployer_verified"], "true");
    let unlinked: Vec<_> = csv_rows(&report.join("exceptions.csv"))
        .into_iter()
        .filter(|r| r["code"] == "UNLINKED_DEPLOY")
        .collect();
    assert_eq!(unlinked.len(), 1);
    assert!(
        unlinked[0]["evidence"].contains("2.9.9-hotfix"),
        "{unlinked:?}"
    );

    // And the report verifies against the demo's ledger with the key it printed.
    let o = Command::new(bin())
        .arg("verify-report")
        .arg(&report)
        .args(["--trusted-key", &vkey, "--database-url"])
        .arg(format!("sqlite://{}", dir.join("changetrail.db").display()))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}
