//! `changetrail bench …`: the benchmarks' subcommands and their flags (run by hand; the figures
//! are in README.md "Benchmarks"). Apart from cli.rs so the command line stays one readable file.

use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Append synthetic entries through the real sequencer and report entries/s.
    #[command(long_about = BENCH_LEDGER_HELP)]
    Ledger {
        /// Entries to append.
        #[arg(long, default_value_t = 100_000)]
        entries: u64,
        /// Concurrent producers.
        #[arg(long, default_value_t = 8)]
        producers: usize,
        /// Entries per append request.
        #[arg(long, default_value_t = 64)]
        job_size: usize,
    },
    /// Load a running server's OTLP/gRPC receiver (gzip, concurrent exporters, mostly unrelated
    /// traffic with a small share of audit spans), then the same load against a do-nothing
    /// receiver in this process, and compare.
    #[command(long_about = BENCH_INGEST_HELP)]
    Ingest(BenchIngestArgs),
    /// The cost of late binding: runtime spans that arrive before the span binding their trace
    /// (parked, then released) against spans that arrive after it (kept on arrival).
    Binding {
        /// Traces, each one binding span and --spans runtime spans.
        #[arg(long, default_value_t = 2000)]
        traces: usize,
        /// Runtime spans per trace.
        #[arg(long, default_value_t = 20)]
        spans: usize,
        /// Concurrent senders.
        #[arg(long, default_value_t = 8)]
        senders: usize,
    },
    /// A ledger of synthetic changes (about 11 entries each, with a share of exceptions), then
    /// `report soc2` over the whole period and `verify-report`, each timed with its peak memory.
    #[command(long_about = BENCH_REPORT_HELP)]
    Report {
        /// Synthetic changes to append.
        #[arg(long, default_value_t = 100_000)]
        changes: u64,
        /// The period the changes are spread over.
        #[arg(long, default_value_t = 180)]
        days: u64,
        /// Keep the database, key and report in this directory (default: a scratch directory).
        #[arg(long, value_name = "DIR")]
        keep: Option<PathBuf>,
    },
    /// The change list over `bench report`'s synthetic ledger: a page for a day, a month and
    /// every change from the per-change summary, beside folding the period (the baseline), and
    /// what building and keeping the summary cost, and the four keys of a month and of every day
    /// (`GET /v1/delivery`). Exit 1 if the two pages differ.
    List {
        /// Synthetic changes to append.
        #[arg(long, default_value_t = 100_000)]
        changes: u64,
        /// The period the changes are spread over.
        #[arg(long, default_value_t = 180)]
        days: u64,
        /// Keep the database and key in this directory; a ledger already there is used as it is
        /// (`bench report --keep DIR` makes one).
        #[arg(long, value_name = "DIR")]
        keep: Option<PathBuf>,
    },
    /// Deploy gate decisions (read, judge, decide, record, commit) over `bench report`'s
    /// synthetic ledger, one at a time and eight at once, beside the read and judgement alone.
    Gate {
        /// Synthetic changes to append.
        #[arg(long, default_value_t = 100_000)]
        changes: u64,
        /// The period the changes are spread over.
        #[arg(long, default_value_t = 180)]
        days: u64,
        /// Decisions per phase.
        #[arg(long, default_value_t = 2_000)]
        decisions: u64,
        /// Keep the database and key in this directory; a ledger already there is used as it is
        /// (`bench report --keep DIR` makes one).
        #[arg(long, value_name = "DIR")]
        keep: Option<PathBuf>,
    },
    /// Hostile input against a server of its own: the worst requests the limits allow at full
    /// admission concurrency and a thousand slow or idle connections per listener, beside an
    /// honest exporter; prints the server's peak RSS, the honest throughput against an unloaded
    /// run, and whether anything acknowledged was lost (exit 1 if so, or if the chain does not
    /// verify). The global --config FILE is passed to the server (to try other limits); without
    /// it the server runs on the built-in defaults.
    #[command(long_about = BENCH_HOSTILE_HELP)]
    Hostile(BenchHostileArgs),
    /// Verify a bundle and report verified entries/s and peak memory.
    Verify {
        /// The bundle (`changetrail export`).
        file: PathBuf,
        /// The ledger's pinned verifier key (repeatable).
        #[arg(long = "trusted-key", value_name = "VKEY")]
        trusted_keys: Vec<String>,
        /// Signature-checking threads (default: all cores).
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
}

