//! Reports built in-process (as the service builds them) and their CSV files read back.

use crate::support::server::TestApp;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The January 2026 report of `app`'s ledger built in-process, with an optional (size, seed) sample.
pub async fn build_january(
    app: &TestApp,
    settings: &changetrail::report::Settings,
    out: &Path,
    sample: Option<(usize, &str)>,
) -> Result<changetrail::report::Outcome, changetrail::report::ReportError> {
    let query = changetrail::report::Query {
        from: "2026-01-01".into(),
        to: "2026-01-31".into(),
        sample: sample.map(|s| s.0),
        seed: sample.map(|s| s.1.to_owned()),
        ..Default::default()
    };
    let job = changetrail::report::Job {
        store: &app.store,
        key: &app.writer.key(),
        query: &query,
        settings,
        out,
        now_ns: changetrail::sys::now_ns(),
    };
    changetrail::report::build(job, std::sync::Arc::new(changetrail::report::NoProgress)).await
}

/// Each population row's change id and its exception codes.
pub fn codes_by_change(rows: &[BTreeMap<String, String>]) -> BTreeMap<String, BTreeSet<String>> {
    rows.iter()
        .map(|r| {
            let codes = r["exception_codes"].split(';').filter(|c| !c.is_empty());
            (r["change_id"].clone(), codes.map(String::from).collect())
        })
        .collect()
}

/// The rows of a CSV file, each by its header's column names.
pub fn csv_rows(path: &Path) -> Vec<BTreeMap<String, String>> {
    let mut r = csv::Reader::from_path(path).unwrap();
    let h: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    r.records()
        .map(|rec| {
            h.iter()
                .cloned()
                .zip(rec.unwrap().iter().map(String::from))
                .collect()
        })
        .collect()
}
