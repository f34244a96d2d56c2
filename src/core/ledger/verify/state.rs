//! What the one pass remembers beyond the tree's compact range: which key signs which sequence
//! numbers, and a window of recent leaves so that a checkpoint line that comes after the entries
//! it covers can still be checked.

use crate::core::ledger::hash::Hash;
use crate::core::ledger::keys::Vkey;
use crate::core::ledger::merkle::CompactRange;

/// Leaves kept per block of the root window (see `RootWindow`).
const WINDOW_BLOCK: u64 = 1 << 16;

/// Which key signs which sequence numbers, as learned from pins and rotation entries (by the
/// streaming verifier and by the receipt verifier alike).
#[derive(Default)]
pub struct KeyHistory {
    /// (first seq, key), ascending.
    pub spans: Vec<(u64, Vkey)>,
}

impl KeyHistory {
    pub fn key_for(&self, seq: u64) -> Option<&Vkey> {
        self.spans
            .iter()
            .rev()
            .find(|(from, _)| *from <= seq)
            .map(|(_, k)| k)
    }

    /// Keys allowed to sign a checkpoint of `size`: the key of its last entry or of the next
    /// one (a rotation's own checkpoint is signed by the new key).
    pub fn checkpoint_keys(&self, size: u64) -> Vec<&Vkey> {
        let mut v: Vec<&Vkey> = Vec::new();
        for s in [size.saturating_sub(1), size] {
            if let Some(k) = self.key_for(s)
                && !v.contains(&k)
            {
                v.push(k);
            }
        }
        v
    }
}

/// Recent leaves with the tree state at the start of each block, so that a checkpoint line that
/// appears after the entries it covers can still be checked (within two blocks).
struct WindowBlock {
    start: CompactRange,
    leaves: Vec<(Hash, i64)>,
}

#[derive(Default)]
pub(super) struct RootWindow {
    previous: Option<WindowBlock>,
    current: Option<WindowBlock>,
}

impl RootWindow {
    /// Records the leaf about to be appended to `before` (the tree without it).
    pub(super) fn record(&mut self, before: &CompactRange, leaf: Hash, time_ns: i64) {
        let full = self
            .current
            .as_ref()
            .is_none_or(|b| b.leaves.len() as u64 >= WINDOW_BLOCK);
        if full {
            self.previous = self.current.take();
            self.current = Some(WindowBlock {
                start: before.clone(),
                leaves: Vec::with_capacity(WINDOW_BLOCK as usize),
            });
        }
        if let Some(b) = self.current.as_mut() {
            b.leaves.push((leaf, time_ns));
        }
    }

    /// Root and last-entry time at `size`, if the window still holds it.
    pub(super) fn at(&self, size: u64) -> Option<(Hash, Option<i64>)> {
        for b in [&self.previous, &self.current].into_iter().flatten() {
            let lo = b.start.size();
            let hi = lo + b.leaves.len() as u64;
            if size >= lo && size <= hi {
                let mut cr = b.start.clone();
                let n = (size - lo) as usize;
                for (l, _) in &b.leaves[..n] {
                    cr.push(*l, |_, _| {});
                }
                let time = n.checked_sub(1).map(|i| b.leaves[i].1);
                return Some((cr.root(), time));
            }
        }
        None
    }
}
