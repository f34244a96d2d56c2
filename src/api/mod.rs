//! The REST API on :8080: each resource module exposes `router()`, merged here with the shared
//! state, authentication per role, and the layers every request passes through.

mod admin;
mod alerts;
mod changes;
mod conductor;
mod console;
mod error;
mod gate;
mod health;
mod ledger;
mod metrics;
pub mod openapi;
mod receipt;
mod reports;
mod session;
mod suspects;
mod tlog;

pub use reports::ReportContext;

pub use error::ApiError;
pub use tlog::TlogAccess;

use crate::auth::{self, Principal, Role};
use crate::ingest::Ingestor;
use crate::pipeline::{Appender, LedgerWriter};
use crate::storage::Store;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::Response;
use openapi::Access;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    /// Checks bearer tokens (every request but health and the console's static files).
    pub auth: auth::Authenticator,
    /// The sequencer, when this process appends (readiness reports whether it runs).
    pub appender: Option<Appender>,
    /// Where /metrics reads from, when this process ingests.
    pub metrics: Option<(Arc<Ingestor>, Arc<LedgerWriter>)>,
    pub correlation: Arc<Correlation>,
    /// Report settings and the signing writer, when this process serves reports.
    pub reports: Option<Arc<ReportContext>>,
    /// One ledger verification at a time: it reads every entry and checks every signature, and a
    /// second one at once would only halve the speed of both.
    pub verifying: Arc<tokio::sync::Semaphore>,
    /// The ledger writer, when this process may record token changes.
    pub writer: Option<Arc<LedgerWriter>>,
    /// The deploy annotator's counters, when `[annotations.otlp]` is on.
    pub annotations: Option<Arc<crate::notify::annotate::Stats>>,
    /// The alerter's counters, when `[alerts]` names a destination.
    pub alerts: Option<Arc<crate::notify::alerts::Stats>>,
    /// Where the tlog-tiles view is mounted and who may read its entry bundles (`[tlog]`).
    pub tlog: Arc<TlogAccess>,
    /// The tlog-policy (`[tlog] policy_file`) and whether the newest checkpoint meets it.
    pub witnessing: Option<Witnessing>,
}

/// The quorum the checkpoints are held to and the witness client's view of the newest one.
#[derive(Clone)]
pub struct Witnessing {
    pub policy: Arc<crate::core::ledger::policy::Policy>,
    pub state: Arc<crate::tlog::witness::Witnessing>,
}

/// What the change endpoints need from configuration.
#[derive(Debug, Default)]
pub struct Correlation {
    /// How changes are folded and judged (as the report this process signs does).
    pub criteria: crate::read::changes::Criteria,
    pub identity: crate::core::evidence::identity::IdentityVerifier,
    /// Imports: event times further ahead than this are refused.
    pub max_clock_skew_ns: i64,
    /// Where a trace id links to in the team's tracing UI (`[links] trace_url`).
    pub trace_url: Option<crate::core::links::TraceUrl>,
    /// How runtime minutes are read and judged (`[suspects]`; `None`: switched off).
    pub suspects: Option<crate::read::suspects::Reading>,
}

impl AppState {
    pub fn new(store: Store, appender: Option<Appender>) -> AppState {
        AppState {
            auth: auth::Authenticator::new(store.clone()),
            store,
            appender,
            metrics: None,
            correlation: Arc::new(Correlation::default()),
            reports: None,
            verifying: Arc::new(tokio::sync::Semaphore::new(1)),
            writer: None,
            annotations: None,
            alerts: None,
            tlog: Arc::new(TlogAccess::default()),
            witnessing: None,
        }
    }

    pub fn with_tlog(mut self, prefix: String, public_entries: bool) -> AppState {
        self.tlog = Arc::new(TlogAccess {
            prefix,
            public_entries,
        });
        self
    }

    pub fn with_writer(mut self, writer: Arc<LedgerWriter>) -> AppState {
        self.writer = Some(writer);
        self
    }

    pub fn with_annotations(
        mut self,
        stats: Option<Arc<crate::notify::annotate::Stats>>,
    ) -> AppState {
        self.annotations = stats;
        self
    }

    pub fn with_alerts(mut self, stats: Option<Arc<crate::notify::alerts::Stats>>) -> AppState {
        self.alerts = stats;
        self
    }

    pub fn with_witnessing(mut self, w: Option<Witnessing>) -> AppState {
        self.witnessing = w;
        self
    }

