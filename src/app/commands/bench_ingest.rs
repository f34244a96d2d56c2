//! `changetrail bench ingest`: an OTLP/gRPC load generator (tonic client, gzip, concurrent
//! exporters, realistic batches), run against a changetrail server and against a do-nothing
//! receiver started in this process, with throughput, latency, retries and memory reported.

use crate::app::cli::BenchIngestArgs;
use anyhow::Context;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::codec::CompressionEncoding;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// Spans per request that are evidence: deploy spans and the service spans of their traces.
fn audit_spans(batch: usize, share: f64) -> usize {
    ((batch as f64) * share).round() as usize
}

/// One request's worth of spans: mostly HTTP server traffic, a share of deploy-workflow spans
/// with the contract attributes (a deploy step and the service spans of its trace).
fn make_request(batch: usize, audit_share: f64, seed: &mut u64) -> ExportTraceServiceRequest {
    let mut next = || {
        // xorshift: cheap, good enough for unique-looking ids.
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    };
    let now = crate::sys::now_ns() as u64;
    let audit = audit_spans(batch, audit_share);
    let mut spans = Vec::with_capacity(batch);
    let mut deploy_trace = [0u8; 16];
    for i in 0..batch {
        let mut trace = [0u8; 16];
        trace[..8].copy_from_slice(&next().to_be_bytes());
        trace[8..].copy_from_slice(&next().to_be_bytes());
        let is_audit = i < audit;
        if is_audit && i % 4 != 0 {
            trace = deploy_trace; // service spans of the deploy's own trace
        } else if is_audit {
            deploy_trace = trace;
        }
        let mut attributes = vec![
            kv("http.request.method", "GET"),
            kv("url.path", "/api/v1/payments/12345"),
            kv("http.route", "/api/v1/payments/{id}"),
            kv("server.address", "payments.internal"),
            kv("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64)"),
            KeyValue {
                key: "http.response.status_code".into(),
                value: Some(AnyValue {
                    value: Some(Value::IntValue(200)),
                }),
                ..Default::default()
            },
        ];
        let name = if is_audit && i % 4 == 0 {
            attributes.push(kv("cicd.pipeline.run.id", &format!("wf-{:x}", next())));
            attributes.push(kv(
                "changetrail.change.id",
                &format!("CHG-{}", next() % 100_000),
            ));
            attributes.push(kv("cicd.pipeline.task.type", "deploy"));
            attributes.push(kv("cicd.pipeline.task.name", "deploy"));
            attributes.push(kv(
                "cicd.pipeline.task.run.id",
                &format!("task-{:x}", next()),
            ));
            attributes.push(kv("cicd.pipeline.task.run.result", "success"));
            "deploy"
        } else {
            "GET /api/v1/payments/{id}"
        };
        spans.push(Span {
            trace_id: trace.to_vec(),
            span_id: next().to_be_bytes().to_vec(),
            name: name.into(),
            kind: 2,
            start_time_unix_nano: now - 2_000_000,
            end_time_unix_nano: now,
            attributes,
            ..Default::default()
        });
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "payments"),
                    kv("service.version", "1.42.0"),
                    kv("deployment.environment.name", "production"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// (trace id, span id) of every audit span a server acknowledged, so a caller can check later
/// that each one is stored.
pub(crate) type AckedAudit = Arc<Mutex<Vec<([u8; 16], [u8; 8])>>>;

#[derive(Default)]
struct Tally {
    spans_ok: AtomicU64,
    audit_ok: AtomicU64,
    audit_unchecked: AtomicU64,
    requests: AtomicU64,
    rejected_spans: AtomicU64,
    retried: AtomicU64,
    failed: AtomicU64,
}

pub(crate) struct PhaseResult {
    pub(crate) secs: f64,
    pub(crate) spans_ok: u64,
    pub(crate) audit_ok: u64,
    /// Audit spans in acknowledged requests that were partly rejected: which of them the server
    /// kept is not known, so they are not in the `acked` list.
    pub(crate) audit_unchecked: u64,
    pub(crate) requests: u64,
    pub(crate) rejected: u64,
    pub(crate) retried: u64,
    pub(crate) failed: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
}

/// `a.exporters` honest exporters sending `a.batch`-span requests for `duration`; with `acked`,
/// the ids of the audit spans of every fully acknowledged request are added to it.
pub(crate) async fn phase(
    endpoint: &str,
    token: Option<&str>,
    a: &BenchIngestArgs,
    duration: Duration,
    acked: Option<AckedAudit>,
) -> anyhow::Result<PhaseResult> {
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let deadline = started + duration;
    let per_exporter_interval = (a.rate > 0)
        .then(|| Duration::from_secs_f64(a.batch as f64 * a.exporters as f64 / a.rate as f64));
    let mut tasks = Vec::new();
    for e in 0..a.exporters {
        let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())?
            .connect()
            .await
            .with_context(|| format!("cannot connect to {endpoint}"))?;
        let mut client = TraceServiceClient::new(channel)
            .send_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(4 << 20);
        let tally = tally.clone();
        let token = token.map(|t| format!("Bearer {t}"));
        let (batch, share) = (a.batch, a.audit_share);
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ ((e as u64 + 1) << 32) ^ crate::sys::now_ns() as u64;
            let mut latencies = Vec::new();
            let mut next_send = Instant::now();
            while Instant::now() < deadline {
                if let Some(iv) = per_exporter_interval {
                    tokio::time::sleep_until(next_send.into()).await;
                    next_send += iv;
                }
                let req = make_request(batch, share, &mut seed);
                let t0 = Instant::now();
                loop {
                    let mut r = tonic::Request::new(req.clone());
                    r.set_timeout(Duration::from_secs(10));
                    if let Some(Ok(v)) = token.as_ref().map(|t| t.parse()) {
                        r.metadata_mut().insert("authorization", v);
                    }
                    match client.export(r).await {
                        Ok(resp) => {
                            let rejected = resp.into_inner().partial_success.map_or(0, |p| p.rejected_spans.max(0) as u64);
                            tally.rejected_spans.fetch_add(rejected, Ordering::Relaxed);
                            tally.spans_ok.fetch_add(batch as u64 - rejected, Ordering::Relaxed);
                            let audit = audit_spans(batch, share);
                            tally.audit_ok.fetch_add(audit as u64, Ordering::Relaxed);
                            match &acked {
                                Some(_) if rejected > 0 => {
                                    tally.audit_unchecked.fetch_add(audit as u64, Ordering::Relaxed);
                                }
                                Some(list) => record_audit(list, &req, audit),
                                None => {}
                            }
                            break;
                        }
                        Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < deadline + Duration::from_secs(10) => {
                            // What an OTLP exporter does: wait the suggested delay, send again.
                            tally.retried.fetch_add(1, Ordering::Relaxed);
                            use tonic_types::StatusExt;
                            let delay = s.get_details_retry_info().and_then(|r| r.retry_delay).unwrap_or(Duration::from_secs(1));
                            tokio::time::sleep(delay).await;
                        }
                        Err(s) => {
                            tracing::warn!(code = ?s.code(), message = s.message(), "Export failed.");
                            tally.failed.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                }
                latencies.push(t0.elapsed());
                tally.requests.fetch_add(1, Ordering::Relaxed);
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Ok(PhaseResult {
        secs,
        spans_ok: tally.spans_ok.load(Ordering::Relaxed),
        audit_ok: tally.audit_ok.load(Ordering::Relaxed),
        audit_unchecked: tally.audit_unchecked.load(Ordering::Relaxed),
        requests: tally.requests.load(Ordering::Relaxed),
        rejected: tally.rejected_spans.load(Ordering::Relaxed),
        retried: tally.retried.load(Ordering::Relaxed),
        failed: tally.failed.load(Ordering::Relaxed),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    })
}

/// Adds the ids of the first `audit` spans of `req` (where `make_request` puts the audit spans).
fn record_audit(list: &AckedAudit, req: &ExportTraceServiceRequest, audit: usize) {
    let spans = req
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .take(audit);
    let ids: Vec<([u8; 16], [u8; 8])> = spans
        .filter_map(|s| {
            Some((
                s.trace_id.as_slice().try_into().ok()?,
                s.span_id.as_slice().try_into().ok()?,
            ))
        })
        .collect();
    // A poisoned lock only means another exporter task panicked; the list itself is intact.
    match list.lock() {
        Ok(mut l) => l.extend(ids),
        Err(p) => p.into_inner().extend(ids),
    }
}

/// The receiver that does nothing: decode, answer OK.
struct Null;

#[tonic::async_trait]
impl TraceService for Null {
    async fn export(
        &self,
        _: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// One value from the server's /metrics, when --metrics-url and --metrics-token are given.
async fn server_metric(a: &BenchIngestArgs, name: &str) -> Option<f64> {
    let (url, token) = (a.metrics_url.as_ref()?, a.metrics_token.as_ref()?);
    let text = get_metrics(url, token).await.ok()?;
    let prefix = format!("{name} ");
    let line = text.lines().find(|l| l.starts_with(&prefix))?;
    line.rsplit(' ').next()?.parse().ok()
}

/// GET {base}/metrics with a bearer token over plain HTTP/1.1 (hyper client, no extra crates).
pub(crate) async fn get_metrics(base: &str, token: &str) -> anyhow::Result<String> {
    use http_body_util::BodyExt;
    let authority = base.trim_start_matches("http://").trim_end_matches('/');
    let stream = tokio::net::TcpStream::connect(authority).await?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = hyper::Request::get(format!("http://{authority}/metrics"))
        .header("host", authority)
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Empty::<prost::bytes::Bytes>::new())?;
    let resp = send.send_request(req).await?;
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

pub(crate) fn print(label: &str, r: &PhaseResult) {
    println!("  {label}");
    println!(
        "    accepted spans/s   {:.0}  ({} spans in {:.1} s, {} requests)",
        r.spans_ok as f64 / r.secs,
        r.spans_ok,
        r.secs,
        r.requests
    );
    println!(
        "    export latency     p50 {:.1} ms, p99 {:.1} ms (including retries)",
        r.p50_ms, r.p99_ms
    );
    println!("    rejected spans     {}", r.rejected);
    println!(
        "    retried exports    {}  (UNAVAILABLE, resent after the suggested delay)",
        r.retried
    );
    println!("    failed exports     {}", r.failed);
}

pub async fn run(a: BenchIngestArgs) -> anyhow::Result<i32> {
    let duration = humantime::parse_duration(&a.duration).context("--duration")?;
    println!(
        "bench ingest: {} exporters, {} spans per request, {:.1}% audit spans, gzip, offered load {}",
        a.exporters,
        a.batch,
        a.audit_share * 100.0,
        if a.rate == 0 {
            "unlimited".to_owned()
        } else {
            format!("{} spans/s", a.rate)
        }
    );
    let stored_before = server_metric(&a, "changetrail_spans_accepted_total").await;
    let server = phase(&a.endpoint, Some(&a.token), &a, duration, None).await?;
    print(&format!("changetrail at {}", a.endpoint), &server);
    if let Some(peak) = server_metric(&a, "changetrail_peak_resident_memory_bytes").await {
        println!("    server peak RSS    {:.1} MB", peak / 1e6);
    }
    if let (Some(before), Some(after)) = (
        stored_before,
        server_metric(&a, "changetrail_spans_accepted_total").await,
    ) {
        // Every audit span the server acknowledged must have been committed by it.
        let stored = (after - before) as u64;
        println!(
            "    audit spans        {} acknowledged, {} committed by the server{}",
            server.audit_ok,
            stored,
            if stored >= server.audit_ok {
                " (none lost)"
            } else {
                " — LOST SPANS"
            }
        );
    }
    if !a.no_baseline {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = tokio_util::sync::CancellationToken::new();
        let s = stop.clone();
        let svc = TraceServiceServer::new(Null)
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(64 << 20);
        let server_task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(tokio_stream_from(listener), s.cancelled())
                .await;
        });
        let null = phase(&format!("http://{addr}"), None, &a, duration, None).await?;
        print(
            "do-nothing OTLP receiver (same load, same process as the load generator)",
            &null,
        );
        stop.cancel();
        let _ = server_task.await;
        if null.spans_ok > 0 {
            println!(
                "  ratio              changetrail reaches {:.0}% of the do-nothing receiver's throughput",
                100.0 * (server.spans_ok as f64 / server.secs) / (null.spans_ok as f64 / null.secs)
            );
        }
    }
    Ok(if server.failed > 0 { 1 } else { 0 })
}

/// A listener as the stream of connections tonic's server takes.
fn tokio_stream_from(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |l| async move {
        let r = l.accept().await.map(|(s, _)| s);
        Some((r, l))
    })
}

/// `bench binding`: the same spans bound on arrival and bound late, through the real ingest path
/// (validation, binder, redaction, correlation, sequencer, SQLite) in this process.
pub async fn binding(
    mut cfg: crate::app::config::Config,
    traces: usize,
    spans: usize,
    senders: usize,
) -> anyhow::Result<i32> {
    use crate::ingest::Ingestor;
    let dir = tempfile::tempdir()?;
    let mut run = |late: bool| {
        cfg.database_url = format!(
            "sqlite://{}",
            dir.path().join(format!("binding-{late}.db")).display()
        );
        cfg.ledger.key_file = dir.path().join(format!("binding-{late}.key"));
        cfg.ledger.signing_key = Default::default();
        cfg.clone()
    };
    let mut results = Vec::new();
    for late in [false, true] {
        let cfg = run(late);
        let key = crate::app::keyfile::generate(crate::app::keyfile::generated_origin())?;
        crate::app::keyfile::write_new_key(&cfg.ledger.key_file, &key)?;
        let (store, writer) = crate::app::startup::open_ledger(&cfg, false).await?;
        let stop = tokio_util::sync::CancellationToken::new();
        let (appender, seq) =
            crate::pipeline::spawn_sequencer(writer, cfg.sequencer(), stop.clone());
        let ing = Arc::new(Ingestor::new(
            appender,
            crate::auth::Authenticator::cached(store.clone(), std::time::Duration::from_secs(5)),
            crate::read::history::History::new(store.clone()),
            cfg.ingest()?,
        ));
        let per = traces.div_ceil(senders.max(1));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for s in 0..senders.max(1) {
            let ing = ing.clone();
            tasks.push(tokio::spawn(async move {
                let mut seed = 0xA5A5_5A5A_1234_5678u64 ^ ((s as u64 + 1) << 40);
                for _ in 0..per {
                    let (binding, runtime) = binding_pair(spans, &mut seed);
                    let (first, second) = if late {
                        (runtime, binding)
                    } else {
                        (binding, runtime)
                    };
                    let sender = crate::core::evidence::SentBy {
                        token_id: None,
                        name: "bench binding".into(),
                    };
                    let mut hold = ing.hold_for("bench binding");
                    ing.traces(first, sender.clone(), &mut hold)
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    ing.traces(second, sender, &mut hold)
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                }
                Ok::<(), anyhow::Error>(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        let secs = started.elapsed().as_secs_f64();
        let stored = store.span_count().await?;
        stop.cancel();
        seq.await?;
        results.push((late, secs, stored));
    }
    println!(
        "bench binding: {traces} traces × (1 binding span + {spans} runtime spans), {senders} senders"
    );
    for (late, secs, stored) in &results {
        println!(
            "  {:<28} {:.2} s, {} spans stored, {:.1} µs per stored span",
            if *late {
                "late (parked, then bound)"
            } else {
                "on arrival"
            },
            secs,
            stored,
            secs * 1e6 / *stored as f64
        );
    }
    let ratio = results[1].1 / results[0].1;
    println!("  late binding costs {ratio:.2}× binding on arrival");
    Ok(0)
}

/// One deploy-attempt span that binds its trace, and `n` runtime spans of the same trace.
fn binding_pair(
    n: usize,
    seed: &mut u64,
) -> (ExportTraceServiceRequest, ExportTraceServiceRequest) {
    let mut next = || {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    };
    let now = crate::sys::now_ns() as u64;
    let mut trace = [0u8; 16];
    trace[..8].copy_from_slice(&next().to_be_bytes());
    trace[8..].copy_from_slice(&next().to_be_bytes());
    let span = |name: &str, attributes: Vec<KeyValue>, id: u64| Span {
        trace_id: trace.to_vec(),
        span_id: id.to_be_bytes().to_vec(),
        name: name.into(),
        kind: 2,
        start_time_unix_nano: now - 1_000_000,
        end_time_unix_nano: now,
        attributes,
        ..Default::default()
    };
    let run = format!("wf-{:x}", next());
    let binding = span(
        "deploy",
        vec![
            kv("cicd.pipeline.run.id", &run),
            kv(
                "changetrail.change.id",
                &format!("CHG-{}", next() % 1_000_000),
            ),
            kv("cicd.pipeline.task.type", "deploy"),
            kv("cicd.pipeline.task.name", "deploy"),
            kv("cicd.pipeline.task.run.id", &format!("{run}-1")),
            kv("cicd.pipeline.task.run.result", "success"),
        ],
        next(),
    );
    let runtime: Vec<Span> = (0..n)
        .map(|_| {
            span(
                "GET /api/v1/payments/{id}",
                vec![kv("http.request.method", "GET")],
                next(),
            )
        })
        .collect();
    let wrap = |spans: Vec<Span>| ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "payments")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    (wrap(vec![binding]), wrap(runtime))
}
