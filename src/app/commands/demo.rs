//! `changetrail demo`: the first five minutes. With no arguments it starts the service on SQLite in
//! a scratch directory, sends a few weeks of realistic changes through the real OTLP/gRPC listener,
//! builds the SOC 2 report, verifies the ledger and the report, prints where everything is and keeps
//! serving (console included) until Ctrl-C. With `--endpoint` it sends the same changes to a running
//! service instead.

use crate::app::cli::DemoArgs;
use crate::app::config::{Config, IssuerConfig};
use crate::app::startup::App;
use crate::auth::{self, Role};
use crate::core::ledger::keys::LedgerKey;
use crate::core::ledger::verify::{Options, Report};
use crate::core::time::rfc3339;
use crate::demo::{self, Plan, idp::DemoIdp};
use crate::report::verify::{LedgerSource, verify_report};
use crate::report::{self, Query};
use crate::storage::Store;
use crate::sys::now_ns;
use anyhow::{Context, bail};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Spans per export, about what an SDK's batch processor sends.
const PER_REQUEST: usize = 64;

pub async fn run(a: DemoArgs) -> anyhow::Result<i32> {
    let idp = DemoIdp::generate()?;
    let plan = demo::plan(&idp, now_ns(), a.weeks);
    match (&a.endpoint, &a.token) {
        (Some(endpoint), Some(token)) => remote(endpoint, token, &plan).await,
        (Some(_), None) | (None, Some(_)) => {
            bail!("--endpoint URL and --token T go together (an ingest token of that service)")
        }
        (None, None) => local(&a, &idp, &plan).await,
    }
}

/// The listen address asked for, or a free port when it is taken (a demo should not fail because
/// something already runs on 8080).
fn free_or_any(addr: SocketAddr, what: &str) -> SocketAddr {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => addr,
        Err(_) => {
            eprintln!("note: {addr} is in use; the demo's {what} takes a free port instead");
            SocketAddr::new(addr.ip(), 0)
        }
    }
}

