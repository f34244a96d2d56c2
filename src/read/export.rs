//! Reading the ledger back out: proofs from stored nodes, and bundles streamed page by page so
//! memory stays flat however long the ledger.

use crate::core::ledger::bundle::write;
use crate::core::ledger::hash::Hash;
use crate::core::ledger::merkle::{
    CompactRange, consistency_ranges, fold_nodes, inclusion_ranges, perfect_nodes,
};
use crate::storage::{EntryRow, StorageError, Store};
use std::ops::Range;
use tokio::sync::mpsc;

/// Entries fetched per query while streaming.
const PAGE: u64 = 2000;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Range(String),
}

async fn range_hashes(store: &Store, ranges: Vec<Range<u64>>) -> Result<Vec<Hash>, StorageError> {
    let mut out = Vec::with_capacity(ranges.len());
    for r in ranges {
        let nodes = store.nodes(&perfect_nodes(r)).await?;
        out.extend(fold_nodes(&nodes));
    }
    Ok(out)
}

/// Current tree size (entries appended so far).
async fn tree_size(store: &Store) -> Result<u64, ExportError> {
    Ok(store.head().await?.map_or(0, |h| h.head.size))
}

pub async fn inclusion_proof(store: &Store, seq: u64, size: u64) -> Result<Vec<Hash>, ExportError> {
    let have = tree_size(store).await?;
    if size > have {
        return Err(ExportError::Range(format!(
            "size {size} exceeds the ledger's {have} entries"
        )));
    }
    let ranges = inclusion_ranges(seq, size)
        .ok_or_else(|| ExportError::Range(format!("seq {seq} is not below size {size}")))?;
    Ok(range_hashes(store, ranges).await?)
}

pub async fn consistency_proof(
    store: &Store,
    from: u64,
    to: u64,
) -> Result<Vec<Hash>, ExportError> {
    let have = tree_size(store).await?;
    if to > have {
        return Err(ExportError::Range(format!(
            "size {to} exceeds the ledger's {have} entries"
        )));
    }
    let ranges = consistency_ranges(from, to).ok_or_else(|| {
        ExportError::Range(format!(
            "no consistency proof from {from} to {to}: need 1 <= from <= to"
        ))
    })?;
    Ok(range_hashes(store, ranges).await?)
}

/// What a bundle covers, decided before streaming starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundlePlan {
    pub start: u64,
    /// Exclusive end.
    pub end: u64,
    /// The end was moved forward to the next checkpoint, so the last entries are covered.
    pub extended_to_checkpoint: bool,
    /// Entries at the end that no checkpoint covers yet (verification will say INCOMPLETE).
    pub uncovered: u64,
    pub consistency_from: Option<u64>,
}

/// Chooses the range: `[from, to]` inclusive as asked, `to` extended to the next checkpoint so
/// every entry is covered; by default everything the newest checkpoint covers.
pub async fn plan(
    store: &Store,
    from: Option<u64>,
    to: Option<u64>,
    consistency_from: Option<u64>,
) -> Result<BundlePlan, ExportError> {
    let size = tree_size(store).await?;
    let latest = store.latest_checkpoint().await?.map_or(0, |c| c.size);
    let start = from.unwrap_or(0);
    let (end, extended) = match to {
        None => (latest, false),
        Some(t) => {
            let want = t
                .checked_add(1)
                .ok_or_else(|| ExportError::Range("--to is too large".into()))?;
            if want > size {
                return Err(ExportError::Range(format!(
                    "--to {t} is beyond the ledger's last entry ({})",
                    size.saturating_sub(1)
                )));
            }
            match store.checkpoint_covering(want).await? {
                Some(cp) => (cp.size, cp.size != want),
                None => (want, false),
            }
        }
    };
    if start >= end {
        return Err(ExportError::Range(format!(
            "nothing to export: from {start} to {} (the newest checkpoint covers {latest} entries)",
            end as i128 - 1
        )));
    }
    if let Some(m) = consistency_from
        && (m == 0 || m > end)
    {
        return Err(ExportError::Range(format!(
            "--consistency-from {m} must be between 1 and {end}"
        )));
    }
    Ok(BundlePlan {
        start,
        end,
        extended_to_checkpoint: extended,
        uncovered: end.saturating_sub(latest.max(start)),
        consistency_from,
    })
}

