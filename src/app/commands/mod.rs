//! One module per CLI command: argument handling and printing around library calls.

pub mod bench;
pub mod bench_gate;
pub mod bench_hostile;
pub mod bench_ingest;
pub mod bench_list;
pub mod bench_report;
pub mod conductor;
pub mod config;
pub mod demo;
pub mod export;
pub mod export_tiles;
pub mod keys;
pub mod ledger;
pub mod proof;
pub mod report;
pub mod serve;
pub mod tokens;
pub mod verify;

/// A terminal progress bar as the read side's `Progress`: the CLI draws, the library does not.
pub struct Bar(pub indicatif::ProgressBar);

impl crate::read::Progress for Bar {
    fn set_length(&self, total: u64) {
        self.0.set_length(total);
    }

    fn advance(&self, n: u64) {
        self.0.inc(n);
    }

    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

/// Checks a checkpoint note against a C2SP tlog-policy file: `Ok(Ok(summary))` when its quorum
/// of cosignatures holds, `Ok(Err(why))` when not, `Err` when the policy cannot be read.
pub fn policy_check(path: &std::path::Path, note: &str) -> anyhow::Result<Result<String, String>> {
    let policy = verify::load_policy(path)?;
    Ok(match policy.check(note) {
        Err(e) => Err(format!("the checkpoint fails the policy: {e}")),
        Ok(v) if v.quorum_met && v.cosigned.is_empty() => {
            Ok("the policy asks for no cosignature".to_owned())
        }
        Ok(v) if v.quorum_met => Ok(format!(
            "witness quorum met (cosigned by {})",
            v.cosigned.join(", ")
        )),
        Ok(v) => Err(format!(
            "UNWITNESSED: the checkpoint (size {}) lacks the policy's quorum of witness cosignatures; missing: {}",
            v.checkpoint.size,
            v.missing.join(", ")
        )),
    })
}
