//! The command line: one binary, clap subcommands, each a thin call into a `commands` module.
//! This is also the commands' reference: `changetrail <command> --help` prints the long texts at
//! the end of this file, so what a command does is written once, next to its flags.

use crate::app::commands;
use crate::app::config::Config;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

mod bench;
pub use bench::{BenchCommand, BenchHostileArgs, BenchIngestArgs};
mod proof;
pub use proof::{ProofArgs, VerifyProofArgs};

/// The log filter when neither `--log` nor `RUST_LOG` says otherwise.
pub const DEFAULT_LOG: &str = "info,sqlx=warn";

#[derive(Debug, Parser)]
#[command(
    name = "changetrail",
    version,
    about = "Signed, hash-chained audit evidence for production changes.",
    long_about = CHANGETRAIL_HELP
)]
pub struct Cli {
    /// Configuration file (default: ./changetrail.toml if it exists).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Database URL, overriding the configuration (sqlite://PATH or postgres://…).
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// Log filter when RUST_LOG is unset (e.g. info, debug, changetrail=debug).
    #[arg(long, global = true, default_value = DEFAULT_LOG, long_help = LOG_HELP)]
    pub log: String,
    /// Log lines as text (human-readable, the default) or json (one object per line, with the
    /// request's trace id and principal as fields).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "CHANGETRAIL_LOG_FORMAT",
        long_help = LOG_FORMAT_HELP
    )]
    pub log_format: crate::app::telemetry::LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (REST on :8080) on the configured database.
    #[command(long_about = SERVE_HELP)]
    Serve,
    /// Apply database migrations and exit.
    #[command(long_about = MIGRATE_HELP)]
    Migrate,
    /// Signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// API tokens.
    #[command(subcommand, long_about = TOKENS_HELP)]
    Tokens(TokensCommand),
    /// Write an offline evidence bundle (src/core/ledger/FORMAT.md) to a file; `export tiles DIR`
    /// writes the C2SP tlog-tiles files instead.
    #[command(long_about = EXPORT_HELP)]
    Export(ExportArgs),
    /// Verify a bundle file, or the database, against pinned keys.
    #[command(long_about = VERIFY_HELP)]
    Verify(VerifyArgs),
    /// Erase one entry's payload (e.g. a GDPR request); the erasure itself is logged.
    #[command(long_about = ERASE_HELP)]
    Erase(EraseArgs),
    /// Sign a checkpoint over every entry not yet covered.
    Checkpoint,
    /// Import workflow executions.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Reconcile with the Conductor server in `[conductor]`.
    #[command(subcommand)]
    Conductor(ConductorCommand),
    /// Evidence reports.
    #[command(subcommand)]
    Report(ReportCommand),
    /// Check a report directory: the manifest's signature, every file's SHA-256, the checkpoint,
    /// and (with --bundle or --database-url) every row's entries in the ledger.
    #[command(long_about = VERIFY_REPORT_HELP)]
    VerifyReport(VerifyReportArgs),
    /// Write one change's self-contained receipt (entries, proofs, cosigned checkpoint, key chain).
    #[command(long_about = proof::PROOF_HELP)]
    Proof(ProofArgs),
    /// Check a receipt offline against the ledger's pinned vkey (and a witness policy).
    #[command(long_about = proof::VERIFY_PROOF_HELP)]
    VerifyProof(VerifyProofArgs),
    /// Benchmarks (run by hand; no test asserts a timing).
    #[command(subcommand, long_about = BENCH_HELP)]
    Bench(BenchCommand),
    /// See it work: a scratch service, a few weeks of realistic changes sent through OTLP/gRPC,
    /// the SOC 2 report and the verified ledger; keeps serving until Ctrl-C. With --endpoint and
    /// --token, sends the same changes to a running service instead.
    #[command(long_about = DEMO_HELP)]
    Demo(DemoArgs),
    /// The configuration: `config defaults` prints every key with its default and meaning.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the built-in defaults file, every key commented (a starting changetrail.toml).
    #[command(long_about = CONFIG_DEFAULTS_HELP)]
    Defaults,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Send to this running service's OTLP/gRPC endpoint (e.g. http://localhost:4317) instead.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// An ingest token of that service (with --endpoint). Identities stay asserted there: that
    /// service does not trust the demo's throwaway issuer.
    #[arg(long, value_name = "T")]
    pub token: Option<String>,
    /// Weeks of changes (five services, one normal change each per week, plus the problem cases).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=52))]
    pub weeks: u32,
    /// Keep the demo's database, key and report here (a new or empty directory) instead of a
    /// scratch directory removed on exit.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Print the summary and stop instead of serving until Ctrl-C (exit 1 if the report or the
    /// ledger is not what the scenarios expect).
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
    #[command(long_about = REPORT_SOC2_HELP)]
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
    /// A C2SP tlog-policy file: the checkpoint the report rests on must carry its quorum of
    /// valid witness cosignatures (from the manifest, or the same checkpoint in the bundle or
    /// database), else UNWITNESSED.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Conductor executions (`GET /api/workflow/{id}?includeTasks=true` output or status-listener
    /// payloads), one JSON object or an array per file. Re-importing is idempotent.
    #[command(long_about = IMPORT_CONDUCTOR_HELP)]
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
pub enum ConductorCommand {
    /// One reconciliation round now, printing progress; `--since` backfills instead.
    #[command(long_about = CONDUCTOR_SYNC_HELP)]
    Sync {
        /// Import every execution updated since this time (RFC 3339, e.g.
        /// 2026-11-01T00:00:00Z, or an age such as 90d), leaving the durable cursor alone.
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate a signing key into a new file (mode 0600, never overwritten) and print its
    /// verifier key.
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
    #[command(long_about = KEYS_ROTATE_HELP)]
    Rotate {
        /// Write the new key to this new file instead of replacing ledger.key_file (needed when
        /// the key comes from ledger.signing_key or its file is read-only); then put it where
        /// the service reads its key.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a token and print it once; or, with --token-file/--token-env, register an existing
    /// one (idempotent: the same token, role and name again is a no-op).
    #[command(long_about = TOKENS_CREATE_HELP)]
    Create {
        /// What the token may do (one role each): ingest (OTLP, Conductor import), auditor
        /// (changes, reports), reviewer (ledger), admin (tokens), metrics (/metrics), gate
        /// (POST /v1/gate from a deploy workflow).
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["ingest", "auditor", "reviewer", "admin", "metrics", "gate"]))]
        role: String,
        /// A name for people (shown in lists and logs as the principal).
        #[arg(long)]
        name: String,
        /// Register the token in FILE (e.g. from `tokens generate`) instead of creating one.
        #[arg(long, value_name = "FILE", conflicts_with = "token_env")]
        token_file: Option<PathBuf>,
        /// Register the token in this environment variable instead of creating one.
        #[arg(long, value_name = "VAR")]
        token_env: Option<String>,
    },
    /// Print a fresh token without storing it anywhere (register it later with --token-file);
    /// touches no database.
    Generate,
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by id.
    Revoke { id: String },
}

