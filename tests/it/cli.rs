//! The binary itself: a fresh `serve`, crash safety under kill -9, two processes on one
//! PostgreSQL, export/verify exit codes, key rotation and tokens from the command line.

use crate::support::server::{Served, TestDb, create_token, ct, serve_in, sigterm};
use changetrail::storage::Store;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn run(c: &mut Command) -> Output {
    let out = c.output().unwrap();
    eprintln!(
        "$ {:?}\n{}{}",
        c,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// Generates a key file in `dir` and returns its vkey.
fn keygen(dir: &Path, origin: &str) -> String {
    let o = run(ct(dir).args(["keys", "generate", "--out", "k.key", "--origin", origin]));
    assert_eq!(code(&o), 0);
    stdout(&o)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_a_fresh_directory_just_works() {
    let dir = tempfile::tempdir().unwrap();
    // The most verbose logging there is: still no token may appear in it.
    let Served {
        mut child,
        lines: stderr_lines,
        reader,
        admin,
    } = serve_in(dir.path(), &[], Some("trace"), &[]);
    let started = Instant::now();
    let addr = loop {
        let found = stderr_lines
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains("changetrail is serving"))
            .and_then(|l| {
                l.split(" http=")
                    .nth(1)
                    .map(|s| s.split_whitespace().next().unwrap_or("").to_owned())
            });
        if let Some(a) = found {
            break a;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "server did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let key_mode = std::fs::metadata(dir.path().join("changetrail.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    assert!(dir.path().join("changetrail.db").exists());

    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    assert!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    let reviewer = create_token(&http, &base, &admin, "reviewer", "reviewer").await;
    let note = http
        .get(format!("{base}/v1/ledger/checkpoint"))
        .bearer_auth(&reviewer)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(note.contains("\n1\n"), "{note}");

    sigterm(&child);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    reader.join().unwrap();
    let log = stderr_lines.lock().unwrap().join("\n");
    assert!(
        log.contains("Generated a new signing key"),
        "the warning about the generated key"
    );
    for token in [&admin, &reviewer] {
        let secret = token.splitn(3, '_').nth(2).unwrap();
        assert!(!log.contains(secret), "a token secret reached the log");
    }
    // A second start on the same directory reuses the ledger and prints no new token.
    let o = run(ct(dir.path()).args(["tokens", "list"]));
    assert!(stdout(&o).contains("bootstrap") && stdout(&o).contains("reviewer"));
}

/// Tamper catalogue H: kill -9 in the middle of heavy appends, restart, verify passes; no
/// partial entry and no checkpoint beyond what is durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_heavy_appends_then_restart_verifies_sqlite() {
    kill_9_during_heavy_appends_then_restart_verifies(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_heavy_appends_then_restart_verifies_postgres() {
    if let Some(db) =
        TestDb::postgres("kill_9_during_heavy_appends_then_restart_verifies_postgres").await
    {
        kill_9_during_heavy_appends_then_restart_verifies(db).await;
    }
}

async fn kill_9_during_heavy_appends_then_restart_verifies(db: TestDb) {
    let dir = db.path();
    let vkey = keygen(dir, "crash.example/ledger");
    let mut child = ct(dir)
        .args([
            "bench",
            "ledger",
            "--entries",
            "50000000",
            "--database-url",
            &db.url,
        ])
        .env("CHANGETRAIL_LEDGER__KEY_FILE", "k.key")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let store = Store::connect(&db.url, &Default::default()).await.unwrap();
    let started = Instant::now();
    loop {
        let size = match store.head().await {
            Ok(Some(h)) => h.head.size,
            _ => 0,
        };
        if size > 20_000 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "bench appended too little"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().unwrap(); // SIGKILL: no chance to finish anything
    child.wait().unwrap();
    let head = store.head().await.unwrap().unwrap();
    let cp = store.latest_checkpoint().await.unwrap().unwrap();
    assert!(
        cp.size <= head.head.size,
        "a checkpoint beyond the durable entries"
    );
    assert!(store.entry(head.head.size - 1).await.unwrap().is_some());
    assert!(store.entry(head.head.size).await.unwrap().is_none());
    store.close().await;

    // Restart: covering the tail is the first thing any writer does.
    let o = run(ct(dir)
        .args(["checkpoint", "--database-url", &db.url])
        .env("CHANGETRAIL_LEDGER__KEY_FILE", "k.key"));
    assert_eq!(code(&o), 0);
    assert!(
        stdout(&o).contains(&format!("\n{}\n", head.head.size)),
        "checkpoint covers the durable size"
    );
    let o = run(ct(dir).args([
        "verify",
        "--database-url",
        &db.url,
        "--trusted-key",
        &vkey,
        "--max-age",
        "1h",
    ]));
    assert_eq!(code(&o), 0, "{:?}", db.backend);
}

/// Two changetrail processes appending to one PostgreSQL produce one gap-free chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_append_to_one_postgres() {
    let Some(db) = TestDb::postgres("two_processes_append_to_one_postgres").await else {
        return;
    };
    let dir = db.path();
    let vkey = keygen(dir, "shared.example/ledger");
    // Both start on an empty database: creating the ledger is serialised too.
    let spawn = || {
        ct(dir)
            .args([
                "bench",
                "ledger",
                "--entries",
                "20000",
                "--producers",
                "4",
                "--database-url",
                &db.url,
            ])
            .env("CHANGETRAIL_LEDGER__KEY_FILE", "k.key")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (oa, ob) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(
        oa.status.success(),
        "{}",
        String::from_utf8_lossy(&oa.stderr)
    );
    assert!(
        ob.status.success(),
        "{}",
        String::from_utf8_lossy(&ob.stderr)
    );
    let store = Store::connect(&db.url, &Default::default()).await.unwrap();
    let head = store.head().await.unwrap().unwrap();
    assert_eq!(head.head.size, 40_001);
    store.close().await;
    let o = run(ct(dir).args(["verify", "--database-url", &db.url, "--trusted-key", &vkey]));
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).contains("40001 read"), "{}", stdout(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_and_verify_exit_codes() {
    let db = TestDb::sqlite().await;
    let dir = db.path();
    let vkey = keygen(dir, "export.example/ledger");
    let key_env = ("CHANGETRAIL_LEDGER__KEY_FILE", "k.key");
    let bench = |n: &str| {
        let o = run(ct(dir)
            .args(["bench", "ledger", "--entries", n, "--database-url", &db.url])
            .env(key_env.0, key_env.1));
        assert_eq!(code(&o), 0);
    };
    bench("3000");
    let o = run(ct(dir).args(["export", "--database-url", &db.url, "--out", "a.jsonl"]));
    assert_eq!(code(&o), 0);
    let verify = |args: &[&str]| run(ct(dir).arg("verify").args(args));

    let o = verify(&["a.jsonl", "--trusted-key", &vkey, "--state", "state.json"]);
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).contains("Result: OK"));
    assert!(dir.join("state.json").exists());
    let o = verify(&["a.jsonl", "--trusted-key", &vkey, "--format", "json"]);
    assert_eq!(code(&o), 0);
    assert_eq!(stdout(&o), "", "no findings, no lines");

    // Unpinned: exit 0 with a warning.
    let o = verify(&["a.jsonl"]);
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).contains("UNPINNED"));

    // A cut tail (entries and their checkpoint gone) is never a silent 0.
    let text = std::fs::read_to_string(dir.join("a.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(
        dir.join("cut.jsonl"),
        lines[..lines.len() - 300].join("\n") + "\n",
    )
    .unwrap();
    let o = verify(&["cut.jsonl", "--trusted-key", &vkey, "--format", "json"]);
    assert_eq!(code(&o), 2);
    assert!(stdout(&o).contains("\"INCOMPLETE\""));
    // ... and against the saved state it is a rollback.
    let o = verify(&["cut.jsonl", "--trusted-key", &vkey, "--state", "state.json"]);
    assert_eq!(code(&o), 1);
    assert!(stdout(&o).contains("ROLLBACK"));

    // One changed character in an entry: exit 1.
    let pos = text.find("\"payload\":\"{").unwrap() + 20;
    let mut bytes = text.clone().into_bytes();
    bytes[pos] = if bytes[pos] == b'a' { b'b' } else { b'a' };
    std::fs::write(dir.join("flip.jsonl"), bytes).unwrap();
    let o = verify(&["flip.jsonl", "--trusted-key", &vkey]);
    assert_eq!(code(&o), 1);
    assert!(stdout(&o).contains("MODIFIED"));

    // An old export is STALE under a tight --max-age, fine with --at its own time.
    std::thread::sleep(Duration::from_millis(1100));
    let o = verify(&["a.jsonl", "--trusted-key", &vkey, "--max-age", "1s"]);
    assert_eq!(code(&o), 2);
    assert!(stdout(&o).contains("STALE"));

    // Usage and configuration errors: exit 3.
    assert_eq!(code(&verify(&["a.jsonl", "--trusted-key", "not-a-key"])), 3);
    assert_eq!(code(&verify(&["missing.jsonl", "--trusted-key", &vkey])), 3);
    assert_eq!(code(&verify(&["a.jsonl", "--no-such-flag"])), 3);
    assert_eq!(code(&verify(&["a.jsonl", "--max-age", "soon"])), 3);

    // The ledger moves on; the saved state accepts the newer export and advances.
    bench("500");
    let o = run(ct(dir).args(["export", "--database-url", &db.url, "--out", "b.jsonl"]));
    assert_eq!(code(&o), 0);
    let o = verify(&["b.jsonl", "--trusted-key", &vkey, "--state", "state.json"]);
    assert_eq!(code(&o), 0);
    let o = verify(&["a.jsonl", "--trusted-key", &vkey, "--state", "state.json"]);
    assert_eq!(code(&o), 1, "the older export is now a rollback");

    // A range export verifies with only the prefix peaks before it.
    let o = run(ct(dir).args([
        "export",
        "--database-url",
        &db.url,
        "--out",
        "r.jsonl",
        "--from",
        "1000",
        "--to",
        "2000",
    ]));
    assert_eq!(code(&o), 0);
    let o = verify(&["r.jsonl", "--trusted-key", &vkey]);
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).contains("entries      1000..="));

    // A reviewer whose saved state predates a range export needs the consistency proof from it.
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("state.json")).unwrap()).unwrap();
    let saved = state["ledgers"]["export.example/ledger"]["size"]
        .as_u64()
        .unwrap();
    assert!(saved > 3000);
    bench("400");
    let from = (saved + 100).to_string();
    let o = run(ct(dir).args([
        "export",
        "--database-url",
        &db.url,
        "--out",
        "no-proof.jsonl",
        "--from",
        &from,
    ]));
    assert_eq!(code(&o), 0);
    let o = verify(&[
        "no-proof.jsonl",
        "--trusted-key",
        &vkey,
        "--state",
        "state.json",
    ]);
    assert_eq!(
        code(&o),
        1,
        "nothing connects this bundle to the saved state"
    );
    assert!(stdout(&o).contains("FORK"));
    let o = run(ct(dir).args([
        "export",
        "--database-url",
        &db.url,
        "--out",
        "proof.jsonl",
        "--from",
        &from,
        "--consistency-from",
        &saved.to_string(),
    ]));
    assert_eq!(code(&o), 0);
    let o = verify(&[
        "proof.jsonl",
        "--trusted-key",
        &vkey,
        "--state",
        "state.json",
    ]);
    assert_eq!(code(&o), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_tokens_and_erase_from_the_command_line() {
    let db = TestDb::sqlite().await;
    let dir = db.path();
    let first = keygen(dir, "rotate.example/ledger");
    let env = ("CHANGETRAIL_LEDGER__KEY_FILE", "k.key");
    let o = run(ct(dir)
        .args([
            "bench",
            "ledger",
            "--entries",
            "300",
            "--database-url",
            &db.url,
        ])
        .env(env.0, env.1));
    assert_eq!(code(&o), 0);
    let o = run(ct(dir)
        .args(["keys", "rotate", "--database-url", &db.url])
        .env(env.0, env.1));
    assert_eq!(code(&o), 0);
    let second = stdout(&o);
    assert_ne!(second, first);
    let retired: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("k.key.retired-")
        })
        .collect();
    assert_eq!(retired.len(), 1);
    let o = run(ct(dir).args(["keys", "show"]).env(env.0, env.1));
    assert_eq!(stdout(&o), second);
    let o = run(ct(dir)
        .args([
            "bench",
            "ledger",
            "--entries",
            "300",
            "--database-url",
            &db.url,
        ])
        .env(env.0, env.1));
    assert_eq!(code(&o), 0);
    let o = run(ct(dir)
        .args([
            "erase",
            "--seq",
            "5",
            "--reason",
            "GDPR Art. 17",
            "--requested-by",
            "dpo@example.com",
            "--database-url",
            &db.url,
        ])
        .env(env.0, env.1));
    assert_eq!(code(&o), 0);
    // Only the first key is pinned: the rotation entry carries trust to the second.
    let o = run(ct(dir).args(["verify", "--database-url", &db.url, "--trusted-key", &first]));
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).contains("REDACTED 1"));
    // Pinning only the second key cannot vouch for the history before it.
    let o = run(ct(dir).args([
        "verify",
        "--database-url",
        &db.url,
        "--trusted-key",
        &second,
    ]));
    assert_eq!(code(&o), 1);

    // Token changes are ledger entries: they take the signing key, as rotation does.
    let o = run(ct(dir)
        .args([
            "tokens",
            "create",
            "--role",
            "auditor",
            "--name",
            "audit firm",
            "--database-url",
            &db.url,
        ])
        .env(env.0, env.1));
    assert_eq!(code(&o), 0);
    let token = stdout(&o);
    let id = token.split('_').nth(1).unwrap().to_owned();
    let o = run(ct(dir).args(["tokens", "list", "--database-url", &db.url]));
    assert!(
        stdout(&o).contains("audit firm")
            && !stdout(&o).contains(token.splitn(3, '_').nth(2).unwrap())
    );
    let revoke = || {
        code(&run(ct(dir)
            .args(["tokens", "revoke", &id, "--database-url", &db.url])
            .env(env.0, env.1)))
    };
    assert_eq!(revoke(), 0);
    assert_ne!(revoke(), 0);
    // Both are in the ledger, which still verifies.
    let o = run(ct(dir).args(["verify", "--database-url", &db.url, "--trusted-key", &first]));
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert_ne!(
        code(&run(
            ct(dir).args(["tokens", "create", "--role", "root", "--name", "x"])
        )),
        0
    );
}

