//! The command line: one binary, clap subcommands, each a thin call into a `commands` module.

use crate::app::commands;
use crate::app::config::Config;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// The log filter when neither `--log` nor `RUST_LOG` says otherwise.
pub const DEFAULT_LOG: &str = "info,sqlx=warn";

#[derive(Debug, Parser)]
#[command(
    name = "changetrail",
    version,
    about = "Signed, hash-chained audit evidence for production changes."
)]
pub struct Cli {
    /// Configuration file (default: ./changetrail.toml if it exists).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Database URL, overriding the configuration (sqlite://PATH or postgres://…).
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// Log filter when RUST_LOG is unset (e.g. info, debug, changetrail=debug).
    #[arg(long, global = true, default_value = DEFAULT_LOG)]
    pub log: String,
    /// Log lines as text (human-readable, the default) or json (one object per line, with the
    /// request's trace id and principal as fields).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "CHANGETRAIL_LOG_FORMAT"
    )]
    pub log_format: crate::app::telemetry::LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (REST on :8080) on the configured database.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// API tokens.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Write an offline evidence bundle (LEDGER.md) to a file.
    Export(ExportArgs),
    /// Verify a bundle file, or the database, against pinned keys.
    Verify(VerifyArgs),
    /// Erase one entry's payload (e.g. a GDPR request); the erasure itself is logged.
    Erase(EraseArgs),
    /// Sign a checkpoint over every entry not yet covered.
    Checkpoint,
    /// Import workflow executions.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Evidence reports.
    #[command(subcommand)]
    Report(ReportCommand),
    /// Check a report directory: the manifest's signature, every file's SHA-256, the checkpoint,
    /// and (with --bundle or --database-url) every row's entries in the ledger.
    VerifyReport(VerifyReportArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// See it work: a scratch service, a few weeks of realistic changes sent through OTLP/gRPC,
    /// the SOC 2 report and the verified ledger; keeps serving until Ctrl-C. With --endpoint and
    /// --token, sends the same changes to a running service instead.
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Send to this running service's OTLP/gRPC endpoint (e.g. http://localhost:4317) instead.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// An ingest token of that service (with --endpoint).
    #[arg(long, value_name = "T")]
    pub token: Option<String>,
    /// Weeks of changes (five services, one normal change each per week, plus the problem cases).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=52))]
    pub weeks: u32,
    /// Keep the demo's database, key and report here (a new or empty directory) instead of a
    /// scratch directory removed on exit.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Print the summary and stop instead of serving until Ctrl-C.
    #[arg(long)]
    pub no_serve: bool,
    /// Console and REST API (a free port if taken).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http_listen: std::net::SocketAddr,
    /// OTLP/gRPC listener (a free port if taken).
    #[arg(long, default_value = "127.0.0.1:4317")]
    pub otlp_grpc_listen: std::net::SocketAddr,
    /// OTLP/HTTP listener (a free port if taken).
    #[arg(long, default_value = "127.0.0.1:4318")]
    pub otlp_http_listen: std::net::SocketAddr,
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// SOC 2 change-management evidence for a period: population.csv, exceptions.csv,
    /// controls.csv, report.html, report.json, sample.csv, manifest.json and manifest.sig.
    Soc2(Soc2Args),
}

