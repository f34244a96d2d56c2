//! The reproducible sample: every population row ranked by a seeded digest of its change id.

use super::PopulationRow;
use crate::core::ledger::hash::Hash;
use std::collections::BTreeMap;

/// How the sample is drawn, in the words the manifest records so an auditor can re-draw it.
pub const SAMPLE_METHOD: &str = "rank every population row by SHA-256(\"changetrail/sample/v1\\n\" || seed || \"\\n\" || change_id) \
     as lowercase hex, ascending; the sample is the first N rows";

/// A change's place in the sample order for `seed`: lower is drawn first. It depends only on the
/// seed and the change id, so the draw does not depend on row order and anyone can repeat it.
pub fn sample_rank(seed: &str, change_id: &str) -> String {
    Hash::of(&[
        b"changetrail/sample/v1\n",
        seed.as_bytes(),
        b"\n",
        change_id.as_bytes(),
    ])
    .to_hex()
}

/// Keeps the `n` lowest-ranked rows seen, in rank order, without holding the population.
#[derive(Debug)]
pub struct Sampler {
    n: usize,
    seed: String,
    kept: BTreeMap<String, PopulationRow>,
}

impl Sampler {
    pub fn new(n: usize, seed: &str) -> Sampler {
        Sampler {
            n,
            seed: seed.to_owned(),
            kept: BTreeMap::new(),
        }
    }

    pub fn offer(&mut self, row: &PopulationRow) {
        if self.n == 0 {
            return;
        }
        let rank = sample_rank(&self.seed, &row.change_id);
        if self.kept.len() < self.n {
            self.kept.insert(rank, row.clone());
        } else if self.kept.last_key_value().is_some_and(|(k, _)| rank < *k) {
            self.kept.insert(rank, row.clone());
            self.kept.pop_last();
        }
    }

    /// The sample in draw order, each row with its rank.
    pub fn finish(self) -> Vec<(String, PopulationRow)> {
        self.kept.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::evidence::Evidence;
    use crate::core::evidence::report::{LedgerSpan, SpanTally};

    fn row(id: &str) -> PopulationRow {
        let e = Evidence {
            change: crate::core::evidence::ChangeView {
                id: id.into(),
                ..Default::default()
            },
            requester: None,
            approvals: vec![],
            timeline: crate::core::evidence::Timeline {
                requested_ns: None,
                approved_ns: None,
                first_deploy_start_ns: None,
                deploy_end_ns: None,
                deploy_received_ns: None,
            },
            steps: vec![],
            history_rewrites: vec![],
            gates: vec![],
            runtime: None,
            rolled_back_by: vec![],
            conflicts: vec![],
            deciding: vec![],
            credentials: vec![],
            judgement: Default::default(),
        };
        PopulationRow::new(&e, &SpanTally::default(), &LedgerSpan::default(), &[])
    }

    #[test]
    fn the_sample_is_the_lowest_ranks_whatever_the_order() {
        let ids: Vec<String> = (0..200).map(|i| format!("CHG-{i}")).collect();
        let draw = |order: &mut dyn Iterator<Item = &String>| {
            let mut s = Sampler::new(25, "audit-2026");
            for id in order {
                s.offer(&row(id));
            }
            s.finish()
                .into_iter()
                .map(|(_, r)| r.change_id)
                .collect::<Vec<_>>()
        };
        let forward = draw(&mut ids.iter());
        let backward = draw(&mut ids.iter().rev());
        assert_eq!(forward.len(), 25);
        assert_eq!(forward, backward);
        let mut by_rank: Vec<(String, &String)> = ids
            .iter()
            .map(|i| (sample_rank("audit-2026", i), i))
            .collect();
        by_rank.sort();
        let expect: Vec<String> = by_rank[..25].iter().map(|(_, i)| (*i).clone()).collect();
        assert_eq!(forward, expect);
        let mut other = Sampler::new(25, "another-seed");
        ids.iter().for_each(|i| other.offer(&row(i)));
        let other: Vec<String> = other
            .finish()
            .into_iter()
            .map(|(_, r)| r.change_id)
            .collect();
        assert_ne!(forward, other, "a different seed draws a different sample");
    }
}
