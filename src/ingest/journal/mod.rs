//! The parking journal: every span parked for late binding is written here before its export is
//! answered, so a crash (kill -9, OOM kill) loses no acknowledged span that would have bound.
//! On start, `serve` replays what is younger than the late-binding window into the binder.
//!
//! Segment files `parked-<number>.ctj` in one directory, each a 32-byte header and records:
//!
//! ```text
//! header:  "CTJ1" ‖ key fingerprint (8) ‖ nonce prefix (4) ‖ created_ns i64 LE ‖ 0 (8)
//! record:  u32 LE length ‖ ChaCha20-Poly1305(nonce = prefix ‖ u64 LE record index,
//!                                            aad = header, plaintext)
//! plaintext: i64 LE received_ns ‖ sender ‖ ExportTraceServiceRequest (protobuf) of the spans
//! sender:    u8 has-token ‖ [u16 LE len ‖ token id] ‖ u16 LE len ‖ name
//! ```
//!
//! Why encrypted: parked spans are kept as received, so they may carry the bearer tokens that
//! redaction removes only when a span is stored; the journal must not be where secrets rest in
//! clear text. The key is derived from the ledger's signing key (`LedgerKey::derive_secret`), so
//! it is as safe as that key and names no new file; the AEAD tag also means that someone who can
//! write the journal directory but not read the key cannot inject spans. A segment written under
//! another key (the signing key rotated between crash and restart) is skipped and counted.
//!
//! Bounds: at most `max_bytes` on disk (plus the record being written); a segment is closed at
//! an eighth of that or a quarter of the window, and closed segments are deleted once their last
//! record is older than the window, or oldest first when the total is over the bound (their
//! spans are the first the binder evicts too). Writes go to the page cache before the answer
//! (what kill -9 cannot undo); `sync` flushes them (the caller does it once a second, which is
//! what a power loss can cost).

use crate::core::evidence::SentBy;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use sha2::{Digest as _, Sha256};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const MAGIC: &[u8; 4] = b"CTJ1";
const HEADER: usize = 32;
const TAG: usize = 16;
/// A record longer than this is corrupt (an export is at most 16 MiB by default; its parked part
/// is less than that).
const MAX_RECORD: usize = 256 << 20;

/// One journaled export's parked spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub received_ns: i64,
    pub sender: SentBy,
    /// An `ExportTraceServiceRequest` holding exactly the parked spans.
    pub request: Vec<u8>,
}

/// What a replay found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayStats {
    pub records: u64,
    /// Older than the window: their spans would have expired anyway.
    pub expired: u64,
    /// Segments written under another key (or not journals at all).
    pub foreign_segments: u64,
    /// Records that failed authentication or framing (a torn last write included): the rest of
    /// their segment is skipped.
    pub damaged: u64,
}

struct Open {
    file: File,
    path: PathBuf,
    header: [u8; HEADER],
    prefix: [u8; 4],
    index: u64,
    bytes: u64,
    opened_ns: i64,
    last_ns: i64,
}

struct Closed {
    path: PathBuf,
    bytes: u64,
    last_ns: i64,
}

struct Segments {
    current: Option<Open>,
    closed: VecDeque<Closed>,
    next_number: u64,
    closed_bytes: u64,
}

pub struct Journal {
    /// Held (locked) for as long as the journal is open.
    _lock: File,
    dir: PathBuf,
    key: LessSafeKey,
    fingerprint: [u8; 8],
    max_bytes: u64,
    segment_bytes: u64,
    window_ns: i64,
    segments: Mutex<Segments>,
}