    pub fn with_correlation(mut self, c: Correlation) -> AppState {
        self.correlation = Arc::new(c);
        self
    }

    pub fn with_reports(
        mut self,
        settings: crate::report::Settings,
        writer: Arc<LedgerWriter>,
    ) -> AppState {
        self.reports = Some(Arc::new(ReportContext {
            settings,
            key: writer.key_handle(),
            running: tokio::sync::Semaphore::new(1),
        }));
        self
    }

    pub fn with_metrics(mut self, ingestor: Arc<Ingestor>, writer: Arc<LedgerWriter>) -> AppState {
        self.metrics = Some((ingestor, writer));
        self
    }
}

/// Rejects requests without a token of `role` (any valid token when `None`); on success the
/// principal rides along in the request's extensions for handlers and logs.
async fn require(
    State((state, roles)): State<(AppState, Option<&'static [Role]>)>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .map(|v| v.to_str().map_err(|_| ApiError::Unauthorized))
        .transpose()?;
    let token = auth::bearer(header)?;
    let principal: Principal = match roles {
        Some([role]) => state.auth.authenticate(token, *role).await?,
        Some(roles) => {
            let p = state.auth.identify(token).await?;
            if !roles.contains(&p.role) {
                let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
                return Err(ApiError::Forbidden(format!(
                    "this token's role ({}) may not do this (needs one of {})",
                    p.role,
                    names.join(", ")
                )));
            }
            p
        }
        None => state.auth.identify(token).await?,
    };
    principal.record_on_span();
    req.extensions_mut().insert(principal);
    Ok(next.run(req).await)
}

fn protected(
    router: Router<AppState>,
    state: &AppState,
    roles: &'static [Role],
) -> Router<AppState> {
    router.route_layer(middleware::from_fn_with_state(
        (state.clone(), Some(roles)),
        require,
    ))
}

/// Routes for any valid token: they may only say who the caller is, never show data.
fn signed_in(router: Router<AppState>, state: &AppState) -> Router<AppState> {
    router.route_layer(middleware::from_fn_with_state(
        (state.clone(), None::<&'static [Role]>),
        require,
    ))
}

/// Every part of the API with who may call it: the one list both the router and the OpenAPI
/// document are built from, so each route is documented with the role its check enforces.
fn parts() -> Vec<(Access, OpenApiRouter<AppState>)> {
    parts_with(false)
}

/// `parts()` as served: with `public_entries` the entry bundles need no token (the document
/// states the reviewer role, the default).
fn parts_with(public_entries: bool) -> Vec<(Access, OpenApiRouter<AppState>)> {
    let entries_access = if public_entries {
        Access::Open
    } else {
        Access::Role(Role::Reviewer)
    };
    vec![
        (Access::Open, health::router()),
        (Access::Open, openapi::router()),
        // The console's files hold no data, so they need no token; every call they make does.
        (Access::Open, console::router()),
        (Access::AnyRole, session::router()),
        (Access::Role(Role::Reviewer), ledger::router()),
        (Access::Role(Role::Admin), admin::router()),
        (Access::Role(Role::Metrics), metrics::router()),
        (Access::Role(Role::Auditor), changes::router()),
        (Access::Role(Role::Auditor), reports::router()),
        (Access::Role(Role::Ingest), changes::import_router()),
        (Access::Role(Role::Gate), gate::router()),
        (
            Access::Roles(&[Role::Auditor, Role::Reviewer]),
            alerts::router(),
        ),
        (
            Access::Roles(&[Role::Auditor, Role::Reviewer]),
            suspects::router(),
        ),
        (
            Access::Roles(&[Role::Auditor, Role::Reviewer]),
            conductor::router(),
        ),
        (
            Access::Roles(&[Role::Auditor, Role::Reviewer]),
            receipt::router(),
        ),
        // The tree's tiles are hashes only; the bundles hold the entries themselves.
        (Access::Open, tlog::router()),
        (entries_access, tlog::entries_router()),
    ]
}

pub fn router(state: AppState) -> Router {
    let mut app = Router::new();
    let tlog = state.tlog.clone();
    for (access, part) in parts_with(tlog.public_entries) {
        let (part, _) = part.split_for_parts();
        app = app.merge(match access {
            Access::Open => part,
            Access::AnyRole => signed_in(part, &state),
            Access::Role(role) => protected(part, &state, role.only()),
            Access::Roles(roles) => protected(part, &state, roles),
        });
    }
    tlog::mount(app.with_state(state), &tlog.prefix)
}