/// The whole demo on this machine: a service of its own in a directory, the plan sent through
/// its OTLP/gRPC listener, the report built and everything verified, then served until Ctrl-C
/// (or stopped at once with `--no-serve`).
async fn local(a: &DemoArgs, idp: &DemoIdp, plan: &Plan) -> anyhow::Result<i32> {
    let (dir, scratch) = demo_dir(a.dir.as_deref())?;
    let jwks = dir.join("demo-idp-jwks.json");
    std::fs::write(&jwks, serde_json::to_vec_pretty(&idp.jwks())?)?;
    let cfg = demo_config(a, &dir, jwks);

    let app = App::build(cfg.clone()).await?;
    let (store, writer) = (app.store.clone(), app.writer.clone());
    let (http, grpc) = (app.http_addr, app.otlp_grpc_addr);
    let admin = app.bootstrap_token.clone();
    let stop = app.shutdown_token();
    let server = tokio::spawn(app.run());

    let mut tokens = BTreeMap::new();
    for role in [Role::Ingest, Role::Auditor, Role::Reviewer] {
        let (row, token) = auth::issue(&format!("demo {role}"), role, now_ns());
        writer.create_token(&row, "changetrail demo").await?;
        tokens.insert(role.as_str(), token);
    }
    let sent = send(&format!("http://{grpc}"), &tokens["ingest"], plan).await?;
    wait_for_comparisons(&store).await?;
    writer.checkpoint().await?;

    let out = dir.join("report-soc2");
    let built = build_report(&cfg, &store, &writer.key(), plan, &out).await?;
    let (ledger, checked) = verify_ledger_and_report(&store, &out).await?;

    let expected = plan.expected_by_code();
    let got: BTreeMap<&str, u64> = built
        .exceptions_by_code
        .iter()
        .map(|(c, n)| (c.as_str(), *n))
        .collect();
    let as_expected = expected == got;
    println!(
        "changetrail demo: {} changes to {} services over {} week(s), {} to {}",
        plan.scenarios.len(),
        demo::SERVICES.len(),
        a.weeks.max(1),
        &rfc3339(plan.from_ns)[..10],
        &rfc3339(plan.to_ns - 1)[..10],
    );
    println!(
        "  sent       {} spans in {} OTLP/gRPC exports to {grpc}; every one acknowledged, so committed",
        plan.spans.len(),
        sent
    );
    let s = &ledger.summary;
    println!(
        "  ledger     {} entries, {} signatures, {} checkpoints: {}",
        s.entries,
        s.signatures,
        s.checkpoints_valid,
        if ledger.findings.is_empty() {
            "verified, intact"
        } else {
            "FINDINGS (run changetrail verify)"
        }
    );
    println!(
        "  report     {} ({} production changes, {} exceptions, {} controls)",
        out.display(),
        built.manifest.rows.population,
        built.manifest.rows.exceptions,
        built.manifest.rows.controls
    );
    println!(
        "             verify-report: {}",
        if checked.findings.is_empty() {
            "intact (manifest signature, every file, every row against the ledger)".to_owned()
        } else {
            format!("{} findings", checked.findings.len())
        }
    );
    for sc in plan.scenarios.iter().filter(|s| !s.expect.is_empty()) {
        let codes: Vec<&str> = sc.expect.iter().copied().collect();
        println!(
            "             {:<12} {} → {}",
            sc.change_id,
            sc.what,
            codes.join(", ")
        );
    }
    for (svc, ver) in &plan.unlinked {
        println!(
            "             {svc} {ver} is running in production, deployed by no change → UNLINKED_DEPLOY"
        );
    }
    print_delivery(&store, &cfg, plan.from_ns, plan.to_ns).await?;
    print_suspect(&store, &cfg).await?;
    let list: Vec<String> = got.iter().map(|(c, n)| format!("{c} {n}")).collect();
    println!(
        "  exceptions {} — {}",
        list.join(", "),
        if as_expected {
            "as the scenarios expect"
        } else {
            "NOT what the scenarios expect"
        }
    );
    println!("  open       {}/report.html", out.display());
    println!("  console    http://{http}/");
    println!("  tokens     auditor  {}", tokens["auditor"]);
    println!("             reviewer {}", tokens["reviewer"]);
    if let Some(t) = &admin {
        println!("             admin    {t}");
    }
    println!("  vkey       {}", writer.key().vkey());
    let ok = as_expected && ledger.findings.is_empty() && checked.findings.is_empty();
    if a.no_serve {
        stop.cancel();
        server.await??;
        drop(scratch);
        return Ok(if ok { 0 } else { 1 });
    }
    match &scratch {
        Some(_) => println!(
            "Serving until Ctrl-C; the data in {} is removed then (--dir DIR keeps it).",
            dir.display()
        ),
        None => println!("Serving until Ctrl-C; the data stays in {}.", dir.display()),
    }
    shutdown_signal().await;
    println!("Stopping.");
    stop.cancel();
    server.await??;
    drop(scratch);
    Ok(if ok { 0 } else { 1 })
}

/// The demo's directory: `--dir`, which must be empty, or a scratch one removed when the demo
/// ends (the `TempDir` returned with it).
fn demo_dir(dir: Option<&Path>) -> anyhow::Result<(PathBuf, Option<tempfile::TempDir>)> {
    match dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            if std::fs::read_dir(d)?.next().is_some() {
                bail!(
                    "{} is not empty; give the demo a new directory",
                    d.display()
                );
            }
            Ok((d.to_owned(), None))
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("changetrail-demo-")
                .tempdir()?;
            Ok((t.path().to_owned(), Some(t)))
        }
    }
}

/// The service's configuration for the demo: its database and key in `dir`, free ports where the
/// asked ones are taken, and the demo's identity provider (`jwks`) trusted for approvals.
fn demo_config(a: &DemoArgs, dir: &Path, jwks: PathBuf) -> Config {
    let mut cfg = Config::defaults();
    cfg.database_url = format!("sqlite://{}", dir.join("changetrail.db").display());
    cfg.ledger.key_file = dir.join("changetrail.key");
    cfg.otlp.journal_dir = dir.join("changetrail.journal");
    cfg.http.listen = free_or_any(a.http_listen, "console and REST API");
    cfg.otlp.grpc_listen = free_or_any(a.otlp_grpc_listen, "OTLP/gRPC listener");
    cfg.otlp.http_listen = free_or_any(a.otlp_http_listen, "OTLP/HTTP listener");
    cfg.identity.issuers = vec![IssuerConfig {
        issuer: demo::idp::ISSUER.into(),
        audience: demo::idp::AUDIENCE.into(),
        jwks_file: jwks,
        discovery_url: String::new(),
        refresh_interval: std::time::Duration::from_secs(3600),
        roles_claim: "roles".into(),
    }];
    cfg.reports.approver_roles = vec![demo::APPROVER_ROLE.into()];
    // The demo replays weeks of history in a minute: its facts and tokens arrive weeks after the
    // times they state, which this service allows (as an import of older history would).
    cfg.evidence.max_lateness = demo::HISTORY;
    cfg.identity.max_token_age_at_receipt = demo::HISTORY;
    // Its runtime spans are weeks old too; and it waits for the comparisons, so they run often.
    cfg.suspects.max_age = demo::HISTORY;
    cfg.suspects.settle = std::time::Duration::from_secs(2);
    cfg.suspects.interval = std::time::Duration::from_millis(250);
    cfg.suspects.flush_interval = std::time::Duration::from_millis(250);
    cfg
}