/// Embedded defaults → changetrail.toml (or --config) → CHANGETRAIL_* → flags, each overriding
/// the one before; unknown settings are refused with a clear message.
#[test]
fn configuration_layers_override_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("changetrail.toml"),
        "database_url = \"sqlite://from-file.db\"\n",
    )
    .unwrap();
    let create = |c: &mut Command| {
        code(&run(c.args([
            "tokens", "create", "--role", "reviewer", "--name", "n",
        ])))
    };
    assert_eq!(create(&mut ct(d)), 0);
    assert!(d.join("from-file.db").exists());
    assert_eq!(
        create(ct(d).env("CHANGETRAIL_DATABASE_URL", "sqlite://from-env.db")),
        0
    );
    assert!(d.join("from-env.db").exists());
    assert_eq!(
        create(
            ct(d)
                .env("CHANGETRAIL_DATABASE_URL", "sqlite://from-env.db")
                .args(["--database-url", "sqlite://from-flag.db"])
        ),
        0
    );
    assert!(d.join("from-flag.db").exists());
    std::fs::write(d.join("other.toml"), "[ledger]\ncheckpoint_evry = 5\n").unwrap();
    let o = run(ct(d).args(["--config", "other.toml", "tokens", "list"]));
    assert_ne!(code(&o), 0);
    assert!(String::from_utf8_lossy(&o.stderr).contains("checkpoint_evry"));
    // Other CHANGETRAIL_* variables are not settings and are left alone; a misspelt setting is not.
    assert_eq!(
        code(&run(ct(d)
            .env("CHANGETRAIL_BENCH_TOKEN", "x")
            .args(["tokens", "list"]))),
        0
    );
    let o = run(ct(d)
        .env("CHANGETRAIL_LEDGER__CHECKPOINT_EVRY", "5")
        .args(["tokens", "list"]));
    assert_ne!(code(&o), 0);
    assert!(String::from_utf8_lossy(&o.stderr).contains("checkpoint_evry"));
    let o = run(ct(d).args(["--config", "nope.toml", "tokens", "list"]));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not exist"));
}

