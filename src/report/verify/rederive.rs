//! Re-deriving a report from a bundle's entries alone, the way `build` would, and naming every
//! row of population.csv, exceptions.csv, controls.csv and rotation.csv that differs.

use super::Outcome;
use super::bundle::BundlePayloads;
use super::rows::{plain, read_csv};
use crate::core::evidence::rederive::{LedgerFacts, Rederived, Scope, rederive};
use crate::core::evidence::report::{
    self as core, EXCEPTION_COLUMNS, POPULATION_COLUMNS, population_columns,
};
use crate::core::evidence::rules::Exception;
use crate::core::ledger::hash::Hash;
use crate::report::Manifest;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The report's settings as its manifest records them, when it records all the judging ones
/// (a report from before re-derivation does not).
fn scope_of(m: &Manifest) -> Result<Scope, String> {
    let s = &m.settings;
    let (
        Some(receipt_tolerance_ns),
        Some(max_lateness_ns),
        Some(require_bound_approvals),
        Some(tolerance_ns),
        Some(emergency_review_window_ns),
    ) = (
        s.receipt_tolerance_ns,
        s.max_lateness_ns,
        s.require_bound_approvals,
        s.version_match_tolerance_ns,
        s.emergency_review_window_ns,
    )
    else {
        return Err(
            "the manifest records no judging settings (a report made before re-derivation)".into(),
        );
    };
    let period = m.query.period().map_err(|e| e.to_string())?;
    Ok(Scope {
        from_ns: period.from_ns,
        to_ns: period.to_ns,
        environment: m.query.environment.clone(),
        service: m.query.service.clone(),
        policy: crate::core::evidence::Policy {
            production_environments: s.production_environments.clone(),
            deploy_task_types: s.deploy_task_types.clone(),
            approval_task_types: s.approval_task_types.clone(),
        },
        rules: crate::core::evidence::rules::RuleContext {
            approver_roles: s.approver_roles.clone(),
            approvers: s.approvers.clone(),
            emergency_review_window_ns,
            regressions_compared: s.regressions_compared.unwrap_or(true),
        },
        judging: crate::core::evidence::Settings {
            receipt_tolerance_ns,
            max_lateness_ns,
            require_bound_approvals,
        },
        tolerance_ns,
    })
}

/// What re-deriving a report needs from its bundle.
pub(super) struct Offline {
    pub(super) facts: LedgerFacts,
    /// The bundle starts at entry 0.
    pub(super) from_start: bool,
    /// The ledger verifier's findings, as the report lists them.
    pub(super) findings: Vec<(Exception, Option<u64>)>,
    /// The bundle, read again for each change's facts.
    pub(super) bundle: PathBuf,
}

/// Re-derives the report's rows from the bundle's entries and names every row that differs.
pub(super) fn rederived(
    dir: &Path,
    m: &Manifest,
    catalogue: Option<&str>,
    o: Offline,
    out: &mut Outcome,
) {
    let want = match derive(m, catalogue, o) {
        Ok(w) => w,
        Err(e) => {
            out.fail("NOT_DERIVED", e);
            return;
        }
    };
    let before = out.findings.len() + out.suppressed.values().sum::<u64>() as usize;
    population(dir, &m.format, &want, out);
    tables(dir, &want, out);
    if out.findings.len() + out.suppressed.values().sum::<u64>() as usize == before {
        out.ok(format!(
            "re-derived from the bundle's entries alone: {} population rows, {} exceptions, {} controls, {} credentials, as the report says",
            want.population.len(),
            want.exceptions.len(),
            want.controls.len(),
            want.rotation.len()
        ));
    }
}

/// The rows the bundle's entries give, with the settings and catalogue the manifest records;
/// or why they cannot be derived.
fn derive(m: &Manifest, catalogue: Option<&str>, o: Offline) -> Result<Rederived, String> {
    let Offline {
        facts,
        from_start,
        findings,
        bundle,
    } = o;
    if !from_start {
        return Err(
            "the bundle does not start at entry 0: the rows cannot be re-derived from it (export the whole ledger)".into(),
        );
    }
    let scope = scope_of(m)?;
    let text = catalogue.unwrap_or(core::SOC2_CATALOGUE);
    if Hash::of(&[text.as_bytes()]).to_hex() != m.settings.catalogue_sha256 {
        return Err(
            "the report was built with another control catalogue than the one given: pass it with --catalogue".into(),
        );
    }
    let cat = core::Catalogue::parse(text)?;
    let mut payloads =
        BundlePayloads::open(&bundle).map_err(|e| format!("cannot open the bundle again: {e}"))?;
    rederive(facts, &mut payloads, &scope, &cat, &findings)
}