#[derive(Debug, Args)]
pub struct BenchIngestArgs {
    /// The server's OTLP/gRPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    pub endpoint: String,
    /// A token with role `ingest`.
    #[arg(long, env = "CHANGETRAIL_BENCH_TOKEN")]
    pub token: String,
    /// The server's REST base URL and a `metrics` token, to report its peak memory.
    #[arg(long)]
    pub metrics_url: Option<String>,
    /// A token with role `metrics` (with --metrics-url).
    #[arg(long, env = "CHANGETRAIL_BENCH_METRICS_TOKEN")]
    pub metrics_token: Option<String>,
    /// How long each phase sends.
    #[arg(long, default_value = "20s")]
    pub duration: String,
    /// Concurrent exporters (each one request at a time, like a collector's sending queue).
    #[arg(long, default_value_t = 8)]
    pub exporters: usize,
    /// Spans per export request.
    #[arg(long, default_value_t = 512)]
    pub batch: usize,
    /// Share of spans that carry the contract attributes (audit evidence).
    #[arg(long, default_value_t = 0.01)]
    pub audit_share: f64,
    /// Offered load in spans/s (0: as fast as the receiver answers).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Skip the do-nothing receiver comparison.
    #[arg(long)]
    pub no_baseline: bool,
}

#[derive(Debug, Args)]
pub struct BenchHostileArgs {
    /// How long each phase (unloaded, then under attack) measures the honest exporter.
    #[arg(long, default_value = "15s", value_name = "DURATION")]
    pub duration: String,
    /// Attacking tasks, half on OTLP/HTTP and half on OTLP/gRPC (protobuf, gzip), all with one
    /// ingest token, each sending the worst requests back to back.
    #[arg(long, default_value_t = 16)]
    pub attackers: usize,
    /// Idle, slow-header and slow-body connections held open on each listener (REST, OTLP gRPC,
    /// OTLP HTTP); one the server closes is replaced at once. Capped by the open-files limit.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub slow_connections: usize,
    /// Only these attack requests (comma-separated: amplification, dense-max, dense-fit,
    /// evidence, nested), to see what each costs; default all.
    #[arg(long, value_delimiter = ',', value_name = "KINDS")]
    pub attacks: Vec<String>,
    /// Slow bodies use the attackers' token too. By default they have an ingest token of their
    /// own: OTLP/HTTP holds a body's announced length in its sender's share, so with one token
    /// the slow bodies hold all of it and the worst requests are only ever refused.
    #[arg(long)]
    pub one_token: bool,
    /// Honest exporters (OTLP/gRPC, gzip, 1% audit spans), each one request at a time.
    #[arg(long, default_value_t = 4)]
    pub exporters: usize,
    /// Spans per honest export request.
    #[arg(long, default_value_t = 512)]
    pub batch: usize,
    /// Keep the server's scratch directory (database, key, server.log) here instead of deleting
    /// it; a new or empty directory.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
}

const BENCH_LEDGER_HELP: &str = "\
Append synthetic entries through the real sequencer and writer, and report entries/s and the
per-entry cost split (encode, hash, sign, storage and commit).

Without --database-url it uses a scratch SQLite database and key, deleted afterwards; with one it
appends synthetic entries to that database: use a scratch database.";

const BENCH_INGEST_HELP: &str = "\
Load a running server's OTLP/gRPC receiver: concurrent exporters (each one request at a time, like
a collector's sending queue), gzip, mostly unrelated spans with a share of audit spans (deploy
attempts and their trace-mates). Then the same load against a do-nothing OTLP receiver in this
process, and the ratio. Create an `ingest` and a `metrics` token first:

  changetrail bench ingest --token $INGEST --metrics-url http://127.0.0.1:8080 \\
      --metrics-token $METRICS --duration 20s

--rate caps the offered load (latency below saturation); --no-baseline skips the do-nothing
receiver.";

const BENCH_REPORT_HELP: &str = "\
Append a ledger of --changes synthetic changes over --days days through the real writer (about
eleven facts per change, from spans and Conductor alike; every 50th change self-approved, every
97th approved late, every 131st rejected and deployed, every 199th an emergency, every 211th a
rollback, every 500th leaving an unlinked version), timing the appends; then run `report soc2`
over the whole period and `verify-report` as child processes, timing each and reading its peak RSS
from /proc.

--keep DIR keeps the database, key and report, to run `report soc2`, `verify-report` or `verify`
again on that ledger: --database-url sqlite://DIR/bench-report.db with
CHANGETRAIL_LEDGER__KEY_FILE=DIR/bench-report.key. With --database-url it appends to that database
instead: use a scratch one.";

const BENCH_HOSTILE_HELP: &str = "\
Hostile input against a server of its own (a scratch SQLite database; the built-in defaults, or
the global --config FILE to try other limits): one ingest token sending the worst requests the
limits allow back to back (the 52 KB amplification request, 16 MiB of spans with 128 empty
attributes and events each, evidence spans with 128 x 16 KiB values, arrays nested to the depth
limit) from --attackers senders, half OTLP/HTTP and half OTLP/gRPC; --slow-connections idle,
slow-header and slow-body connections on each listener; beside an honest exporter (--exporters x
--batch spans, 1% audit).

It prints the server's peak RSS (target at most 1 GiB), the honest exporter's throughput against an
unloaded run (target at least 0.5x), and whether anything acknowledged was lost; exit 1 if so, or
if the chain does not verify. The targets are printed, not enforced.";