/// The SOC 2 report over the plan's period, built into `out`.
async fn build_report(
    cfg: &Config,
    store: &Store,
    key: &LedgerKey,
    plan: &Plan,
    out: &Path,
) -> anyhow::Result<report::Outcome> {
    let query = Query {
        from: rfc3339(plan.from_ns),
        to: rfc3339(plan.to_ns),
        sample: Some(10),
        seed: Some("changetrail-demo".into()),
        ..Default::default()
    };
    let settings = cfg.report_settings(None)?;
    let job = report::Job {
        store,
        key,
        query: &query,
        settings: &settings,
        out,
        now_ns: now_ns(),
    };
    Ok(report::build(job, std::sync::Arc::new(report::NoProgress)).await?)
}

/// The ledger verified with its first key pinned, and the report in `out` checked against it.
async fn verify_ledger_and_report(
    store: &Store,
    out: &Path,
) -> anyhow::Result<(Report, crate::report::verify::Outcome)> {
    let first_key = store
        .keys()
        .await?
        .into_iter()
        .find(|k| k.from_seq == 0)
        .map(|k| crate::core::ledger::keys::Vkey::parse(&k.vkey))
        .transpose()
        .map_err(|e| anyhow::anyhow!("the ledger's first key: {e}"))?;
    let trusted: Vec<_> = first_key.into_iter().collect();
    let (ledger, _) = crate::read::audit::verify_store(
        store,
        Options {
            trusted: trusted.clone(),
            state: None,
            max_age_ns: None,
            now_ns: now_ns(),
            threads: 0,
        },
        None,
    )
    .await?;
    let checked = verify_report(out, LedgerSource::Store(store.clone()), &trusted, 0, None).await?;
    Ok((ledger, checked))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Sends the plan's spans to `endpoint` as an SDK exporter would: gzip, retrying UNAVAILABLE
/// after the delay the server suggests. Returns the number of exports.
async fn send(endpoint: &str, token: &str, plan: &Plan) -> anyhow::Result<usize> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .with_context(|| format!("{endpoint:?} is not a URL such as http://localhost:4317"))?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .with_context(|| format!("cannot connect to {endpoint}"))?;
    let mut client =
        TraceServiceClient::new(channel).send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .context("the token is not a valid header value")?;
    let requests = plan.requests(PER_REQUEST);
    for (i, req) in requests.iter().enumerate() {
        let mut tries = 0;
        loop {
            let mut r = tonic::Request::new(req.clone());
            r.set_timeout(Duration::from_secs(10));
            r.metadata_mut().insert("authorization", bearer.clone());
            match client.export(r).await {
                Ok(resp) => {
                    if let Some(p) = resp.into_inner().partial_success
                        && p.rejected_spans > 0
                    {
                        bail!(
                            "export {} of {}: {} spans rejected: {}",
                            i + 1,
                            requests.len(),
                            p.rejected_spans,
                            p.error_message
                        );
                    }
                    break;
                }
                Err(s) if s.code() == tonic::Code::Unavailable && tries < 10 => {
                    use tonic_types::StatusExt;
                    tries += 1;
                    let delay = s
                        .get_details_retry_info()
                        .and_then(|r| r.retry_delay)
                        .unwrap_or(Duration::from_secs(1));
                    tokio::time::sleep(delay).await;
                }
                Err(s) => bail!(
                    "export {} of {} to {endpoint}: {}: {}",
                    i + 1,
                    requests.len(),
                    s.code(),
                    s.message()
                ),
            }
        }
    }
    Ok(requests.len())
}

