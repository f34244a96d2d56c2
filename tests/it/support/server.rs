//! Fresh databases on both backends, the real server on port 0 (in-process, or the binary as a
//! child), handy clients, and waiting for a condition.

use changetrail::app::config::Config;
use changetrail::app::startup::App;
use changetrail::auth::{self, Role};
use changetrail::core::ledger::verify::{Options, Report};
use changetrail::pipeline::LedgerWriter;
use changetrail::storage::{Backend, Store};
use changetrail::sys::now_ns;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

/// A fresh database for one test: a SQLite file in a temp dir, or a new PostgreSQL database
/// created on `TEST_DATABASE_URL`'s server (dropped when the test ends).
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    pub dir: TempDir,
    pg_name: Option<String>,
}

impl TestDb {
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        TestDb {
            url: format!("sqlite://{}", dir.path().join("ledger.db").display()),
            backend: Backend::Sqlite,
            dir,
            pg_name: None,
        }
    }

    /// `None` (with a loud note) when `TEST_DATABASE_URL` is unset.
    pub async fn postgres(test: &str) -> Option<TestDb> {
        let base = pg_base(test)?;
        let name = format!(
            "ct_test_{}",
            hex::encode(changetrail::sys::random_bytes::<6>())
        );
        let admin = Store::connect(&base, &Default::default()).await.unwrap();
        if let Store::Postgres(p) = &admin {
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(p)
                .await
                .unwrap();
        }
        admin.close().await;
        Some(TestDb {
            url: replace_db_name(&base, &name),
            backend: Backend::Postgres,
            dir: tempfile::tempdir().unwrap(),
            pg_name: Some(name),
        })
    }

    pub async fn store(&self) -> Store {
        let s = Store::connect(&self.url, &Default::default())
            .await
            .unwrap();
        s.migrate().await.unwrap();
        s
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        let Some(base) = std::env::var("TEST_DATABASE_URL").ok() else {
            return;
        };
        // Best effort, on a thread of its own: Drop cannot await inside a runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(Store::Postgres(p)) = Store::connect(&base, &Default::default()).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&p)
                    .await;
                    p.close().await;
                }
            });
        })
        .join();
    }
}

/// The PostgreSQL server for tests, or a printed note that `test` is skipped on PostgreSQL.
pub fn pg_base(test: &str) -> Option<String> {
    match std::env::var("TEST_DATABASE_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            eprintln!(
                "SKIPPED {test} on PostgreSQL: TEST_DATABASE_URL is not set; .ci/run sets it"
            );
            None
        }
    }
}

fn replace_db_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..].find('/').map(|i| i + scheme_end);
    let mut out = match path_start {
        Some(i) => format!("{}/{name}", &base[..i]),
        None => format!("{base}/{name}"),
    };
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Configuration for a test server: its own key file, port 0, quick checkpoints.
pub fn config(db: &TestDb) -> Config {
    let mut c = Config::defaults();
    c.database_url = db.url.clone();
    c.ledger.key_file = db.path().join("ledger.key");
    c.otlp.journal_dir = db.path().join("parking.journal");
    c.ledger.checkpoint_every = 50;
    c.http.listen = "127.0.0.1:0".parse().unwrap();
    c.otlp.grpc_listen = "127.0.0.1:0".parse().unwrap();
    c.otlp.http_listen = "127.0.0.1:0".parse().unwrap();
    c
}

/// Ten years, as the lateness and token-age allowance of a test that replays a fixed past (the
/// scenarios happen in January 2026 whenever the test runs): a backfill, allowed to be late.
/// Tests of the receipt rules themselves use the shipped limits and times around now.
pub const HISTORY: std::time::Duration = std::time::Duration::from_secs(10 * 366 * 86_400);

/// `config` for a test that replays history (see `HISTORY`).
pub fn history_config(db: &TestDb) -> Config {
    let mut c = config(db);
    c.evidence.max_lateness = HISTORY;
    c.identity.max_token_age_at_receipt = HISTORY;
    c
}

pub struct TestApp {
    pub base: String,
    /// `http://127.0.0.1:port` of the OTLP gRPC and HTTP listeners.
    pub grpc: String,
    pub otlp: String,
    /// A token with role `ingest`.
    pub ingest: String,
    pub ingestor: Arc<changetrail::ingest::Ingestor>,
    pub http: reqwest::Client,
    pub store: Store,
    pub writer: Arc<LedgerWriter>,
    pub appender: changetrail::pipeline::Appender,
    pub admin: String,
    pub reviewer: String,
    pub vkey: String,
    shutdown: CancellationToken,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl TestApp {
    pub async fn token(&self, role: Role) -> String {
        let (row, token) = auth::issue(&format!("test-{role}"), role, now_ns());
        self.writer.create_token(&row, "a test").await.unwrap();
        token
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut r = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().await.unwrap()
    }

    /// Revokes a token by id through the admin API; the answer's status.
    pub async fn revoke(&self, id: &str) -> reqwest::StatusCode {
        self.http
            .delete(format!("{}/v1/admin/tokens/{id}", self.base))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap()
            .status()
    }

    /// Stops the server and waits until the queue is drained.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            h.await.unwrap();
        }
    }
}

pub async fn spawn_app(db: &TestDb) -> TestApp {
    spawn_app_with(config(db)).await
}