/// `--log-format json`: one JSON object per line, and every request's lines carry its trace id
/// (from `traceparent`) and principal — for REST calls and OTLP exports alike — but never a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_each_requests_trace_and_principal() {
    let dir = tempfile::tempdir().unwrap();
    let Served {
        mut child,
        lines,
        reader,
        admin,
    } = serve_in(
        dir.path(),
        &["--log-format", "json", "--log", "info"],
        None,
        &[],
    );
    let started = Instant::now();
    let serving = loop {
        let found = lines.lock().unwrap().iter().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            (v["message"] == "changetrail is serving.").then_some(v)
        });
        if let Some(v) = found {
            break v;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no start line");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let base = format!("http://{}", serving["http"].as_str().unwrap());
    let otlp = format!("http://{}", serving["otlp_http"].as_str().unwrap());

    let http = reqwest::Client::new();
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = format!("00-{trace}-00f067aa0ba902b7-01");
    let ingest = create_token(&http, &base, &admin, "ingest", "collector").await;
    let r = http
        .post(format!("{otlp}/v1/traces"))
        .bearer_auth(&ingest)
        .header("traceparent", &parent)
        .header("content-type", "application/x-protobuf")
        .body(Vec::new())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    // Without a traceparent the request still gets a trace id of its own.
    let r = http
        .get(format!("{base}/v1/admin/tokens"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());

    sigterm(&child);
    assert!(child.wait().unwrap().success());
    reader.join().unwrap();
    let lines = lines.lock().unwrap().clone();
    let objects: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let finished = |path: &str| -> Vec<&serde_json::Value> {
        objects
            .iter()
            .filter(|v| v["message"] == "finished processing request" && v["span"]["path"] == path)
            .collect()
    };
    let export = finished("/v1/traces");
    assert_eq!(export.len(), 1, "{lines:#?}");
    let span = &export[0]["span"];
    assert_eq!(span["trace_id"], trace);
    assert_eq!(span["principal"], "collector");
    assert_eq!(span["role"], "ingest");
    assert_eq!(export[0]["status"], 200);
    let listing = finished("/v1/admin/tokens");
    assert_eq!(listing.len(), 2, "{lines:#?}");
    for v in &listing {
        assert_eq!(v["span"]["role"], "admin");
        assert_eq!(v["span"]["principal"], "bootstrap");
        let id = v["span"]["trace_id"].as_str().unwrap();
        assert!(id.len() == 32 && id != trace, "{id}");
    }
    let log = lines.join("\n");
    for token in [&admin, &ingest] {
        let secret = token.splitn(3, '_').nth(2).unwrap();
        assert!(!log.contains(secret), "a token secret reached the log");
    }
}

/// A deployment that must know a token in advance (a compose file, a secret store): `tokens
/// generate` makes one without any database, `tokens create --token-file` registers it — once,
/// idempotently, and strictly (a different token under the same id, or a malformed file, fails).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_generated_in_advance_register_from_a_file_or_variable_sqlite() {
    tokens_generated_in_advance_register_from_a_file_or_variable(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_generated_in_advance_register_from_a_file_or_variable_postgres() {
    if let Some(db) =
        TestDb::postgres("tokens_generated_in_advance_register_from_a_file_or_variable_postgres")
            .await
    {
        tokens_generated_in_advance_register_from_a_file_or_variable(db).await;
    }
}

async fn tokens_generated_in_advance_register_from_a_file_or_variable(db: TestDb) {
    use changetrail::auth::{AuthError, Authenticator, Role};
    let dir = db.path();
    let o = run(ct(dir).args(["tokens", "generate"]));
    assert_eq!(code(&o), 0);
    let token = stdout(&o);
    assert!(token.starts_with("ct_") && token.len() > 50, "{token}");
    assert_ne!(stdout(&run(ct(dir).args(["tokens", "generate"]))), token);
    // Generating touched no database: not even the default SQLite file was created.
    assert!(!dir.join("changetrail.db").exists());

    std::fs::write(dir.join("ingest_token"), format!("{token}\n")).unwrap();
    let register = |name: &str, role: &str, file: &str| {
        run(ct(dir).args([
            "tokens",
            "create",
            "--role",
            role,
            "--name",
            name,
            "--token-file",
            file,
            "--database-url",
            &db.url,
        ]))
    };
    let secret = token.splitn(3, '_').nth(2).unwrap().to_owned();
    let o = register("otel-collector", "ingest", "ingest_token");
    assert_eq!(code(&o), 0);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(said.contains("Registered ingest token"), "{said}");
    assert!(!said.contains(&secret), "the secret was printed");

    let store = db.store().await;
    let who = Authenticator::new(store.clone())
        .authenticate(&token, Role::Ingest)
        .await
        .unwrap();
    assert_eq!(who.name, "otel-collector");
    assert!(matches!(
        Authenticator::new(store.clone())
            .authenticate(&token, Role::Admin)
            .await,
        Err(AuthError::Forbidden { .. })
    ));

    // A re-run (an init job started again) changes nothing and succeeds.
    let o = register("otel-collector", "ingest", "ingest_token");
    assert_eq!(code(&o), 0);
    assert!(String::from_utf8_lossy(&o.stderr).contains("already registered"));
    assert_eq!(store.tokens().await.unwrap().len(), 1);

    // The same id with another secret, or the same token with another role, is refused.
    let id = token.split('_').nth(1).unwrap();
    let forged = format!("ct_{id}_{}", "x".repeat(43));
    std::fs::write(dir.join("forged"), &forged).unwrap();
    let o = register("otel-collector", "ingest", "forged");
    assert_ne!(code(&o), 0);
    assert!(String::from_utf8_lossy(&o.stderr).contains("its secret differs"));
    let o = register("otel-collector", "admin", "ingest_token");
    assert_ne!(code(&o), 0);
    assert!(String::from_utf8_lossy(&o.stderr).contains("its role is ingest"));
    assert!(
        Authenticator::new(store.clone())
            .authenticate(&forged, Role::Ingest)
            .await
            .is_err()
    );
    assert!(
        Authenticator::new(store.clone())
            .authenticate(&token, Role::Ingest)
            .await
            .is_ok()
    );

    // Malformed or weak files fail with a message about the shape, never echoing the text.
    for (text, says) in [
        (
            "hunter2hunter2hunter2hunter2\n",
            "does not start with `ct_`",
        ),
        ("ct_0123456789ab_short\n", "at least 32 are needed"),
        ("", "it is empty"),
    ] {
        std::fs::write(dir.join("bad"), text).unwrap();
        let o = register("x", "ingest", "bad");
        assert_ne!(code(&o), 0);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("bad does not hold a usable changetrail token") && err.contains(says),
            "{err}"
        );
        assert!(text.trim().is_empty() || !err.contains(text.trim()));
    }
    let o = register("x", "ingest", "no-such-file");
    assert_ne!(code(&o), 0);
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot read the token file"));

    // --token-env does the same from a variable (a platform's secret injection).
    let other = stdout(&run(ct(dir).args(["tokens", "generate"])));
    let o = run(ct(dir)
        .args([
            "tokens",
            "create",
            "--role",
            "auditor",
            "--name",
            "audit firm",
            "--token-env",
            "CT_TEST_AUDITOR_TOKEN",
            "--database-url",
            &db.url,
        ])
        .env("CT_TEST_AUDITOR_TOKEN", &other));
    assert_eq!(code(&o), 0);
    assert!(
        Authenticator::new(store.clone())
            .authenticate(&other, Role::Auditor)
            .await
            .is_ok()
    );
    let o = run(ct(dir).args([
        "tokens",
        "create",
        "--role",
        "auditor",
        "--name",
        "n",
        "--token-env",
        "CT_TEST_UNSET_TOKEN",
        "--database-url",
        &db.url,
    ]));
    assert_ne!(code(&o), 0);
    assert!(String::from_utf8_lossy(&o.stderr).contains("CT_TEST_UNSET_TOKEN is not set"));
    store.close().await;
}

/// `config defaults` prints the embedded defaults byte for byte, and they load as a
/// configuration file; it reads no configuration itself (a broken one is what it helps mend).
#[test]
fn config_defaults_prints_the_embedded_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("changetrail.toml"), "not = [valid\n").unwrap();
    let o = run(ct(dir.path()).args(["config", "defaults"]));
    assert_eq!(code(&o), 0);
    assert_eq!(o.stdout, changetrail::app::config::DEFAULTS.as_bytes());
    let printed = dir.path().join("printed.toml");
    std::fs::write(&printed, &o.stdout).unwrap();
    changetrail::app::config::Config::load(Some(&printed)).unwrap();
}

