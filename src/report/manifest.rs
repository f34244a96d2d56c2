//! The manifest: what was asked, against which checkpoint, and the hash of every file; and the
//! detached signature over it. `build` writes them, `verify` reads them.

use super::Query;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One file of the report, as the manifest hashes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHash {
    pub name: String,
    pub sha256: String,
    pub bytes: u64,
}

/// The signed checkpoint the report was built against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestCheckpoint {
    pub size: u64,
    pub root: String,
    /// The signed note itself, so the report can be checked against it offline.
    pub note: String,
}

/// The ledger the report cites: its key, the checkpoint, and what verifying it found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestLedger {
    pub origin: String,
    pub key_id: String,
    pub vkey: String,
    pub checkpoint: ManifestCheckpoint,
    /// The lowest and highest entry sequence numbers any row cites.
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// The verifier's verdict over every entry the checkpoint covers.
    pub verification: String,
    pub findings: u64,
}

/// The sample drawn, and how to draw it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestSample {
    pub size: usize,
    pub seed: String,
    pub method: String,
}

/// How many rows each file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rows {
    pub population: u64,
    pub exceptions: u64,
    pub controls: u64,
    pub sample: u64,
}

/// The configuration the rows were judged with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestSettings {
    pub production_environments: Vec<String>,
    pub deploy_task_types: Vec<String>,
    pub approval_task_types: Vec<String>,
    pub approver_roles: Vec<String>,
    pub emergency_review_window: String,
    pub version_match_tolerance: String,
    pub catalogue_sha256: String,
    /// Per-service approver roles (`[[reports.approvers]]`).
    #[serde(default)]
    pub approvers: Vec<crate::core::evidence::rules::ApproverRule>,
    /// The judging settings, in nanoseconds, so a verifier re-derives with exactly these (absent
    /// in reports made before re-derivation).
    #[serde(default)]
    pub receipt_tolerance_ns: Option<i64>,
    #[serde(default)]
    pub max_lateness_ns: Option<i64>,
    #[serde(default)]
    pub require_bound_approvals: Option<bool>,
    #[serde(default)]
    pub version_match_tolerance_ns: Option<i64>,
    #[serde(default)]
    pub emergency_review_window_ns: Option<i64>,
    /// Whether deploys were compared with their runtime spans (absent before CHANGE_REGRESSION
    /// existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regressions_compared: Option<bool>,
}

/// manifest.json: what was asked, against which checkpoint, and the hash of every file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub report: String,
    pub title: String,
    pub query: Query,
    /// The selection in words (AT-C 205.36: the query used to produce the population).
    pub selection: String,
    pub period_start: String,
    pub period_end: String,
    pub generated_at: String,
    pub software: String,
    pub ledger: ManifestLedger,
    pub settings: ManifestSettings,
    pub rows: Rows,
    pub sample: Option<ManifestSample>,
    pub files: Vec<FileHash>,
}

/// manifest.sig: a detached Ed25519 signature over `core::manifest_message(manifest.json)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestSig {
    pub format: String,
    pub key_id: String,
    /// Informational: a verifier uses the key it pinned, never this one.
    pub vkey: String,
    pub signature: String,
}

/// The files a report holds besides its manifest and signature, in manifest order.
pub const FILES: [&str; 7] = [
    "population.csv",
    "exceptions.csv",
    "controls.csv",
    "rotation.csv",
    "report.json",
    "report.html",
    "sample.csv",
];

/// Files a report holds when it was made by a version that writes them: listed and hashed in
/// the manifest like the others, but a report from before them still verifies.
pub const OPTIONAL_FILES: [&str; 1] = ["delivery.csv"];

/// SHA-256 and size of a file, read in blocks.
pub fn hash_file(path: &Path, name: &str) -> Result<FileHash, std::io::Error> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok(FileHash {
        name: name.to_owned(),
        sha256: hex::encode(h.finalize()),
        bytes,
    })
}
