//! Building the service: storage, key, ledger, sequencer and listeners, bound before anything is
//! served so tests can ask for port 0 and read the real port back.

use crate::api::{self, AppState};
use crate::app::config::{Config, ListenersConfig};
use crate::app::keyfile;
use crate::app::serve;
use crate::auth::{self, Role};
use crate::ingest::{self, Ingestor};
use crate::pipeline::{Appender, LedgerWriter, spawn_sequencer};
use crate::storage::Store;
use crate::sys::now_ns;
use anyhow::Context;
use axum::http::header::AUTHORIZATION;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;

/// How long shutdown waits for the sequencer to drain before giving up.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

pub struct App {
    pub http_addr: SocketAddr,
    pub otlp_grpc_addr: SocketAddr,
    pub otlp_http_addr: SocketAddr,
    /// The bootstrap admin token, when this start created it (shown once, never stored).
    pub bootstrap_token: Option<String>,
    pub writer: Arc<LedgerWriter>,
    pub appender: Appender,
    pub ingestor: Arc<Ingestor>,
    pub store: Store,
    /// Stops the listeners; the sequencer is stopped after them, so accepted requests commit.
    shutdown: CancellationToken,
    sequencer_stop: CancellationToken,
    listeners: Vec<(TcpListener, axum::Router, serve::Endpoint)>,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    sequencer: tokio::task::JoinHandle<()>,
}

/// Connects, migrates, loads (or on a fresh ledger generates) the key and creates the ledger.
pub async fn open_ledger(
    cfg: &Config,
    allow_generate: bool,
) -> anyhow::Result<(Store, Arc<LedgerWriter>)> {
    let store = Store::connect(&cfg.database_url, &cfg.storage_options())
        .await
        .with_context(|| format!("cannot open the database {}", redact_url(&cfg.database_url)))?;
    store.migrate().await.context("cannot apply migrations")?;
    let head = store.head().await?;
    let loaded = keyfile::load_signing_key(&cfg.ledger, head.as_ref(), allow_generate)?;
    let writer = Arc::new(LedgerWriter::new(
        store.clone(),
        loaded.key,
        loaded.source,
        cfg.ledger.checkpoint_every,
    ));
    let row = writer.ensure_ledger().await?;
    if head.is_none() {
        tracing::info!(origin = %row.head.origin, vkey = %writer.key().vkey(), "Created a new ledger.");
    }
    adopt_tokens(&store, &writer).await?;
    // Entries no checkpoint covers yet get one now: left by a run that stopped abruptly, or
    // appended by a server running beside this command since its last checkpoint (writers share
    // the chain, so either is normal).
    if row.head.size > row.checkpoint_size {
        let uncovered = row.head.size - row.checkpoint_size;
        writer.checkpoint().await?;
        tracing::info!(
            uncovered,
            size = row.head.size,
            "Signed a checkpoint over entries no checkpoint covered yet."
        );
    }
    Ok((store, writer))
}

/// Tokens made before the ledger recorded them get their `token.created` entries once, the first
/// time a version that records tokens opens the ledger; from then on every token is created
/// through the ledger, and `verify` names any row that none produced.
async fn adopt_tokens(store: &Store, writer: &LedgerWriter) -> anyhow::Result<()> {
    let rows = store.tokens().await?;
    if rows.is_empty() || !store.token_entries().await?.is_empty() {
        return Ok(());
    }
    writer.adopt_tokens(&rows).await?;
    tracing::warn!(
        tokens = rows.len(),
        "Recorded the existing API tokens in the ledger (made before tokens were recorded)."
    );
    Ok(())
}

/// A listener's limits from `[listeners]`, with its own request deadline.
fn limits(l: &ListenersConfig, request_timeout: Duration) -> serve::Limits {
    serve::Limits {
        max_connections: l.max_connections,
        header_read_timeout: l.header_read_timeout,
        idle_timeout: l.idle_timeout,
        request_timeout,
        min_body_rate: l.min_body_rate,
        body_rate_grace: l.body_rate_grace,
        http2_max_concurrent_streams: l.http2_max_concurrent_streams,
        http2_keepalive_interval: l.http2_keepalive_interval,
        http2_keepalive_timeout: l.http2_keepalive_timeout,
    }
}