pub async fn spawn_app_with(cfg: Config) -> TestApp {
    // Logs only on request: RUST_LOG=debug cargo test … shows the server's side of a failure.
    if std::env::var("RUST_LOG").is_ok() {
        changetrail::app::telemetry::init("info");
    }
    let app = App::build(cfg).await.unwrap();
    let admin = app
        .bootstrap_token
        .clone()
        .expect("a fresh ledger prints a bootstrap token");
    let base = format!("http://{}", app.http_addr);
    let grpc = format!("http://{}", app.otlp_grpc_addr);
    let otlp = format!("http://{}", app.otlp_http_addr);
    let ingestor = app.ingestor.clone();
    let store = app.store.clone();
    let writer = app.writer.clone();
    let appender = app.appender.clone();
    let vkey = writer.key().vkey().to_string();
    let shutdown = app.shutdown_token();
    let handle = tokio::spawn(async move { app.run().await.unwrap() });
    let (row, reviewer) = auth::issue("test-reviewer", Role::Reviewer, now_ns());
    writer.create_token(&row, "a test").await.unwrap();
    let (row, ingest) = auth::issue("test-ingest", Role::Ingest, now_ns());
    writer.create_token(&row, "a test").await.unwrap();
    TestApp {
        base,
        grpc,
        otlp,
        ingest,
        ingestor,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
        store,
        writer,
        appender,
        admin,
        reviewer,
        vkey,
        shutdown,
        handle: Some(handle),
    }
}

/// Verifies a database the way `changetrail verify --database-url` does.
pub async fn verify_store(store: &Store, pinned: &[&str]) -> Report {
    let opts = Options {
        trusted: pinned
            .iter()
            .map(|k| changetrail::core::ledger::keys::Vkey::parse(k).unwrap())
            .collect(),
        state: None,
        max_age_ns: None,
        now_ns: now_ns(),
        threads: 2,
    };
    changetrail::read::audit::verify_store(store, opts, None)
        .await
        .unwrap()
        .0
}

/// The compiled `changetrail` binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_changetrail"))
}

/// Asks a child process to stop the way a service manager does.
pub fn sigterm(child: &std::process::Child) {
    let ok = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(ok.success());
}

/// A command with a clean environment for changetrail settings, run in `dir`.
pub fn ct(dir: &Path) -> Command {
    let mut c = Command::new(bin());
    c.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("CHANGETRAIL_") {
            c.env_remove(k);
        }
    }
    c.env("RUST_LOG", "warn");
    c
}

/// A `serve` child on free ports in `dir`, its stderr collected line by line, and the bootstrap
/// admin token it printed.
pub struct Served {
    pub child: Child,
    pub lines: Arc<Mutex<Vec<String>>>,
    pub reader: std::thread::JoinHandle<()>,
    pub admin: String,
}

pub fn serve_in(dir: &Path, args: &[&str], rust_log: Option<&str>, env: &[(&str, &str)]) -> Served {
    let mut c = ct(dir);
    c.envs(env.iter().copied());
    c.arg("serve")
        .args(args)
        .env("CHANGETRAIL_HTTP__LISTEN", "127.0.0.1:0")
        .env("CHANGETRAIL_OTLP__GRPC_LISTEN", "127.0.0.1:0")
        .env("CHANGETRAIL_OTLP__HTTP_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match rust_log {
        Some(l) => c.env("RUST_LOG", l),
        None => c.env_remove("RUST_LOG"),
    };
    let mut child = c.spawn().unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let err = child.stderr.take().unwrap();
    let sink = lines.clone();
    let reader = std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(l);
        }
    });
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.contains("Bootstrap admin token"), "{line}");
    line.clear();
    out.read_line(&mut line).unwrap();
    let admin = line.trim().to_owned();
    assert!(admin.starts_with("ct_"));
    Served {
        child,
        lines,
        reader,
        admin,
    }
}

/// A token of `role` created through a served admin API; the token.
pub async fn create_token(
    http: &reqwest::Client,
    base: &str,
    admin: &str,
    role: &str,
    name: &str,
) -> String {
    let created: serde_json::Value = http
        .post(format!("{base}/v1/admin/tokens"))
        .bearer_auth(admin)
        .json(&serde_json::json!({ "role": role, "name": name }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    created["token"].as_str().unwrap().to_owned()
}

impl Served {
    /// The address a listener (`http`, `otlp_grpc`, `otlp_http`) serves on, from the "is
    /// serving" log line (needs RUST_LOG at info or lower), awaited up to 60 s.
    pub async fn addr(&self, listener: &str) -> String {
        let started = std::time::Instant::now();
        let key = format!(" {listener}=");
        loop {
            let found = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains("changetrail is serving"))
                .and_then(|l| {
                    l.split(&key)
                        .nth(1)
                        .map(|s| s.split_whitespace().next().unwrap_or("").to_owned())
                });
            if let Some(a) = found {
                return a;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "server did not start: {:?}",
                self.lines.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The child's peak resident memory (VmHWM) in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = format!("/proc/{}/status", self.child.id());
        changetrail::app::commands::bench::vm_hwm_kb(&status).map_or(0, |kb| kb * 1024)
    }
}

/// Waits until `check` holds, for at most 20 s: for what the server does a moment later with no
/// event to await (a background task, a connection closing).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "never happened: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Waits until the alerter has looked at every entry committed so far and no delivery waits.
pub async fn alerts_settled(store: &Store) {
    let head = store.head().await.unwrap().unwrap().head.size as i64 - 1;
    eventually("every entry looked at, every delivery made", || async {
        store
            .alert_cursor()
            .await
            .unwrap()
            .is_some_and(|c| c >= head)
            && store.alert_outbox_counts().await.unwrap() == (0, 0)
    })
    .await;
}
