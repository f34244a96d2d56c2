//! The ledger as a C2SP tlog-tiles log (<https://c2sp.org/tlog-tiles>): tile paths, which tiles a
//! tree size needs, which are new between two sizes, and entry bundles. Pure: storage reads the
//! hashes, the API and the export serve them.
//!
//! A tile at level L, index N, width W holds the tree's perfect-subtree hashes at tree level 8·L,
//! indices N·256 … N·256+W−1; our leaf hash is the RFC 6962 leaf of the entry bytes, so an entry
//! bundle (u16-length-prefixed entry bytes) hashes to the level-0 tile of the same N and W.

use std::fmt;

/// Hashes in a full tile (and entries in a full bundle).
pub const TILE_WIDTH: u64 = 256;
/// The highest tile level the spec allows.
pub const MAX_LEVEL: u8 = 63;

/// What a tile holds: tree hashes at a level, or entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TileKind {
    /// Hashes at tree level 8·L.
    Hashes(u8),
    /// The entries whose leaf hashes form the level-0 tile of the same index.
    Entries,
}

/// One tile (or entry bundle): kind, index, width 1–256 (256 is a full tile).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tile {
    kind: TileKind,
    index: u64,
    width: u16,
}

/// Why a tile path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("not a tile path: {0}")]
    Malformed(&'static str),
}

fn malformed<T>(why: &'static str) -> Result<T, PathError> {
    Err(PathError::Malformed(why))
}

impl Tile {
    /// A tile; `None` for a width outside 1–256 or a level above 63.
    pub fn new(kind: TileKind, index: u64, width: u16) -> Option<Tile> {
        let level_ok = match kind {
            TileKind::Hashes(l) => l <= MAX_LEVEL,
            TileKind::Entries => true,
        };
        (level_ok && (1..=256).contains(&width)).then_some(Tile { kind, index, width })
    }

    pub fn kind(&self) -> TileKind {
        self.kind
    }

    pub fn index(&self) -> u64 {
        self.index
    }

    /// Hashes (or entries) in the tile.
    pub fn width(&self) -> u16 {
        self.width
    }

    pub fn is_full(&self) -> bool {
        u64::from(self.width) == TILE_WIDTH
    }

    /// The tree level (0 = leaves) whose nodes this tile holds.
    pub fn tree_level(&self) -> u32 {
        match self.kind {
            TileKind::Hashes(l) => 8 * u32::from(l),
            TileKind::Entries => 0,
        }
    }

    /// The first node index (at `tree_level`) in the tile; `None` past u64.
    pub fn first_node(&self) -> Option<u64> {
        self.index.checked_mul(TILE_WIDTH)
    }

    /// How many entries a tree needs for this tile to exist: (N·256+W)·256^L; `None` when that
    /// is past u64 (no tree is that large).
    pub fn end(&self) -> Option<u64> {
        let nodes = self.first_node()?.checked_add(u64::from(self.width))?;
        let shift = self.tree_level();
        if shift >= 64 {
            return (nodes == 0).then_some(0);
        }
        let end = nodes.checked_shl(shift)?;
        (end >> shift == nodes).then_some(end)
    }

    /// Whether a tree of `size` entries contains this tile: its end is within the size.
    pub fn within(&self, size: u64) -> bool {
        self.end().is_some_and(|e| e <= size)
    }

    /// The path under the log's prefix: `tile/<L>/<N>[.p/<W>]` or `tile/entries/<N>[.p/<W>]`.
    pub fn path(&self) -> String {
        self.to_string()
    }

