//! A ledger bundle, read for checking a report: one pass gives the verifier's verdict, the
//! root at the report's size, the cited entries and the facts to re-derive the rows from; then
//! the entries' payloads are read again one by one, by offset.

use crate::core::evidence::rederive::{LedgerFacts, Locator, PayloadSource};
use crate::core::ledger::bundle::Line;
use crate::core::ledger::entry::{Entry, leaf_hash};
use crate::core::ledger::hash::{Hash, unb64};
use crate::core::ledger::keys::Vkey;
use crate::core::ledger::merkle::CompactRange;
use crate::core::ledger::verify::{Options, Verifier};
use std::collections::{BTreeSet, HashMap};
use std::io::BufRead;
use std::path::Path;

/// What one pass over a bundle gives.
pub(super) struct BundleRead {
    pub(super) report: crate::core::ledger::verify::Report,
    /// The tree's root at the report's size.
    pub(super) root: Result<Hash, String>,
    /// The cited entries' leaves and subjects.
    pub(super) found: HashMap<u64, (Hash, String)>,
    /// Everything below the report's size, for re-deriving its rows.
    pub(super) facts: LedgerFacts,
    /// The bundle starts at entry 0 (no prefix), so it holds every fact.
    pub(super) from_start: bool,
}

/// One pass over a bundle: the verifier, the root at `size`, the cited entries' leaves and
/// what re-deriving the report needs.
pub(super) fn read_bundle(
    path: &Path,
    trusted: &[Vkey],
    threads: usize,
    size: u64,
    wanted: &BTreeSet<u64>,
) -> anyhow::Result<BundleRead> {
    let f = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("cannot open bundle {}: {e}", path.display()))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, f);
    let mut v = Verifier::new(Options {
        trusted: trusted.to_vec(),
        state: None,
        max_age_ns: None,
        now_ns: crate::sys::now_ns(),
        threads,
    });
    let mut range = CompactRange::new();
    let mut root: Option<Hash> = (size == 0).then(|| range.root());
    let mut found = HashMap::new();
    let mut facts = LedgerFacts::new(size);
    let mut from_start = true;
    let mut buf = Vec::with_capacity(1024);
    let mut offset = 0u64;
    loop {
        buf.clear();
        let read = reader.read_until(b'\n', &mut buf)?;
        if read == 0 {
            break;
        }
        let at = offset;
        offset += read as u64;
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let Ok(text) = std::str::from_utf8(line) else {
            v.push_unreadable("line is not valid UTF-8");
            continue;
        };
        match Line::parse(text) {
            Ok(Line::Prefix { size: a, peaks }) if range.size() == 0 => {
                from_start = a == 0;
                let peaks: Option<Vec<Hash>> = peaks.iter().map(|p| Hash::from_b64(p)).collect();
                if let Some(r) = peaks.and_then(|p| CompactRange::from_peaks(a, p)) {
                    range = r;
                }
            }
            Ok(Line::Entry(e)) => {
                if let Some(bytes) = unb64(&e.entry) {
                    let leaf = leaf_hash(&bytes);
                    if let Ok(entry) = Entry::decode(&bytes) {
                        if e.seq < size {
                            facts.push(
                                e.seq,
                                &entry.kind,
                                &entry.subject,
                                entry.time_ns,
                                leaf,
                                e.payload.as_deref(),
                                Locator {
                                    offset: at,
                                    len: line.len() as u64,
                                },
                            );
                        }
                        if wanted.contains(&e.seq) {
                            found.insert(e.seq, (leaf, entry.subject));
                        }
                    }
                    if range.size() == e.seq && e.seq < size {
                        range.push(leaf, |_, _| {});
                        if range.size() == size {
                            root = Some(range.root());
                        }
                    }
                }
            }
            _ => {}
        }
        v.push_line(text);
    }
    let report = v.finish();
    let root = root.ok_or_else(|| {
        format!(
            "the bundle's entries reach size {}, short of the report's checkpoint size {size}",
            range.size()
        )
    });
    Ok(BundleRead {
        report,
        root,
        found,
        facts,
        from_start,
    })
}

/// A bundle's entry payloads, read again by line offset.
pub(super) struct BundlePayloads {
    file: std::fs::File,
    buf: Vec<u8>,
}

impl BundlePayloads {
    pub(super) fn open(path: &Path) -> std::io::Result<BundlePayloads> {
        Ok(BundlePayloads {
            file: std::fs::File::open(path)?,
            buf: Vec::new(),
        })
    }
}

impl PayloadSource for BundlePayloads {
    fn payload(&mut self, at: Locator) -> Result<String, String> {
        use std::io::{Read, Seek, SeekFrom};
        let len = usize::try_from(at.len)
            .map_err(|_| format!("a line of {} bytes at byte {}", at.len, at.offset))?;
        self.buf.resize(len, 0);
        self.file
            .seek(SeekFrom::Start(at.offset))
            .and_then(|_| self.file.read_exact(&mut self.buf))
            .map_err(|e| format!("reading the bundle again at byte {}: {e}", at.offset))?;
        let text = std::str::from_utf8(&self.buf)
            .map_err(|_| format!("the bundle changed at byte {}", at.offset))?;
        match Line::parse(text) {
            Ok(Line::Entry(e)) => e
                .payload
                .map(|p| p.into_owned())
                .ok_or_else(|| format!("the bundle changed at byte {}", at.offset)),
            _ => Err(format!("the bundle changed at byte {}", at.offset)),
        }
    }
}