#[derive(Debug, Args)]
// Not `args_conflicts_with_subcommands`: clap counts the global --database-url as a conflict.
#[command(subcommand_negates_reqs = true)]
pub struct ExportArgs {
    #[command(subcommand)]
    pub what: Option<ExportCommand>,
    /// Bundle file to write.
    #[arg(long, required = true)]
    pub out: Option<PathBuf>,
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

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Write the C2SP tlog-tiles files (checkpoint, tiles, entry bundles) to a directory.
    #[command(long_about = EXPORT_TILES_HELP)]
    Tiles(ExportTilesArgs),
}

#[derive(Debug, Args)]
pub struct ExportTilesArgs {
    /// Directory to write (created if missing); an earlier export there is brought up to date.
    pub dir: PathBuf,
    /// Also write the entry bundles (our entry bytes), which `serve` keeps behind the reviewer
    /// role unless `[tlog] public_entries` (which writes them without this flag).
    #[arg(long)]
    pub entries: bool,
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
    /// text: a human summary; json: one JSON object per finding on stdout (class, seq or size,
    /// expected, actual, detail), the summary on stderr.
    #[arg(long, default_value = "text", value_parser = clap::builder::PossibleValuesParser::new(["text", "json"]))]
    pub format: String,
    /// Signature-checking threads (default: all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// A C2SP tlog-policy file: the checkpoint the verification relies on must carry its quorum
    /// of valid witness cosignatures, else UNWITNESSED (exit 1) names the witnesses missing and
    /// how many entries lie beyond the newest witnessed checkpoint.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct EraseArgs {
    /// The entry whose payload and salt are deleted.
    #[arg(long)]
    pub seq: u64,
    /// Why (recorded in the payload.erased entry).
    #[arg(long)]
    pub reason: String,
    /// Who asked (recorded in the payload.erased entry).
    #[arg(long)]
    pub requested_by: String,
}