fn segment_number(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("parked-")?.strip_suffix(".ctj")?;
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

fn corrupt(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

impl Journal {
    /// Opens (creating, mode 0700) the journal directory. Existing segments are kept for
    /// `replay`; new records go to a new segment.
    pub fn open(
        dir: &Path,
        secret: &[u8; 32],
        max_bytes: u64,
        window: std::time::Duration,
    ) -> io::Result<Journal> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        // One process per directory: two appending to the same segments would corrupt both.
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(dir.join("lock"))?;
        lock.try_lock().map_err(|_| {
            io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "the parking journal {} is in use by another process; give each instance its own [otlp] journal_dir",
                    dir.display()
                ),
            )
        })?;
        let mut fp = Sha256::new();
        fp.update(b"changetrail journal key fingerprint\0");
        fp.update(secret);
        let fingerprint: [u8; 8] = fp.finalize()[..8].try_into().unwrap_or([0; 8]);
        let key = UnboundKey::new(&CHACHA20_POLY1305, secret)
            .map_err(|_| io::Error::other("cannot set up the journal cipher"))?;
        let mut closed = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let name = e.file_name();
            if let Some(n) = name.to_str().and_then(segment_number) {
                closed.push((n, e.path(), e.metadata()?.len()));
            }
        }
        closed.sort();
        let next_number = closed.last().map_or(0, |c| c.0 + 1);
        let closed: VecDeque<Closed> = closed
            .into_iter()
            .map(|(_, path, bytes)| Closed {
                path,
                bytes,
                // Replay sets this from the records; until then a segment counts as current.
                last_ns: i64::MAX,
            })
            .collect();
        let window_ns = i64::try_from(window.as_nanos()).unwrap_or(i64::MAX);
        Ok(Journal {
            _lock: lock,
            dir: dir.to_owned(),
            key: LessSafeKey::new(key),
            fingerprint,
            segment_bytes: (max_bytes / 8).clamp(1 << 20, 64 << 20),
            max_bytes,
            window_ns,
            segments: Mutex::new(Segments {
                closed_bytes: closed.iter().map(|c| c.bytes).sum(),
                current: None,
                closed,
                next_number,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Segments> {
        match self.segments.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Bytes on disk now.
    pub fn bytes(&self) -> u64 {
        let s = self.lock();
        s.closed_bytes + s.current.as_ref().map_or(0, |c| c.bytes)
    }

    /// Writes one record (to the page cache: it survives the process, see the module docs).
    pub fn append(&self, r: &Record, now_ns: i64) -> io::Result<()> {
        let mut plain = Vec::with_capacity(r.request.len() + 64 + r.sender.name.len());
        plain.extend_from_slice(&r.received_ns.to_le_bytes());
        match &r.sender.token_id {
            Some(t) => {
                plain.push(1);
                put_str(&mut plain, t)?;
            }
            None => plain.push(0),
        }
        put_str(&mut plain, &r.sender.name)?;
        plain.extend_from_slice(&r.request);
        let mut s = self.lock();
        self.rotate_if_due(&mut s, now_ns)?;
        let seg = match s.current.as_mut() {
            Some(c) => c,
            None => {
                let opened = self.create_segment(s.next_number, now_ns)?;
                s.next_number += 1;
                s.current.insert(opened)
            }
        };
        let mut nonce = [0u8; 12];
        nonce[..4].copy_from_slice(&seg.prefix);
        nonce[4..].copy_from_slice(&seg.index.to_le_bytes());
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(seg.header),
                &mut plain,
            )
            .map_err(|_| io::Error::other("journal encryption failed"))?;
        let len = u32::try_from(plain.len()).map_err(|_| corrupt("journal record too large"))?;
        let mut framed = Vec::with_capacity(plain.len() + 4);
        framed.extend_from_slice(&len.to_le_bytes());
        framed.extend_from_slice(&plain);
        // One write per record: a crash leaves at most this record torn, which replay detects.
        seg.file.write_all(&framed)?;
        seg.index += 1;
        seg.bytes += framed.len() as u64;
        seg.last_ns = now_ns;
        Ok(())
    }

    fn create_segment(&self, number: u64, now_ns: i64) -> io::Result<Open> {
        let path = self.dir.join(format!("parked-{number:016x}.ctj"));
        let prefix: [u8; 4] = crate::sys::random_bytes();
        let mut header = [0u8; HEADER];
        header[..4].copy_from_slice(MAGIC);
        header[4..12].copy_from_slice(&self.fingerprint);
        header[12..16].copy_from_slice(&prefix);
        header[16..24].copy_from_slice(&now_ns.to_le_bytes());
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .mode(0o600)
            .open(&path)?;
        file.write_all(&header)?;
        Ok(Open {
            file,
            path,
            header,
            prefix,
            index: 0,
            bytes: HEADER as u64,
            opened_ns: now_ns,
            last_ns: now_ns,
        })
    }

    /// Closes the current segment when it is full or old, and deletes what the bounds say.
    fn rotate_if_due(&self, s: &mut Segments, now_ns: i64) -> io::Result<()> {
        if let Some(c) = &s.current
            && (c.bytes >= self.segment_bytes
                || now_ns.saturating_sub(c.opened_ns) >= self.window_ns / 4)
            && let Some(c) = s.current.take()
        {
            s.closed_bytes += c.bytes;
            s.closed.push_back(Closed {
                path: c.path,
                bytes: c.bytes,
                last_ns: c.last_ns,
            });
        }
        let current = s.current.as_ref().map_or(0, |c| c.bytes);
        while let Some(front) = s.closed.front() {
            let expired = front.last_ns < now_ns.saturating_sub(self.window_ns);
            if !expired && s.closed_bytes + current <= self.max_bytes {
                break;
            }
            let path = front.path.clone();
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            if let Some(gone) = s.closed.pop_front() {
                s.closed_bytes -= gone.bytes;
            }
        }
        Ok(())
    }

    /// Flushes written records to the disk itself (what a power loss would otherwise take), and
    /// applies the bounds to segments that aged out while nothing was written.
    pub fn sync(&self, now_ns: i64) -> io::Result<()> {
        let mut s = self.lock();
        if let Some(c) = &s.current {
            c.file.sync_data()?;
        }
        self.rotate_if_due(&mut s, now_ns)
    }

    /// Hands every readable record younger than the window, oldest first, to `f`; learns each
    /// existing segment's age so the bounds apply to it.
    pub fn replay(&self, now_ns: i64, mut f: impl FnMut(Record)) -> io::Result<ReplayStats> {
        let mut stats = ReplayStats::default();
        let paths: Vec<PathBuf> = self.lock().closed.iter().map(|c| c.path.clone()).collect();
        let mut ages = Vec::with_capacity(paths.len());
        for path in paths {
            let last = self.replay_segment(&path, now_ns, &mut stats, &mut f)?;
            ages.push(last);
        }
        let mut s = self.lock();
        for (c, last) in s.closed.iter_mut().zip(ages) {
            c.last_ns = last;
        }
        self.rotate_if_due(&mut s, now_ns)?;
        Ok(stats)
    }

    /// Replays one segment; returns the time of its last record (0 if none).
    fn replay_segment(
        &self,
        path: &Path,
        now_ns: i64,
        stats: &mut ReplayStats,
        f: &mut impl FnMut(Record),
    ) -> io::Result<i64> {
        let mut bytes = Vec::new();
        match File::open(path) {
            Ok(mut file) => file.read_to_end(&mut bytes)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let Some(header) = bytes
            .get(..HEADER)
            .and_then(|h| <[u8; HEADER]>::try_from(h).ok())
        else {
            stats.foreign_segments += 1;
            return Ok(0);
        };
        if &header[..4] != MAGIC || header[4..12] != self.fingerprint {
            stats.foreign_segments += 1;
            return Ok(0);
        }
        let mut last = 0;
        let mut at = HEADER;
        let mut index = 0u64;
        while at < bytes.len() {
            match self.open_record(&header, index, &mut bytes, &mut at) {
                Some(r) => {
                    last = last.max(r.received_ns);
                    stats.records += 1;
                    if r.received_ns < now_ns.saturating_sub(self.window_ns) {
                        stats.expired += 1;
                    } else {
                        f(r);
                    }
                }
                None => {
                    stats.damaged += 1;
                    break;
                }
            }
            index += 1;
        }
        Ok(last)
    }

    /// Decrypts and parses the record at `*at`, moving past it; None if it is damaged.
    fn open_record(
        &self,
        header: &[u8; HEADER],
        index: u64,
        bytes: &mut [u8],
        at: &mut usize,
    ) -> Option<Record> {
        let len = u32::from_le_bytes(bytes.get(*at..*at + 4)?.try_into().ok()?) as usize;
        if !(TAG..=MAX_RECORD).contains(&len) {
            return None;
        }
        let start = *at + 4;
        let sealed = bytes.get_mut(start..start.checked_add(len)?)?;
        let mut nonce = [0u8; 12];
        nonce[..4].copy_from_slice(&header[12..16]);
        nonce[4..].copy_from_slice(&index.to_le_bytes());
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(*header),
                sealed,
            )
            .ok()?;
        *at = start + len;
        parse_plain(plain)
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) -> io::Result<()> {
    let n = u16::try_from(s.len()).map_err(|_| corrupt("sender name too long for the journal"))?;
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn parse_plain(p: &[u8]) -> Option<Record> {
    let mut cur = Cursor(p);
    let received_ns = i64::from_le_bytes(cur.take(8)?.try_into().ok()?);
    let token_id = match cur.take(1)?[0] {
        0 => None,
        1 => Some(cur.string()?),
        _ => return None,
    };
    let name = cur.string()?;
    Some(Record {
        received_ns,
        sender: SentBy { token_id, name },
        request: cur.0.to_vec(),
    })
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn string(&mut self) -> Option<String> {
        let n = u16::from_le_bytes(self.take(2)?.try_into().ok()?) as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests;
