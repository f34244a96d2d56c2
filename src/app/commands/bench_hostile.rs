//! `changetrail bench hostile`: a server of its own under the worst input its limits allow (an
//! ingest-token holder sending the costliest requests back to back, and a thousand idle or slow
//! connections on every listener) while an honest exporter sends beside them; reports the
//! server's peak memory, what the attack cost the honest exporter, and whether anything the
//! server acknowledged was lost.

use crate::app::cli::{BenchHostileArgs, BenchIngestArgs};
use crate::app::commands::bench::vm_hwm_kb;
use crate::app::commands::bench_ingest::{self, AckedAudit, PhaseResult};
use crate::app::config::{Config, DEFAULTS};
use crate::core::ledger::verify::Options;
use crate::ingest::{limits, scan};
use crate::storage::Store;
use crate::sys::{now_ns, random_bytes};
use anyhow::{Context, bail};
use flate2::{Compress, Compression, Crc, FlushCompress};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::Event;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use prost::bytes::Bytes;
use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// The targets the issue sets; printed next to the numbers, not enforced.
const RSS_TARGET_MIB: f64 = 1024.0;
const THROUGHPUT_TARGET: f64 = 0.5;

/// Descriptors this process and the server need besides the slow connections (exporters,
/// attackers, SQLite, the runtime), when checking the open-files limit.
const FD_MARGIN: usize = 256;

/// How long the slow connections may take to be opened before the honest exporter starts.
const RAMP_LIMIT: Duration = Duration::from_secs(10);

pub async fn run(
    a: BenchHostileArgs,
    config_file: Option<&Path>,
    database_given: bool,
) -> anyhow::Result<i32> {
    if database_given {
        bail!(
            "bench hostile runs a server of its own on a scratch SQLite database; drop --database-url"
        );
    }
    let duration = humantime::parse_duration(&a.duration).context("--duration")?;
    let config_file = config_file
        .map(|f| std::fs::canonicalize(f).with_context(|| format!("--config {}", f.display())))
        .transpose()?;
    let cfg = server_config(config_file.as_deref())?;
    if !cfg.tls.cert_file.as_os_str().is_empty() {
        bail!("bench hostile speaks plain HTTP and gRPC; use a configuration without [tls]");
    }
    let (slow, fd_note) = slow_connections_allowed(a.slow_connections, a.attackers + a.exporters);
    if let Some(n) = &fd_note {
        eprintln!("bench hostile: {n}");
    }

    let scratch = Scratch::new(a.keep.as_deref())?;
    let origin = if cfg.ledger.origin.is_empty() {
        crate::app::keyfile::generated_origin()
    } else {
        crate::core::ledger::keys::Origin::parse(&cfg.ledger.origin)
            .map_err(|e| anyhow::anyhow!("[ledger] origin: {e}"))?
    };
    let key = crate::app::keyfile::generate(origin)?;
    let key_file = scratch.path().join("ledger.key");
    crate::app::keyfile::write_new_key(&key_file, &key)?;
    let vkey = key.vkey().clone();
    drop(key);
    let db_url = format!("sqlite://{}", scratch.path().join("ledger.db").display());

    eprintln!("bench hostile: building the attack requests for these limits");
    let attacks = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || Attack::all(&cfg)).await??
    };
    let attacks = select(attacks, &a.attacks)?;

    eprintln!(
        "bench hostile: starting the server in {}",
        scratch.path().display()
    );
    let mut server = Server::start(scratch.path(), config_file.as_deref(), &db_url, &key_file)?;
    server.wait_until_serving().await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let base = format!("http://{}", server.http);
    let honest_token = create_token(&http, &base, &server.admin, "ingest", "bench honest").await?;
    let attacker_token =
        create_token(&http, &base, &server.admin, "ingest", "bench attacker").await?;
    let slow_token = if a.one_token {
        attacker_token.clone()
    } else {
        create_token(&http, &base, &server.admin, "ingest", "bench slow bodies").await?
    };
    let metrics_token = create_token(&http, &base, &server.admin, "metrics", "bench").await?;
    let rss_start_kb = status_kb(server.pid(), "VmRSS:").unwrap_or(0);
    let cpu = |pid: u32| (cpu_secs("self"), cpu_secs(&pid.to_string()));

    let honest = BenchIngestArgs {
        endpoint: format!("http://{}", server.grpc),
        token: honest_token,
        metrics_url: None,
        metrics_token: None,
        duration: a.duration.clone(),
        exporters: a.exporters.max(1),
        batch: a.batch.max(1),
        audit_share: 0.01,
        rate: 0,
        no_baseline: true,
    };
    let acked: AckedAudit = Arc::default();

    eprintln!(
        "bench hostile: phase 1 (unloaded): {} honest exporters × {} spans for {}",
        honest.exporters, honest.batch, a.duration
    );
    let cpu_0 = cpu(server.pid());
    let unloaded = bench_ingest::phase(
        &honest.endpoint,
        Some(&honest.token),
        &honest,
        duration,
        Some(acked.clone()),
    )
    .await?;
    let cpu_1 = cpu(server.pid());
    let hwm_unloaded_kb = vm_hwm_kb(&server.status_file()).unwrap_or(0);
    let metrics_unloaded = bench_ingest::get_metrics(&base, &metrics_token)
        .await
        .unwrap_or_default();

    eprintln!(
        "bench hostile: phase 2 (under attack): {} attackers, {slow} slow connections per listener",
        a.attackers
    );
    let stop = CancellationToken::new();
    let sampler = RssSampler::start(server.pid(), stop.clone());
    let answers = Arc::new(Answers::new(&attacks));
    let slow_stats = Arc::new(SlowStats::default());
    let targets = Targets {
        api: server.http,
        grpc: server.grpc,
        otlp: server.otlp,
    };
    let mut background = Vec::new();
    background.extend(spawn_slow_connections(
        &targets,
        slow,
        &slow_token,
        &slow_stats,
        &stop,
    ));
    let ramp_started = Instant::now();
    // Until every slow connection has been opened once (those refused at once are counted as
    // they are reopened).
    while slow_stats.opened_total() < (3 * slow) as u64 && ramp_started.elapsed() < RAMP_LIMIT {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ramp = ramp_started.elapsed();
    eprintln!(
        "bench hostile:   {} slow connections open after {:.1} s; attackers and the honest exporter start",
        slow_stats.open_total(),
        ramp.as_secs_f64()
    );
    let attacks = Arc::new(attacks);
    for i in 0..a.attackers {
        let transport = if i % 2 == 0 {
            Transport::Http
        } else {
            Transport::Grpc
        };
        background.push(tokio::spawn(attacker(
            i,
            transport,
            targets.clone(),
            attacker_token.clone(),
            attacks.clone(),
            answers.clone(),
            stop.clone(),
        )));
    }
    let held = OpenSampler::start(slow_stats.clone(), stop.clone());
    let cpu_2 = cpu(server.pid());
    let attacked = bench_ingest::phase(
        &honest.endpoint,
        Some(&honest.token),
        &honest,
        duration,
        Some(acked.clone()),
    )
    .await;
    let cpu_3 = cpu(server.pid());
    stop.cancel();
    for t in background {
        let _ = t.await;
    }
    let attacked = attacked?;
    let held = held.finish().await;
    let rss_max_sampled_kb = sampler.finish().await;
    let hwm_attacked_kb = vm_hwm_kb(&server.status_file()).unwrap_or(0);
    let metrics = bench_ingest::get_metrics(&base, &metrics_token)
        .await
        .unwrap_or_else(|e| format!("# /metrics could not be read: {e}"));

    eprintln!("bench hostile: stopping the server (SIGTERM) and checking the database");
    let exit = server.stop().await?;
    let acked = match Arc::try_unwrap(acked) {
        Ok(m) => m.into_inner().unwrap_or_else(|p| p.into_inner()),
        Err(shared) => shared.lock().map(|l| l.clone()).unwrap_or_default(),
    };
    let store = Store::connect(&db_url, &cfg.storage_options()).await?;
    let lost = lost_spans(&store, &acked).await?;
    let opts = Options {
        trusted: vec![vkey],
        state: None,
        max_age_ns: None,
        now_ns: now_ns(),
        threads: 0,
    };
    let (report, tail) = crate::read::audit::verify_store(&store, opts, None).await?;
    let stored_spans = store.span_count().await.ok();
    store.close().await;

    let r = Results {
        config: config_file.as_deref(),
        one_token: a.one_token,
        cfg: &cfg,
        slow,
        fd_note,
        ramp,
        rss_start_kb,
        hwm_unloaded_kb,
        hwm_attacked_kb,
        rss_max_sampled_kb,
        unloaded: &unloaded,
        attacked: &attacked,
        attacks: &attacks,
        answers: &answers,
        slow_stats: &slow_stats,
        held,
        cpu: [cpu_0, cpu_1, cpu_2, cpu_3],
        metrics: &metrics,
        metrics_unloaded: &metrics_unloaded,
        exit,
        acked: acked.len(),
        lost: &lost,
        stored_spans,
        verify: crate::app::commands::verify::summary(&report, "the scratch database", tail),
        verify_exit: report.exit_code,
    };
    r.print();
    if let Some(dir) = scratch.kept() {
        println!("  kept               {}", dir.display());
    }
    Ok(if lost.is_empty() && report.exit_code == 0 {
        0
    } else {
        1
    })
}

