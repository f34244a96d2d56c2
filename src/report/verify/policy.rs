//! `verify-report --policy FILE`: the checkpoint a report rests on must carry the tlog-policy's
//! quorum of valid witness cosignatures. A report is usually signed before the witnesses answer,
//! so its manifest's note may have none: the same checkpoint as the ledger serves it (the
//! database, or a bundle's checkpoint line) is taken too, and the report passes if any copy of
//! that exact checkpoint (same size and root) meets the quorum.

use super::{LedgerSource, Outcome};
use crate::core::ledger::bundle::Line;
use crate::core::ledger::policy::Policy;
use crate::report::Manifest;
use std::io::BufRead as _;
use std::path::Path;

/// Adds a pass or an `UNWITNESSED` finding to `out`.
pub async fn check_policy(
    dir: &Path,
    ledger: &LedgerSource,
    policy: &Policy,
    out: &mut Outcome,
) -> anyhow::Result<()> {
    let Ok(bytes) = std::fs::read(dir.join("manifest.json")) else {
        return Ok(()); // already a MISSING_FILE finding
    };
    let Ok(m) = serde_json::from_slice::<Manifest>(&bytes) else {
        return Ok(()); // already a BAD_FORMAT finding
    };
    let cp = &m.ledger.checkpoint;
    let manifest_origin = crate::core::ledger::note::Note::parse(&cp.note)
        .ok()
        .and_then(|n| crate::core::ledger::note::Checkpoint::parse_body(&n.text).ok())
        .map(|b| b.origin.as_str().to_owned());
    let mut notes = vec![cp.note.clone()];
    match ledger {
        LedgerSource::None => {}
        LedgerSource::Store(store) => {
            if let Some(row) = store.checkpoint_at(cp.size).await? {
                notes.push(crate::read::tlog::served_checkpoint_note(store, &row).await?);
            }
        }
        LedgerSource::Bundle(path) => {
            let file = std::io::BufReader::new(std::fs::File::open(path)?);
            for line in file.lines() {
                let line = line?;
                if line.contains("\"checkpoint\"")
                    && let Ok(Line::Checkpoint { note }) = Line::parse(&line)
                {
                    notes.push(note.into_owned());
                }
            }
        }
    }
    let mut missing: Option<Vec<String>> = None;
    for note in &notes {
        match policy.check(note) {
            // The very checkpoint the manifest names: its origin too, not only size and root.
            Ok(v)
                if v.checkpoint.size == cp.size
                    && v.checkpoint.root.to_b64() == cp.root
                    && Some(v.checkpoint.origin.as_str()) == manifest_origin.as_deref() =>
            {
                if v.quorum_met {
                    out.ok(format!(
                        "checkpoint at size {} carries the policy's quorum (cosigned by {})",
                        cp.size,
                        if v.cosigned.is_empty() {
                            "none needed".to_owned()
                        } else {
                            v.cosigned.join(", ")
                        }
                    ));
                    return Ok(());
                }
                if missing.as_ref().is_none_or(|m| v.missing.len() < m.len()) {
                    missing = Some(v.missing);
                }
            }
            _ => {}
        }
    }
    let missing = missing.map_or_else(|| "no valid copy of it".to_owned(), |m| m.join(", "));
    out.fail(
        "UNWITNESSED",
        format!(
            "the report's checkpoint at size {} lacks the policy's quorum of witness cosignatures (missing: {missing})",
            cp.size
        ),
    );
    Ok(())
}