/// Population: one row per change, every column.
fn population(dir: &Path, format: &str, want: &Rederived, out: &mut Outcome) {
    // A report of an earlier format is compared on the columns it has (rows.rs refuses an
    // unknown format).
    let Some(columns) = population_columns(format) else {
        return;
    };
    let pop = read_csv(dir, "population.csv", &columns, out);
    let mut have: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in &pop {
        let cells: Vec<String> = r.iter().map(str::to_owned).collect();
        have.insert(plain(r.get(0).unwrap_or_default()).to_owned(), cells);
    }
    for row in &want.population {
        let all = row.cells();
        let cells: Vec<String> = columns
            .iter()
            .filter_map(|c| POPULATION_COLUMNS.iter().position(|p| p == c))
            .map(|i| all[i].clone())
            .collect();
        match have.remove(&row.change_id) {
            None => out.fail(
                "DERIVED_MISMATCH",
                format!(
                    "population.csv has no row for {}, which the entries put in the population",
                    row.change_id
                ),
            ),
            Some(got) if got != cells => {
                let diff: Vec<String> = columns
                    .iter()
                    .zip(got.iter().zip(&cells))
                    .filter(|(_, (a, b))| a != b)
                    .map(|(c, (a, b))| format!("{c} is {a:?}, the entries give {b:?}"))
                    .collect();
                out.fail(
                    "DERIVED_MISMATCH",
                    format!("population.csv row {}: {}", row.change_id, diff.join("; ")),
                );
            }
            Some(_) => {}
        }
    }
    for id in have.keys() {
        out.fail(
            "DERIVED_MISMATCH",
            format!("population.csv row {id} is not in the population the entries give"),
        );
    }
}

/// Exceptions, controls and the rotation table: as multisets of rows, each said in words.
fn tables(dir: &Path, want: &Rederived, out: &mut Outcome) {
    table(
        dir,
        "exceptions.csv",
        &EXCEPTION_COLUMNS,
        want.exceptions.iter().map(|r| r.cells()).collect(),
        &|r| {
            let change = cell(r, 1);
            format!(
                "{} {} ({})",
                cell(r, 0),
                if change.is_empty() {
                    "about the ledger".to_owned()
                } else {
                    format!("on {change}")
                },
                cell(r, 3)
            )
        },
        out,
    );
    table(
        dir,
        "controls.csv",
        &core::CONTROL_COLUMNS,
        want.controls.iter().map(|r| r.cells()).collect(),
        &|r| {
            format!(
                "control {} as {} with {} exceptions ({})",
                cell(r, 0),
                cell(r, 6),
                cell(r, 4),
                cell(r, 5)
            )
        },
        out,
    );
    table(
        dir,
        "rotation.csv",
        &core::ROTATION_COLUMNS,
        want.rotation.iter().map(|r| r.cells()).collect(),
        &|r| {
            format!(
                "{} credential {} on {} changes ({} to {})",
                cell(r, 0),
                cell(r, 1),
                cell(r, 2),
                cell(r, 3),
                cell(r, 5)
            )
        },
        out,
    );
}

fn cell(r: &[String], i: usize) -> String {
    r.get(i).map(String::as_str).unwrap_or("").to_owned()
}

/// One table as a multiset of rows: every row it lists that `want` lacks, and every row of
/// `want` it lacks, is a finding.
fn table(
    dir: &Path,
    name: &'static str,
    header: &[&str],
    want: Vec<Vec<String>>,
    say: &dyn Fn(&[String]) -> String,
    out: &mut Outcome,
) {
    let got: Vec<Vec<String>> = read_csv(dir, name, header, out)
        .iter()
        .map(|r| r.iter().map(str::to_owned).collect())
        .collect();
    let mut left: BTreeMap<Vec<String>, i64> = BTreeMap::new();
    for r in got {
        *left.entry(r).or_default() += 1;
    }
    for r in want {
        *left.entry(r).or_default() -= 1;
    }
    for (r, n) in left {
        if n > 0 {
            out.fail(
                "DERIVED_MISMATCH",
                format!("{name} lists {}, which the entries do not give", say(&r)),
            );
        } else if n < 0 {
            out.fail(
                "DERIVED_MISMATCH",
                format!("{name} lacks {}, which the entries give", say(&r)),
            );
        }
    }
}
