//! Checks a database's stored data against its entries, for `verify --database-url`: every
//! stored column, not only the ones a bundle carries, must agree with the signed entry bytes
//! (leaf hashes, indexed kind/subject/time, tree nodes, checkpoint rows, key rows, the head row,
//! erasure records): a disagreement there is MODIFIED. The derived tables the report and the
//! console read (facts, spans, log records, credentials) are recomputed from the entries as they
//! pass (`derived`): a row no signed entry produced, or one that differs, is DERIVED_MISMATCH.

mod derived;

use crate::core::ledger::entry::{self, Entry, ErasurePayload, kinds};
use crate::core::ledger::hash::Hash;
use crate::core::ledger::merkle::{CompactRange, NodeId};
use crate::core::ledger::note::{Checkpoint, Note};
use crate::core::ledger::verify::{Class, Finding, Options, RawEntry, Report, Verifier};
use crate::read::export::{self, BundlePlan};
use crate::storage::{EntryRow, StorageError, Store};

const PAGE: u64 = 2000;

/// The key the ledger started with, as the keys table records it: what a check run inside the
/// server pins, so its verdict rests on that key and every rotation the ledger signed since.
pub async fn first_key(
    store: &Store,
) -> Result<Option<crate::core::ledger::keys::Vkey>, StorageError> {
    Ok(store
        .keys()
        .await?
        .into_iter()
        .find(|k| k.from_seq == 0)
        .and_then(|k| crate::core::ledger::keys::Vkey::parse(&k.vkey).ok()))
}