    /// Parses a path as `path` writes it (after the prefix), strictly: one spelling per tile.
    pub fn parse(path: &str) -> Result<Tile, PathError> {
        let rest = path
            .strip_prefix("tile/")
            .map_or_else(|| malformed("it does not start with tile/"), Ok)?;
        let (kind_part, rest) = rest
            .split_once('/')
            .map_or_else(|| malformed("no index"), Ok)?;
        let kind = if kind_part == "entries" {
            TileKind::Entries
        } else {
            let level = decimal(kind_part, 63).map_or_else(|| malformed("bad level"), Ok)?;
            TileKind::Hashes(u8::try_from(level).map_or_else(|_| malformed("bad level"), Ok)?)
        };
        let (index_part, width) = match rest.split_once(".p/") {
            Some((i, w)) => {
                let w = decimal(w, 255)
                    .filter(|w| *w >= 1)
                    .map_or_else(|| malformed("bad partial width"), Ok)?;
                (i, w as u16)
            }
            None => (rest, 256),
        };
        let index = parse_index(index_part).map_or_else(|| malformed("bad index"), Ok)?;
        Tile::new(kind, index, width).map_or_else(|| malformed("bad tile"), Ok)
    }
}

impl fmt::Display for Tile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            TileKind::Hashes(l) => write!(f, "tile/{l}/")?,
            TileKind::Entries => f.write_str("tile/entries/")?,
        }
        f.write_str(&index_path(self.index))?;
        if !self.is_full() {
            write!(f, ".p/{}", self.width)?;
        }
        Ok(())
    }
}

/// A canonical decimal (no sign, no leading zero) of at most `max`.
fn decimal(s: &str, max: u64) -> Option<u64> {
    if s.is_empty() || s.len() > 3 || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u64>().ok().filter(|v| *v <= max)
}

/// `N` as zero-padded 3-digit elements, all but the last prefixed with `x`: 1234067 →
/// `x001/x234/067`.
pub fn index_path(index: u64) -> String {
    let mut groups = vec![index % 1000];
    let mut rest = index / 1000;
    while rest > 0 {
        groups.push(rest % 1000);
        rest /= 1000;
    }
    let mut out = String::new();
    for (i, g) in groups.iter().rev().enumerate() {
        if i + 1 < groups.len() {
            out.push_str(&format!("x{g:03}/"));
        } else {
            out.push_str(&format!("{g:03}"));
        }
    }
    out
}

/// The inverse of `index_path`, refusing every other spelling (an empty or `x000` leading
/// element, a missing or extra `x`, non-digits, overflow).
fn parse_index(s: &str) -> Option<u64> {
    let parts: Vec<&str> = s.split('/').collect();
    // u64::MAX has 20 digits: seven groups.
    if parts.len() > 7 {
        return None;
    }
    let mut value: u64 = 0;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let digits = if last { *part } else { part.strip_prefix('x')? };
        if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if i == 0 && !last && digits == "000" {
            return None;
        }
        let g: u64 = digits.parse().ok()?;
        value = value.checked_mul(1000)?.checked_add(g)?;
    }
    Some(value)
}

/// Every tile (hash tiles only) a tree of `size` entries has, level by level, full tiles first
/// then the partial one.
pub fn tiles_for(size: u64) -> impl Iterator<Item = Tile> {
    tiles_between(0, size)
}

/// Hash tiles of a tree of `new` entries that a copy made at `old` entries lacks or holds
/// smaller: full tiles not full at `old`, and the partial tile at `new` unless it is unchanged.
/// Tiles complete at `old` are never in it, so an export never rewrites them.
pub fn tiles_between(old: u64, new: u64) -> impl Iterator<Item = Tile> {
    (0..=MAX_LEVEL).flat_map(move |level| level_between(TileKind::Hashes(level), old, new))
}

/// Entry bundles of `new` entries that a copy made at `old` entries lacks or holds smaller.
pub fn bundles_between(old: u64, new: u64) -> impl Iterator<Item = Tile> {
    level_between(TileKind::Entries, old, new)
}

fn level_between(kind: TileKind, old: u64, new: u64) -> impl Iterator<Item = Tile> {
    let shift = match kind {
        TileKind::Hashes(l) => 8 * u32::from(l),
        TileKind::Entries => 0,
    };
    // Nodes at this level in each tree; an `old` beyond `new` is treated as nothing written.
    let nodes = |size: u64| size.checked_shr(shift).unwrap_or(0);
    let old = if old > new { 0 } else { old };
    let (old_nodes, new_nodes) = (nodes(old), nodes(new));
    let (old_full, new_full) = (old_nodes / TILE_WIDTH, new_nodes / TILE_WIDTH);
    let partial = (new_nodes % TILE_WIDTH) as u16;
    let partial_changed = new_nodes != old_nodes;
    let fulls = (old_full..new_full).filter_map(move |n| Tile::new(kind, n, 256));
    let last = (partial > 0 && partial_changed)
        .then(|| Tile::new(kind, new_full, partial))
        .flatten();
    fulls.chain(last)
}

