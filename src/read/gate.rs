//! The deploy gate's edge (`core::evidence::gate` decides): reads one change's evidence as the
//! ledger holds it now, decides, and records the decision as a `gate.decided` fact through the
//! sequencer before anyone is told it. An answer nobody could find in the ledger would be a
//! decision an auditor cannot check; a decision is therefore only ever answered once committed.

use super::changes::{Criteria, exceptions, fetch_facts, fold_facts, judge_all};
use crate::core::evidence::gate::{self, GateFact, GateRequest};
use crate::core::evidence::{Fact, Intake, SentBy};
use crate::pipeline::{AppendError, Appender, Telemetry};
use crate::storage::{StorageError, Store};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Append(Arc<AppendError>),
    /// The decision was committed but its entry could not be found again (never expected).
    #[error("the decision's entry was not found after its commit")]
    Lost,
}

impl GateError {
    /// Whether asking again may get an answer (busy, storage briefly away).
    pub fn is_transient(&self) -> bool {
        match self {
            GateError::Storage(e) => e.is_transient(),
            GateError::Append(e) => e.is_transient(),
            GateError::Lost => false,
        }
    }
}

/// A committed decision and the entry that records it.
#[derive(Debug, Clone)]
pub struct Decided {
    pub fact: GateFact,
    pub entry_seq: u64,
}

/// Decides `req` from the evidence committed so far and records the decision.
pub async fn decide(
    store: &Store,
    appender: &Appender,
    criteria: &Criteria,
    req: &GateRequest,
    asked_by: SentBy,
) -> Result<Decided, GateError> {
    let size = store.head().await?.map_or(0, |h| h.head.size);
    let mut facts = fetch_facts(store, std::slice::from_ref(&req.change_id), size).await?;
    // Earlier decisions bear on nothing the gate decides: left out, so asking often costs no
    // more each time, and decisions alone do not make a change known (asking twice about a
    // change nobody described is CHANGE_UNKNOWN both times).
    for (_, records, _) in &mut facts {
        records.retain(|r| !matches!(r.fact.fact, Fact::Gate(_)));
    }
    let known = facts
        .iter()
        .any(|(_, records, broken)| !broken.is_empty() || !records.is_empty());
    // Rollbacks that name this change do not bear on whether it may deploy: none is looked up.
    let mut folded = if known {
        fold_facts(facts, &criteria.policy, &Default::default())
    } else {
        Vec::new()
    };
    judge_all(store, &mut folded, size, &criteria.judging).await?;
    let judged = folded
        .first()
        .map(|(e, broken)| (e, exceptions(e, broken, &criteria.rules)));
    let now_ns = crate::sys::now_ns();
    let decided = gate::decide(
        req,
        judged.as_ref().map(|(e, x)| (*e, x.as_slice())),
        &criteria.rules,
        criteria.policy.is_production(&req.environment),
        now_ns,
        size,
    );
    let intake = Intake {
        received_ns: now_ns,
        sent_by: Some(asked_by),
        max_lateness_ns: None,
        max_clock_skew_ns: 0,
    };
    let record = gate::gate_fact(req, decided.clone(), now_ns, &intake);
    let key = record.key.clone();
    appender
        .append_telemetry(Telemetry {
            facts: vec![record],
            ..Default::default()
        })
        .await
        .map_err(GateError::Append)?;
    // Committed: the decision stands whatever happens next, so a brief storage failure while
    // finding its entry is retried rather than answered as "ask again".
    let mut tries = 0;
    let entry_seq = loop {
        match store.fact_entry(&key).await {
            Ok(seq) => break seq.ok_or(GateError::Lost)?,
            Err(e) if e.is_transient() && tries < 5 => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50 << tries)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    Ok(Decided {
        fact: decided,
        entry_seq,
    })
}
