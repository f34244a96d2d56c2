//! The parking journal: every span parked for late binding is written here before its export is
//! answered, so a crash (kill -9, OOM kill) loses no acknowledged span that would have bound.
//! On start, `serve` replays what is younger than the late-binding window into the binder.
//!
//! Segment files `parked-<number>.ctj` in one directory, each an 80-byte header and records:
//!
//! ```text
//! header:    "CTJ2" ‖ KEK fingerprint (8) ‖ created_ns i64 LE ‖ wrap nonce (12)
//!            ‖ ChaCha20-Poly1305_KEK(segment key (32), aad = "CTJ2" ‖ created_ns)   (48)
//! record:    u32 LE length ‖ ChaCha20-Poly1305_segment key(nonce = u64 LE index ‖ 0 (4),
//!                                                         aad = "CTJ2 record", plaintext)
//! plaintext: i64 LE received_ns ‖ sender ‖ ExportTraceServiceRequest (protobuf) of the spans
//! sender:    u8 has-token ‖ [u16 LE len ‖ token id] ‖ u16 LE len ‖ name
//! ```
//!
//! Why encrypted: parked spans are kept as received, so they may carry the bearer tokens that
//! redaction removes only when a span is stored; the journal must not be where secrets rest in
//! clear text. Each segment has a random key of its own (so a record's nonce, its index, is never
//! reused under a key, and a failed write retires the segment); that key is wrapped under the
//! key-encryption key (KEK) derived from the ledger's signing key (`LedgerKey::derive_secret`):
//! the journal is as safe as the key file and names no new secret to keep. The AEAD tags also mean
//! that someone who can write the directory but not read the key cannot add or change a record
//! (removing whole records or segments is not detected: they are spans that were parked, not
//! evidence). When the signing key rotates, the segment keys are wrapped again under the new KEK
//! (`rekey`; `keys rotate` does it for a stopped instance's directory), so a restart after a
//! rotation still reads them. A segment no key here opens is skipped, counted, and kept until it
//! ages out.
//!
//! Bounds: at most `max_bytes` on disk (plus the record being written); a segment is closed at
//! an eighth of that or a quarter of the window, and closed segments are deleted once their last
//! record is older than the window, or oldest first when the total is over the bound. Writes go to
//! the page cache before the answer (what kill -9 cannot undo); `sync` flushes them (the caller
//! does it once a second, which is what a power loss can cost).

use crate::core::evidence::SentBy;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use sha2::{Digest as _, Sha256};
use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What the journal's key-encryption key is derived under (`LedgerKey::derive_secret`).
pub const KEY_LABEL: &str = "parking journal";

const MAGIC: &[u8; 4] = b"CTJ2";
const WRAPPED: usize = 32 + 16;
const HEADER: usize = 4 + 8 + 8 + NONCE_LEN + WRAPPED;
const TAG: usize = 16;
const RECORD_AAD: &[u8] = b"CTJ2 record";
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
    /// Segments no key here opens (or not journals at all), and segments that could not be read.
    pub foreign_segments: u64,
    /// Records that failed authentication or framing (a torn last write included): the rest of
    /// their segment is skipped.
    pub damaged: u64,
}

/// The key-encryption key, and the fingerprint that names it in headers.
struct Kek {
    key: LessSafeKey,
    fingerprint: [u8; 8],
}

impl Kek {
    fn new(secret: &[u8; 32]) -> io::Result<Kek> {
        let mut fp = Sha256::new();
        fp.update(b"changetrail journal key fingerprint\0");
        fp.update(secret);
        let fingerprint: [u8; 8] = fp.finalize()[..8].try_into().unwrap_or([0; 8]);
        Ok(Kek {
            key: aead_key(secret)?,
            fingerprint,
        })
    }

