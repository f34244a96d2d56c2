//! The report `bench hostile` prints: the limits and attack requests, the server's memory, what
//! the attack cost the honest exporter, what the attackers and slow connections were answered,
//! and whether anything acknowledged was lost.

use super::attackers::Answer;
use super::attacks::Attack;
use super::measure::{Attacked, Checked, Unloaded};
use super::slow::{LISTENERS, SLOW_KINDS};
use crate::app::commands::bench::vm_hwm_kb;
use crate::app::commands::bench_ingest::PhaseResult;
use crate::app::config::Config;
use std::path::Path;
use std::sync::atomic::Ordering;

/// The targets the issue sets; printed next to the numbers, not enforced.
const RSS_TARGET_MIB: f64 = 1024.0;
const THROUGHPUT_TARGET: f64 = 0.5;

/// Everything the report reads.
pub(super) struct Results<'a> {
    pub(super) config: Option<&'a Path>,
    pub(super) one_token: bool,
    pub(super) cfg: &'a Config,
    /// Slow connections per listener.
    pub(super) slow: usize,
    /// Why there are fewer slow connections than asked, if there are.
    pub(super) fd_note: Option<String>,
    pub(super) rss_start_kb: u64,
    pub(super) attacks: &'a [Attack],
    pub(super) unloaded: &'a Unloaded,
    pub(super) attacked: &'a Attacked,
    pub(super) exit: std::process::ExitStatus,
    /// Audit spans acknowledged in both phases.
    pub(super) acked: usize,
    pub(super) checked: &'a Checked,
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
    pub(super) fn print(&self) {
        self.print_setup();
        println!();
        self.print_memory();
        self.print_throughput();
        println!();
        self.print_attacker_answers();
        println!();
        self.print_slow_connections();
        println!();
        self.print_metrics();
        println!();
        self.print_outcome();
    }

    /// The configuration, its limits, and the attack requests built for them.
    fn print_setup(&self) {
        let o = &self.cfg.otlp;
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
    }

    /// The server's resident memory against the target, and this process's for comparison.
    fn print_memory(&self) {
        println!(
            "  server RSS         {:.1} MiB at start; peak {:.1} MiB after the unloaded phase",
            mib(self.rss_start_kb),
            mib(self.unloaded.hwm_kb)
        );
        println!(
            "  server peak RSS    {:.1} MiB (under attack; highest sample {:.1} MiB); target ≤ {:.0} MiB: {}",
            mib(self.attacked.hwm_kb),
            mib(self.attacked.rss_max_sampled_kb),
            RSS_TARGET_MIB,
            if mib(self.attacked.hwm_kb) <= RSS_TARGET_MIB {
                "met"
            } else {
                "MISSED"
            }
        );
        println!(
            "  this process       peak RSS {:.1} MiB (the load generator, for comparison)",
            mib(vm_hwm_kb("/proc/self/status").unwrap_or(0))
        );
    }

    /// The honest exporter's throughput under attack against the target, and each phase's
    /// latencies, CPU and commits.
    fn print_throughput(&self) {
        let rate = |r: &PhaseResult| r.spans_ok as f64 / r.secs.max(1e-9);
        let (unloaded, attacked) = (&self.unloaded.result, &self.attacked.result);
        let ratio = rate(attacked) / rate(unloaded).max(1e-9);
        println!(
            "  honest exporter    {:.0} spans/s unloaded, {:.0} spans/s under attack: {:.2}× of \
             unloaded; target ≥ {:.2}×: {}",
            rate(unloaded),
            rate(attacked),
            ratio,
            THROUGHPUT_TARGET,
            if ratio >= THROUGHPUT_TARGET {
                "met"
            } else {
                "MISSED"
            }
        );
        for (label, r, [from, to], (before, after)) in [
            (
                "unloaded",
                unloaded,
                self.unloaded.cpu,
                ("", self.unloaded.metrics.as_str()),
            ),
            (
                "under attack",
                attacked,
                self.attacked.cpu,
                (
                    self.unloaded.metrics.as_str(),
                    self.attacked.metrics.as_str(),
                ),
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
    }

    /// What the attackers were answered, per attack kind, and the unexpected answers.
    fn print_attacker_answers(&self) {
        let answers = &self.attacked.answers;
        println!(
            "  attacker answers   {:<14} {:>7} {:>7} {:>7} {:>9} {:>11} {:>7} {:>7} {:>9}",
            "", "total", "ok", "partial", "too-large", "unavailable", "other", "broken", "mean ms"
        );
        for (i, at) in self.attacks.iter().enumerate() {
            let total = answers.total(i);
            let mean =
                answers.micros[i].load(Ordering::Relaxed) as f64 / 1000.0 / total.max(1) as f64;
            println!(
                "                     {:<14} {:>7} {:>7} {:>7} {:>9} {:>11} {:>7} {:>7} {:>9.1}",
                at.name,
                total,
                answers.get(i, Answer::Ok),
                answers.get(i, Answer::Partial),
                answers.get(i, Answer::TooLarge),
                answers.get(i, Answer::Unavailable),
                answers.get(i, Answer::Other),
                answers.get(i, Answer::Broken),
                mean
            );
        }
        let odd = answers.odd.lock().unwrap_or_else(|p| p.into_inner());
        for (message, n) in odd.iter() {
            println!("    {n:>6} × {message}");
        }
    }

    /// How many slow connections were held, how the server closed them and what it answered.
    fn print_slow_connections(&self) {
        let (min, mean) = self.attacked.held;
        println!(
            "  slow connections   {} per listener (40% idle, 30% slow header, 30% slow body), \
             opened within {:.1} s; held open while measured: min {}, mean {:.0} of {}",
            self.slow,
            self.attacked.ramp.as_secs_f64(),
            min,
            mean,
            3 * self.slow
        );
        let s = &self.attacked.slow_stats;
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
    }

    /// The /metrics series worth reading, as the server reported them at the end of the attack.
    fn print_metrics(&self) {
        let metrics = &self.attacked.metrics;
        println!("  /metrics at the end of the attack:");
        for line in metrics.lines().filter(|l| {
            !l.starts_with('#')
                && METRICS.iter().any(|m| {
                    l.strip_prefix(m)
                        .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
                })
        }) {
            println!("    {line}");
        }
        if metrics.starts_with("# /metrics could not") {
            println!("    {metrics}");
        }
    }

    /// The server's exit, the acknowledged audit spans lost, the chain verification, and the
    /// one-line result.
    fn print_outcome(&self) {
        let Checked {
            lost,
            stored_spans,
            verify,
            verify_exit,
        } = self.checked;
        println!(
            "  server exit        {}",
            if self.exit.success() {
                "0 after SIGTERM".to_owned()
            } else {
                format!("{} after SIGTERM (expected 0)", self.exit)
            }
        );
        let unchecked = self.unloaded.result.audit_unchecked + self.attacked.result.audit_unchecked;
        println!(
            "  audit spans        {} acknowledged, {} stored, {} lost{}{}",
            self.acked,
            self.acked - lost.len(),
            lost.len(),
            if unchecked > 0 {
                format!(" ({unchecked} more in partly rejected requests, not checked)")
            } else {
                String::new()
            },
            stored_spans
                .map(|n| format!("; {n} spans stored in all"))
                .unwrap_or_default()
        );
        for (t, sp) in lost.iter().take(10) {
            println!(
                "    lost: trace {} span {}",
                hex::encode(t),
                hex::encode(sp)
            );
        }
        println!("  chain verification (as `changetrail verify --database-url`, the key pinned):");
        for line in verify.lines() {
            println!("    {line}");
        }
        println!(
            "Result: {}",
            match (lost.is_empty(), *verify_exit == 0) {
                (true, true) => "nothing acknowledged was lost; the chain verifies.",
                (false, true) => "ACKNOWLEDGED SPANS WERE LOST; the chain verifies.",
                (true, false) => "nothing acknowledged was lost; the chain DOES NOT VERIFY.",
                (false, false) => "ACKNOWLEDGED SPANS WERE LOST and the chain DOES NOT VERIFY.",
            }
        );
    }
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// An unlabelled metric's value in /metrics text (0 when absent).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}