/// Every command's reference is its `--help`: each one must print and exit 0.
#[test]
fn every_command_has_help() {
    fn paths(c: &clap::Command, prefix: &[String], out: &mut Vec<Vec<String>>) {
        out.push(prefix.to_vec());
        for s in c.get_subcommands() {
            let mut p = prefix.to_vec();
            p.push(s.get_name().to_owned());
            paths(s, &p, out);
        }
    }
    let mut all = Vec::new();
    paths(
        &<changetrail::app::cli::Cli as clap::CommandFactory>::command(),
        &[],
        &mut all,
    );
    assert!(all.len() > 20, "{all:?}");
    let dir = tempfile::tempdir().unwrap();
    for p in all {
        let o = ct(dir.path()).args(&p).arg("--help").output().unwrap();
        assert_eq!(code(&o), 0, "changetrail {} --help", p.join(" "));
        assert!(!o.stdout.is_empty(), "changetrail {} --help", p.join(" "));
    }
}

/// The README is the front door: short, and every relative link in it (and in the documents it
/// links to) leads to a file that exists.
#[test]
fn the_readme_is_short_and_its_links_resolve() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(lines <= 250, "README.md has {lines} lines (at most 250)");
    let mut docs = vec![root.join("README.md")];
    let mut broken = Vec::new();
    let mut i = 0;
    while i < docs.len() {
        let doc = docs[i].clone();
        let text = std::fs::read_to_string(&doc).unwrap();
        for (at, _) in text.match_indices("](") {
            let rest = &text[at + 2..];
            let target = &rest[..rest.find(')').unwrap_or(rest.len())];
            if target.contains("://") || target.starts_with('#') || target.starts_with("mailto:") {
                continue;
            }
            let file = target.split('#').next().unwrap_or("");
            let resolved = doc.parent().unwrap().join(file);
            if !resolved.exists() {
                broken.push(format!("{}: {target}", doc.display()));
            } else if doc == root.join("README.md")
                && file.ends_with(".md")
                && !docs.contains(&resolved)
            {
                docs.push(resolved);
            }
        }
        i += 1;
    }
    assert!(broken.is_empty(), "links to nothing: {broken:#?}");
    assert!(
        docs.len() > 3,
        "README.md links to too few documents: {docs:?}"
    );
}