#[derive(Debug, Args)]
pub struct Soc2Args {
    /// Period start: YYYY-MM-DD (UTC midnight) or an RFC 3339 time.
    #[arg(long, value_name = "DATE")]
    pub from: String,
    /// Period end: YYYY-MM-DD includes that whole day; an RFC 3339 time is exclusive.
    #[arg(long, value_name = "DATE")]
    pub to: String,
    /// Only changes to this environment (one of the production environments).
    #[arg(long)]
    pub environment: Option<String>,
    /// Only changes to this service.
    #[arg(long)]
    pub service: Option<String>,
    /// Directory to write (created; must not exist or be empty).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Draw a reproducible sample of N changes into sample.csv (needs --seed).
    #[arg(long, value_name = "N", requires = "seed")]
    pub sample: Option<usize>,
    /// The sample's seed, recorded in the manifest so the sample can be drawn again.
    #[arg(long, value_name = "S", requires = "sample")]
    pub seed: Option<String>,
    /// A control catalogue to use instead of the shipped one (reports/soc2.toml).
    #[arg(long, value_name = "FILE")]
    pub catalogue: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VerifyReportArgs {
    /// The report directory (as written by `report soc2`, or unpacked from the API's archive).
    pub dir: PathBuf,
    /// An offline bundle (`changetrail export`) to check the checkpoint and rows against.
    #[arg(long, value_name = "FILE")]
    pub bundle: Option<PathBuf>,
    /// The ledger's pinned verifier key (repeatable).
    #[arg(long = "trusted-key", value_name = "VKEY", required = true)]
    pub trusted_keys: Vec<String>,
    /// Signature-checking threads (default: all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// The control catalogue the report was built with, when not the shipped one (re-deriving
    /// the rows from a bundle needs it; its SHA-256 must be the manifest's).
    #[arg(long, value_name = "FILE")]
    pub catalogue: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Conductor executions (`GET /api/workflow/{id}?includeTasks=true` output or status-listener
    /// payloads), one JSON object or an array per file. Re-importing is idempotent.
    Conductor {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Allow the facts to arrive this long after the times they state (a backfill of older
        /// history, e.g. `90d`) instead of `[evidence] max_lateness`; each fact records it.
        #[arg(long, value_name = "DURATION")]
        max_lateness: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate a signing key into a new file (mode 0600) and print its verifier key.
    Generate {
        /// Where to write it (default: ledger.key_file).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The ledger origin the key is for (default: ledger.origin, else generated).
        #[arg(long)]
        origin: Option<String>,
    },
    /// Print the verifier key (vkey) of the configured signing key.
    Show,
    /// Rotate the ledger's signing key: a key.rotated entry signed by the old key.
    Rotate {
        /// Where to write the new key when the current one comes from ledger.signing_key.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a token and print it once; or, with --token-file/--token-env, register an existing
    /// one (idempotent: the same token, role and name again is a no-op).
    Create {
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["ingest", "auditor", "reviewer", "admin", "metrics"]))]
        role: String,
        #[arg(long)]
        name: String,
        /// Register the token in FILE (e.g. from `tokens generate`) instead of creating one.
        #[arg(long, value_name = "FILE", conflicts_with = "token_env")]
        token_file: Option<PathBuf>,
        /// Register the token in this environment variable instead of creating one.
        #[arg(long, value_name = "VAR")]
        token_env: Option<String>,
    },
    /// Print a fresh token without storing it anywhere (register it later with --token-file).
    Generate,
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by id.
    Revoke { id: String },
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Bundle file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// First sequence number (default 0).
    #[arg(long)]
    pub from: Option<u64>,
    /// Last sequence number (default: everything the newest checkpoint covers; extended to the
    /// next checkpoint so every entry is covered).
    #[arg(long)]
    pub to: Option<u64>,
    /// Add a consistency proof from this tree size (a reviewer's saved state) to the last checkpoint.
    #[arg(long)]
    pub consistency_from: Option<u64>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Bundle file; without it the database (--database-url or the configuration) is verified.
    pub file: Option<PathBuf>,
    /// A pinned verifier key (repeatable). Without one, trust comes from the ledger itself (UNPINNED).
    #[arg(long = "trusted-key", value_name = "VKEY")]
    pub trusted_keys: Vec<String>,
    /// Saved last-trusted checkpoint per origin; checked for rollback and forks, updated on success.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Newest checkpoint must cover an entry younger than this ("off" disables; a cut tail then
    /// goes unnoticed without --state).
    #[arg(long, default_value = "24h", value_name = "DURATION")]
    pub max_age: String,
    /// Evaluate --max-age as of this RFC 3339 time instead of now (e.g. when the bundle was exported).
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    #[arg(long, default_value = "text", value_parser = clap::builder::PossibleValuesParser::new(["text", "json"]))]
    pub format: String,
    /// Signature-checking threads (default: all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

#[derive(Debug, Args)]
pub struct EraseArgs {
    #[arg(long)]
    pub seq: u64,
    #[arg(long)]
    pub reason: String,
    #[arg(long)]
    pub requested_by: String,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Append synthetic entries through the real sequencer and report entries/s.
    Ledger {
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
    Ingest(BenchIngestArgs),
    /// The cost of late binding: runtime spans that arrive before the span binding their trace
    /// (parked, then released) against spans that arrive after it (kept on arrival).
    Binding {
        /// Traces, each one binding span and --spans runtime spans.
        #[arg(long, default_value_t = 2000)]
        traces: usize,
        #[arg(long, default_value_t = 20)]
        spans: usize,
        /// Concurrent senders.
        #[arg(long, default_value_t = 8)]
        senders: usize,
    },
    /// A ledger of synthetic changes (about 11 entries each, with a share of exceptions), then
    /// `report soc2` over the whole period and `verify-report`, each timed with its peak memory.
    Report {
        #[arg(long, default_value_t = 100_000)]
        changes: u64,
        /// The period the changes are spread over.
        #[arg(long, default_value_t = 180)]
        days: u64,
        /// Keep the database, key and report in this directory (default: a scratch directory).
        #[arg(long, value_name = "DIR")]
        keep: Option<PathBuf>,
    },
    /// Hostile input against a server of its own: the worst requests the limits allow at full
    /// admission concurrency and a thousand slow or idle connections per listener, beside an
    /// honest exporter; prints the server's peak RSS, the honest throughput against an unloaded
    /// run, and whether anything acknowledged was lost (exit 1 if so, or if the chain does not
    /// verify). The global --config FILE is passed to the server (to try other limits); without
    /// it the server runs on the built-in defaults.
    Hostile(BenchHostileArgs),
    /// Verify a bundle and report verified entries/s and peak memory.
    Verify {
        file: PathBuf,
        #[arg(long = "trusted-key", value_name = "VKEY")]
        trusted_keys: Vec<String>,
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

/// Runs the command; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    let mut cfg = Config::load(cli.config.as_deref())?;
    if let Some(url) = &cli.database_url {
        cfg.database_url = url.clone();
    }
    match cli.command {
        Command::Serve => commands::serve::run(cfg).await,
        Command::Migrate => commands::ledger::migrate(cfg).await,
        Command::Keys(k) => commands::keys::run(cfg, k).await,
        Command::Tokens(t) => commands::tokens::run(cfg, t).await,
        Command::Export(a) => commands::export::run(cfg, a).await,
        Command::Verify(a) => commands::verify::run(cfg, a, cli.database_url.is_some()).await,
        Command::Erase(a) => commands::ledger::erase(cfg, a).await,
        Command::Checkpoint => commands::ledger::checkpoint(cfg).await,
        Command::Import(ImportCommand::Conductor {
            files,
            max_lateness,
        }) => commands::ledger::import_conductor(cfg, files, max_lateness).await,
        Command::Report(ReportCommand::Soc2(a)) => commands::report::soc2(cfg, a).await,
        Command::VerifyReport(a) => {
            commands::report::verify(cfg, a, cli.database_url.is_some()).await
        }
        Command::Bench(b) => {
            commands::bench::run(cfg, b, cli.config.as_deref(), cli.database_url.is_some()).await
        }
        Command::Demo(a) => commands::demo::run(a).await,
    }
}