/// Runs the command; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    // The built-in defaults are printed without reading any configuration: they are what a
    // broken changetrail.toml is mended from.
    if let Command::Config(c) = cli.command {
        return commands::config::run(c);
    }
    // Offline: a receipt is checked with nothing but the file and the keys given.
    if let Command::VerifyProof(a) = cli.command {
        return commands::proof::verify(a);
    }
    let mut cfg = Config::load(cli.config.as_deref())?;
    if let Some(url) = &cli.database_url {
        cfg.database_url = url.clone();
    }
    match cli.command {
        Command::Serve => commands::serve::run(cfg).await,
        Command::Migrate => commands::ledger::migrate(cfg).await,
        Command::Keys(k) => commands::keys::run(cfg, k).await,
        Command::Tokens(t) => commands::tokens::run(cfg, t).await,
        Command::Export(ExportArgs {
            what: Some(ExportCommand::Tiles(t)),
            out: None,
            from: None,
            to: None,
            consistency_from: None,
        }) => commands::export_tiles::run(cfg, t).await,
        Command::Export(ExportArgs { what: Some(_), .. }) => {
            anyhow::bail!("export tiles takes none of --out, --from, --to, --consistency-from")
        }
        Command::Export(a) => commands::export::run(cfg, a).await,
        Command::Verify(a) => commands::verify::run(cfg, a, cli.database_url.is_some()).await,
        Command::Erase(a) => commands::ledger::erase(cfg, a).await,
        Command::Checkpoint => commands::ledger::checkpoint(cfg).await,
        Command::Import(ImportCommand::Conductor {
            files,
            max_lateness,
        }) => commands::ledger::import_conductor(cfg, files, max_lateness).await,
        Command::Conductor(ConductorCommand::Sync { since }) => {
            commands::conductor::sync(cfg, since).await
        }
        Command::Report(ReportCommand::Soc2(a)) => commands::report::soc2(cfg, a).await,
        Command::VerifyReport(a) => {
            commands::report::verify(cfg, a, cli.database_url.is_some()).await
        }
        Command::Bench(b) => {
            commands::bench::run(cfg, b, cli.config.as_deref(), cli.database_url.is_some()).await
        }
        Command::Proof(a) => commands::proof::write(cfg, a).await,
        Command::VerifyProof(a) => commands::proof::verify(a),
        Command::Demo(a) => commands::demo::run(a).await,
        Command::Config(c) => commands::config::run(c),
    }
}

// What `changetrail <command> --help` says beyond the one-line summaries. Plain text, wrapped at
// 100 columns, printed as written (clap re-wraps nothing without its `wrap_help` feature).

const CHANGETRAIL_HELP: &str = "\
Signed, hash-chained audit evidence for production changes.