/// `postgres://user:secret@host/db?password=x` → `postgres://user:***@host/db?password=***` for
/// messages: PostgreSQL URLs may carry the password in the userinfo or in the query.
pub fn redact_url(url: &str) -> String {
    let Some(s) = url.find("://") else {
        return url.to_owned();
    };
    let (base, query) = match url[s + 3..].find('?').map(|q| q + s + 3) {
        Some(q) => (&url[..q], Some(&url[q + 1..])),
        None => (url, None),
    };
    // The userinfo ends at the last '@' before the query (the query may hold paths with '@',
    // e.g. sslrootcert); a password may hold '/' or '#' when it was not percent-encoded.
    let mut out = match base[s + 3..].rfind('@').map(|at| at + s + 3) {
        Some(at) => match base[s + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &base[..s + 3], &base[at..]),
            None => base.to_owned(),
        },
        // An unencoded '?' in a password puts its '@' in the "query": show nothing of either.
        None if query.is_some_and(|q| q.contains('@')) => {
            return format!("{}***", &url[..s + 3]);
        }
        None => base.to_owned(),
    };
    if let Some(q) = query {
        let pairs: Vec<String> = q
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

impl App {
    pub async fn build(cfg: Config) -> anyhow::Result<App> {
        let (tls, witnessing) = (cfg.tls()?, witness_setup(&cfg)?); // before anything starts
        let (store, writer) = open_ledger(&cfg, true).await?;
        let bootstrap_token = if store.tokens().await?.is_empty() {
            let (row, token) = auth::issue("bootstrap", Role::Admin, now_ns());
            writer
                .create_token(&row, "changetrail serve (the first start's admin token)")
                .await?;
            Some(token)
        } else {
            None
        };
        // One verifier for ingest and the API, its issuers' keys current and recorded.
        let (identity, wake) = ingest::issuers::with_wake(cfg.identity_verifier()?);
        let refresher = Arc::new(ingest::issuers::Refresher::new(
            &cfg.key_sources(),
            identity.clone(),
            writer.clone(),
        )?);
        refresher.start().await?;
        let shutdown = CancellationToken::new();
        tokio::spawn(refresher.run(wake, shutdown.clone()));
        let sequencer_stop = CancellationToken::new();
        let (appender, sequencer) =
            spawn_sequencer(writer.clone(), cfg.sequencer(), sequencer_stop.clone());
        let mut ingest_cfg = cfg.ingest()?;
        ingest_cfg.identity = identity.clone();
        let mut ingestor = Ingestor::new(
            appender.clone(),
            crate::auth::Authenticator::cached(store.clone(), std::time::Duration::from_secs(5)),
            crate::read::history::History::new(store.clone()),
            ingest_cfg,
        );
        if !cfg.otlp.journal_dir.as_os_str().is_empty() {
            let secret = writer.key().derive_secret(ingest::journal::KEY_LABEL);
            let journal = ingest::journal::Journal::open(
                &cfg.otlp.journal_dir,
                &secret,
                cfg.otlp.journal_max_bytes,
                cfg.otlp.late_binding_window,
            )
            .with_context(|| {
                format!(
                    "cannot open the parking journal {} ([otlp] journal_dir)",
                    cfg.otlp.journal_dir.display()
                )
            })?;
            ingestor = ingestor.with_journal(journal);
        }
        let ingestor = Arc::new(ingestor);
        let replay = ingestor
            .replay_journal()
            .context("cannot read the parking journal")?;
        if replay.records > 0 || replay.foreign_segments > 0 || replay.damaged > 0 {
            tracing::info!(
                records = replay.records,
                expired = replay.expired,
                foreign_segments = replay.foreign_segments,
                damaged = replay.damaged,
                "Parked spans read back from the parking journal."
            );
        }
        if replay.foreign_segments > 0 {
            tracing::warn!(
                segments = replay.foreign_segments,
                "Parking journal segments written under another signing key were skipped."
            );
        }
        // Traces bound elsewhere (or here before a restart) release what waits for them here.
        tokio::spawn(ingest::restore::run_binding_sync(
            ingestor.clone(),
            writer.clone(),
            cfg.otlp.binding_sync_interval,
            shutdown.clone(),
        ));
        spawn_runtime(&cfg, &ingestor, &store, &appender, &shutdown).await?;
        spawn_reconciler(&cfg, &ingestor, &store, &shutdown)?;
        // The change list's index, kept caught up with the chain (a list request also takes a
        // step, so it never lags more than a step behind what was committed before it).
        if !cfg.reports.summary_refresh.is_zero() {
            tokio::spawn(crate::read::summary::run_summarizer(
                store.clone(),
                cfg.criteria(),
                cfg.reports.summary_refresh,
                shutdown.clone(),
            ));
        }
        let bind = |addr: SocketAddr, what: &'static str| async move {
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} ({what})"))
        };
        let http = bind(cfg.http.listen, "http.listen").await?;
        let grpc = bind(cfg.otlp.grpc_listen, "otlp.grpc_listen").await?;
        let otlp_http = bind(cfg.otlp.http_listen, "otlp.http_listen").await?;
        let (http_addr, otlp_grpc_addr) = (http.local_addr()?, grpc.local_addr()?);
        let otlp_http_addr = otlp_http.local_addr()?;
        let state = AppState::new(store.clone(), Some(appender.clone()))
            .with_writer(writer.clone())
            .with_metrics(ingestor.clone(), writer.clone())
            .with_reports(cfg.report_settings(None)?, writer.clone())
            .with_annotations(spawn_annotator(&cfg, &store, &shutdown)?)
            .with_alerts(spawn_alerter(&cfg, &store, &writer, &shutdown).await?)
            .with_witnessing(spawn_witnesses(
                &cfg, witnessing, &store, &ingestor, &shutdown,
            )?)
            .with_correlation(correlation(&cfg, identity)?)
            .with_tlog(cfg.tlog.prefix.clone(), cfg.tlog.public_entries);
        // Connection metrics go where /metrics reads the ingest counters from.
        let endpoint = |name, request_timeout| serve::Endpoint {
            name,
            limits: limits(&cfg.listeners, request_timeout),
            metrics: ingestor.metrics.clone(),
        };
        let l = &cfg.listeners;
        let listeners = vec![
            (
                http,
                api::router(state),
                endpoint("api", l.api_request_timeout),
            ),
            (
                grpc,
                ingest::grpc::router(ingestor.clone()),
                endpoint("otlp_grpc", l.request_timeout),
            ),
            (
                otlp_http,
                ingest::http::router(ingestor.clone()),
                endpoint("otlp_http", l.request_timeout),
            ),
        ];
        Ok(App {
            http_addr,
            otlp_grpc_addr,
            otlp_http_addr,
            bootstrap_token,
            writer,
            appender,
            ingestor,
            store,
            shutdown,
            sequencer_stop,
            listeners,
            tls,
            sequencer,
        })
    }

    /// Cancelling this token stops the service: listeners first (requests in flight finish),
    /// then the queue drains and a final checkpoint is signed.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub async fn run(self) -> anyhow::Result<()> {
        let mut servers = Vec::new();
        for (listener, router, endpoint) in self.listeners {
            // Tokens must never reach a log line, whatever a layer decides to print.
            let router = router
                .layer(
                    tower_http::trace::TraceLayer::new_for_http()
                        .make_span_with(|req: &axum::extract::Request| {
                            crate::app::telemetry::request_span(req)
                        })
                        // One line per request: status and latency, in the request's span.
                        .on_response(
                            tower_http::trace::DefaultOnResponse::new().level(tracing::Level::INFO),
                        )
                        // A 5xx (overload included) is worth a warning, not an error page.
                        .on_failure(
                            tower_http::trace::DefaultOnFailure::new().level(tracing::Level::WARN),
                        ),
                )
                .layer(SetSensitiveRequestHeadersLayer::new(std::iter::once(
                    AUTHORIZATION,
                )));
            servers.push(tokio::spawn(serve::serve(
                listener,
                router,
                self.tls.clone(),
                self.shutdown.clone(),
                DRAIN_DEADLINE,
                endpoint,
            )));
        }
        for s in servers {
            let _ = s.await;
        }
        // Listeners are closed and their requests answered: the runtime minutes still held are
        // appended while the sequencer still takes work; then it drains.
        self.ingestor.flush_runtime(true).await;
        self.sequencer_stop.cancel();
        if tokio::time::timeout(DRAIN_DEADLINE, self.sequencer)
            .await
            .is_err()
        {
            tracing::error!("The sequencer did not drain within {DRAIN_DEADLINE:?}.");
        }
        self.store.close().await;
        Ok(())
    }
}