/// The attack kinds `--attacks` names (all when it names none).
fn select(all: Vec<Attack>, names: &[String]) -> anyhow::Result<Vec<Attack>> {
    if names.is_empty() {
        return Ok(all);
    }
    let known: Vec<&str> = all.iter().map(|a| a.name).collect();
    if let Some(bad) = names.iter().find(|n| !known.contains(&n.as_str())) {
        bail!(
            "--attacks: no attack named {bad:?}; there are {}",
            known.join(", ")
        );
    }
    Ok(all
        .into_iter()
        .filter(|a| names.iter().any(|n| n == a.name))
        .collect())
}

/// The server's configuration: the built-in defaults and `--config`, nothing from this shell's
/// environment (the child gets none of it, so a leftover CHANGETRAIL_* setting cannot make the
/// requests built here miss the server's real limits).
fn server_config(file: Option<&Path>) -> anyhow::Result<Config> {
    use figment::Figment;
    use figment::providers::{Format, Toml};
    let mut fig = Figment::from(Toml::string(DEFAULTS));
    if let Some(f) = file {
        fig = fig.merge(Toml::file(f));
    }
    fig.extract()
        .map_err(|e| anyhow::anyhow!("the configuration is invalid: {e}"))
}

/// How many slow connections per listener the open-files limit leaves room for, and a note when
/// that is fewer than asked (std cannot raise the limit without libc).
fn slow_connections_allowed(asked: usize, clients: usize) -> (usize, Option<String>) {
    let Some(soft) = open_files_limit() else {
        return (asked, None);
    };
    let margin = FD_MARGIN + clients;
    if 3 * asked + margin <= soft {
        return (asked, None);
    }
    let n = soft.saturating_sub(margin) / 3;
    (
        n,
        Some(format!(
            "the open-files limit (ulimit -n) is {soft}: too low for 3 × {asked} slow connections \
             plus {margin} others in this process and in the server; holding {n} per listener \
             instead (raise it with `ulimit -n {}`)",
            3 * asked + margin
        )),
    )
}

/// The soft RLIMIT_NOFILE, from /proc (this process's; the server inherits it).
fn open_files_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        return Some(usize::MAX / 4);
    }
    soft.parse().ok()
}

/// CPU seconds (user and system, every thread) a process has used, from /proc/<pid>/stat.
fn cpu_secs(pid: &str) -> f64 {
    // utime and stime are fields 14 and 15, after the command name in parentheses (which may
    // hold spaces), in USER_HZ ticks: 100 a second on every Linux ABI.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
            Some((ticks(11)? + ticks(12)?) as f64 / 100.0)
        })
        .unwrap_or(0.0)
}

