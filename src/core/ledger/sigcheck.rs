//! Entry signature checking on all cores: batched Ed25519 verification on worker threads, with
//! bisection to name the bad entries when a batch fails.
//!
//! Threads here are computation, not I/O; the queue between the caller and the workers is
//! bounded, so memory stays flat however many signatures stream through.

use super::entry::signature_message;
use super::hash::Hash;
use ed25519_dalek::{Signature, VerifyingKey};
use std::thread::JoinHandle;

/// Signatures per `verify_batch` call: large enough to amortise, small enough to bisect cheaply.
const CHUNK: usize = 256;
/// Jobs handed to a worker at once.
const BATCH: usize = 2048;

#[derive(Clone)]
pub struct SigJob {
    pub seq: u64,
    pub key: VerifyingKey,
    pub leaf: Hash,
    pub sig: Signature,
}

/// Accepts signature jobs in any order; `finish` returns the sequence numbers that failed.
pub struct SignatureChecker {
    batch: Vec<SigJob>,
    tx: Option<crossbeam_channel::Sender<Vec<SigJob>>>,
    workers: Vec<JoinHandle<Vec<u64>>>,
    inline_bad: Vec<u64>,
    checked: u64,
}

impl SignatureChecker {
    /// `threads` = 0 picks the number of available cores.
    pub fn new(threads: usize) -> SignatureChecker {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        // Two batches in flight per worker keeps them busy without letting memory grow.
        let (tx, rx) = crossbeam_channel::bounded::<Vec<SigJob>>(threads * 2);
        let workers = (0..threads)
            .map(|_| {
                let rx = rx.clone();
                std::thread::spawn(move || {
                    let mut bad = Vec::new();
                    for batch in rx {
                        for chunk in batch.chunks(CHUNK) {
                            check_chunk(chunk, &mut bad);
                        }
                    }
                    bad
                })
            })
            .collect();
        SignatureChecker {
            batch: Vec::with_capacity(BATCH),
            tx: Some(tx),
            workers,
            inline_bad: Vec::new(),
            checked: 0,
        }
    }

    pub fn push(&mut self, job: SigJob) {
        self.checked += 1;
        self.batch.push(job);
        if self.batch.len() >= BATCH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        let rejected = match &self.tx {
            Some(tx) => tx.send(batch).err().map(|e| e.0),
            None => Some(batch),
        };
        // Workers only stop when the sender is dropped; if one died anyway, check here.
        if let Some(batch) = rejected {
            let mut bad = Vec::new();
            for chunk in batch.chunks(CHUNK) {
                check_chunk(chunk, &mut bad);
            }
            self.inline_bad.extend(bad);
        }
    }

    /// Number of signatures submitted so far.
    pub fn checked(&self) -> u64 {
        self.checked
    }

    /// Waits for every submitted signature; returns the failing sequence numbers, sorted.
    pub fn finish(mut self) -> Vec<u64> {
        self.flush();
        self.tx = None;
        let mut bad = std::mem::take(&mut self.inline_bad);
        for w in self.workers.drain(..) {
            match w.join() {
                Ok(b) => bad.extend(b),
                // A panicking worker is a bug; it must not turn into "all signatures fine".
                Err(_) => bad.push(u64::MAX),
            }
        }
        bad.sort_unstable();
        bad
    }
}

fn check_chunk(chunk: &[SigJob], bad: &mut Vec<u64>) {
    let msgs: Vec<[u8; 57]> = chunk.iter().map(|j| signature_message(&j.leaf)).collect();
    let msg_refs: Vec<&[u8]> = msgs.iter().map(|m| &m[..]).collect();
    let sigs: Vec<Signature> = chunk.iter().map(|j| j.sig).collect();
    let keys: Vec<VerifyingKey> = chunk.iter().map(|j| j.key).collect();
    if ed25519_dalek::verify_batch(&msg_refs, &sigs, &keys).is_ok() {
        return;
    }
    if chunk.len() <= 8 {
        for (j, m) in chunk.iter().zip(&msgs) {
            if j.key.verify_strict(m, &j.sig).is_err() {
                bad.push(j.seq);
            }
        }
        return;
    }
    let (a, b) = chunk.split_at(chunk.len() / 2);
    check_chunk(a, bad);
    check_chunk(b, bad);
}