/// `[suspects]`: runtime minutes appended as they close, and deploys compared once their window
/// has passed.
async fn spawn_runtime(
    cfg: &Config,
    ingestor: &Arc<ingest::Ingestor>,
    store: &Store,
    appender: &crate::pipeline::Appender,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    if !cfg.suspects.enabled {
        return Ok(());
    }
    crate::read::suspects::start(store).await?;
    tokio::spawn(ingest::runtime::run_runtime_flush(
        ingestor.clone(),
        cfg.suspects.flush_interval,
        shutdown.clone(),
    ));
    tokio::spawn(crate::read::suspects::run_comparer(
        store.clone(),
        appender.clone(),
        cfg.criteria(),
        cfg.suspects.comparer(cfg.evidence.max_clock_skew),
        shutdown.clone(),
    ));
    Ok(())
}

/// How the change endpoints fold, judge and link, from the configuration.
fn correlation(
    cfg: &Config,
    identity: crate::core::evidence::identity::IdentityVerifier,
) -> anyhow::Result<api::Correlation> {
    Ok(api::Correlation {
        criteria: cfg.criteria(),
        identity,
        max_clock_skew_ns: i64::try_from(cfg.evidence.max_clock_skew.as_nanos())
            .unwrap_or(i64::MAX),
        trace_url: cfg.links.trace_url()?,
        suspects: cfg
            .suspects
            .enabled
            .then(|| cfg.suspects.reading(cfg.evidence.max_clock_skew)),
    })
}