/// Why entries could not be put in a bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("entry {seq} is {len} bytes, more than an entry bundle's u16 length prefix allows")]
pub struct BundleError {
    pub seq: u64,
    pub len: usize,
}

/// Appends one entry to a bundle: `u16 length ‖ entry_bytes`.
pub fn push_bundle_entry(out: &mut Vec<u8>, seq: u64, entry: &[u8]) -> Result<(), BundleError> {
    let len = u16::try_from(entry.len()).map_err(|_| BundleError {
        seq,
        len: entry.len(),
    })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(entry);
    Ok(())
}

/// The entries of a bundle, strictly: each prefix must fit and nothing may trail.
pub fn split_bundle(mut bytes: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (len, rest) = bytes.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_be_bytes(*len));
        if rest.len() < len {
            return None;
        }
        let (entry, rest) = rest.split_at(len);
        out.push(entry);
        bytes = rest;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashes(level: u8, index: u64, width: u16) -> Tile {
        Tile::new(TileKind::Hashes(level), index, width).unwrap()
    }

    #[test]
    fn index_paths_follow_the_spec() {
        assert_eq!(index_path(1234067), "x001/x234/067");
        assert_eq!(index_path(0), "000");
        assert_eq!(index_path(999), "999");
        assert_eq!(index_path(1000), "x001/000");
        assert_eq!(index_path(u64::MAX), "x018/x446/x744/x073/x709/x551/615");
        for i in [0, 1, 999, 1000, 1234067, 1_000_000, u64::MAX] {
            assert_eq!(parse_index(&index_path(i)), Some(i), "{i}");
        }
    }

    #[test]
    fn paths_round_trip() {
        let tiles = [
            hashes(0, 1234067, 256),
            hashes(1, 0, 17),
            hashes(63, 5, 1),
            Tile::new(TileKind::Entries, 273, 112).unwrap(),
            Tile::new(TileKind::Entries, 0, 256).unwrap(),
        ];
        let paths = [
            "tile/0/x001/x234/067",
            "tile/1/000.p/17",
            "tile/63/005.p/1",
            "tile/entries/273.p/112",
            "tile/entries/000",
        ];
        for (t, p) in tiles.iter().zip(paths) {
            assert_eq!(t.path(), p);
            assert_eq!(Tile::parse(p), Ok(*t), "{p}");
        }
    }

    #[test]
    fn malformed_paths_are_refused() {
        for p in [
            "",
            "tile/",
            "tile/0",
            "tile/0/",
            "tile/00/000",
            "tile/01/000",
            "tile/64/000",
            "tile/-1/000",
            "tile/+1/000",
            "tile/0/00",
            "tile/0/0000",
            "tile/0/x000/001",
            "tile/0/001/002",
            "tile/0/x001",
            "tile/0/y001/002",
            "tile/0/000.p/0",
            "tile/0/000.p/256",
            "tile/0/000.p/01",
            "tile/0/000.p/",
            "tile/0/000.p/1/",
            "tile/0/000/",
            "tile/0/x018/x446/x744/x073/x709/x551/616",
            "tile/0/x001/x018/x446/x744/x073/x709/x551/615",
            "tile/entry/000",
            "tile/entries/000.p/256",
            "tiles/0/000",
            "/tile/0/000",
            "tile/0/abc",
        ] {
            assert!(Tile::parse(p).is_err(), "{p:?} was accepted");
        }
    }

    #[test]
    fn a_70000_entry_tree_has_the_tiles_the_spec_lists() {
        let tiles: Vec<Tile> = tiles_for(70_000).collect();
        let level0: Vec<&Tile> = tiles.iter().filter(|t| t.tree_level() == 0).collect();
        assert_eq!(level0.iter().filter(|t| t.is_full()).count(), 273);
        assert_eq!(level0.last().map(|t| t.path()).unwrap(), "tile/0/273.p/112");
        let rest: Vec<String> = tiles[level0.len()..].iter().map(Tile::path).collect();
        assert_eq!(rest, ["tile/1/000", "tile/1/001.p/17", "tile/2/000.p/1"]);
        assert!(tiles.iter().all(|t| t.within(70_000)));
    }

    #[test]
    fn a_256_entry_tree_has_one_full_tile_and_a_level_1_partial() {
        let paths: Vec<String> = tiles_for(256).map(|t| t.path()).collect();
        assert_eq!(paths, ["tile/0/000", "tile/1/000.p/1"]);
        assert_eq!(tiles_for(0).count(), 0);
    }

    #[test]
    fn only_new_or_grown_tiles_are_between_two_sizes() {
        let paths = |a, b| -> Vec<String> { tiles_between(a, b).map(|t| t.path()).collect() };
        assert_eq!(paths(10, 10), Vec::<String>::new());
        assert_eq!(paths(10, 20), ["tile/0/000.p/20"]);
        assert_eq!(
            paths(250, 300),
            ["tile/0/000", "tile/0/001.p/44", "tile/1/000.p/1"]
        );
        assert_eq!(paths(300, 400), ["tile/0/001.p/144"]);
        assert_eq!(paths(256, 512), ["tile/0/001", "tile/1/000.p/2"]);
        // Nothing written counts as size 0; a larger old size is never a reason to skip.
        assert_eq!(paths(0, 5), paths(500, 5));
        let bundles: Vec<String> = bundles_between(250, 300).map(|t| t.path()).collect();
        assert_eq!(bundles, ["tile/entries/000", "tile/entries/001.p/44"]);
        // Every tile of the new tree is either new here or was written, the same, at the old size.
        for (a, b) in [
            (0, 70_000),
            (1000, 70_000),
            (65_535, 65_536),
            (65_536, 65_537),
        ] {
            let new: Vec<Tile> = tiles_between(a, b).collect();
            for t in tiles_for(b) {
                assert!(
                    new.contains(&t) || tiles_for(a).any(|o| o == t),
                    "{a}->{b}: {t}"
                );
            }
            assert!(
                new.iter()
                    .all(|t| t.within(b) && !(t.within(a) && t.is_full()))
            );
        }
    }

    #[test]
    fn a_tile_ends_where_its_last_subtree_ends() {
        assert_eq!(hashes(0, 0, 5).end(), Some(5));
        assert_eq!(hashes(1, 1, 17).end(), Some(273 * 256));
        assert_eq!(hashes(2, 0, 1).end(), Some(65_536));
        assert!(hashes(2, 0, 1).within(70_000));
        assert!(!hashes(2, 0, 2).within(70_000));
        assert_eq!(hashes(63, 0, 1).end(), None);
        assert_eq!(hashes(0, u64::MAX, 256).end(), None);
        assert_eq!(hashes(7, 0, 255).end(), Some(255 << 56));
        assert_eq!(hashes(7, 0, 256).end(), None);
    }

    #[test]
    fn bundles_split_back_into_their_entries() {
        let mut b = Vec::new();
        push_bundle_entry(&mut b, 0, b"abc").unwrap();
        push_bundle_entry(&mut b, 1, b"").unwrap();
        assert_eq!(b, [0, 3, b'a', b'b', b'c', 0, 0]);
        assert_eq!(split_bundle(&b).unwrap(), [&b"abc"[..], &b""[..]]);
        assert!(split_bundle(&b[..4]).is_none());
        assert!(split_bundle(&[0]).is_none());
        let big = vec![0u8; 65_536];
        assert_eq!(
            push_bundle_entry(&mut b, 9, &big),
            Err(BundleError {
                seq: 9,
                len: 65_536
            })
        );
    }
}