changetrail turns deploy workflows and OpenTelemetry traces into audit evidence nobody can quietly
rewrite: every production change linked to who requested it, who approved it, which verified
identities carried it out and the runtime spans that prove what happened, each fact a signed,
hash-chained ledger entry that reviewers verify against the service or offline.

Configuration, each layer overriding the one before: the built-in defaults (`changetrail config
defaults` prints them, every key explained) -> ./changetrail.toml, or --config FILE ->
CHANGETRAIL_* environment variables (nested keys joined with \"__\", e.g.
CHANGETRAIL_LEDGER__KEY_FILE) -> command-line flags (--database-url). Unknown keys are errors.

Exit codes: 0 done; 1 failed (for verify and verify-report: tampering found, or a report the
ledger does not hold); 2 incomplete or stale (verify); 3 a usage error, and for verify and
verify-report anything that stops them from running (a configuration error, an unreadable file).";

const LOG_HELP: &str = "\
The log filter (tracing's EnvFilter syntax) when RUST_LOG is unset. `info,tower_http=warn` keeps
the per-request lines out; `changetrail=debug` also says when each report phase finished.";

const LOG_FORMAT_HELP: &str = r#"Log lines go to stderr: `text` (human-readable, the default) or `json` (one object per line,
for a log pipeline).

