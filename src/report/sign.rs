//! The last phase: every file hashed into the manifest, and the manifest signed by the ledger's
//! key, so a reader can tell the report is the one the ledger's owner built.

use super::manifest::{
    FILES, Manifest, ManifestCheckpoint, ManifestLedger, ManifestSample, ManifestSettings,
    ManifestSig, Rows, hash_file,
};
use super::{Ctx, ReportError, Summary};
use crate::core::evidence::report as core;
use crate::core::evidence::rules;
use crate::core::ledger::keys::LedgerKey;
use serde::Serialize;
use std::path::Path;

/// The manifest over every file in `ctx.work`, stating what `summary` does.
pub(super) fn manifest(ctx: &Ctx<'_>, summary: &Summary) -> Result<Manifest, ReportError> {
    let (query, settings, key) = (ctx.job.query, ctx.job.settings, ctx.job.key);
    let (period, checkpoint, tally) = (&ctx.period, &ctx.checkpoint, &summary.tally);
    let mut files = Vec::new();
    for name in FILES {
        files.push(hash_file(&ctx.work.join(name), name)?);
    }
    for name in super::OPTIONAL_FILES {
        files.push(hash_file(&ctx.work.join(name), name)?);
    }
    Ok(Manifest {
        format: core::MANIFEST_FORMAT.into(),
        report: "soc2".into(),
        title: settings.catalogue.title.clone(),
        query: query.clone(),
        selection: summary.selection.clone(),
        period_start: crate::core::time::rfc3339(period.from_ns),
        period_end: crate::core::time::rfc3339(period.to_ns),
        generated_at: summary.generated_at.clone(),
        software: format!("changetrail {}", env!("CARGO_PKG_VERSION")),
        ledger: ManifestLedger {
            origin: key.origin().to_string(),
            key_id: key.key_id().to_hex(),
            vkey: key.vkey().to_string(),
            checkpoint: ManifestCheckpoint {
                size: checkpoint.size,
                root: checkpoint.root.to_b64(),
                note: checkpoint.note.clone(),
            },
            first_seq: tally.first_seq,
            last_seq: tally.last_seq,
            verification: summary.ledger.verdict.clone(),
            findings: summary.ledger.findings(),
        },
        settings: ManifestSettings {
            production_environments: settings.policy.production_environments.clone(),
            deploy_task_types: settings.policy.deploy_task_types.clone(),
            approval_task_types: settings.policy.approval_task_types.clone(),
            approver_roles: settings.rules.approver_roles.clone(),
            emergency_review_window: rules::human_duration(
                settings.rules.emergency_review_window_ns,
            ),
            version_match_tolerance: rules::human_duration(settings.tolerance_ns),
            catalogue_sha256: settings.catalogue_sha256.clone(),
            approvers: settings.rules.approvers.clone(),
            receipt_tolerance_ns: Some(settings.judging.receipt_tolerance_ns),
            max_lateness_ns: Some(settings.judging.max_lateness_ns),
            require_bound_approvals: Some(settings.judging.require_bound_approvals),
            version_match_tolerance_ns: Some(settings.tolerance_ns),
            emergency_review_window_ns: Some(settings.rules.emergency_review_window_ns),
            regressions_compared: Some(settings.rules.regressions_compared),
        },
        rows: Rows {
            population: tally.changes,
            exceptions: summary.exception_rows,
            controls: summary.controls.len() as u64,
            sample: summary.sample.len() as u64,
        },
        sample: query
            .sample
            .zip(query.seed.clone())
            .map(|(_, seed)| ManifestSample {
                size: summary.sample.len(),
                seed,
                method: core::SAMPLE_METHOD.into(),
            }),
        files,
    })
}

/// Writes manifest.json and its detached signature manifest.sig into `dir`.
pub fn write_manifest(dir: &Path, manifest: &Manifest, key: &LedgerKey) -> Result<(), ReportError> {
    let bytes = pretty(manifest)?;
    std::fs::write(dir.join("manifest.json"), &bytes)?;
    let sig = ManifestSig {
        format: core::MANIFEST_FORMAT.into(),
        key_id: key.key_id().to_hex(),
        vkey: key.vkey().to_string(),
        signature: crate::core::ledger::hash::b64(&key.sign(&core::manifest_message(&bytes))),
    };
    std::fs::write(dir.join("manifest.sig"), pretty(&sig)?)?;
    Ok(())
}

/// Pretty JSON with a final newline.
fn pretty<T: Serialize>(v: &T) -> Result<Vec<u8>, ReportError> {
    let mut b = serde_json::to_vec_pretty(v).map_err(|e| ReportError::Other(e.to_string()))?;
    b.push(b'\n');
    Ok(b)
}