/// Verifies the ledger in a database: everything the newest checkpoint covers, streamed through
/// the same verifier as a bundle, then the stored-data audit. Returns the report and how many
/// newer entries no checkpoint covers yet (not checked; a running server covers them soon).
pub async fn verify_store(
    store: &Store,
    opts: Options,
    bar: Option<std::sync::Arc<dyn crate::read::Progress>>,
) -> Result<(Report, u64), crate::read::ReadError> {
    let head = match store.head().await {
        Ok(Some(h)) => h,
        Ok(None) => return Err(crate::read::ReadError::NoLedger),
        Err(StorageError::Corrupt(e)) => {
            // A head row that does not even parse is damage to report, not a reason to stop.
            let mut report = Verifier::new(opts).finish();
            report.add(vec![Finding::general(
                Class::Modified,
                format!("ledger_head: {e}"),
            )]);
            return Ok((report, 0));
        }
        Err(e) => return Err(e.into()),
    };
    let latest = store.latest_checkpoint().await?.map_or(0, |c| c.size);
    let plan = BundlePlan {
        start: 0,
        end: latest,
        extended_to_checkpoint: false,
        uncovered: 0,
        consistency_from: None,
    };
    if let Some(b) = &bar {
        b.set_length(latest);
    }
    // Pages of rows, not bundle text: the verifier checks the stored bytes directly, and the
    // stored-data audit looks at the same rows as they pass instead of reading them again.
    let mut rx = export::stream_items(store.clone(), plan, crate::sys::rfc3339_now());
    let (tx, pages) = std::sync::mpsc::sync_channel::<std::sync::Arc<Vec<export::Item>>>(8);
    let verifying = tokio::task::spawn_blocking(move || {
        let mut v = Verifier::new(opts);
        for page in pages {
            for item in page.iter() {
                match item {
                    export::Item::Line(l) => v.push_line(l),
                    export::Item::Entry(r) => {
                        v.push_entry(RawEntry {
                            seq: r.seq,
                            entry: &r.entry,
                            sig: &r.sig,
                            salt: r.salt.as_deref(),
                            payload: r.payload.as_deref(),
                        });
                        if let Some(b) = &bar {
                            b.advance(1);
                        }
                    }
                }
            }
        }
        if let Some(b) = &bar {
            b.finish();
        }
        v.finish()
    });
    let mut pass = AuditPass::default();
    let mut failure = None;
    while let Some(page) = rx.recv().await {
        match page {
            Ok(items) => {
                // The verifier gets the page first: its signature checks and this pass's
                // derived-table queries then run side by side.
                let items = std::sync::Arc::new(items);
                if tx.send(items.clone()).is_err() {
                    break;
                }
                let rows: Vec<&EntryRow> = items
                    .iter()
                    .filter_map(|i| match i {
                        export::Item::Entry(r) => Some(r),
                        export::Item::Line(_) => None,
                    })
                    .collect();
                if let Err(e) = pass.page(store, &rows).await {
                    failure = Some(export::ExportError::Storage(e));
                    break;
                }
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let mut report = verifying
        .await
        .map_err(|e| crate::read::ReadError::Interrupted(format!("the verifier stopped: {e}")))?;
    let streamed = std::time::Instant::now();
    if let Some(e) = failure {
        // Stored data too damaged to stream is itself a finding, not a reason to stop.
        report.add(vec![Finding::general(
            Class::Modified,
            format!("reading the ledger failed: {e}"),
        )]);
    }
    match pass.finish(store, &report.summary.keys, latest).await {
        Ok((stored, suppressed)) => {
            report.add(stored);
            report.add_suppressed(Class::DerivedMismatch, suppressed);
        }
        Err(e) => report.add(vec![Finding::general(
            Class::Modified,
            format!("stored data cannot be read back: {e}"),
        )]),
    }
    tracing::debug!(
        audit_secs = streamed.elapsed().as_secs_f64(),
        "Stored-data audit done."
    );
    Ok((report, head.head.size.saturating_sub(latest)))
}

fn modified(seq: Option<u64>, detail: String) -> Finding {
    match seq {
        Some(s) => Finding::at_seq(Class::Modified, s, detail),
        None => Finding::general(Class::Modified, detail),
    }
}

/// The stored-data audit, fed the entries in order (as the verifier streams them, or read by
/// itself): leaf hashes, indexed columns and tree nodes against the entry bytes, and the derived
/// tables against what the entries produce.
#[derive(Default)]
struct AuditPass {
    range: CompactRange,
    last_leaf: Option<Hash>,
    last_time: i64,
    out: Vec<Finding>,
    derived: derived::DerivedAudit,
}

impl AuditPass {
    /// Checks the next rows (in sequence order) and the tree nodes they complete.
    async fn page(&mut self, store: &Store, rows: &[&EntryRow]) -> Result<(), StorageError> {
        if rows.is_empty() {
            return Ok(());
        }
        let before = self.range.size();
        let mut computed: Vec<(NodeId, Hash)> = Vec::new();
        for r in rows {
            if r.seq != self.range.size() {
                self.out.push(modified(
                    Some(self.range.size()),
                    format!(
                        "entries table jumps from {} to {}",
                        self.range.size(),
                        r.seq
                    ),
                ));
            }
            let leaf = entry::leaf_hash(&r.entry);
            if leaf != r.leaf_hash {
                self.out.push(modified(
                    Some(r.seq),
                    "entries.leaf_hash is not the hash of entries.entry".into(),
                ));
            }
            match Entry::decode(&r.entry) {
                Ok(e) => {
                    if e.seq != r.seq
                        || e.kind != r.kind
                        || e.subject != r.subject
                        || e.time_ns != r.time_ns
                    {
                        self.out.push(modified(
                            Some(r.seq),
                            "entries.seq/kind/subject/time_ns disagree with the entry bytes".into(),
                        ));
                    }
                }
                Err(e) => self.out.push(modified(
                    Some(r.seq),
                    format!("entries.entry does not decode: {e}"),
                )),
            }
            self.range.push(leaf, |id, h| computed.push((id, h)));
            self.last_leaf = Some(leaf);
            self.last_time = r.time_ns;
        }
        let stored = store
            .nodes_completed_between(before, self.range.size())
            .await?;
        compare_nodes(&computed, &stored, &mut self.out);
        self.derived.page(store, rows).await
    }

    /// Reads the entries not seen yet up to the head as it is now, then checks the head row, the
    /// checkpoint, key and erasure rows, and derived rows past the head. `keys` is the key
    /// history the verifier derived from the entries (first seq, vkey), up to `covered` entries.
    /// Returns the findings and how many derived mismatches were counted but not listed.
    async fn finish(
        mut self,
        store: &Store,
        keys: &[(u64, String)],
        covered: u64,
    ) -> Result<(Vec<Finding>, u64), StorageError> {
        let Some(head) = store.head().await? else {
            return Ok((self.out, 0));
        };
        while self.range.size() < head.head.size {
            let next = self.range.size();
            // With payloads: the derived rows of entries no checkpoint covers yet are checked too.
            let rows = store.entries(next, PAGE.min(head.head.size - next)).await?;
            if rows.is_empty() {
                self.out.push(modified(
                    Some(next),
                    "entries named by the head row are missing".into(),
                ));
                break;
            }
            let refs: Vec<&EntryRow> = rows.iter().collect();
            self.page(store, &refs).await?;
            if self.range.size() == next {
                break;
            }
        }
        let (derived, suppressed) = self.derived.finish(store, head.head.size).await?;
        let mut out = self.out;
        out.extend(derived);
        let (range, last_leaf, last_time) = (self.range, self.last_leaf, self.last_time);
        let h = &head.head;
        let leaf_ok = last_leaf.is_none_or(|l| l == h.last_leaf);
        if h.size != range.size() || !leaf_ok || h.range != range || h.last_time_ns < last_time {
            out.push(modified(None, format!(
                "the head row (size {}) disagrees with the {} stored entries (size, last leaf, frontier or time)",
                h.size,
                range.size()
            )));
        }
        if let Some((_, current)) = keys.last()
            && !current.contains(&format!("+{}+", h.key_id))
        {
            out.push(modified(
                None,
                format!(
                    "the head row names key {}, but the entries say {current} is in force",
                    h.key_id
                ),
            ));
        }
        audit_checkpoints(store, &mut out).await?;
        audit_keys(store, keys, covered, &mut out).await?;
        audit_erasures(store, &mut out).await?;
        audit_tokens(store, &mut out).await?;
        Ok((out, suppressed))
    }
}

/// The stored-data audit on its own: every entry read from the database. `keys` is the key
/// history the verifier derived from the entries (first seq, vkey), up to `covered` entries.
pub async fn audit(
    store: &Store,
    keys: &[(u64, String)],
    covered: u64,
) -> Result<(Vec<Finding>, u64), StorageError> {
    AuditPass::default().finish(store, keys, covered).await
}

fn compare_nodes(computed: &[(NodeId, Hash)], stored: &[(NodeId, Hash)], out: &mut Vec<Finding>) {
    let n = computed.len().max(stored.len());
    for k in 0..n {
        match (computed.get(k), stored.get(k)) {
            (Some(c), Some(s)) if c == s => {}
            (Some((id, _)), _) => {
                out.push(modified(
                    None,
                    format!(
                        "tree_nodes row {}/{} is missing or differs from the entries",
                        id.level, id.idx
                    ),
                ));
                return;
            }
            (None, Some((id, _))) => {
                out.push(modified(
                    None,
                    format!("tree_nodes has an extra row {}/{}", id.level, id.idx),
                ));
                return;
            }
            (None, None) => {}
        }
    }
}

async fn audit_checkpoints(store: &Store, out: &mut Vec<Finding>) -> Result<(), StorageError> {
    let rows = store.checkpoints_between(0, u64::MAX >> 1).await?;
    for cp in rows {
        let parsed = Note::parse(&cp.note)
            .ok()
            .and_then(|n| Checkpoint::parse_body(&n.text).ok());
        match parsed {
            Some(c) if c.size == cp.size && c.root == cp.root => {}
            _ => out.push(Finding::at_size(
                Class::Modified,
                cp.size,
                "checkpoints row: size or root column disagrees with its signed note",
            )),
        }
    }
    Ok(())
}

async fn audit_keys(
    store: &Store,
    keys: &[(u64, String)],
    covered: u64,
    out: &mut Vec<Finding>,
) -> Result<(), StorageError> {
    let rows: Vec<(u64, String)> = store
        .keys()
        .await?
        .into_iter()
        .filter(|k| k.from_seq <= covered)
        .map(|k| (k.from_seq, k.vkey))
        .collect();
    if rows != keys {
        out.push(modified(
            None,
            "signing_keys rows disagree with ledger.created and the key.rotated entries".into(),
        ));
    }
    Ok(())
}

/// The API tokens the service checks, against the entries that created and revoked them: a row
/// no entry produced (a token a database writer added), a changed role, name or secret, or a
/// revocation undone, is DERIVED_MISMATCH. A token created or revoked while this runs would show
/// as a difference once; only what differs on a second look too is reported.
async fn audit_tokens(store: &Store, out: &mut Vec<Finding>) -> Result<(), StorageError> {
    let first = token_findings(store).await?;
    if first.is_empty() {
        return Ok(());
    }
    let again = token_findings(store).await?;
    out.extend(first.into_iter().filter(|f| again.contains(f)));
    Ok(())
}

async fn token_findings(store: &Store) -> Result<Vec<Finding>, StorageError> {
    use crate::core::ledger::entry::{TokenCreated, TokenRevoked};
    let mut out = Vec::new();
    let mut created: std::collections::BTreeMap<String, (u64, TokenCreated)> = Default::default();
    let mut revoked: std::collections::BTreeMap<String, u64> = Default::default();
    for (seq, kind, payload) in store.token_entries().await? {
        // Token entries cannot be erased (the writer refuses), so a payload is always there.
        let Some(p) = payload else { continue };
        match kind.as_str() {
            kinds::TOKEN_CREATED => {
                if let Ok(t) = serde_json::from_str::<TokenCreated>(&p) {
                    created.insert(t.token_id.clone(), (seq, t));
                }
            }
            kinds::TOKEN_REVOKED => {
                if let Ok(t) = serde_json::from_str::<TokenRevoked>(&p) {
                    revoked.insert(t.token_id, seq);
                }
            }
            _ => {}
        }
    }
    let mismatch = |seq: Option<u64>, detail: String| match seq {
        Some(s) => Finding::at_seq(Class::DerivedMismatch, s, detail),
        None => Finding::general(Class::DerivedMismatch, detail),
    };
    for row in store.tokens().await? {
        let id = &row.id;
        match created.remove(id) {
            None => out.push(mismatch(
                None,
                format!(
                    "api_tokens row {id} ({}, {:?}) was created by no signed entry",
                    row.role, row.name
                ),
            )),
            Some((seq, t)) => {
                let mut wrong = Vec::new();
                if t.role != row.role {
                    wrong.push("role");
                }
                if t.name != row.name {
                    wrong.push("name");
                }
                if t.secret_sha256 != hex::encode(&row.secret_hash) {
                    wrong.push("secret");
                }
                if !wrong.is_empty() {
                    out.push(mismatch(
                        Some(seq),
                        format!(
                            "api_tokens row {id}: {} differ from what entry {seq} created",
                            wrong.join(", ")
                        ),
                    ));
                }
            }
        }
        match (row.revoked_ns.is_some(), revoked.get(id)) {
            (false, Some(seq)) => out.push(mismatch(
                Some(*seq),
                format!("api_tokens row {id} is active, but entry {seq} revoked it"),
            )),
            (true, None) => out.push(mismatch(
                None,
                format!("api_tokens row {id} is revoked, but no entry revoked it"),
            )),
            _ => {}
        }
    }
    for (id, (seq, _)) in created {
        out.push(mismatch(
            Some(seq),
            format!("api_tokens has no row for token {id}, which entry {seq} created"),
        ));
    }
    Ok(out)
}

async fn audit_erasures(store: &Store, out: &mut Vec<Finding>) -> Result<(), StorageError> {
    for (seq, erasure_seq) in store.erasures().await? {
        let ok = match store.entry(erasure_seq).await? {
            Some(e) if e.kind == kinds::PAYLOAD_ERASED => match &e.payload {
                Some(p) => {
                    serde_json::from_str::<ErasurePayload>(p).is_ok_and(|p| p.erased_seq == seq)
                }
                None => true,
            },
            _ => false,
        };
        if !ok {
            out.push(modified(Some(seq), format!("erasures row names entry {erasure_seq}, which is not a payload.erased entry for it")));
        }
    }
    Ok(())
}