Every HTTP request and OTLP export is handled inside a `request` span with its method, path,
trace_id (from the caller's W3C traceparent, or a fresh random one) and, once its token is
checked, token_id, principal (the token's name) and role; every line logged while handling it
carries them. One `finished processing request` line per request gives status and latency (a 5xx
adds a `response failed` line at WARN). A token never reaches a log line: the Authorization header
is marked sensitive and only the token id is recorded. One line in json:

{"timestamp":"2026-12-01T11:47:25.802814Z","level":"INFO","message":"finished processing request","latency":"10 ms","status":200,"target":"tower_http::trace::on_response","span":{"method":"GET","path":"/v1/admin/tokens","principal":"bootstrap","role":"admin","token_id":"b926d44b928c","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","name":"request"}}"#;

const SERVE_HELP: &str = "\
Run the service on the configured database: apply migrations, create the ledger if there is none,
then serve the REST API, the web console (http://localhost:8080/), health checks and /metrics on
http.listen (default 127.0.0.1:8080), and OTLP on otlp.grpc_listen and otlp.http_listen
(127.0.0.1:4317 and :4318). What each listener accepts: /v1/openapi.json and
src/ingest/CONVENTIONS.md.

When the database holds no API token yet, it prints a bootstrap admin token once: create narrower
tokens with it (`changetrail tokens create`), then revoke it. Without a key (ledger.key_file,
default ./changetrail.key, or ledger.signing_key) it generates one, mode 0600, with a warning.
SIGTERM or Ctrl-C closes the listeners, drains the queue and signs a final checkpoint.

Production: provide your own key (ledger.key_file or CHANGETRAIL_LEDGER__SIGNING_KEY) and back it
up, set ledger.origin, use PostgreSQL, and publish the verifier key (`changetrail keys show`) to
your reviewers. Every setting: `changetrail config defaults`.";

const MIGRATE_HELP: &str = "\
Apply the database migrations (migrations/sqlite or migrations/postgres, compiled into the binary)
and exit. `serve` and the commands that write also apply them on every start.";

const TOKENS_HELP: &str = "\
API tokens. A token is `ct_<12 hex id>_<secret>`: shown once, stored only as its SHA-256, compared
in constant time, never logged. Each has one narrow role, and can do only what its role names:

  ingest    OTLP export (gRPC :4317, HTTP :4318) and POST /v1/import/conductor
  auditor   changes and SOC 2 reports (REST and console)
  reviewer  the ledger: checkpoints, entries, proofs, keys, bundles, verify
  admin     tokens
  metrics   GET /metrics
  gate      POST /v1/gate: may this change deploy this artifact now? (a workflow's HTTP task)

Creating and revoking append token.created / token.revoked entries (with the secret's hash and who
did it), so they need the signing key; creating on a new database creates the ledger.";

const TOKENS_CREATE_HELP: &str = "\
Create a token of one role and print it once on stdout; only its SHA-256 is stored.

With --token-file FILE or --token-env VAR it registers an existing token instead (from `tokens
generate`, a secret store or a compose .env): trailing line breaks are dropped, and it must be
`ct_<12 hex>_<secret>` with a secret of 32 or more characters. Idempotent: the same token, role and
name again is a no-op; another secret, role or name under that id, or a revoked one, is an error.
The secret is never printed.";

const EXPORT_HELP: &str = "\
Write an offline evidence bundle (JSON Lines; src/core/ledger/FORMAT.md \"Bundle\") that anyone can
check with `changetrail verify FILE --trusted-key VKEY`, without access to the service.

--to is extended to the next checkpoint, so every entry in the bundle is covered by a signed
checkpoint. Export after building a report, so the bundle covers the checkpoint the report was
built on (verify-report --bundle needs that, and a bundle that starts at entry 0).
--consistency-from SIZE adds a consistency proof from a reviewer's saved tree size to the
bundle's last checkpoint.

`changetrail export tiles DIR` writes the ledger as a C2SP tlog-tiles log instead (see
`export tiles --help`).";

const EXPORT_TILES_HELP: &str = "\
Write DIR/checkpoint, DIR/tile/<L>/<N>[.p/<W>] and DIR/tile/entries/<N>[.p/<W>] for the newest
checkpoint (https://c2sp.org/tlog-tiles), byte for byte what `serve` answers under [tlog] prefix,
for object storage or a CDN. Serve tiles and bundles as immutable, the checkpoint as no-cache. The
entry bundles hold the entries themselves (no payloads), which `serve` keeps for reviewers: they are
written only with --entries or [tlog] public_entries; publish them only where reviewers may read.

Incremental: when DIR/checkpoint is an older checkpoint of this ledger, only tiles that are new or
grew since are written. Every file is written to a fresh temporary name and renamed, the checkpoint
last, so a reader never sees a checkpoint whose tiles are missing; nothing is written through a
symbolic link. One export at a time per DIR (DIR/.export.lock, an empty file to leave out of the
upload). A DIR whose checkpoint names another origin, a larger tree or a root this ledger never
signed is refused (exit 1): that is a fork or a rollback.";

const VERIFY_HELP: &str = "\
Verify a bundle FILE, or without one the database (--database-url or the configuration), in one
streaming pass with flat memory: strict decoding of every line (only the canonical spelling is
accepted), contiguous sequence numbers, every prev_hash, time order, that each entry is signed by
the key in force for its sequence number (keys change only through a valid key.rotated entry
signed by a key already trusted), every signature (batched on all cores, bad ones pinpointed),
every payload against its salted commitment, every checkpoint's root and signature, consistency
with the saved state, freshness, and that every entry is covered by a checkpoint.

Against the database it also checks every stored column a bundle does not carry (leaf hashes, tree
nodes, checkpoint and key rows, the head row, erasure records) against the signed entries, and
recomputes every derived table the report and the console read (facts, spans and their bindings,
log records, the credential index, API tokens) from the signed payloads.

Findings by exit code (1 wins over 2, 2 over 0; each class: src/core/ledger/FORMAT.md):
  1  MODIFIED, BAD_SIGNATURE, UNKNOWN_KEY, MISSING, REORDERED, DUPLICATE, TIME_REGRESSION,
     CHECKPOINT_MISMATCH, BAD_CHECKPOINT, ROLLBACK, FORK, DERIVED_MISMATCH (database only),
     UNWITNESSED (--policy only: the newest checkpoint lacks the policy's quorum of witness
     cosignatures; names the witnesses missing and the entries beyond the newest witnessed one)
  2  INCOMPLETE (entries after the newest checkpoint), STALE (nothing younger than --max-age)
  0  REDACTED (a logged erasure), UNPINNED (no --trusted-key: trust from the ledger itself; warns)
  3  a usage or configuration error

Pin the ledger's first vkey (--trusted-key): rotations are followed from there, and a history
re-signed by any other key fails. A cut tail is never a silent 0: without an anchor it is
INCOMPLETE or STALE; against a saved state (--state FILE, which keeps the newest trusted checkpoint
per origin and advances only on success) it is ROLLBACK. A complete rewrite by whoever holds the
signing key cannot be detected from the ledger alone, only against an anchor kept outside the
service: a saved state, a write-once copy of the checkpoints, or a witness. Keep one. With
--policy FILE (a C2SP tlog-policy file) the witnesses' cosignatures are that anchor. To verify an
old export without STALE, pass --at the time it was exported, or --max-age off.";

const ERASE_HELP: &str = "\
Erase one entry's payload and salt (e.g. a GDPR Art. 17 request) and record it in a payload.erased
entry naming the entry, the reason and who asked. The chain still verifies; verifiers report the
entry as REDACTED (exit 0). Needs the signing key.";

const REPORT_SOC2_HELP: &str = "\
Build the SOC 2 change-management evidence for a period into DIR (over REST: POST
/v1/reports/soc2): the complete population of production changes, every exception with its
evidence, per-control results, a readable HTML page, JSON for tools, an optional reproducible
sample, and a manifest signed by the ledger key that `verify-report` checks. The files, their
columns, the exception codes and the controls: reports/README.md.

The population is every change whose change.requested fact falls in the period, in a production
environment (correlation.production_environments), recorded by an entry the report's checkpoint
covers. A bare --to date includes that whole day; the manifest records the period as [start, end)
in UTC. A checkpoint is signed first, so everything recorded so far is in the report; a progress
bar shows the fold, and RUST_LOG=changetrail=debug says when each phase finished.

--sample N --seed S ranks every population row by
SHA-256(\"changetrail/sample/v1\\n\" || seed || \"\\n\" || change_id) (hex, ascending) and takes the
first N: anyone can draw the same sample from population.csv. --catalogue FILE (or
reports.catalogue_file) tests a control catalogue of your own instead of the shipped
reports/soc2.toml.";

const VERIFY_REPORT_HELP: &str = "\
Check a report directory (as `report soc2` wrote it, or unpacked from POST /v1/reports/soc2): the
manifest's signature by a pinned key (or one the ledger's rotation entries hand trust to); every
file's SHA-256 and size, and no file missing or unlisted; the checkpoint note's signature and that
it is the manifest's; the headers, the row counts, no change listed twice, every cited sequence
number inside the checkpoint and the manifest's range; the sample drawn again.

With --bundle FILE or --database-url URL it also verifies the ledger, that the ledger's tree at the
report's size has the report's root (else CHECKPOINT_NOT_IN_LEDGER), and that every row's first and
last entries exist, are about that change, and the last has the leaf hash the row states. With
--bundle it re-derives the report from the bundle's entries alone (population, exceptions, control
results and rotation table, by the same fold and rules, with the settings the manifest records) and
names every row that differs (DERIVED_MISMATCH): a report built and signed from a database whose
derived tables were tampered with fails offline. The bundle must be a file that starts at entry 0;
memory grows with the ledger, about 6.5 KB per change. A report made with another catalogue needs
it (--catalogue).

An edited cell, a removed row or a swapped file is FILE_MODIFIED; a manifest changed to match is
BAD_SIGNATURE. Without a ledger, a key holder could sign a report of a history that never was;
only the ledger (or a bundle a reviewer kept) shows that: pass --bundle when it matters.

Exit 0 intact; 1 altered, or not what the ledger holds; 3 a usage or configuration error.";

const IMPORT_CONDUCTOR_HELP: &str = "\
Import Conductor workflow executions (the output of GET /api/workflow/{id}?includeTasks=true) or
workflow-status-listener payloads, one JSON object or an array per file; over REST: POST
/v1/import/conductor (role ingest). Which fields mean what: src/ingest/CONVENTIONS.md.

Idempotent: re-importing an execution adds only what is new; history that changed since the last
import (restart, rerun, retry, skip, removal, in-place edit) is recorded as history.rewritten. A
deciding fact that arrives longer than [evidence] max_lateness after the time it states is
LATE_EVIDENCE; --max-lateness 90d lets a backfill of older history in without it (the allowance is
recorded in each fact).";

const CONDUCTOR_SYNC_HELP: &str = "\
Ask the Conductor server in [conductor] for executions updated since the reconciler's cursor (kept
in the database), fetch each with its tasks and import what is new, as `serve` does every
poll_interval; the cursor moves past what committed, as a poll would move it. Then fetch again
the runs [conductor] recheck_per_round names (a 404 is recorded as a deletion).

With --since TIME: a one-off backfill of every execution updated since TIME. The durable cursor is
neither read nor moved (the poller keeps its place), and the facts may arrive as late as TIME is
old without LATE_EVIDENCE (each fact records the allowance). Re-importing is idempotent.

Prints each page's progress; exit 0 when the round completed, 1 when Conductor could not be read
(what committed stays committed), 3 on a usage or configuration error.";

const KEYS_ROTATE_HELP: &str = "\
Rotate the ledger's signing key: append a key.rotated entry, signed by the old key and
counter-signed by the new one, and switch to the new key. Verifiers that pinned the old key follow
the rotation. The old key file is kept as <key_file>.retired-<id>; a running server picks the new
key up by itself.

With docker compose the key is a read-only secret: `docker compose stop changetrail`, then
`docker compose run --rm changetrail keys rotate --out /var/lib/changetrail/next.key`, put the text
of that file (`docker compose run --rm --entrypoint cat changetrail
/var/lib/changetrail/next.key`) into CHANGETRAIL_SIGNING_KEY in .env, and `docker compose up -d`.
Delete next.key from the volume once the new secret is in place and backed up.";

const BENCH_HELP: &str = "\
Benchmarks, run by hand (no test asserts a timing). The figures measured on the project's
development machine, with the commands that produced them: README.md \"Benchmarks\"; notes on
reading them: tests/README.md.";

const DEMO_HELP: &str = "\
See it work. Starts the service on SQLite in a scratch directory (or --dir), with a throwaway
identity provider the service trusts, and sends --weeks weeks of changes to five services through
its real OTLP/gRPC listener, the way a deploy workflow and the deployed services emit them: normal
changes (requested and approved by verified people, deployed by a verified workload identity,
every third deploy timing out once and retried), a self-approval by someone who is not a release
approver, an approval after the deploy by an unverified requester, an emergency change nobody
reviewed, an emergency change reviewed afterwards, a rollback, an approval token replayed from
another change, a deploy key not rotated since an earlier change, and a version running in
production that no change deployed.

Then it builds the SOC 2 report (with a 10-row sample), verifies the ledger and the report, and
prints a summary (the exceptions the report found against the ones the scenarios were built to
raise, the report's path, the console URL and tokens for it) and keeps serving until Ctrl-C. A
listen address that is taken is replaced by a free port.";

const CONFIG_DEFAULTS_HELP: &str = "\
Print the built-in defaults file exactly as compiled into the binary: every configuration key with
its default value and a comment saying what it does. Copy it to changetrail.toml and keep what you
change. Reads no configuration itself.

Layers, each overriding the one before: these defaults -> ./changetrail.toml, or --config FILE ->
CHANGETRAIL_* environment variables (nested keys joined with \"__\", e.g.
CHANGETRAIL_LEDGER__ORIGIN, CHANGETRAIL_OTLP__LIMITS__MAX_SPAN_ATTRIBUTES) -> command-line flags
(--database-url). Unknown keys are errors.";