/// Conductor reconciliation, when `[conductor] url` is set. It runs on its own: a Conductor
/// that is down or slow delays nothing but it.
fn spawn_reconciler(
    cfg: &Config,
    ingestor: &Arc<Ingestor>,
    store: &Store,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    if !cfg.conductor.enabled() {
        return Ok(());
    }
    let reconciler = crate::conductor::Reconciler::new(
        cfg.conductor.settings(),
        crate::conductor::Sinks {
            appender: ingestor.appender.clone(),
            store: store.clone(),
            policy: ingestor.config.policy.clone(),
            identity: ingestor.config.identity.clone(),
            max_clock_skew_ns: ingestor.config.max_clock_skew_ns,
            metrics: ingestor.metrics.clone(),
        },
    )
    .map_err(anyhow::Error::msg)?;
    tracing::info!(
        server = %crate::conductor::shown_url(&cfg.conductor.url),
        "Reconciling with Conductor."
    );
    tokio::spawn(Arc::new(reconciler).run(shutdown.clone()));
    Ok(())
}

/// `[tlog]`: the policy file read and checked, and the witness vkeys parsed (type 0x04). A bad
/// vkey or policy stops the start with the reason: running without the witnesses the operator
/// asked for would look witnessed and not be.
type WitnessSetup = (
    Option<Arc<crate::core::ledger::policy::Policy>>,
    Vec<crate::tlog::witness::Witness>,
);

fn witness_setup(cfg: &Config) -> anyhow::Result<WitnessSetup> {
    use crate::core::ledger::cosign::CosignerKey;
    let t = &cfg.tlog;
    let policy = if t.policy_file.trim().is_empty() {
        None
    } else {
        let path = std::path::Path::new(t.policy_file.trim());
        let policy =
            crate::app::commands::verify::load_policy(path).context("[tlog] policy_file")?;
        Some(Arc::new(policy))
    };
    let mut witnesses = Vec::with_capacity(t.witnesses.len());
    for (n, w) in t.witnesses.iter().enumerate() {
        let key =
            CosignerKey::parse(&w.vkey).with_context(|| format!("tlog.witnesses[{n}].vkey"))?;
        witnesses.push(crate::tlog::witness::Witness {
            url: w.url.trim().to_owned(),
            key,
        });
    }
    Ok((policy, witnesses))
}

