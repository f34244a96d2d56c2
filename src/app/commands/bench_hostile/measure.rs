//! The two phases (the honest exporter alone, then beside the attack) and what they measured:
//! the server's memory and CPU from /proc, its /metrics, and after it stopped, the database.

use super::attackers::{Answers, Targets, Transport, attacker};
use super::attacks::Attack;
use super::server::{Server, create_token};
use super::slow::{OpenSampler, SlowStats, spawn_slow_connections};
use crate::app::cli::{BenchHostileArgs, BenchIngestArgs};
use crate::app::commands::bench::vm_hwm_kb;
use crate::app::commands::bench_ingest::{self, AckedAudit, PhaseResult};
use crate::app::config::Config;
use crate::core::ledger::keys::Vkey;
use crate::core::ledger::verify::Options;
use crate::storage::Store;
use crate::sys::now_ns;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long the slow connections may take to be opened before the honest exporter starts.
const RAMP_LIMIT: Duration = Duration::from_secs(10);

/// The running server and what both phases share: the honest exporter's settings, the audit
/// spans it had acknowledged, and the tokens.
pub(super) struct Bench {
    server: Server,
    base: String,
    honest: BenchIngestArgs,
    duration: Duration,
    acked: AckedAudit,
    attacker_token: String,
    slow_token: String,
    metrics_token: String,
    /// The server's resident memory before either phase.
    pub(super) rss_start_kb: u64,
}

/// The unloaded phase: the honest exporter alone.
pub(super) struct Unloaded {
    pub(super) result: PhaseResult,
    /// (this process, the server) CPU seconds at the start and end.
    pub(super) cpu: [(f64, f64); 2],
    pub(super) hwm_kb: u64,
    pub(super) metrics: String,
}

/// The phase under attack: the honest exporter beside the attackers and slow connections.
pub(super) struct Attacked {
    pub(super) result: PhaseResult,
    /// (this process, the server) CPU seconds at the start and end.
    pub(super) cpu: [(f64, f64); 2],
    pub(super) hwm_kb: u64,
    /// /metrics at the end, or a `#` line saying why it could not be read.
    pub(super) metrics: String,
    pub(super) rss_max_sampled_kb: u64,
    pub(super) answers: Arc<Answers>,
    pub(super) slow_stats: Arc<SlowStats>,
    /// How long the slow connections took to open.
    pub(super) ramp: Duration,
    /// The fewest and the mean of the slow connections held open.
    pub(super) held: (i64, f64),
}

/// The database once the server stopped.
pub(super) struct Checked {
    pub(super) lost: Vec<([u8; 16], [u8; 8])>,
    pub(super) stored_spans: Option<u64>,
    /// The chain verification, as `changetrail verify` prints it.
    pub(super) verify: String,
    pub(super) verify_exit: i32,
}