async fn remote(endpoint: &str, token: &str, plan: &Plan) -> anyhow::Result<i32> {
    let sent = send(endpoint, token, plan).await?;
    println!(
        "changetrail demo: sent {} changes ({} spans in {sent} exports) to {endpoint}; every export acknowledged",
        plan.scenarios.len(),
        plan.spans.len()
    );
    println!(
        "  period     {} to {} — build the report with: changetrail report soc2 --from {} --to {} --out DIR",
        &rfc3339(plan.from_ns)[..10],
        &rfc3339(plan.to_ns - 1)[..10],
        &rfc3339(plan.from_ns)[..10],
        &rfc3339(plan.to_ns - 1)[..10],
    );
    println!(
        "  identities the demo's tokens are signed by a throwaway issuer ({}), so a service that does not trust it records them as asserted (UNVERIFIED_IDENTITY)",
        demo::idp::ISSUER
    );
    for sc in &plan.scenarios {
        if !sc.expect.is_empty() {
            let list: Vec<&str> = sc.expect.iter().copied().collect();
            println!("  {:<12} {} → {}", sc.change_id, sc.what, list.join(", "));
        }
    }
    Ok(0)
}

/// Waits until every deploy sent has been compared with the runtime spans around it (a couple of
/// seconds: `[suspects] settle` after the last one arrived).
async fn wait_for_comparisons(store: &crate::storage::Store) -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    while !crate::read::suspects::caught_up(store).await? {
        if start.elapsed() > std::time::Duration::from_secs(120) {
            anyhow::bail!(
                "the deploys were not compared with their runtime spans within 2 minutes"
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(())
}

/// What `GET /v1/suspects` answers about checkout's errors after CHG-CO-2's deploy.
async fn print_suspect(
    store: &crate::storage::Store,
    cfg: &crate::app::config::Config,
) -> anyhow::Result<()> {
    let c = cfg.criteria();
    let Some((e, _)) = crate::read::changes::evidence_of(store, "CHG-CO-2", &c).await? else {
        return Ok(());
    };
    let Some(deployed) = e.timeline.deploy_end_ns else {
        return Ok(());
    };
    let window = (
        deployed - 10 * 60_000_000_000,
        deployed + 20 * 60_000_000_000,
    );
    let v = crate::read::suspects::suspects(
        store,
        &c,
        &cfg.suspects.reading(cfg.evidence.max_clock_skew),
        ("checkout", "production"),
        window,
    )
    .await?;
    let Some(top) = v.suspects.first() else {
        println!("  suspects   none found for checkout's errors (NOT what the scenario expects)");
        return Ok(());
    };
    let r = &top.ranked;
    let pct = |x: f64| format!("{:.1} %", x * 100.0);
    println!(
        "  suspects   checkout's errors from {}: {} ranked first of {} (score {:.2}), error rate {} → {}, first error in trace {}",
        &rfc3339(r.onset_ns.unwrap_or(deployed))[..16],
        r.change_id,
        v.suspects.len(),
        r.score,
        pct(r.own.before.error_rate),
        pct(r.own.after.error_rate),
        r.first_error.as_ref().map_or("—", |f| f.trace_id.as_str()),
    );
    Ok(())
}

/// The four keys of the demo's weeks, and each failed change with what restored it.
async fn print_delivery(
    store: &crate::storage::Store,
    cfg: &crate::app::config::Config,
    from_ns: i64,
    to_ns: i64,
) -> anyhow::Result<()> {
    let d = crate::read::delivery::delivery(store, &cfg.criteria(), from_ns, to_ns, None)
        .await?
        .keys;
    let mins = |s: Option<i64>| s.map_or("—".to_owned(), |s| format!("{} min", s / 60));
    println!(
        "  delivery   {} deployments ({:.1} a day), lead time {} (median), change failure rate {}, time to restore {} (median)",
        d.all.deployments,
        d.all.deployments_per_day,
        mins(d.all.lead_time_median_s),
        d.all
            .change_failure_rate
            .map_or("—".to_owned(), |r| format!("{:.0} %", r * 100.0)),
        mins(d.all.time_to_restore_median_s),
    );
    for f in &d.failures {
        println!(
            "             {:<12} {} → {}",
            f.change_id,
            f.why.replace('_', " "),
            match (&f.restored_by, f.restored_ns) {
                (Some(by), Some(t)) => format!(
                    "restored by {by} after {}",
                    mins(Some((t - f.failed_ns) / 1_000_000_000))
                ),
                _ => "not restored".to_owned(),
            }
        );
    }
    Ok(())
}