/// Streams the bundle's lines (each ending in a newline) through a bounded channel.
pub fn stream(
    store: Store,
    plan: BundlePlan,
    created_at: String,
) -> mpsc::Receiver<Result<String, ExportError>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        if let Err(e) = produce(&store, &plan, &created_at, &Sink::Text(&tx)).await {
            let _ = tx.send(Err(e)).await;
        }
    });
    rx
}

/// One piece of a bundle: a line that is not an entry, or an entry as storage holds it.
#[derive(Debug)]
pub enum Item {
    Line(String),
    Entry(EntryRow),
}

/// The same bundle as `stream`, a page at a time and with entries as rows, for a reader in this
/// process (the database verifier): no base64 or JSON between storage and the checks.
pub fn stream_items(
    store: Store,
    plan: BundlePlan,
    created_at: String,
) -> mpsc::Receiver<Result<Vec<Item>, ExportError>> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        if let Err(e) = produce(&store, &plan, &created_at, &Sink::Items(&tx)).await {
            let _ = tx.send(Err(e)).await;
        }
    });
    rx
}

enum Sink<'a> {
    Text(&'a mpsc::Sender<Result<String, ExportError>>),
    Items(&'a mpsc::Sender<Result<Vec<Item>, ExportError>>),
}

impl Sink<'_> {
    /// Sends a batch of items; false once the reader has gone.
    async fn send(&self, items: Vec<Item>) -> bool {
        match self {
            Sink::Text(tx) => {
                for item in items {
                    let mut line = match item {
                        Item::Line(l) => l,
                        Item::Entry(r) => write::entry(
                            r.seq,
                            &r.entry,
                            &r.sig,
                            r.salt.as_deref(),
                            r.payload.as_deref(),
                        ),
                    };
                    line.push('\n');
                    if tx.send(Ok(line)).await.is_err() {
                        return false;
                    }
                }
                true
            }
            Sink::Items(tx) => items.is_empty() || tx.send(Ok(items)).await.is_ok(),
        }
    }
}

async fn produce(
    store: &Store,
    plan: &BundlePlan,
    created_at: &str,
    sink: &Sink<'_>,
) -> Result<(), ExportError> {
    let head = store
        .head()
        .await?
        .ok_or_else(|| ExportError::Range("the ledger has not been created".into()))?;
    let mut first = vec![Item::Line(write::header(
        head.head.origin.as_str(),
        created_at,
    ))];
    let keys = store.keys().await?;
    for (i, k) in keys.iter().enumerate() {
        let to_seq = keys.get(i + 1).map(|n| n.from_seq - 1);
        first.push(Item::Line(write::key(&k.vkey, k.from_seq, to_seq)));
    }
    if plan.start > 0 {
        let peaks = store.nodes(&CompactRange::peak_ids(plan.start)).await?;
        first.push(Item::Line(write::prefix(plan.start, &peaks)));
    }
    if !sink.send(first).await {
        return Ok(());
    }
    let mut last_checkpoint = None;
    let mut next = plan.start;
    while next < plan.end {
        let limit = PAGE.min(plan.end - next);
        let rows = store.entries(next, limit).await?;
        let Some(page_end) = rows.last().map(|r| (r.seq + 1).min(plan.end)) else {
            return Err(ExportError::Range(format!(
                "entry {next} is missing from storage"
            )));
        };
        // Checkpoints are fetched page by page too, so memory stays flat for any ledger.
        let checkpoints = store.checkpoints_between(next, page_end).await?;
        let mut cps = checkpoints.into_iter().peekable();
        let mut page = Vec::with_capacity(rows.len() + 1);
        for r in rows {
            if r.seq >= plan.end {
                break;
            }
            next = r.seq + 1;
            page.push(Item::Entry(r));
            while let Some(cp) = cps.next_if(|c| c.size <= next) {
                if cp.size == next {
                    // Cosigned as served, so `verify --policy BUNDLE` works offline.
                    let note = super::tlog::served_checkpoint_note(store, &cp).await?;
                    page.push(Item::Line(write::checkpoint(&note)));
                }
                last_checkpoint = Some(cp.size);
            }
        }
        if !sink.send(page).await {
            return Ok(());
        }
    }
    if let Some(m) = plan.consistency_from
        && let Some(last) = last_checkpoint
        && m < last
    {
        let proof = consistency_proof(store, m, last).await?;
        sink.send(vec![Item::Line(write::consistency(m, last, &proof))])
            .await;
    }
    Ok(())
}