/// A witness client for `[[tlog.witnesses]]`, and the policy's view for the API and /metrics.
fn spawn_witnesses(
    cfg: &Config,
    (policy, witnesses): WitnessSetup,
    store: &Store,
    ingestor: &Arc<Ingestor>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<api::Witnessing>> {
    use crate::tlog::witness::{WitnessClient, Witnessing};
    let state = Arc::new(Witnessing::default());
    if witnesses.is_empty() && policy.is_none() {
        return Ok(None);
    }
    tracing::info!(
        witnesses = witnesses.len(),
        policy = policy.is_some(),
        "Asking witnesses to cosign checkpoints."
    );
    WitnessClient {
        store: store.clone(),
        witnesses,
        policy: policy.clone(),
        timeout: cfg.tlog.witness_timeout,
        metrics: ingestor.metrics.clone(),
        witnessing: state.clone(),
    }
    .spawn(shutdown.clone())?;
    Ok(policy.map(|policy| api::Witnessing { policy, state }))
}

/// Alerts, when `[alerts]` names a destination; the alerter's counters for `/metrics`.
async fn spawn_alerter(
    cfg: &Config,
    store: &Store,
    writer: &Arc<LedgerWriter>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<Arc<crate::notify::alerts::Stats>>> {
    use crate::notify::alerts::{Alerter, Destination, Stats};
    let a = &cfg.alerts;
    if !a.enabled() {
        return Ok(None);
    }
    let secrets = |m: &std::collections::BTreeMap<String, crate::app::config::Secret>| {
        m.iter()
            .map(|(k, v)| (k.clone(), v.expose().to_owned()))
            .collect::<Vec<_>>()
    };
    let mut destinations = Vec::new();
    if !a.otlp.endpoint.trim().is_empty() {
        let exporter = crate::notify::otlp::LogsExporter::new(
            &a.otlp.endpoint,
            &secrets(&a.otlp.headers),
            a.timeout,
        )
        .map_err(|e| anyhow::anyhow!("alerts.otlp: {e}"))?;
        destinations.push(Destination::Otlp(exporter));
    }
    for (n, w) in a.webhooks.iter().enumerate() {
        let optional =
            |s: &crate::app::config::Secret| (!s.is_empty()).then(|| s.expose().to_owned());
        let (bearer, hmac) = (optional(&w.bearer_token), optional(&w.hmac_secret));
        let hook = crate::notify::webhook::Webhook::new(
            crate::notify::webhook::WebhookSpec {
                name: &w.name(),
                url: w.url.expose(),
                format: w.format,
                bearer_token: bearer.as_deref(),
                hmac_secret: hmac.as_deref(),
                headers: secrets(&w.headers),
            },
            a.timeout,
        )
        // Not the error's text: it may quote the URL, which may be the credential.
        .map_err(|_| {
            anyhow::anyhow!(
                "alerts.webhooks[{n}] could not be set up (its URL or a header is not valid)"
            )
        })?;
        destinations.push(Destination::Webhook(Box::new(hook)));
    }
    // Switched on for the first time: alerts start from the head as it is now, before any
    // listener takes a request, so everything received from here on is looked at.
    if store.alert_cursor().await?.is_none() {
        let head = store
            .head()
            .await?
            .map_or(-1, |h| i64::try_from(h.head.size).unwrap_or(i64::MAX) - 1);
        store.move_alert_cursor(None, head).await?;
    }
    let stats = Arc::new(Stats::default());
    let alerter = Alerter {
        store: store.clone(),
        writer: writer.clone(),
        criteria: cfg.criteria(),
        destinations,
        interval: a.interval,
        timeout: a.timeout,
        max_backoff: a.max_backoff,
        console_url: cfg.links.console_url()?,
        unlinked_after: a.unlinked_after,
        stats: stats.clone(),
    };
    tokio::spawn(alerter.run(shutdown.clone()));
    Ok(Some(stats))
}

/// Deploy markers for the tracing backend, when `[annotations.otlp]` names an endpoint; the
/// annotator's counters for `/metrics`.
fn spawn_annotator(
    cfg: &Config,
    store: &Store,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<Arc<crate::notify::annotate::Stats>>> {
    let a = &cfg.annotations.otlp;
    if a.endpoint.trim().is_empty() {
        return Ok(None);
    }
    let headers: Vec<(String, String)> = a
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.expose().to_owned()))
        .collect();
    let exporter = crate::notify::otlp::LogsExporter::new(&a.endpoint, &headers, a.timeout)
        .map_err(|e| anyhow::anyhow!("annotations.otlp: {e}"))?;
    let stats = Arc::new(crate::notify::annotate::Stats::default());
    let annotator = crate::notify::annotate::Annotator {
        store: store.clone(),
        criteria: cfg.criteria(),
        exporter,
        interval: a.interval,
        stats: stats.clone(),
    };
    tokio::spawn(annotator.run(shutdown.clone()));
    Ok(Some(stats))
}