/// A field (e.g. "VmRSS:") of /proc/<pid>/status, in kB.
fn status_kb(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// The server's directory: a temporary one, or `--keep DIR`.
enum Scratch {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl Scratch {
    fn new(keep: Option<&Path>) -> anyhow::Result<Scratch> {
        let Some(dir) = keep else {
            return Ok(Scratch::Temp(tempfile::tempdir()?));
        };
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        if std::fs::read_dir(dir)?.next().is_some() {
            bail!("--keep {}: the directory is not empty", dir.display());
        }
        Ok(Scratch::Kept(std::fs::canonicalize(dir)?))
    }

    fn path(&self) -> &Path {
        match self {
            Scratch::Temp(t) => t.path(),
            Scratch::Kept(p) => p,
        }
    }

    fn kept(&self) -> Option<&Path> {
        match self {
            Scratch::Temp(_) => None,
            Scratch::Kept(p) => Some(p),
        }
    }
}

/// The `serve` child: this same executable, on free ports, its log in `server.log`.
struct Server {
    child: std::process::Child,
    log: PathBuf,
    admin: String,
    http: SocketAddr,
    grpc: SocketAddr,
    otlp: SocketAddr,
}

impl Server {
    fn start(
        dir: &Path,
        config: Option<&Path>,
        db_url: &str,
        key_file: &Path,
    ) -> anyhow::Result<Server> {
        let exe =
            std::env::current_exe().context("cannot find this executable to start `serve`")?;
        let log = dir.join("server.log");
        let mut c = std::process::Command::new(exe);
        c.current_dir(dir);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("CHANGETRAIL_") {
                c.env_remove(k);
            }
        }
        if let Some(f) = config {
            c.arg("--config").arg(f);
        }
        c.arg("serve")
            // Info for the "is serving" line with the bound ports; sqlx as `serve` has it.
            .env("RUST_LOG", "info,sqlx=warn")
            .env("CHANGETRAIL_DATABASE_URL", db_url)
            .env("CHANGETRAIL_LEDGER__KEY_FILE", key_file)
            // A key inline in --config would win over the key file, and its verifier key is not
            // the one pinned when the chain is verified.
            .env("CHANGETRAIL_LEDGER__SIGNING_KEY", "")
            .env("CHANGETRAIL_HTTP__LISTEN", "127.0.0.1:0")
            .env("CHANGETRAIL_OTLP__GRPC_LISTEN", "127.0.0.1:0")
            .env("CHANGETRAIL_OTLP__HTTP_LISTEN", "127.0.0.1:0")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&log)?);
        let mut child = c.spawn().context("cannot start `changetrail serve`")?;
        // The bootstrap admin token is the second line on stdout; the rest is read and dropped
        // so the child can never block on a full pipe.
        let (tx, rx) = std::sync::mpsc::channel();
        let out = child
            .stdout
            .take()
            .context("the server's stdout is not piped")?;
        std::thread::spawn(move || {
            for (i, line) in std::io::BufReader::new(out)
                .lines()
                .map_while(Result::ok)
                .enumerate()
            {
                if i == 1 {
                    let _ = tx.send(line.trim().to_owned());
                }
            }
        });
        let admin = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(t) => t,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "the server printed no bootstrap token; its log:\n{}",
                    tail(&log, 30)
                );
            }
        };
        Ok(Server {
            child,
            log,
            admin,
            http: unbound(),
            grpc: unbound(),
            otlp: unbound(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn status_file(&self) -> String {
        format!("/proc/{}/status", self.pid())
    }

    /// Reads the bound addresses from the "is serving" log line.
    async fn wait_until_serving(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains("changetrail is serving")) {
                let addr = |key: &str| -> anyhow::Result<SocketAddr> {
                    line.split(&format!(" {key}="))
                        .nth(1)
                        .and_then(|s| s.split_whitespace().next())
                        .and_then(|s| s.parse().ok())
                        .with_context(|| format!("no {key} address in {line:?}"))
                };
                self.http = addr("http")?;
                self.grpc = addr("otlp_grpc")?;
                self.otlp = addr("otlp_http")?;
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!(
                    "the server exited ({status}); its log:\n{}",
                    tail(&self.log, 30)
                );
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!(
                    "the server did not start within 60 s; its log:\n{}",
                    tail(&self.log, 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, as a service manager stops it, and its exit status (killed after two minutes).
    async fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let sent = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .context("cannot run kill")?;
        if !sent.success() {
            bail!("kill -TERM {} failed", self.pid());
        }
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if started.elapsed() > Duration::from_secs(120) {
                self.child.kill()?;
                bail!("the server did not stop within 120 s of SIGTERM; killed");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    /// An error half way must not leave a server running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn unbound() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

/// The last `n` lines of a log file, for an error message.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A token of `role`, created through the server's admin API.
async fn create_token(
    http: &reqwest::Client,
    base: &str,
    admin: &str,
    role: &str,
    name: &str,
) -> anyhow::Result<String> {
    let r = http
        .post(format!("{base}/v1/admin/tokens"))
        .bearer_auth(admin)
        .json(&serde_json::json!({ "role": role, "name": name }))
        .send()
        .await
        .with_context(|| format!("cannot create a {role} token"))?;
    let status = r.status();
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    v["token"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("creating a {role} token: {status} {v}"))
}

/// The server's resident memory sampled while attacked: VmHWM has the peak, this shows whether
/// it was a moment or a plateau.
struct RssSampler {
    max_kb: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    fn start(pid: u32, stop: CancellationToken) -> RssSampler {
        let max_kb = Arc::new(AtomicU64::new(0));
        let max = max_kb.clone();
        let task = tokio::spawn(async move {
            while !stop.is_cancelled() {
                if let Some(kb) = status_kb(pid, "VmRSS:") {
                    max.fetch_max(kb, Ordering::Relaxed);
                }
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
        });
        RssSampler { max_kb, task }
    }

    async fn finish(self) -> u64 {
        let _ = self.task.await;
        self.max_kb.load(Ordering::Relaxed)
    }
}

// ---------------------------------------------------------------------------------------------
// The worst requests.

/// One kind of attack request, built for the server's limits.
struct Attack {
    name: &'static str,
    what: String,
    /// Encoded protobuf length (what the server decompresses to).
    decoded_len: usize,
    /// The server's own estimate of what it will hold once decoded (`ingest::scan`).
    estimate: usize,
    body: AttackBody,
}

enum AttackBody {
    /// The same gzip bytes every time: not evidence, so repeats cost the server the same.
    Fixed(Bytes),
    /// Evidence spans: fresh ids in every request, or the server would find them stored already
    /// and skip writing them.
    Fresh(Spliced),
}

impl Attack {
    fn body(&self) -> Bytes {
        match &self.body {
            AttackBody::Fixed(b) => b.clone(),
            AttackBody::Fresh(s) => s.fresh(),
        }
    }

    fn wire_len(&self) -> usize {
        match &self.body {
            AttackBody::Fixed(b) => b.len(),
            AttackBody::Fresh(s) => s.wire_len(),
        }
    }

    fn all(cfg: &Config) -> anyhow::Result<Vec<Attack>> {
        let l = &cfg.otlp.limits;
        let mut v = vec![fixed(
            "amplification",
            "the issue's request: 1 resource of 1,000 attributes of 1 KB, 6,000 scopes × 2 spans"
                .into(),
            amplification(),
        )?];
        // As many dense spans as the request size allows: refused once scanned, after the
        // server has decompressed and read every byte.
        let dense_max = max_spans_by_size(cfg, |n| dense(n, l));
        v.push(fixed(
            "dense-max",
            format!(
                "{dense_max} spans × ({} empty attributes, {} empty events), max_request_bytes",
                l.max_span_attributes, l.max_events_per_span
            ),
            dense(dense_max, l),
        )?);
        // The same spans, as many as one token's share admits: decoded in full.
        let dense_fit = largest_admitted(cfg, |n| dense(n, l), dense_max);
        v.push(fixed(
            "dense-fit",
            format!("{dense_fit} such spans: the most one token's share admits"),
            dense(dense_fit, l),
        )?);
        let evidence_n = largest_admitted(cfg, |n| evidence(n, l), l.max_spans_per_request);
        v.push(Attack::spliced(
            "evidence",
            format!(
                "{evidence_n} evidence spans × {} attributes of {} bytes, fresh ids",
                l.max_span_attributes, l.max_attribute_value_length
            ),
            evidence(evidence_n, l),
        )?);
        let nested_max = max_spans_by_size(cfg, |n| nested(n, l));
        let nested_n = largest_admitted(cfg, |n| nested(n, l), nested_max);
        v.push(fixed(
            "nested",
            format!(
                "{nested_n} spans × {} arrays nested {} deep (the depth limit), {} values innermost",
                l.max_span_attributes,
                l.max_value_depth.saturating_sub(1),
                l.max_array_length
            ),
            nested(nested_n, l),
        )?);
        Ok(v)
    }

    fn spliced(
        name: &'static str,
        what: String,
        req: ExportTraceServiceRequest,
    ) -> anyhow::Result<Attack> {
        let raw = req.encode_to_vec();
        let estimate = scan::protobuf(&raw, false)
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))?
            .decoded_bytes;
        let ids: Vec<[u8; 16]> = req
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .filter_map(|s| s.trace_id.as_slice().try_into().ok())
            .collect();
        Ok(Attack {
            name,
            what,
            decoded_len: raw.len(),
            estimate,
            body: AttackBody::Fresh(Spliced::new(&raw, &ids)?),
        })
    }
}

fn fixed(
    name: &'static str,
    what: String,
    req: ExportTraceServiceRequest,
) -> anyhow::Result<Attack> {
    let raw = req.encode_to_vec();
    let estimate = scan::protobuf(&raw, false)
        .map_err(|e| anyhow::anyhow!("{name}: {e}"))?
        .decoded_bytes;
    // Built once: the smallest wire for the decoded size.
    let mut e = flate2::write::GzEncoder::new(Vec::new(), Compression::best());
    e.write_all(&raw)?;
    Ok(Attack {
        name,
        what,
        decoded_len: raw.len(),
        estimate,
        body: AttackBody::Fixed(Bytes::from(e.finish()?)),
    })
}

fn kv(k: &str, v: Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn one_resource(resource: Resource, scopes: Vec<ScopeSpans>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource),
            scope_spans: scopes,
            ..Default::default()
        }],
    }
}

fn small_resource() -> Resource {
    Resource {
        attributes: vec![kv("service.name", Value::StringValue("hostile".into()))],
        ..Default::default()
    }
}

fn span(trace: [u8; 16], id: u64, name: &str) -> Span {
    let now = now_ns().max(0) as u64;
    Span {
        trace_id: trace.to_vec(),
        span_id: id.max(1).to_be_bytes().to_vec(),
        name: name.into(),
        kind: 2,
        start_time_unix_nano: now - 1_000_000,
        end_time_unix_nano: now,
        ..Default::default()
    }
}

/// `n` copies of `template` with distinct span ids, in one scope.
fn spans_of(template: Span, n: usize) -> Vec<ScopeSpans> {
    let mut spans = vec![template; n];
    for (i, s) in spans.iter_mut().enumerate() {
        s.span_id = (i as u64 + 1).to_be_bytes().to_vec();
    }
    vec![ScopeSpans {
        spans,
        ..Default::default()
    }]
}

/// The request (item 1): 1.6 MB decoded, 12,000 spans each carrying a copy of a 1 MB
/// resource once stored.
fn amplification() -> ExportTraceServiceRequest {
    let t = random_bytes::<16>();
    let resource = Resource {
        attributes: (0..1000)
            .map(|i| kv(&format!("attr.{i}"), Value::StringValue("a".repeat(1024))))
            .collect(),
        ..Default::default()
    };
    let scopes = (0..6000u64)
        .map(|i| ScopeSpans {
            spans: vec![span(t, 2 * i + 1, "s"), span(t, 2 * i + 2, "s")],
            ..Default::default()
        })
        .collect();
    one_resource(resource, scopes)
}

/// Keys of one or two characters: the shortest distinct attribute names.
fn short_key(i: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let first = CHARS[i % CHARS.len()] as char;
    match i / CHARS.len() {
        0 => first.to_string(),
        k => format!("{first}{}", CHARS[(k - 1) % CHARS.len()] as char),
    }
}

/// The most decoded structure per wire byte the limits let through: spans with as many empty
/// attributes (short keys, no value) and empty events as allowed; an empty event is 2 bytes on
/// the wire and a whole struct decoded.
fn dense(n: usize, l: &limits::Limits) -> ExportTraceServiceRequest {
    let mut s = span(random_bytes(), 1, "d");
    s.attributes = (0..l.max_span_attributes)
        .map(|i| KeyValue {
            key: short_key(i),
            ..Default::default()
        })
        .collect();
    s.events = vec![Event::default(); l.max_events_per_span];
    one_resource(small_resource(), spans_of(s, n))
}

/// Evidence spans (they carry `changetrail.change.id`, so they are stored) with every attribute
/// the limits allow at the longest value allowed: the largest rows a request can make.
fn evidence(n: usize, l: &limits::Limits) -> ExportTraceServiceRequest {
    let spans = (0..n)
        .map(|i| {
            let mut s = span(random_bytes(), i as u64 + 1, "hostile evidence");
            s.attributes.push(kv(
                "changetrail.change.id",
                Value::StringValue(format!("CHG-HOSTILE-{i}")),
            ));
            let value = "x".repeat(l.max_attribute_value_length);
            for j in 1..l.max_span_attributes {
                s.attributes.push(kv(
                    &format!("hostile.{j}"),
                    Value::StringValue(value.clone()),
                ));
            }
            s
        })
        .collect();
    one_resource(
        small_resource(),
        vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
    )
}

/// Spans whose every attribute is an array nested to the depth limit (an attribute's value is
/// depth 1; an array at the limit would be emptied), the innermost holding as many empty values
/// as an array may.
fn nested(n: usize, l: &limits::Limits) -> ExportTraceServiceRequest {
    let mut v = Value::ArrayValue(ArrayValue {
        values: vec![AnyValue::default(); l.max_array_length],
    });
    for _ in 2..l.max_value_depth {
        v = Value::ArrayValue(ArrayValue {
            values: vec![AnyValue { value: Some(v) }],
        });
    }
    let mut s = span(random_bytes(), 1, "n");
    s.attributes = (0..l.max_span_attributes)
        .map(|i| kv(&short_key(i), v.clone()))
        .collect();
    one_resource(small_resource(), spans_of(s, n))
}

/// Size, decoded estimate and row bytes of a request, as the server will charge them.
#[derive(Clone, Copy)]
struct Charge {
    len: usize,
    estimate: usize,
    rows: usize,
}

fn charge(req: &ExportTraceServiceRequest, l: &limits::Limits) -> Charge {
    let raw = req.encode_to_vec();
    Charge {
        len: raw.len(),
        estimate: scan::protobuf(&raw, false).map_or(usize::MAX, |c| c.decoded_bytes),
        rows: limits::traces(&mut req.clone(), l).row_bytes,
    }
}

/// What one more span adds: the requests are built of identical spans, so every charge is
/// linear in their number; measured on one and two spans rather than building big requests.
fn per_span(
    l: &limits::Limits,
    build: &impl Fn(usize) -> ExportTraceServiceRequest,
) -> (Charge, Charge) {
    let one = charge(&build(1), l);
    let two = charge(&build(2), l);
    let step = Charge {
        len: two.len.saturating_sub(one.len),
        estimate: two.estimate.saturating_sub(one.estimate),
        rows: two.rows.saturating_sub(one.rows),
    };
    (one, step)
}

fn predicted(one: Charge, step: Charge, n: usize) -> Charge {
    let k = n.saturating_sub(1);
    Charge {
        len: one.len + k * step.len,
        estimate: one.estimate.saturating_add(k.saturating_mul(step.estimate)),
        rows: one.rows.saturating_add(k.saturating_mul(step.rows)),
    }
}

/// The most spans that fit `max_request_bytes` (and the per-request span limit).
fn max_spans_by_size(cfg: &Config, build: impl Fn(usize) -> ExportTraceServiceRequest) -> usize {
    let l = &cfg.otlp.limits;
    let (one, step) = per_span(l, &build);
    let room = cfg.otlp.max_request_bytes.saturating_sub(one.len);
    (1 + room / step.len.max(1))
        .min(l.max_spans_per_request)
        .max(1)
}

/// Whether the server admits a request of this charge from a token holding nothing else: the
/// received and decompressed buffers beside the decoded estimate, then the estimate beside
/// the rows (`ingest::decode`), with room for the compressed body.
fn admitted(c: Charge, cfg: &Config) -> bool {
    let share = cfg.otlp.max_inflight_bytes_per_token;
    let limit = cfg.otlp.max_request_bytes;
    let wire = c.len / 16 + (64 << 10);
    let buffers = wire + c.len.next_power_of_two().min(limit);
    c.len <= limit
        && buffers.saturating_add(c.estimate) <= share
        && c.estimate.saturating_add(c.rows) <= share
}

/// The most spans (up to `max`) of which a request is still admitted, so it is decoded in full.
fn largest_admitted(
    cfg: &Config,
    build: impl Fn(usize) -> ExportTraceServiceRequest,
    max: usize,
) -> usize {
    let l = &cfg.otlp.limits;
    let (one, step) = per_span(l, &build);
    let (mut lo, mut hi) = (1usize, max.max(1));
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if admitted(predicted(one, step, mid), cfg) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// A gzip body whose span ids are fresh in every request without compressing megabytes each
/// time: the constant stretches between the ids are deflated once, each ending on a full flush
/// (byte-aligned, no back-references across it), and only the ids are deflated per request;
/// the CRC is combined from the stretches' CRCs.
struct Spliced {
    pieces: Vec<Piece>,
}

enum Piece {
    Constant {
        deflated: Vec<u8>,
        crc: Crc,
    },
    /// A span's `trace_id` and `span_id` fields: 16 bytes, the span_id key and length, 8 bytes.
    Ids,
}

const IDS_LEN: usize = 16 + 2 + 8;
const SPAN_ID_KEY: [u8; 2] = [0x12, 0x08];
/// A gzip member header: deflate, no name, no time, unknown OS.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
/// An empty final block with fixed codes: BFINAL=1, BTYPE=01, end-of-block.
const FINAL_BLOCK: [u8; 2] = [0x03, 0x00];

impl Spliced {
    /// `raw` is the encoded request; `traces` the trace ids of its spans, in order, each
    /// directly followed by its span id (prost writes fields in number order).
    fn new(raw: &[u8], traces: &[[u8; 16]]) -> anyhow::Result<Spliced> {
        let mut pieces = Vec::new();
        let mut at = 0;
        for t in traces {
            let found = raw[at..]
                .windows(16)
                .position(|w| w == t)
                .map(|p| at + p)
                .context("a trace id is not in the encoded request")?;
            if raw.get(found + 16..found + 18) != Some(&SPAN_ID_KEY[..]) {
                bail!("a span id does not follow its trace id in the encoded request");
            }
            pieces.push(constant(&raw[at..found])?);
            pieces.push(Piece::Ids);
            at = found + IDS_LEN;
        }
        pieces.push(constant(&raw[at..])?);
        Ok(Spliced { pieces })
    }

    fn wire_len(&self) -> usize {
        let ids = 40; // a deflated 26-byte piece of random ids, about
        GZIP_HEADER.len()
            + FINAL_BLOCK.len()
            + 8
            + self
                .pieces
                .iter()
                .map(|p| match p {
                    Piece::Constant { deflated, .. } => deflated.len(),
                    Piece::Ids => ids,
                })
                .sum::<usize>()
    }

    fn fresh(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.wire_len() + 64);
        out.extend_from_slice(&GZIP_HEADER);
        let mut crc = Crc::new();
        for p in &self.pieces {
            match p {
                Piece::Constant { deflated, crc: c } => {
                    out.extend_from_slice(deflated);
                    crc.combine(c);
                }
                Piece::Ids => {
                    let mut ids = [0u8; IDS_LEN];
                    ids[..16].copy_from_slice(&random_bytes::<16>());
                    ids[16..18].copy_from_slice(&SPAN_ID_KEY);
                    ids[18..].copy_from_slice(&random_bytes::<8>());
                    crc.update(&ids);
                    out.extend_from_slice(&deflate_flushed(&ids));
                }
            }
        }
        out.extend_from_slice(&FINAL_BLOCK);
        out.extend_from_slice(&crc.sum().to_le_bytes());
        out.extend_from_slice(&crc.amount().to_le_bytes());
        Bytes::from(out)
    }
}

fn constant(data: &[u8]) -> anyhow::Result<Piece> {
    let mut crc = Crc::new();
    crc.update(data);
    Ok(Piece::Constant {
        deflated: deflate_flushed(data),
        crc,
    })
}

/// Raw deflate of `data` ending on a full flush: complete blocks, none final, byte-aligned.
fn deflate_flushed(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() / 4 + 64);
    loop {
        let done = c.total_in() as usize;
        // Compression errors only come from misuse of the stream; the input is plain bytes.
        if c.compress_vec(&data[done..], &mut out, FlushCompress::Full)
            .is_err()
        {
            break;
        }
        // Flushed once the input is consumed and the output did not fill the buffer.
        if c.total_in() as usize == data.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity().max(64));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The attackers.

#[derive(Clone)]
struct Targets {
    api: SocketAddr,
    grpc: SocketAddr,
    otlp: SocketAddr,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    Http,
    Grpc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Ok,
    Partial,
    TooLarge,
    Unavailable,
    Other,
    /// No answer: the connection failed or was closed.
    Broken,
}

const ANSWERS: [Answer; 6] = [
    Answer::Ok,
    Answer::Partial,
    Answer::TooLarge,
    Answer::Unavailable,
    Answer::Other,
    Answer::Broken,
];

/// Answers per attack kind and transport, and a sample of the unexpected ones.
struct Answers {
    /// [attack][transport][answer]
    counts: Vec<[[AtomicU64; 6]; 2]>,
    /// Sum of answer times per attack, µs.
    micros: Vec<AtomicU64>,
    odd: Mutex<BTreeMap<String, u64>>,
}

impl Answers {
    fn new(attacks: &[Attack]) -> Answers {
        Answers {
            counts: attacks.iter().map(|_| Default::default()).collect(),
            micros: attacks.iter().map(|_| AtomicU64::new(0)).collect(),
            odd: Mutex::new(BTreeMap::new()),
        }
    }

    fn add(
        &self,
        attack: usize,
        t: Transport,
        answer: Answer,
        note: Option<String>,
        took: Duration,
    ) {
        let ti = usize::from(t == Transport::Grpc);
        let ai = ANSWERS.iter().position(|a| *a == answer).unwrap_or(4);
        self.counts[attack][ti][ai].fetch_add(1, Ordering::Relaxed);
        self.micros[attack].fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        if let Some(n) = note {
            let mut odd = self.odd.lock().unwrap_or_else(|p| p.into_inner());
            // Distinct messages only, and not unboundedly many.
            if odd.len() < 40 || odd.contains_key(&n) {
                *odd.entry(n).or_default() += 1;
            }
        }
    }

    fn get(&self, attack: usize, answer: Answer) -> u64 {
        let ai = ANSWERS.iter().position(|a| *a == answer).unwrap_or(4);
        self.counts[attack]
            .iter()
            .map(|t| t[ai].load(Ordering::Relaxed))
            .sum()
    }

    fn total(&self, attack: usize) -> u64 {
        ANSWERS.iter().map(|a| self.get(attack, *a)).sum()
    }
}

/// One attacker: the attack kinds in turn, back to back, on one transport, until stopped.
async fn attacker(
    index: usize,
    transport: Transport,
    targets: Targets,
    token: String,
    attacks: Arc<Vec<Attack>>,
    answers: Arc<Answers>,
    stop: CancellationToken,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(90))
        .build();
    let Ok(http) = http else {
        return;
    };
    let url = format!("http://{}/v1/traces", targets.otlp);
    let mut grpc: Option<GrpcConn> = None;
    let mut k = index / 2;
    while !stop.is_cancelled() && !attacks.is_empty() {
        let which = k % attacks.len();
        k += 1;
        let attack = &attacks[which];
        let body = attack.body();
        let started = Instant::now();
        let sent = async {
            match transport {
                Transport::Http => send_http(&http, &url, &token, body).await,
                Transport::Grpc => {
                    let conn = match grpc.take() {
                        Some(c) => c,
                        None => match GrpcConn::connect(targets.grpc).await {
                            Ok(c) => c,
                            Err(e) => {
                                return (Answer::Broken, Some(format!("gRPC connect: {e}")), None);
                            }
                        },
                    };
                    let (answer, note) = conn.send(&token, body).await;
                    let keep = (answer != Answer::Broken).then_some(conn);
                    (answer, note, keep)
                }
            }
        };
        let (answer, note, conn) = tokio::select! {
            _ = stop.cancelled() => break,
            r = sent => r,
        };
        grpc = conn;
        answers.add(which, transport, answer, note, started.elapsed());
        if answer == Answer::Broken {
            // Not a busy loop against a listener that refuses connections.
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }
}

/// An error with its causes ("error sending request" alone does not say what happened), the
/// URL left out so equal failures count as one.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        parts.push(err.to_string());
        next = err.source();
    }
    let text = parts.join(": ");
    match text.split_once(" for url (") {
        Some((head, rest)) => format!("{head}{}", rest.split_once(')').map_or("", |r| r.1)),
        None => text,
    }
}

fn partial(body: &[u8]) -> Answer {
    match ExportTraceServiceResponse::decode(body) {
        Ok(r)
            if r.partial_success
                .as_ref()
                .is_some_and(|p| p.rejected_spans > 0) =>
        {
            Answer::Partial
        }
        _ => Answer::Ok,
    }
}

async fn send_http(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: Bytes,
) -> (Answer, Option<String>, Option<GrpcConn>) {
    let r = http
        .post(url)
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .bearer_auth(token)
        .body(body)
        .send()
        .await;
    let r = match r {
        Ok(r) => r,
        Err(e) => return (Answer::Broken, Some(format!("HTTP: {}", chain(&e))), None),
    };
    let status = r.status().as_u16();
    let body = r.bytes().await.unwrap_or_default();
    let answer = match status {
        200 => partial(&body),
        413 => Answer::TooLarge,
        503 => Answer::Unavailable,
        _ => Answer::Other,
    };
    let note = (answer == Answer::Other).then(|| {
        let message = tonic_types::pb::Status::decode(body.as_ref())
            .map(|s| s.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).chars().take(200).collect());
        format!("HTTP {status}: {message}")
    });
    (answer, note, None)
}