impl Bench {
    /// Creates the tokens on a server that is serving.
    pub(super) async fn start(
        server: Server,
        a: &BenchHostileArgs,
        duration: Duration,
    ) -> anyhow::Result<Bench> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let base = format!("http://{}", server.http);
        let honest_token =
            create_token(&http, &base, &server.admin, "ingest", "bench honest").await?;
        let attacker_token =
            create_token(&http, &base, &server.admin, "ingest", "bench attacker").await?;
        let slow_token = if a.one_token {
            attacker_token.clone()
        } else {
            create_token(&http, &base, &server.admin, "ingest", "bench slow bodies").await?
        };
        let metrics_token = create_token(&http, &base, &server.admin, "metrics", "bench").await?;
        let rss_start_kb = status_kb(server.pid(), "VmRSS:").unwrap_or(0);
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
        Ok(Bench {
            server,
            base,
            honest,
            duration,
            acked: Arc::default(),
            attacker_token,
            slow_token,
            metrics_token,
            rss_start_kb,
        })
    }

    /// CPU seconds of (this process, the server).
    fn cpu(&self) -> (f64, f64) {
        (cpu_secs("self"), cpu_secs(&self.server.pid().to_string()))
    }

    /// The honest exporter for the phase's duration, its acknowledged audit spans noted.
    async fn honest_phase(&self) -> anyhow::Result<PhaseResult> {
        bench_ingest::phase(
            &self.honest.endpoint,
            Some(&self.honest.token),
            &self.honest,
            self.duration,
            Some(self.acked.clone()),
        )
        .await
    }

    pub(super) async fn unloaded(&self) -> anyhow::Result<Unloaded> {
        eprintln!(
            "bench hostile: phase 1 (unloaded): {} honest exporters × {} spans for {}",
            self.honest.exporters, self.honest.batch, self.honest.duration
        );
        let cpu_0 = self.cpu();
        let result = self.honest_phase().await?;
        let cpu_1 = self.cpu();
        let hwm_kb = vm_hwm_kb(&self.server.status_file()).unwrap_or(0);
        let metrics = bench_ingest::get_metrics(&self.base, &self.metrics_token)
            .await
            .unwrap_or_default();
        Ok(Unloaded {
            result,
            cpu: [cpu_0, cpu_1],
            hwm_kb,
            metrics,
        })
    }

    /// The slow connections opened first, then the attackers and the honest exporter together;
    /// everything stopped before the phase's result is looked at.
    pub(super) async fn attacked(
        &self,
        attackers: usize,
        slow: usize,
        attacks: &Arc<Vec<Attack>>,
    ) -> anyhow::Result<Attacked> {
        eprintln!(
            "bench hostile: phase 2 (under attack): {attackers} attackers, {slow} slow connections per listener"
        );
        let stop = CancellationToken::new();
        let sampler = RssSampler::start(self.server.pid(), stop.clone());
        let answers = Arc::new(Answers::new(attacks));
        let slow_stats = Arc::new(SlowStats::default());
        let targets = Targets {
            api: self.server.http,
            grpc: self.server.grpc,
            otlp: self.server.otlp,
        };
        let mut background =
            spawn_slow_connections(&targets, slow, &self.slow_token, &slow_stats, &stop);
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
        for i in 0..attackers {
            let transport = if i % 2 == 0 {
                Transport::Http
            } else {
                Transport::Grpc
            };
            background.push(tokio::spawn(attacker(
                i,
                transport,
                targets.clone(),
                self.attacker_token.clone(),
                attacks.clone(),
                answers.clone(),
                stop.clone(),
            )));
        }
        let held = OpenSampler::start(slow_stats.clone(), stop.clone());
        let cpu_2 = self.cpu();
        let result = self.honest_phase().await;
        let cpu_3 = self.cpu();
        stop.cancel();
        for t in background {
            let _ = t.await;
        }
        let result = result?;
        let held = held.finish().await;
        let rss_max_sampled_kb = sampler.finish().await;
        let hwm_kb = vm_hwm_kb(&self.server.status_file()).unwrap_or(0);
        let metrics = bench_ingest::get_metrics(&self.base, &self.metrics_token)
            .await
            .unwrap_or_else(|e| format!("# /metrics could not be read: {e}"));
        Ok(Attacked {
            result,
            cpu: [cpu_2, cpu_3],
            hwm_kb,
            metrics,
            rss_max_sampled_kb,
            answers,
            slow_stats,
            ramp,
            held,
        })
    }

    /// Stops the server as a service manager does, and hands back its exit status and the audit
    /// spans acknowledged in both phases.
    pub(super) async fn stop(
        &mut self,
    ) -> anyhow::Result<(std::process::ExitStatus, Vec<([u8; 16], [u8; 8])>)> {
        let exit = self.server.stop().await?;
        let acked = match Arc::try_unwrap(std::mem::take(&mut self.acked)) {
            Ok(m) => m.into_inner().unwrap_or_else(|p| p.into_inner()),
            Err(shared) => shared.lock().map(|l| l.clone()).unwrap_or_default(),
        };
        Ok((exit, acked))
    }
}

/// The scratch database after the run: the acknowledged audit spans it lacks, and the chain
/// verified with the key pinned.
pub(super) async fn check(
    db_url: &str,
    cfg: &Config,
    acked: &[([u8; 16], [u8; 8])],
    vkey: Vkey,
) -> anyhow::Result<Checked> {
    let store = Store::connect(db_url, &cfg.storage_options()).await?;
    let lost = lost_spans(&store, acked).await?;
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
    Ok(Checked {
        lost,
        stored_spans,
        verify: crate::app::commands::verify::summary(&report, "the scratch database", tail),
        verify_exit: report.exit_code,
    })
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
