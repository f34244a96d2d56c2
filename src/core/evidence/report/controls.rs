//! The control catalogue (which exception codes test which control) and each control's result.

use super::neutralise;
use crate::core::evidence::rules;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A control catalogue (`reports/soc2.toml`): which exception codes test which control.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalogue {
    pub title: String,
    pub framework: String,
    pub controls: Vec<Control>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Control {
    pub id: String,
    pub title: String,
    pub description: String,
    /// "changes" (the production changes of the period) or "ledger" (the evidence itself).
    pub population: String,
    pub codes: Vec<String>,
}

impl Catalogue {
    /// Parses and checks a catalogue: unique ids, known populations, and only codes the rules make
    /// (a misspelt code would otherwise make a control pass that was never tested).
    pub fn parse(text: &str) -> Result<Catalogue, String> {
        let c: Catalogue = toml::from_str(text).map_err(|e| format!("catalogue: {e}"))?;
        let mut ids = BTreeSet::new();
        for ctl in &c.controls {
            if !ids.insert(ctl.id.as_str()) {
                return Err(format!("catalogue: control {:?} appears twice", ctl.id));
            }
            if ctl.population != "changes" && ctl.population != "ledger" {
                return Err(format!(
                    "catalogue: control {:?} has population {:?}; use \"changes\" or \"ledger\"",
                    ctl.id, ctl.population
                ));
            }
            for code in &ctl.codes {
                if !rules::ALL.contains(&code.as_str()) {
                    return Err(format!(
                        "catalogue: control {:?} names {code:?}, which no rule produces (known: {})",
                        ctl.id,
                        rules::ALL.join(", ")
                    ));
                }
            }
        }
        if c.controls.is_empty() {
            return Err("catalogue: no controls".into());
        }
        Ok(c)
    }

    /// The ids of the controls a code tests, in catalogue order.
    pub fn controls_of(&self, code: &str) -> Vec<&str> {
        self.controls
            .iter()
            .filter(|c| c.codes.iter().any(|k| k == code))
            .map(|c| c.id.as_str())
            .collect()
    }
}

pub const CONTROL_COLUMNS: [&str; 7] = [
    "control_id",
    "title",
    "population",
    "population_tested",
    "exceptions",
    "codes",
    "result",
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ControlResult {
    pub id: String,
    pub title: String,
    pub description: String,
    pub population: String,
    pub population_tested: u64,
    pub exceptions: u64,
    /// Exceptions per code this control is tested by (zero counts included).
    pub by_code: BTreeMap<String, u64>,
    /// `pass` (no exceptions noted), `exceptions` (noted), `not_tested` (empty population, or
    /// settings under which its codes test nothing).
    pub result: String,
}

impl ControlResult {
    pub fn cells(&self) -> Vec<String> {
        let codes: Vec<String> = self
            .by_code
            .iter()
            .map(|(c, n)| format!("{c}={n}"))
            .collect();
        [
            self.id.clone(),
            self.title.clone(),
            self.population.clone(),
            self.population_tested.to_string(),
            self.exceptions.to_string(),
            codes.join(";"),
            self.result.clone(),
        ]
        .into_iter()
        .map(|c| neutralise(&c).into_owned())
        .collect()
    }
}

/// Each control's result from the exception counts and the sizes of the two populations. A
/// control whose every code is `untested` under the report's settings (approver roles with none
/// configured) is "not_tested", never "pass".
pub fn control_results(
    cat: &Catalogue,
    counts: &BTreeMap<String, u64>,
    changes: u64,
    ledger_entries: u64,
    untested: &[&str],
) -> Vec<ControlResult> {
    cat.controls
        .iter()
        .map(|c| {
            let by_code: BTreeMap<String, u64> = c
                .codes
                .iter()
                .map(|k| (k.clone(), counts.get(k).copied().unwrap_or(0)))
                .collect();
            let exceptions = by_code.values().sum();
            let tested = if c.population == "ledger" {
                ledger_entries
            } else {
                changes
            };
            let tests_nothing = c.codes.iter().all(|k| untested.contains(&k.as_str()));
            let tested = if tests_nothing { 0 } else { tested };
            let result = if exceptions > 0 {
                "exceptions"
            } else if tested == 0 {
                "not_tested"
            } else {
                "pass"
            };
            ControlResult {
                id: c.id.clone(),
                title: c.title.clone(),
                description: c.description.clone(),
                population: c.population.clone(),
                population_tested: tested,
                exceptions,
                by_code,
                result: result.into(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::evidence::report::SOC2_CATALOGUE;

    #[test]
    fn the_shipped_catalogue_parses_and_covers_every_code() {
        let c = Catalogue::parse(SOC2_CATALOGUE).unwrap();
        for code in rules::ALL {
            assert!(
                !c.controls_of(code).is_empty(),
                "{code} tests no control in reports/soc2.toml"
            );
        }
        assert_eq!(c.controls_of("SELF_APPROVAL"), vec!["CC8.1", "CC6.3"]);
    }

    #[test]
    fn a_catalogue_with_an_unknown_code_or_a_repeated_id_is_refused() {
        let bad = SOC2_CATALOGUE.replace("\"NO_APPROVAL\"", "\"NO_APROVAL\"");
        assert!(Catalogue::parse(&bad).unwrap_err().contains("NO_APROVAL"));
        let twice = format!(
            "{SOC2_CATALOGUE}\n[[controls]]\nid = \"CC8.1\"\ntitle = \"x\"\ndescription = \"x\"\npopulation = \"changes\"\ncodes = []\n"
        );
        assert!(Catalogue::parse(&twice).unwrap_err().contains("twice"));
        let pop = SOC2_CATALOGUE.replace("population = \"ledger\"", "population = \"logs\"");
        assert!(Catalogue::parse(&pop).unwrap_err().contains("logs"));
    }

    #[test]
    fn controls_pass_fail_or_go_untested() {
        let c = Catalogue::parse(SOC2_CATALOGUE).unwrap();
        let mut counts = BTreeMap::new();
        counts.insert("SELF_APPROVAL".to_string(), 2);
        let r = control_results(&c, &counts, 10, 100, &[]);
        let by: BTreeMap<&str, &ControlResult> = r.iter().map(|r| (r.id.as_str(), r)).collect();
        assert_eq!(by["CC8.1"].result, "exceptions");
        assert_eq!(by["CC8.1"].exceptions, 2);
        assert_eq!(by["CC6.3"].result, "exceptions");
        assert_eq!(by["CC6.1"].result, "pass");
        assert_eq!(by["CC2.1 / CC4.1"].population_tested, 100);
        let empty = control_results(&c, &BTreeMap::new(), 0, 100, &[]);
        assert_eq!(empty[0].result, "not_tested");
        // No approver roles configured: CC6.2 tested nothing; CC6.3 still tests self-approval.
        let r = control_results(&c, &BTreeMap::new(), 10, 100, &["APPROVER_NOT_AUTHORIZED"]);
        let by: BTreeMap<&str, &ControlResult> = r.iter().map(|r| (r.id.as_str(), r)).collect();
        assert_eq!(by["CC6.2"].result, "not_tested");
        assert_eq!(by["CC6.2"].population_tested, 0);
        assert_eq!(by["CC6.3"].result, "pass");
    }
}