    /// A header carrying `dek` wrapped under this KEK.
    fn wrap(&self, dek: &[u8; 32], created_ns: i64) -> io::Result<[u8; HEADER]> {
        let mut h = [0u8; HEADER];
        h[..4].copy_from_slice(MAGIC);
        h[4..12].copy_from_slice(&self.fingerprint);
        h[12..20].copy_from_slice(&created_ns.to_le_bytes());
        let nonce: [u8; NONCE_LEN] = crate::sys::random_bytes();
        h[20..32].copy_from_slice(&nonce);
        let mut sealed = dek.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(wrap_aad(created_ns)),
                &mut sealed,
            )
            .map_err(|_| io::Error::other("journal key wrapping failed"))?;
        h[32..].copy_from_slice(&sealed);
        Ok(h)
    }

    /// The segment key in `h`, if this KEK wrapped it.
    fn unwrap(&self, h: &[u8; HEADER]) -> Option<zeroize::Zeroizing<[u8; 32]>> {
        if &h[..4] != MAGIC || h[4..12] != self.fingerprint {
            return None;
        }
        let created_ns = i64::from_le_bytes(h[12..20].try_into().ok()?);
        let nonce: [u8; NONCE_LEN] = h[20..32].try_into().ok()?;
        let mut sealed = h[32..].to_vec();
        let dek = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(wrap_aad(created_ns)),
                &mut sealed,
            )
            .ok()?;
        let dek: [u8; 32] = (&*dek).try_into().ok()?;
        sealed.iter_mut().for_each(|b| *b = 0);
        Some(zeroize::Zeroizing::new(dek))
    }
}

fn wrap_aad(created_ns: i64) -> [u8; 12] {
    let mut a = [0u8; 12];
    a[..4].copy_from_slice(MAGIC);
    a[4..].copy_from_slice(&created_ns.to_le_bytes());
    a
}

fn aead_key(k: &[u8; 32]) -> io::Result<LessSafeKey> {
    UnboundKey::new(&CHACHA20_POLY1305, k)
        .map(LessSafeKey::new)
        .map_err(|_| io::Error::other("cannot set up the journal cipher"))
}

fn record_nonce(index: u64) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    n[..8].copy_from_slice(&index.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

struct Open {
    file: File,
    path: PathBuf,
    key: LessSafeKey,
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
    kek: Kek,
    current: Option<Open>,
    closed: VecDeque<Closed>,
    next_number: u64,
    closed_bytes: u64,
}

pub struct Journal {
    /// Held (locked) for as long as the journal is open.
    _lock: File,
    dir: PathBuf,
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

/// The segment files of `dir`, oldest first, with their sizes.
fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf, u64)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if let Some(n) = e.file_name().to_str().and_then(segment_number) {
            out.push((n, e.path(), e.metadata()?.len()));
        }
    }
    out.sort();
    Ok(out)
}

/// Locks `dir` for this process, or says who to blame.
fn lock_dir(dir: &Path) -> io::Result<File> {
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
    Ok(lock)
}

/// Wraps the segment key of `path` again, from `from` to `to`; false if `from` did not wrap it.
fn rewrap(path: &Path, from: &Kek, to: &Kek) -> io::Result<bool> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let mut h = [0u8; HEADER];
    if file.read_exact_at(&mut h, 0).is_err() {
        return Ok(false);
    }
    let Some(dek) = from.unwrap(&h) else {
        return Ok(false);
    };
    let created_ns = i64::from_le_bytes(h[12..20].try_into().unwrap_or([0; 8]));
    let new = to.wrap(&dek, created_ns)?;
    file.write_all_at(&new, 0)?;
    file.sync_data()?;
    Ok(true)
}

