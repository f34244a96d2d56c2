//! The end of the pass: what never arrived (checkpoints beyond the entries, gaps, payloads), the
//! signatures checked in the background, coverage, the saved state, consistency proofs and
//! freshness, and the verdict.

use super::findings::worse;
use super::{Class, Finding, Report, TrustedState, Verifier};
use crate::core::ledger::merkle::verify_consistency;
use crate::core::ledger::sigcheck::SignatureChecker;

impl Verifier {
    pub fn finish(mut self) -> Report {
        if !self.header_seen {
            self.find(Finding::general(
                Class::Modified,
                "the bundle is empty: no header line",
            ));
        }
        // Checkpoints larger than the entries given.
        let pending = std::mem::take(&mut self.pending);
        for (size, list) in pending {
            for p in list {
                self.check_signature_only(&p);
                let f = Finding::at_size(
                    Class::Incomplete,
                    size,
                    "checkpoint covers more entries than the bundle holds",
                )
                .values(size, self.range.size());
                self.find(f);
            }
        }
        // Gaps never filled.
        let gaps = std::mem::take(&mut self.gaps);
        for (start, end) in gaps {
            let detail = if end - start == 1 {
                "sequence number is absent".to_owned()
            } else {
                format!("sequence numbers {start}..={} are absent", end - 1)
            };
            self.find(Finding::at_seq(Class::Missing, start, detail));
        }
        // Payloads absent: logged erasures are fine, others are missing evidence.
        let missing = std::mem::take(&mut self.missing_payloads);
        for seq in missing {
            if self.erased.contains(&seq) {
                self.summary.redacted += 1;
                self.find(Finding::at_seq(
                    Class::Redacted,
                    seq,
                    "payload erased; the erasure is logged",
                ));
            } else {
                self.find(Finding::at_seq(
                    Class::Missing,
                    seq,
                    "payload and salt are absent and no payload.erased entry names this seq",
                ));
            }
        }
        // Signatures.
        let sigs = std::mem::replace(&mut self.sigs, SignatureChecker::new(1));
        self.summary.signatures = sigs.checked();
        for seq in sigs.finish() {
            self.find(Finding::at_seq(
                Class::BadSignature,
                seq,
                "entry signature does not verify",
            ));
        }
        self.check_coverage();
        self.check_state();
        self.check_consistency_lines();
        self.check_freshness();

        let exit_code = self
            .findings
            .list
            .iter()
            .map(|f| f.class.exit_code())
            .chain(self.findings.suppressed.keys().map(|c| c.exit_code()))
            .fold(0, worse);
        let new_state = match (&self.summary.newest, exit_code) {
            (Some(n), 0) if self.opts.state.as_ref().is_none_or(|s| s.size <= n.size) => {
                Some(TrustedState {
                    size: n.size,
                    root: n.root,
                })
            }
            _ => None,
        };
        self.summary.keys = self
            .keys
            .spans
            .iter()
            .map(|(s, k)| (*s, k.to_string()))
            .collect();
        let mut findings = self.findings.list;
        findings.sort_by_key(|f| {
            (
                f.class.exit_code() == 0,
                f.seq.or(f.size).unwrap_or(0),
                f.class,
            )
        });
        let mut summary = self.summary;
        summary.verified_roots = std::mem::take(&mut self.verified_roots);
        Report {
            findings,
            suppressed: self.findings.suppressed,
            summary,
            exit_code,
            new_state,
        }
    }

    fn check_coverage(&mut self) {
        let entries_end = self.range.size();
        let has_entries = self.summary.first_seq.is_some();
        match &self.summary.newest {
            None if has_entries => {
                self.summary.covered_to = None;
                let f =
                    Finding::general(Class::Incomplete, "no valid checkpoint covers the entries");
                self.find(f);
            }
            None => {
                let f = Finding::general(
                    Class::Incomplete,
                    "the bundle holds no entries and no checkpoint",
                );
                self.find(f);
            }
            Some(n) => {
                let n_size = n.size;
                self.summary.covered_to = Some(n_size);
                if entries_end > n_size {
                    let f = Finding::at_size(
                        Class::Incomplete,
                        n_size,
                        format!(
                            "entries {n_size}..={} come after the newest checkpoint and are not covered",
                            entries_end - 1
                        ),
                    );
                    self.find(f);
                }
            }
        }
    }

    fn check_state(&mut self) {
        let Some(state) = self.opts.state.clone() else {
            return;
        };
        let Some(newest) = self.summary.newest.clone() else {
            if state.size > 0 {
                let f = Finding::at_size(
                    Class::Rollback,
                    state.size,
                    "no checkpoint verified, but the saved state has one",
                )
                .values(state.size, 0);
                self.find(f);
            }
            return;
        };
        if newest.size < state.size {
            let f = Finding::at_size(
                Class::Rollback,
                newest.size,
                "the newest checkpoint is smaller than the saved state",
            )
            .values(state.size, newest.size);
            self.find(f);
            return;
        }
        if newest.size == state.size {
            if newest.root != state.root {
                let f = Finding::at_size(
                    Class::Fork,
                    state.size,
                    "same size as the saved state, different root",
                )
                .values(state.root.to_b64(), newest.root.to_b64());
                self.find(f);
            }
            return;
        }
        if let Some(root) = self.state_root_seen {
            if root != state.root {
                let f = Finding::at_size(
                    Class::Fork,
                    state.size,
                    "the entries give a different root at the saved state's size",
                )
                .values(state.root.to_b64(), root.to_b64());
                self.find(f);
            }
            return;
        }
        // The bundle starts after the saved state: a consistency proof must connect them.
        let proven = self.consistency.iter().any(|(from, to, proof)| {
            *from == state.size
                && self.verified_roots.get(to).is_some_and(|r| {
                    verify_consistency(state.size, *to, &state.root, r, proof).is_ok()
                })
        });
        if !proven {
            let f = Finding::at_size(
                Class::Fork,
                state.size,
                "no valid consistency proof connects the saved state to this bundle's checkpoints",
            );
            self.find(f);
        }
    }

    fn check_consistency_lines(&mut self) {
        let lines = std::mem::take(&mut self.consistency);
        for (from, to, proof) in &lines {
            let old = self.verified_roots.get(from).copied().or_else(|| {
                self.opts
                    .state
                    .as_ref()
                    .filter(|s| s.size == *from)
                    .map(|s| s.root)
            });
            let (Some(old), Some(new)) = (old, self.verified_roots.get(to).copied()) else {
                continue;
            };
            if let Err(e) = verify_consistency(*from, *to, &old, &new, proof) {
                let is_state = self.opts.state.as_ref().is_some_and(|s| s.size == *from);
                if !is_state {
                    let f = Finding::at_size(
                        Class::Modified,
                        *to,
                        format!("consistency proof from {from} fails: {e}"),
                    );
                    self.find(f);
                }
            }
        }
    }

    fn check_freshness(&mut self) {
        let Some(max_age) = self.opts.max_age_ns else {
            return;
        };
        match &self.summary.newest {
            None => {}
            Some(n) => {
                let age = self.opts.now_ns.saturating_sub(n.time_ns);
                if age > max_age {
                    let f = Finding::at_size(
                        Class::Stale,
                        n.size,
                        "the newest checkpoint covers nothing newer than the maximum age",
                    )
                    .values(
                        format!("age <= {}s", max_age / 1_000_000_000),
                        format!("age {}s", age / 1_000_000_000),
                    );
                    self.find(f);
                }
            }
        }
    }
}
