//! Conductor import: an execution (or status-listener payload) mapped to facts, with history
//! that vanished since an earlier import of the same run recorded as rewritten.

use crate::core::evidence::identity::IdentityVerifier;
use crate::core::evidence::{self, Intake, Policy};
use crate::pipeline::{AppendError, Appender, Telemetry};
use crate::read::ReadError;
use crate::read::history::History;
use std::collections::BTreeSet;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Append(std::sync::Arc<AppendError>),
}

impl ImportError {
    /// Whether the same import may succeed later (busy, storage briefly away, shutting down).
    pub fn is_transient(&self) -> bool {
        match self {
            ImportError::Invalid(_) => false,
            ImportError::Read(e) => e.is_transient(),
            ImportError::Append(e) => e.is_transient(),
        }
    }

    /// Whether the document itself can never be recorded: it does not map, or an entry it
    /// makes is over the ledger's limits (a run with thousands of tasks). Trying again cannot
    /// help, so a reconciler passes it; other lasting errors (a ledger or key problem) are not
    /// the document's and would refuse every document alike.
    pub fn is_refusal(&self) -> bool {
        match self {
            ImportError::Invalid(_) => true,
            ImportError::Append(e) => matches!(**e, AppendError::Draft(_)),
            ImportError::Read(_) => false,
        }
    }
}

/// What an import will write, and what it found.
pub struct Prepared {
    pub run_id: String,
    pub change_id: String,
    pub telemetry: Telemetry,
    /// Task ids of earlier imports that this one no longer has (a Conductor restart).
    pub vanished: Vec<String>,
    /// How this import's history differs from the last one observed, when it rewrote any.
    pub rewrite: Option<evidence::RewriteFact>,
}

/// Maps the document and compares it with what earlier imports of the run recorded: with the
/// baseline observation (the freshest by updateTime) when there is one, unless this document
/// is an older state than it, else (runs imported before observations were recorded)
/// with the task ids earlier facts name. A document without `tasks` (a status-listener
/// WorkflowSummary) is compared with nothing: it cannot show a task gone. `intake` says when
/// it arrived, from whom, and how late its facts may be.
pub async fn prepare(
    history: &History,
    doc: &serde_json::Value,
    policy: &Policy,
    ids: &IdentityVerifier,
    intake: &Intake,
) -> Result<Prepared, ImportError> {
    let imp = evidence::conductor_facts(doc, policy, ids, intake).map_err(ImportError::Invalid)?;
    let mut facts = imp.facts;
    let found = match &imp.observed {
        None => None,
        Some(now) => match history.last_observation(&imp.run_id).await? {
            // A fetch that lost a race with a fresher one (another instance, a REST import or
            // `conductor sync` beside the reconciler): recorded, but neither compared nor the
            // baseline (the store ranks observations by updateTime).
            Some(last) if now.older_than(&last.run) => None,
            Some(last) => evidence::rewrite::compare(&last.run, now)
                .map(|r| evidence::rewrite::rewrite_fact(&imp.run_id, &imp.change_id, r, intake)),
            None => {
                let before: BTreeSet<String> = history
                    .imported_task_ids(&imp.run_id)
                    .await?
                    .into_iter()
                    .collect();
                evidence::rewritten(&imp.run_id, &imp.change_id, &before, &imp.task_ids, intake)
            }
        },
    };
    let rewrite = found.and_then(|r| {
        let fact = match &r.fact {
            evidence::Fact::HistoryRewritten(h) => Some(h.clone()),
            _ => None,
        };
        facts.push(r);
        fact
    });
    Ok(Prepared {
        run_id: imp.run_id,
        change_id: imp.change_id,
        telemetry: Telemetry {
            facts,
            ..Default::default()
        },
        vanished: rewrite
            .as_ref()
            .map(|r| r.vanished_tasks.clone())
            .unwrap_or_default(),
        rewrite,
    })
}

/// The fact that run `run_id` (of `change_id`), last observed as `before`, no longer exists in
/// Conductor (its execution answers 404): appended like an import's facts.
pub async fn deleted(
    appender: &Appender,
    run_id: &str,
    change_id: &str,
    before: &evidence::ObservedRun,
    intake: &Intake,
) -> Result<Imported, ImportError> {
    let rewrite = evidence::rewrite::deleted(before);
    let fact = evidence::rewrite::rewrite_fact(run_id, change_id, rewrite.clone(), intake);
    let done = appender
        .append_telemetry(Telemetry {
            facts: vec![fact],
            ..Default::default()
        })
        .await
        .map_err(ImportError::Append)?;
    Ok(Imported {
        prepared: Prepared {
            run_id: run_id.to_owned(),
            change_id: change_id.to_owned(),
            telemetry: Telemetry::default(),
            vanished: rewrite.vanished_tasks.clone(),
            rewrite: Some(rewrite),
        },
        facts_stored: done.facts_stored,
        facts_duplicate: done.facts_duplicate,
    })
}

/// What an import through the sequencer recorded.
pub struct Imported {
    pub prepared: Prepared,
    /// Facts new to the ledger.
    pub facts_stored: u64,
    /// Facts the ledger already held (a repeated import).
    pub facts_duplicate: u64,
}

/// Prepares the document and appends its facts through the sequencer; answers after commit.
pub async fn import(
    appender: &Appender,
    history: &History,
    doc: &serde_json::Value,
    policy: &Policy,
    ids: &IdentityVerifier,
    intake: &Intake,
) -> Result<Imported, ImportError> {
    let mut prepared = prepare(history, doc, policy, ids, intake).await?;
    let telemetry = std::mem::take(&mut prepared.telemetry);
    let done = appender
        .append_telemetry(telemetry)
        .await
        .map_err(ImportError::Append)?;
    Ok(Imported {
        prepared,
        facts_stored: done.facts_stored,
        facts_duplicate: done.facts_duplicate,
    })
}

/// The widest lateness allowance the REST import takes (31 days).
pub const MAX_API_LATENESS_NS: i64 = 31 * 86_400 * 1_000_000_000;

/// A lateness allowance as an import states it (`30d`, `720h`): humantime, at most ten years.
pub fn parse_max_lateness(s: &str) -> Result<i64, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("max_lateness {s:?} is not a duration such as 30d or 720h: {e}"))?;
    if d > std::time::Duration::from_secs(10 * 366 * 86_400) {
        return Err(format!("max_lateness {s:?} is more than ten years"));
    }
    Ok(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}