impl Journal {
    /// Opens (creating, mode 0700) the journal directory, locked for this process. Existing
    /// segments are kept for `replay`; new records go to a new segment.
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
        let lock = lock_dir(dir)?;
        let listed = list_segments(dir)?;
        let next_number = listed.last().map_or(0, |c| c.0 + 1);
        let closed: VecDeque<Closed> = listed
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
            segment_bytes: (max_bytes / 8).clamp(1 << 20, 64 << 20),
            max_bytes,
            window_ns,
            segments: Mutex::new(Segments {
                kek: Kek::new(secret)?,
                closed_bytes: closed.iter().map(|c| c.bytes).sum(),
                current: None,
                closed,
                next_number,
            }),
        })
    }

    /// For a directory no process has open (a stopped instance's, when `keys rotate` runs):
    /// wraps every segment key `old` wrapped under `new` instead. Returns how many; 0 without a
    /// directory. A directory in use is left to its process, which rekeys itself.
    pub fn rekey_dir(dir: &Path, old: &[u8; 32], new: &[u8; 32]) -> io::Result<usize> {
        if !dir.is_dir() {
            return Ok(0);
        }
        let _lock = lock_dir(dir)?;
        let (from, to) = (Kek::new(old)?, Kek::new(new)?);
        let mut n = 0;
        for (_, path, _) in list_segments(dir)? {
            n += usize::from(rewrap(&path, &from, &to)?);
        }
        Ok(n)
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

    /// Whether `secret` is the key-encryption key in use.
    pub fn uses(&self, secret: &[u8; 32]) -> bool {
        Kek::new(secret).is_ok_and(|k| k.fingerprint == self.lock().kek.fingerprint)
    }

    /// Switches to a new key-encryption key (the signing key rotated), wrapping every segment
    /// key the old one wrapped under the new one first.
    pub fn rekey(&self, secret: &[u8; 32]) -> io::Result<()> {
        let new = Kek::new(secret)?;
        let mut s = self.lock();
        if new.fingerprint == s.kek.fingerprint {
            return Ok(());
        }
        let paths: Vec<PathBuf> = s
            .closed
            .iter()
            .map(|c| c.path.clone())
            .chain(s.current.as_ref().map(|c| c.path.clone()))
            .collect();
        for p in paths {
            match rewrap(&p, &s.kek, &new) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        s.kek = new;
        Ok(())
    }

    /// Writes one record (to the page cache: it survives the process, see the module docs).
    pub fn append(&self, r: &Record, now_ns: i64) -> io::Result<()> {
        self.append_with(
            r.received_ns,
            &r.sender,
            r.request.len(),
            |out| out.extend_from_slice(&r.request),
            now_ns,
        )
    }

    /// Writes one record whose request `write` appends (about `request_len` bytes): the record
    /// is framed, encrypted and written from one buffer, with no copy of the request between.
    pub fn append_with(
        &self,
        received_ns: i64,
        sender: &SentBy,
        request_len: usize,
        write: impl FnOnce(&mut Vec<u8>),
        now_ns: i64,
    ) -> io::Result<()> {
        // [u32 length][plaintext → ciphertext][tag]: the length is filled in once known.
        let mut framed = Vec::with_capacity(4 + 64 + sender.name.len() + request_len + TAG);
        framed.extend_from_slice(&[0; 4]);
        framed.extend_from_slice(&received_ns.to_le_bytes());
        match &sender.token_id {
            Some(t) => {
                framed.push(1);
                put_str(&mut framed, t)?;
            }
            None => framed.push(0),
        }
        put_str(&mut framed, &sender.name)?;
        write(&mut framed);
        if framed.len() - 4 + TAG > MAX_RECORD {
            return Err(corrupt("journal record too large"));
        }
        let mut s = self.lock();
        self.rotate_if_due(&mut s, now_ns)?;
        if s.current.is_none() {
            // The number is used up even if creating fails, so the next try does not collide.
            let number = s.next_number;
            s.next_number += 1;
            let opened = self.create_segment(&s.kek, number, now_ns)?;
            s.current = Some(opened);
        }
        let Some(seg) = s.current.as_mut() else {
            return Err(io::Error::other("no journal segment"));
        };
        let tag = seg
            .key
            .seal_in_place_separate_tag(
                record_nonce(seg.index),
                Aad::from(RECORD_AAD),
                &mut framed[4..],
            )
            .map_err(|_| io::Error::other("journal encryption failed"))?;
        framed.extend_from_slice(tag.as_ref());
        let len =
            u32::try_from(framed.len() - 4).map_err(|_| corrupt("journal record too large"))?;
        framed[..4].copy_from_slice(&len.to_le_bytes());
        // One write per record: a crash leaves at most this record torn, which replay detects.
        // The index is used up whatever happens, and a failed write retires the segment: a
        // nonce is never used twice, and nothing follows a torn record in its segment.
        seg.index += 1;
        if let Err(e) = seg.file.write_all(&framed) {
            if let Some(c) = s.current.take() {
                let bytes = c.file.metadata().map_or(c.bytes, |m| m.len());
                s.closed_bytes += bytes;
                s.closed.push_back(Closed {
                    path: c.path,
                    bytes,
                    last_ns: c.last_ns,
                });
            }
            return Err(e);
        }
        seg.bytes += framed.len() as u64;
        seg.last_ns = now_ns;
        Ok(())
    }

    fn create_segment(&self, kek: &Kek, number: u64, now_ns: i64) -> io::Result<Open> {
        let path = self.dir.join(format!("parked-{number:016x}.ctj"));
        let dek: zeroize::Zeroizing<[u8; 32]> = zeroize::Zeroizing::new(crate::sys::random_bytes());
        let header = kek.wrap(&dek, now_ns)?;
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .mode(0o600)
            .open(&path)?;
        file.write_all(&header)?;
        Ok(Open {
            file,
            path,
            key: aead_key(&dek)?,
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
            // Flushed before it is left alone: the periodic sync only flushes the current one.
            c.file.sync_data()?;
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
            match std::fs::remove_file(&front.path) {
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
    /// applies the bounds to segments that aged out while nothing was written. The flush runs
    /// outside the lock: appends go on meanwhile. Blocking: call it from a blocking thread.
    pub fn sync(&self, now_ns: i64) -> io::Result<()> {
        let file = {
            let mut s = self.lock();
            self.rotate_if_due(&mut s, now_ns)?;
            match &s.current {
                Some(c) => Some(c.file.try_clone()?),
                None => None,
            }
        };
        if let Some(f) = file {
            f.sync_data()?;
        }
        Ok(())
    }

    /// Hands every readable record younger than the window, oldest first, to `f`; learns each
    /// existing segment's age so the bounds apply to it. A segment that cannot be read is
    /// counted and skipped, never a reason not to start.
    pub fn replay(&self, now_ns: i64, mut f: impl FnMut(Record)) -> io::Result<ReplayStats> {
        let mut stats = ReplayStats::default();
        let paths: Vec<PathBuf> = self.lock().closed.iter().map(|c| c.path.clone()).collect();
        let mut ages = HashMap::new();
        for path in paths {
            let last = self.replay_segment(&path, now_ns, &mut stats, &mut f);
            ages.insert(path, last);
        }
        let mut s = self.lock();
        for c in s.closed.iter_mut() {
            if let Some(last) = ages.get(&c.path) {
                c.last_ns = *last;
            }
        }
        self.rotate_if_due(&mut s, now_ns)?;
        Ok(stats)
    }

    /// Replays one segment; returns the time of its last record (for a segment it cannot open,
    /// the file's modification time).
    fn replay_segment(
        &self,
        path: &Path,
        now_ns: i64,
        stats: &mut ReplayStats,
        f: &mut impl FnMut(Record),
    ) -> i64 {
        let modified = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        let mut bytes = Vec::new();
        if File::open(path)
            .and_then(|mut file| file.read_to_end(&mut bytes))
            .is_err()
        {
            stats.foreign_segments += 1;
            return modified;
        }
        let key = bytes
            .get(..HEADER)
            .and_then(|h| <[u8; HEADER]>::try_from(h).ok())
            .and_then(|h| self.lock().kek.unwrap(&h))
            .and_then(|dek| aead_key(&dek).ok());
        let Some(key) = key else {
            stats.foreign_segments += 1;
            return modified;
        };
        let mut last = 0;
        let mut at = HEADER;
        let mut index = 0u64;
        while at < bytes.len() {
            match open_record(&key, index, &mut bytes, &mut at) {
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
        last
    }
}

/// Decrypts and parses the record at `*at`, moving past it; None if it is damaged.
fn open_record(key: &LessSafeKey, index: u64, bytes: &mut [u8], at: &mut usize) -> Option<Record> {
    let len = u32::from_le_bytes(bytes.get(*at..*at + 4)?.try_into().ok()?) as usize;
    if !(TAG..=MAX_RECORD).contains(&len) {
        return None;
    }
    let start = *at + 4;
    let sealed = bytes.get_mut(start..start.checked_add(len)?)?;
    let plain = key
        .open_in_place(record_nonce(index), Aad::from(RECORD_AAD), sealed)
        .ok()?;
    *at = start + len;
    parse_plain(plain)
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
