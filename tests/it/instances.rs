//! Several `serve` processes, one chain: two instances on one PostgreSQL behind trace-id routing
//! (what the Collector's `loadbalancing` exporter does), one killed with kill -9 mid-stream and
//! restarted. Nothing acknowledged is lost, parked spans come back from the journal, spans whose
//! trace another instance bound are released by the binding sync, and both instances answer the
//! same.

use crate::support::python::python;
use crate::support::server::{TestDb, ct};
use changetrail::storage::Store;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/it/python/two_instances.py"
);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One instance's fixed ports and journal: a restart comes back where the load balancer (and
/// the exporters' retries) expect it.
struct Instance {
    name: &'static str,
    http: u16,
    grpc: u16,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Instance {
    fn new(name: &'static str) -> Instance {
        Instance {
            name,
            http: free_port(),
            grpc: free_port(),
            child: None,
            log: Default::default(),
        }
    }

    fn start(&mut self, dir: &Path, url: &str) {
        let mut c = ct(dir);
        c.arg("serve")
            .env("RUST_LOG", "info")
            .env("CHANGETRAIL_DATABASE_URL", url)
            .env("CHANGETRAIL_LEDGER__KEY_FILE", "k.key")
            .env(
                "CHANGETRAIL_HTTP__LISTEN",
                format!("127.0.0.1:{}", self.http),
            )
            .env(
                "CHANGETRAIL_OTLP__GRPC_LISTEN",
                format!("127.0.0.1:{}", self.grpc),
            )
            .env("CHANGETRAIL_OTLP__HTTP_LISTEN", "127.0.0.1:0")
            .env(
                "CHANGETRAIL_OTLP__JOURNAL_DIR",
                format!("journal-{}", self.name),
            )
            .env("CHANGETRAIL_OTLP__BINDING_SYNC_INTERVAL", "200ms")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let err = child.stderr.take().unwrap();
        let sink = self.log.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(l);
            }
        });
        self.child = Some(child);
    }

    async fn wait_serving(&self, starts: usize) {
        let began = Instant::now();
        while self
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("changetrail is serving"))
            .count()
            < starts
        {
            assert!(
                began.elapsed() < Duration::from_secs(60),
                "{} did not start: {:?}",
                self.name,
                self.log.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill_9(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[derive(Debug, serde::Deserialize)]
struct Line {
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    change: String,
    #[serde(default)]
    trace_id: String,
    #[serde(default)]
    span_id: String,
    #[serde(default)]
    instance: usize,
    #[serde(default)]
    result: String,
}

fn token(dir: &Path, url: &str, role: &str) -> String {
    let o = ct(dir)
        .args([
            "tokens",
            "create",
            "--role",
            role,
            "--name",
            role,
            "--database-url",
            url,
        ])
        .env("CHANGETRAIL_LEDGER__KEY_FILE", "k.key")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Line>) -> Line {
    tokio::time::timeout(Duration::from_secs(180), rx.recv())
        .await
        .expect("the driver went quiet")
        .expect("the driver stopped early")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_one_chain_survive_kill_9() {
    let Some(py) = python("two_instances_one_chain_survive_kill_9") else {
        return;
    };
    let Some(db) = TestDb::postgres("two_instances_one_chain_survive_kill_9").await else {
        return;
    };
    let dir = db.path();
    let o = ct(dir)
        .args([
            "keys",
            "generate",
            "--out",
            "k.key",
            "--origin",
            "lb.example/ledger",
        ])
        .output()
        .unwrap();
    assert!(o.status.success());
    let vkey = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    let ingest = token(dir, &db.url, "ingest");
    let auditor = token(dir, &db.url, "auditor");
    let metrics = token(dir, &db.url, "metrics");

    let mut a = Instance::new("a");
    let mut b = Instance::new("b");
    a.start(dir, &db.url);
    b.start(dir, &db.url);
    a.wait_serving(1).await;
    b.wait_serving(1).await;

    let mut driver = Command::new(&py)
        .arg(SCRIPT)
        .args(["--endpoint", &format!("http://127.0.0.1:{}", a.grpc)])
        .args(["--endpoint", &format!("http://127.0.0.1:{}", b.grpc)])
        .args(["--token", &ingest, "--changes", "40"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut to_driver = driver.stdin.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Line>();
    let out = driver.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let line: Line = serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l}"));
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut lines = Vec::new();
    loop {
        let l = next(&mut rx).await;
        if l.event.as_deref() == Some("runtime_done") {
            break;
        }
        lines.push(l);
    }
    // Everything of phase 1 is acknowledged, and parked: no deploy span has arrived yet.
    assert!(lines.iter().all(|l| l.result == "SUCCESS"), "{lines:?}");
    writeln!(to_driver, "go").unwrap();

    // Mid-stream: after ten deploys are acknowledged, instance a dies and comes back.
    let mut audits = 0;
    loop {
        let l = next(&mut rx).await;
        if l.event.as_deref() == Some("done") {
            break;
        }
        audits += usize::from(l.kind == "audit");
        lines.push(l);
        if audits == 10 {
            a.kill_9();
            a.start(dir, &db.url);
        }
    }
    assert_eq!(driver.wait().unwrap().code(), Some(0));
    a.wait_serving(2).await;
    let audit: Vec<&Line> = lines.iter().filter(|l| l.kind == "audit").collect();
    assert_eq!(audit.len(), 40);
    assert!(
        audit.iter().all(|l| l.result == "SUCCESS"),
        "every deploy span is acknowledged in the end: {audit:?}"
    );
    // The scenario must cover what it claims: deploys on a after the kill found their service
    // spans parked before it, and verify spans sit on the other instance than their deploy.
    let on_a_after_kill = audit[10..].iter().filter(|l| l.instance == 0).count();
    assert!(on_a_after_kill > 0, "no deploy on a after the kill");
    let deploy_on: BTreeMap<&str, usize> = audit
        .iter()
        .map(|l| (l.change.as_str(), l.instance))
        .collect();
    let crossing = lines
        .iter()
        .filter(|l| l.kind == "verify" && deploy_on[l.change.as_str()] != l.instance)
        .count();
    assert!(crossing > 0, "no verify span crossed instances");

    // Every acknowledged span is stored, bound to its change: deploy spans by their attribute,
    // service spans by their trace, verify spans by their link.
    let store = Store::connect(&db.url, &Default::default()).await.unwrap();
    let want: BTreeSet<(String, String, String)> = lines
        .iter()
        .map(|l| (l.trace_id.clone(), l.span_id.clone(), l.change.clone()))
        .collect();
    let traces: BTreeSet<&str> = lines.iter().map(|l| l.trace_id.as_str()).collect();
    let stored = || async {
        let mut got = BTreeSet::new();
        for t in &traces {
            let id: [u8; 16] = hex::decode(t).unwrap().try_into().unwrap();
            for s in store.spans_of_trace(&id).await.unwrap() {
                got.insert((t.to_string(), hex::encode(s.span_id), s.subject));
            }
        }
        got
    };
    let began = Instant::now();
    loop {
        let got = stored().await;
        if got == want {
            break;
        }
        let missing: Vec<_> = want.difference(&got).collect();
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "{} acknowledged spans never bound: {missing:?}\na: {:?}",
            missing.len(),
            a.log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The journal and the sync did the work the test is about.
    let http = reqwest::Client::new();
    let scrape = |base: String| {
        let http = http.clone();
        let metrics = metrics.clone();
        async move {
            http.get(format!("{base}/metrics"))
                .bearer_auth(&metrics)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let (ma, mb) = (scrape(a.base()).await, scrape(b.base()).await);
    assert!(
        metric(&ma, "changetrail_spans_replayed_total") > 0,
        "the restarted instance read its journal back"
    );
    assert!(
        metric(&ma, "changetrail_spans_released_by_sync_total")
            + metric(&mb, "changetrail_spans_released_by_sync_total")
            > 0,
        "spans bound on the other instance were released by the sync"
    );

    assert!(
        metric(&ma, "changetrail_journal_bytes") > 0,
        "the journal's size is in /metrics"
    );
    for (m, name) in [(&ma, "a"), (&mb, "b")] {
        for counter in [
            "changetrail_journal_errors_total",
            "changetrail_spans_release_dropped_total",
            "changetrail_binding_sync_skipped_total",
        ] {
            assert_eq!(metric(m, counter), 0, "{name}: {counter}");
        }
    }

    // One gap-free chain, verified by the command line against the pinned key.
    let o = ct(dir)
        .args(["verify", "--database-url", &db.url, "--trusted-key", &vkey])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );

    // The same answer about every change from either instance.
    for change in deploy_on.keys() {
        let view = |base: String| {
            let http = http.clone();
            let auditor = auditor.clone();
            async move {
                let r = http
                    .get(format!("{base}/v1/changes/{change}"))
                    .bearer_auth(&auditor)
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success(), "{change}: {}", r.status());
                r.json::<serde_json::Value>().await.unwrap()
            }
        };
        // A timed checkpoint between the two reads moves the proofs' checkpoint: read again.
        let mut tries = 0;
        let va = loop {
            let (va, vb) = (view(a.base()).await, view(b.base()).await);
            if va == vb {
                break va;
            }
            assert_ne!(
                va["checkpoint_size"], vb["checkpoint_size"],
                "{change}: the instances disagree:\n{va}\n{vb}"
            );
            tries += 1;
            assert!(tries < 20, "{change}: the checkpoint never settled");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(va.to_string().contains(change), "{va}");
        // The deploy span, its three service spans and the verify span, by their rules.
        assert_eq!(va["spans"]["count"], 5, "{change}: {}", va["spans"]);
        assert_eq!(
            va["spans"]["by_rule"],
            serde_json::json!({"attribute": 1, "trace": 3, "link": 1}),
            "{change}"
        );
    }
    store.close().await;
}