/// One HTTP/2 connection speaking unary gRPC with a body already compressed (tonic's client
/// would compress it again for every call).
struct GrpcConn {
    send: hyper::client::conn::http2::SendRequest<http_body_util::Full<Bytes>>,
    authority: String,
}

impl GrpcConn {
    async fn connect(addr: SocketAddr) -> anyhow::Result<GrpcConn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await?;
        tokio::spawn(conn);
        Ok(GrpcConn {
            send,
            authority: addr.to_string(),
        })
    }

    async fn send(&self, token: &str, gz: Bytes) -> (Answer, Option<String>) {
        use http_body_util::BodyExt;
        let mut frame = Vec::with_capacity(gz.len() + 5);
        frame.push(1);
        frame.extend_from_slice(&u32::try_from(gz.len()).unwrap_or(u32::MAX).to_be_bytes());
        frame.extend_from_slice(&gz);
        let req = hyper::Request::post(format!(
            "http://{}{}",
            self.authority,
            crate::ingest::grpc::TRACE_EXPORT
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-encoding", "gzip")
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Full::new(Bytes::from(frame)));
        let req = match req {
            Ok(r) => r,
            Err(e) => return (Answer::Other, Some(format!("gRPC request: {e}"))),
        };
        let mut send = self.send.clone();
        let resp = match send.send_request(req).await {
            Ok(r) => r,
            Err(e) => return (Answer::Broken, Some(format!("gRPC: {}", chain(&e)))),
        };
        let http_status = resp.status().as_u16();
        let head_status = resp.headers().get("grpc-status").cloned();
        let head_message = resp.headers().get("grpc-message").cloned();
        let collected = match resp.into_body().collect().await {
            Ok(c) => c,
            Err(e) => return (Answer::Broken, Some(format!("gRPC body: {}", chain(&e)))),
        };
        let trailers = collected.trailers().cloned();
        let data = collected.to_bytes();
        let code = head_status
            .or_else(|| {
                trailers
                    .as_ref()
                    .and_then(|t| t.get("grpc-status").cloned())
            })
            .and_then(|v| v.to_str().ok().and_then(|s| s.parse::<i32>().ok()));
        let message = head_message
            .or_else(|| {
                trailers
                    .as_ref()
                    .and_then(|t| t.get("grpc-message").cloned())
            })
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        match code {
            Some(0) => (partial(data.get(5..).unwrap_or_default()), None),
            Some(8) => (Answer::TooLarge, None),
            Some(14) => (Answer::Unavailable, None),
            Some(c) => (Answer::Other, Some(format!("gRPC {c}: {message}"))),
            None => (
                Answer::Other,
                Some(format!("HTTP {http_status} without grpc-status")),
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Slow and idle connections.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Listener {
    Api,
    Grpc,
    Otlp,
}

const LISTENERS: [Listener; 3] = [Listener::Api, Listener::Grpc, Listener::Otlp];

impl Listener {
    fn name(self) -> &'static str {
        match self {
            Listener::Api => "REST",
            Listener::Grpc => "OTLP gRPC",
            Listener::Otlp => "OTLP HTTP",
        }
    }

    fn addr(self, t: &Targets) -> SocketAddr {
        match self {
            Listener::Api => t.api,
            Listener::Grpc => t.grpc,
            Listener::Otlp => t.otlp,
        }
    }

    /// An HTTP/1.1 request head whose body the server reads once the token is accepted; for gRPC
    /// followed by the message's frame header, announcing the rest of the body.
    fn head(self, token: &str, length: usize) -> Vec<u8> {
        let (path, content_type) = match self {
            Listener::Api => ("/v1/import/conductor", "application/json"),
            Listener::Grpc => (crate::ingest::grpc::TRACE_EXPORT, "application/grpc"),
            Listener::Otlp => ("/v1/traces", "application/x-protobuf"),
        };
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nhost: changetrail\r\ncontent-type: {content_type}\r\n\
             authorization: Bearer {token}\r\ncontent-length: {length}\r\n\r\n"
        )
        .into_bytes();
        if self == Listener::Grpc {
            head.push(0);
            head.extend_from_slice(&u32::try_from(length - 5).unwrap_or(0).to_be_bytes());
        }
        head
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SlowKind {
    /// Connects and sends nothing.
    Idle,
    /// Half a request head, then one more byte every few seconds.
    Header,
    /// A whole head (the attacker's token, a 1 MB body announced), then a few bytes a second.
    Body,
}

const SLOW_KINDS: [SlowKind; 3] = [SlowKind::Idle, SlowKind::Header, SlowKind::Body];
const SLOW_BODY_LENGTH: usize = 1_000_000;

impl SlowKind {
    /// 40% idle, 30% slow header, 30% slow body.
    fn of(i: usize) -> SlowKind {
        match i % 10 {
            0..=3 => SlowKind::Idle,
            4..=6 => SlowKind::Header,
            _ => SlowKind::Body,
        }
    }

    fn name(self) -> &'static str {
        match self {
            SlowKind::Idle => "idle",
            SlowKind::Header => "slow header",
            SlowKind::Body => "slow body",
        }
    }
}

#[derive(Default)]
struct SlowStats {
    /// [listener]
    opened: [AtomicU64; 3],
    open: [AtomicI64; 3],
    connect_failed: [AtomicU64; 3],
    /// [listener][kind]
    closed: [[AtomicU64; 3]; 3],
    /// Closed within a second of opening: refused rather than timed out.
    closed_at_once: [AtomicU64; 3],
    /// What the server answered before closing, by listener, kind and status line.
    answers: Mutex<BTreeMap<(usize, usize, String), u64>>,
}

impl SlowStats {
    fn opened_total(&self) -> u64 {
        self.opened.iter().map(|o| o.load(Ordering::Relaxed)).sum()
    }

    fn open_total(&self) -> i64 {
        self.open.iter().map(|o| o.load(Ordering::Relaxed)).sum()
    }
}

fn spawn_slow_connections(
    targets: &Targets,
    per_listener: usize,
    token: &str,
    stats: &Arc<SlowStats>,
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (li, l) in LISTENERS.into_iter().enumerate() {
        for i in 0..per_listener {
            let (addr, token, stats, stop) = (
                l.addr(targets),
                token.to_owned(),
                stats.clone(),
                stop.clone(),
            );
            // Spread over about a second: a thousand SYNs at once overflow the accept backlog.
            let delay = Duration::from_micros((i as u64 * 1_000_000) / per_listener.max(1) as u64);
            tasks.push(tokio::spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                slow_connection(addr, l, li, SlowKind::of(i), &token, &stats, &stop).await;
            }));
        }
    }
    tasks
}

/// Keeps one slow connection of `kind` open, replacing it whenever the server closes it.
async fn slow_connection(
    addr: SocketAddr,
    l: Listener,
    li: usize,
    kind: SlowKind,
    token: &str,
    stats: &SlowStats,
    stop: &CancellationToken,
) {
    let ki = SLOW_KINDS.iter().position(|k| *k == kind).unwrap_or(0);
    while !stop.is_cancelled() {
        let connected = tokio::select! {
            _ = stop.cancelled() => return,
            r = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)) => r,
        };
        let Ok(Ok(mut s)) = connected else {
            stats.connect_failed[li].fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            continue;
        };
        stats.opened[li].fetch_add(1, Ordering::Relaxed);
        stats.open[li].fetch_add(1, Ordering::Relaxed);
        let opened = Instant::now();
        let closed = hold(&mut s, l, kind, token, stop).await;
        stats.open[li].fetch_sub(1, Ordering::Relaxed);
        let Some(answer) = closed else {
            return;
        };
        stats.closed[li][ki].fetch_add(1, Ordering::Relaxed);
        let status = String::from_utf8_lossy(&answer)
            .lines()
            .next()
            .map_or_else(|| "(nothing)".to_owned(), |l| l.trim().to_owned());
        *stats
            .answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((li, ki, status))
            .or_default() += 1;
        if opened.elapsed() < Duration::from_secs(1) {
            // Refused at once (the cap, or the token's share for a slow body): reconnecting
            // immediately would only spin.
            stats.closed_at_once[li].fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

/// Behaves as `kind` until the server closes the connection (the start of what it answered) or
/// the phase ends (`None`).
async fn hold(
    s: &mut TcpStream,
    l: Listener,
    kind: SlowKind,
    token: &str,
    stop: &CancellationToken,
) -> Option<Vec<u8>> {
    let (first, every, more): (Vec<u8>, Duration, &[u8]) = match kind {
        SlowKind::Idle => (Vec::new(), Duration::from_secs(3600), b""),
        SlowKind::Header => {
            let head = l.head(token, SLOW_BODY_LENGTH);
            (
                head[..head.len() / 3].to_vec(),
                Duration::from_secs(3),
                b"a",
            )
        }
        // A few bytes a second, far below min_body_rate.
        SlowKind::Body => (
            l.head(token, SLOW_BODY_LENGTH),
            Duration::from_secs(1),
            b"    ",
        ),
    };
    let mut answer = Vec::new();
    if !first.is_empty() && s.write_all(&first).await.is_err() {
        return Some(answer);
    }
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let mut buf = [0u8; 2048];
    loop {
        tokio::select! {
            _ = stop.cancelled() => return None,
            r = s.read(&mut buf) => match r {
                Ok(0) | Err(_) => return Some(answer),
                // An answer (a refusal, a timeout): the connection closes after it.
                Ok(n) => {
                    if answer.len() < 256 {
                        answer.extend_from_slice(&buf[..n.min(256)]);
                    }
                }
            },
            _ = tick.tick(), if !more.is_empty() => {
                if s.write_all(more).await.is_err() {
                    // Closed while writing: whatever was answered may still be readable.
                    if let Ok(Ok(n)) =
                        tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await
                    {
                        answer.extend_from_slice(&buf[..n.min(256)]);
                    }
                    return Some(answer);
                }
            }
        }
    }
}

/// The slow connections held open while the honest exporter runs: the fewest and the mean of
/// samples every half second.
struct OpenSampler {
    task: tokio::task::JoinHandle<(i64, f64)>,
}

impl OpenSampler {
    fn start(stats: Arc<SlowStats>, stop: CancellationToken) -> OpenSampler {
        let task = tokio::spawn(async move {
            let (mut min, mut sum, mut n) = (i64::MAX, 0i64, 0i64);
            while !stop.is_cancelled() {
                let open = stats.open_total();
                min = min.min(open);
                sum += open;
                n += 1;
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
            (if n == 0 { 0 } else { min }, sum as f64 / n.max(1) as f64)
        });
        OpenSampler { task }
    }

    async fn finish(self) -> (i64, f64) {
        self.task.await.unwrap_or((0, 0.0))
    }
}

// ---------------------------------------------------------------------------------------------
// After the run.

/// An unlabelled metric's value in /metrics text (0 when absent).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The acknowledged audit spans the database does not hold.
async fn lost_spans(
    store: &Store,
    acked: &[([u8; 16], [u8; 8])],
) -> anyhow::Result<Vec<([u8; 16], [u8; 8])>> {
    let mut by_trace: BTreeMap<[u8; 16], Vec<[u8; 8]>> = BTreeMap::new();
    for (t, s) in acked {
        by_trace.entry(*t).or_default().push(*s);
    }
    let mut lost = Vec::new();
    for (trace, spans) in by_trace {
        let stored: HashSet<[u8; 8]> = store
            .spans_of_trace(&trace)
            .await?
            .into_iter()
            .map(|s| s.span_id)
            .collect();
        lost.extend(
            spans
                .into_iter()
                .filter(|s| !stored.contains(s))
                .map(|s| (trace, s)),
        );
    }
    Ok(lost)
}

struct Results<'a> {
    config: Option<&'a Path>,
    one_token: bool,
    cfg: &'a Config,
    slow: usize,
    fd_note: Option<String>,
    ramp: Duration,
    rss_start_kb: u64,
    hwm_unloaded_kb: u64,
    hwm_attacked_kb: u64,
    rss_max_sampled_kb: u64,
    unloaded: &'a PhaseResult,
    attacked: &'a PhaseResult,
    attacks: &'a [Attack],
    answers: &'a Answers,
    slow_stats: &'a SlowStats,
    held: (i64, f64),
    /// (this process, the server) CPU seconds at the start and end of each phase.
    cpu: [(f64, f64); 4],
    metrics: &'a str,
    metrics_unloaded: &'a str,
    exit: std::process::ExitStatus,
    acked: usize,
    lost: &'a [([u8; 16], [u8; 8])],
    stored_spans: Option<u64>,
    verify: String,
    verify_exit: i32,
}

/// The /metrics series worth reading after an attack.
const METRICS: [&str; 11] = [
    "changetrail_commit_seconds_max",
    "changetrail_parked_bytes",
    "changetrail_queue_depth",
    "changetrail_spans_accepted_total",
    "changetrail_otlp_admission_refused_total",
    "changetrail_connections_closed_total",
    "changetrail_requests_cut_total",
    "changetrail_otlp_requests_total",
    "changetrail_spans_parked_total",
    "changetrail_spans_duplicate_total",
    "changetrail_peak_resident_memory_bytes",
];

impl Results<'_> {
    fn print(&self) {
        let o = &self.cfg.otlp;
        let rate = |r: &PhaseResult| r.spans_ok as f64 / r.secs.max(1e-9);
        println!(
            "bench hostile: changetrail serve on a scratch SQLite database, {}",
            match self.config {
                Some(f) => format!("configuration {}", f.display()),
                None => "built-in default limits".into(),
            }
        );
        println!(
            "  limits             max_request_bytes {}, in flight {} MiB total / {} MiB per token, \
             max_connections {} per listener",
            o.max_request_bytes,
            o.max_inflight_bytes >> 20,
            o.max_inflight_bytes_per_token >> 20,
            self.cfg.listeners.max_connections
        );
        println!(
            "  attack requests (one attacker token; each kind in turn, back to back; slow bodies {}):",
            if self.one_token {
                "with the same token"
            } else {
                "with a token of their own"
            }
        );
        for at in self.attacks {
            println!(
                "    {:<14} {:>9} B gzip, {:>9} B decoded, server's estimate {:>5.0} MB: {}",
                at.name,
                at.wire_len(),
                at.decoded_len,
                at.estimate as f64 / 1e6,
                at.what
            );
        }
        if let Some(n) = &self.fd_note {
            println!("  note               {n}");
        }

        println!();
        println!(
            "  server RSS         {:.1} MiB at start; peak {:.1} MiB after the unloaded phase",
            mib(self.rss_start_kb),
            mib(self.hwm_unloaded_kb)
        );
        println!(
            "  server peak RSS    {:.1} MiB (under attack; highest sample {:.1} MiB); target ≤ {:.0} MiB: {}",
            mib(self.hwm_attacked_kb),
            mib(self.rss_max_sampled_kb),
            RSS_TARGET_MIB,
            if mib(self.hwm_attacked_kb) <= RSS_TARGET_MIB {
                "met"
            } else {
                "MISSED"
            }
        );
        println!(
            "  this process       peak RSS {:.1} MiB (the load generator, for comparison)",
            mib(vm_hwm_kb("/proc/self/status").unwrap_or(0))
        );
        let ratio = rate(self.attacked) / rate(self.unloaded).max(1e-9);
        println!(
            "  honest exporter    {:.0} spans/s unloaded, {:.0} spans/s under attack: {:.2}× of \
             unloaded; target ≥ {:.2}×: {}",
            rate(self.unloaded),
            rate(self.attacked),
            ratio,
            THROUGHPUT_TARGET,
            if ratio >= THROUGHPUT_TARGET {
                "met"
            } else {
                "MISSED"
            }
        );
        for (label, r, (from, to), (before, after)) in [
            (
                "unloaded",
                self.unloaded,
                (self.cpu[0], self.cpu[1]),
                ("", self.metrics_unloaded),
            ),
            (
                "under attack",
                self.attacked,
                (self.cpu[2], self.cpu[3]),
                (self.metrics_unloaded, self.metrics),
            ),
        ] {
            println!(
                "    {label:<16} {} requests, p50 {:.1} ms, p99 {:.1} ms, {} retried (UNAVAILABLE), \
                 {} failed, {} spans rejected",
                r.requests, r.p50_ms, r.p99_ms, r.retried, r.failed, r.rejected
            );
            // On one machine the load generator takes cores from the server: say how many.
            let secs = r.secs.max(1e-9);
            println!(
                "    {:<16} CPU: server {:.2} cores, this process (exporters, attackers, slow \
                 connections) {:.2} cores, of {} available",
                "",
                (to.1 - from.1) / secs,
                (to.0 - from.0) / secs,
                std::thread::available_parallelism().map_or(0, |n| n.get())
            );
            // Acknowledgements wait for the commit: its time is what an exporter waits for.
            let delta = |name: &str| metric(after, name) - metric(before, name);
            let commits = delta("changetrail_commits_total");
            println!(
                "    {:<16} ledger commits: {:.0}, mean {:.1} ms, {:.0} rows",
                "",
                commits,
                1000.0 * delta("changetrail_commit_seconds_total") / commits.max(1.0),
                delta("changetrail_commit_rows_total")
            );
        }

        println!();
        println!(
            "  attacker answers   {:<14} {:>7} {:>7} {:>7} {:>9} {:>11} {:>7} {:>7} {:>9}",
            "", "total", "ok", "partial", "too-large", "unavailable", "other", "broken", "mean ms"
        );
        for (i, at) in self.attacks.iter().enumerate() {
            let total = self.answers.total(i);
            let mean = self.answers.micros[i].load(Ordering::Relaxed) as f64
                / 1000.0
                / total.max(1) as f64;
            println!(
                "                     {:<14} {:>7} {:>7} {:>7} {:>9} {:>11} {:>7} {:>7} {:>9.1}",
                at.name,
                total,
                self.answers.get(i, Answer::Ok),
                self.answers.get(i, Answer::Partial),
                self.answers.get(i, Answer::TooLarge),
                self.answers.get(i, Answer::Unavailable),
                self.answers.get(i, Answer::Other),
                self.answers.get(i, Answer::Broken),
                mean
            );
        }
        let odd = self.answers.odd.lock().unwrap_or_else(|p| p.into_inner());
        for (message, n) in odd.iter() {
            println!("    {n:>6} × {message}");
        }

        println!();
        println!(
            "  slow connections   {} per listener (40% idle, 30% slow header, 30% slow body), \
             opened within {:.1} s; held open while measured: min {}, mean {:.0} of {}",
            self.slow,
            self.ramp.as_secs_f64(),
            self.held.0,
            self.held.1,
            3 * self.slow
        );
        let s = self.slow_stats;
        for (li, l) in LISTENERS.iter().enumerate() {
            let closed: Vec<String> = SLOW_KINDS
                .iter()
                .enumerate()
                .map(|(ki, k)| format!("{} {}", s.closed[li][ki].load(Ordering::Relaxed), k.name()))
                .collect();
            println!(
                "    {:<16} {} opened, closed by the server: {} ({} within a second); {} connects failed",
                l.name(),
                s.opened[li].load(Ordering::Relaxed),
                closed.join(", "),
                s.closed_at_once[li].load(Ordering::Relaxed),
                s.connect_failed[li].load(Ordering::Relaxed)
            );
        }
        println!("    what the server answered before closing them:");
        let answers = s.answers.lock().unwrap_or_else(|p| p.into_inner());
        for ((li, ki, status), n) in answers.iter() {
            println!(
                "      {:<10} {:<12} {n:>6} × {status}",
                LISTENERS[*li].name(),
                SLOW_KINDS[*ki].name()
            );
        }

        println!();
        println!("  /metrics at the end of the attack:");
        for line in self.metrics.lines().filter(|l| {
            !l.starts_with('#')
                && METRICS.iter().any(|m| {
                    l.strip_prefix(m)
                        .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
                })
        }) {
            println!("    {line}");
        }
        if self.metrics.starts_with("# /metrics could not") {
            println!("    {}", self.metrics);
        }

        println!();
        println!(
            "  server exit        {}",
            if self.exit.success() {
                "0 after SIGTERM".to_owned()
            } else {
                format!("{} after SIGTERM (expected 0)", self.exit)
            }
        );
        let unchecked = self.unloaded.audit_unchecked + self.attacked.audit_unchecked;
        println!(
            "  audit spans        {} acknowledged, {} stored, {} lost{}{}",
            self.acked,
            self.acked - self.lost.len(),
            self.lost.len(),
            if unchecked > 0 {
                format!(" ({unchecked} more in partly rejected requests, not checked)")
            } else {
                String::new()
            },
            self.stored_spans
                .map(|n| format!("; {n} spans stored in all"))
                .unwrap_or_default()
        );
        for (t, sp) in self.lost.iter().take(10) {
            println!(
                "    lost: trace {} span {}",
                hex::encode(t),
                hex::encode(sp)
            );
        }
        println!("  chain verification (as `changetrail verify --database-url`, the key pinned):");
        for line in self.verify.lines() {
            println!("    {line}");
        }
        println!(
            "Result: {}",
            match (self.lost.is_empty(), self.verify_exit == 0) {
                (true, true) => "nothing acknowledged was lost; the chain verifies.",
                (false, true) => "ACKNOWLEDGED SPANS WERE LOST; the chain verifies.",
                (true, false) => "nothing acknowledged was lost; the chain DOES NOT VERIFY.",
                (false, false) => "ACKNOWLEDGED SPANS WERE LOST and the chain DOES NOT VERIFY.",
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_spliced_body_is_valid_gzip_with_fresh_ids() {
        let l = limits::Limits {
            max_attribute_value_length: 64,
            max_span_attributes: 4,
            ..Default::default()
        };
        let req = evidence(3, &l);
        let raw = req.encode_to_vec();
        let traces: Vec<[u8; 16]> = req.resource_spans[0].scope_spans[0]
            .spans
            .iter()
            .map(|s| s.trace_id.as_slice().try_into().unwrap())
            .collect();
        let s = Spliced::new(&raw, &traces).unwrap();
        let (a, b) = (s.fresh(), s.fresh());
        let unzip = |gz: &[u8]| {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(gz)
                .read_to_end(&mut out)
                .unwrap();
            ExportTraceServiceRequest::decode(out.as_slice()).unwrap()
        };
        let (a, b) = (unzip(&a), unzip(&b));
        let spans =
            |r: &ExportTraceServiceRequest| r.resource_spans[0].scope_spans[0].spans.clone();
        assert_eq!(spans(&a).len(), 3);
        for (x, y) in spans(&a).iter().zip(spans(&b).iter()) {
            assert_ne!(x.trace_id, y.trace_id);
            assert_ne!(x.span_id, y.span_id);
            assert_eq!(x.attributes, y.attributes);
        }
        // Apart from the ids, the request is the one encoded.
        let mut same = a.clone();
        for (s, orig) in same.resource_spans[0].scope_spans[0]
            .spans
            .iter_mut()
            .zip(spans(&req))
        {
            s.trace_id = orig.trace_id.clone();
            s.span_id = orig.span_id.clone();
        }
        assert_eq!(same, req);
    }

    #[test]
    fn attack_requests_are_sized_to_the_limits() {
        let cfg = Config::defaults();
        let l = &cfg.otlp.limits;
        let max = max_spans_by_size(&cfg, |n| dense(n, l));
        let c = charge(&dense(max, l), l);
        assert!(c.len <= cfg.otlp.max_request_bytes);
        assert!(max == l.max_spans_per_request || c.len + 2000 > cfg.otlp.max_request_bytes);
        let fit = largest_admitted(&cfg, |n| dense(n, l), max);
        assert!(admitted(charge(&dense(fit, l), l), &cfg));
        assert!(!admitted(charge(&dense(fit + 1, l), l), &cfg));
        let n = largest_admitted(&cfg, |n| evidence(n, l), l.max_spans_per_request);
        assert!(n >= 1);
        assert!(admitted(charge(&evidence(n, l), l), &cfg));
    }
}
