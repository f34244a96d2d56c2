//! Entry signature checking on all cores: batched Ed25519 verification on worker threads, with
//! bisection to name the bad entries when a batch fails. A batch signed by one key (nearly
//! always: keys change only at rotations) is checked with one equation whose key terms are
//! folded into one (`one_key_batch`); a batch spanning a rotation uses ed25519-dalek's
//! `verify_batch`. Either way only a failing batch is looked at closer, with strict verification.
//!
//! Threads here are computation, not I/O; the queue between the caller and the workers is
//! bounded, so memory stays flat however many signatures stream through.

use super::entry::signature_message;
use super::hash::Hash;
use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::CompressedEdwardsY;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use curve25519_dalek::{EdwardsPoint, Scalar};
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest as _, Sha256, Sha512};
use std::thread::JoinHandle;

/// Signatures per batch equation: large enough to amortise the multiscalar multiplication,
/// whose bucket sums cost the same for any number of points (one key's batch of 1,024 checks
/// about 1.5× as many signatures per second as one of 256, and `verify` spends 8% less CPU with
/// 4,096 than with 1,024). A failing batch is bisected, which costs about twice the batch again
/// for one bad signature.
const CHUNK: usize = 4096;
/// Jobs handed to a worker at once.
const BATCH: usize = 4096;

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
    let passed = match chunk.first() {
        Some(first) if chunk.iter().all(|j| j.key == first.key) => {
            one_key_batch(&first.key, chunk, &msgs)
        }
        _ => {
            let msg_refs: Vec<&[u8]> = msgs.iter().map(|m| &m[..]).collect();
            let sigs: Vec<Signature> = chunk.iter().map(|j| j.sig).collect();
            let keys: Vec<VerifyingKey> = chunk.iter().map(|j| j.key).collect();
            ed25519_dalek::verify_batch(&msg_refs, &sigs, &keys).is_ok()
        }
    };
    if passed {
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

/// True if every signature of `jobs` (over `msgs`) is valid under `key`, checked with one
/// equation: `[8]·(Σ zᵢ·Rᵢ + (Σ zᵢ·kᵢ)·A − (Σ zᵢ·sᵢ)·B) = 0`, `kᵢ = SHA-512(Rᵢ ‖ A ‖ Mᵢ)`.
///
/// This is the cofactored batch equation of ed25519-dalek's `verify_batch`, with the `kᵢ·A` terms
/// of the one key folded into a single term: n + 2 points instead of 2n + 1. The 128-bit `zᵢ`
/// come from a hash of the whole batch (key, messages, signatures), so they are fixed only after
/// every signature is: invalid signatures cancel out in the sum with probability about 2⁻¹²⁸,
/// as with random coefficients, and the check stays pure (no random source in `core`). Each
/// `sᵢ` must be canonical and each `Rᵢ` a canonical encoding of a point that is not of small
/// order, and the key must lie in the prime-order subgroup. What the cofactor still forgives is
/// an `Rᵢ` with a torsion part, which only the key holder can make and `verify_strict` refuses:
/// such a signature is named only when it falls in a failing batch (as with `verify_batch`;
/// FORMAT.md says so). `false` decides nothing: the caller then checks the signatures one by
/// one with `verify_strict`.
fn one_key_batch(key: &VerifyingKey, jobs: &[SigJob], msgs: &[[u8; 57]]) -> bool {
    let a = key.to_bytes();
    // Multiplying by the cofactor would erase a key's torsion part (and all of a small-order
    // key, which would let anyone pass): only a key in the prime-order subgroup is checked here.
    let Some(a_point) = CompressedEdwardsY(a)
        .decompress()
        .filter(|p| !p.is_small_order() && p.is_torsion_free())
    else {
        return false;
    };
    let mut transcript = Sha256::new();
    transcript.update(b"changetrail/batch-verify/v1");
    transcript.update(a);
    for (j, m) in jobs.iter().zip(msgs) {
        transcript.update(m);
        transcript.update(j.sig.to_bytes());
    }
    let seed: [u8; 32] = transcript.finalize().into();
    let mut scalars = Vec::with_capacity(jobs.len() + 2);
    let mut points = Vec::with_capacity(jobs.len() + 2);
    let (mut b_coefficient, mut a_coefficient) = (Scalar::ZERO, Scalar::ZERO);
    for (i, (j, m)) in jobs.iter().zip(msgs).enumerate() {
        let r_bytes = j.sig.r_bytes();
        if !canonical_y(r_bytes) {
            return false;
        }
        let Some(r) = CompressedEdwardsY(*r_bytes).decompress() else {
            return false;
        };
        if r.is_small_order() {
            return false;
        }
        let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(*j.sig.s_bytes())) else {
            return false;
        };
        let k = wide_scalar(&[r_bytes, &a, m]);
        let mut z = [0u8; 32];
        let zi: [u8; 32] = Sha256::new()
            .chain_update(seed)
            .chain_update((i as u64).to_be_bytes())
            .finalize()
            .into();
        z[..16].copy_from_slice(&zi[..16]);
        let z = Scalar::from_bytes_mod_order(z);
        b_coefficient += z * s;
        a_coefficient += z * k;
        scalars.push(z);
        points.push(r);
    }
    scalars.push(-b_coefficient);
    points.push(ED25519_BASEPOINT_POINT);
    scalars.push(a_coefficient);
    points.push(a_point);
    EdwardsPoint::vartime_multiscalar_mul(&scalars, &points)
        .mul_by_cofactor()
        .is_identity()
}

/// SHA-512 of the parts, reduced mod ℓ.
fn wide_scalar(parts: &[&[u8]]) -> Scalar {
    let mut h = Sha512::new();
    for p in parts {
        h.update(p);
    }
    Scalar::from_bytes_mod_order_wide(&h.finalize().into())
}

/// True unless the y coordinate (the low 255 bits) is p = 2²⁵⁵ − 19 or more: such an encoding
/// decompresses to the same point as y − p, which strict verification refuses.
fn canonical_y(bytes: &[u8; 32]) -> bool {
    let top = bytes[31] & 0x7f;
    !(top == 0x7f && bytes[1..31].iter().all(|&b| b == 0xff) && bytes[0] >= 0xed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ledger::keys::{LedgerKey, Origin};

    fn jobs(key: &LedgerKey, n: u64) -> Vec<SigJob> {
        (0..n)
            .map(|seq| {
                let leaf = Hash::of(&[&seq.to_be_bytes()]);
                let sig = key.sign(&signature_message(&leaf));
                SigJob {
                    seq,
                    key: *key.vkey().public(),
                    leaf,
                    sig: Signature::from_bytes(&sig),
                }
            })
            .collect()
    }

    fn checked(jobs: Vec<SigJob>) -> Vec<u64> {
        let mut c = SignatureChecker::new(2);
        for j in jobs {
            c.push(j);
        }
        c.finish()
    }

    /// The one-key equation alone, without the strict fallback that would hide its mistakes.
    fn equation_holds(jobs: &[SigJob]) -> bool {
        let msgs: Vec<[u8; 57]> = jobs.iter().map(|j| signature_message(&j.leaf)).collect();
        one_key_batch(&jobs[0].key, jobs, &msgs)
    }

    fn key(seed: u8) -> LedgerKey {
        LedgerKey::from_seed(Origin::parse("example.com/log").unwrap(), [seed; 32]).unwrap()
    }

    /// Every kind of damage to one signature among thousands is named, and only that one: a
    /// changed s, a changed R, a non-canonical s (s + ℓ), a signed message that differs, another
    /// key's signature, and a batch that spans a rotation.
    #[test]
    fn one_bad_signature_in_a_batch_is_named() {
        let k = key(1);
        assert!(
            equation_holds(&jobs(&k, 1024)),
            "a valid batch passes the fast path"
        );
        assert!(checked(jobs(&k, 3000)).is_empty());
        type Corruption = Box<dyn Fn(&mut SigJob)>;
        let corruptions: Vec<(&str, Corruption)> = vec![
            (
                "s",
                Box::new(|j| {
                    let mut b = j.sig.to_bytes();
                    b[40] ^= 1;
                    j.sig = Signature::from_bytes(&b);
                }),
            ),
            (
                "R",
                Box::new(|j| {
                    let mut b = j.sig.to_bytes();
                    b[3] ^= 1;
                    j.sig = Signature::from_bytes(&b);
                }),
            ),
            (
                "s + l",
                Box::new(|j| {
                    let s = Scalar::from_canonical_bytes(*j.sig.s_bytes()).unwrap();
                    // ℓ = 2²⁵² + 27742317777372353535851937790883648493, little-endian.
                    let l: [u8; 32] = [
                        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2,
                        0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
                    ];
                    // s + ℓ as 32 little-endian bytes: the same scalar mod ℓ, not canonical.
                    let mut carry = 0u16;
                    let mut out = [0u8; 32];
                    for (i, o) in out.iter_mut().enumerate() {
                        let v = u16::from(s.as_bytes()[i]) + u16::from(l[i]) + carry;
                        *o = v as u8;
                        carry = v >> 8;
                    }
                    let mut b = j.sig.to_bytes();
                    b[32..].copy_from_slice(&out);
                    j.sig = Signature::from_bytes(&b);
                }),
            ),
            (
                "message",
                Box::new(|j| j.leaf = Hash::of(&[b"another entry"])),
            ),
            (
                "key",
                Box::new(|j| {
                    j.sig = Signature::from_bytes(&key(2).sign(&signature_message(&j.leaf)));
                }),
            ),
        ];
        for (what, corrupt) in &corruptions {
            let mut all = jobs(&k, 3000);
            corrupt(&mut all[1234]);
            assert!(
                !equation_holds(&all[1024..2048]),
                "{what}: the equation fails"
            );
            assert_eq!(checked(all), vec![1234], "{what}");
        }
        // A rotation inside a batch: both keys' signatures valid, then one of each broken.
        let k2 = key(2);
        let mut all = jobs(&k, 1500);
        all.extend(jobs(&k2, 3000).into_iter().skip(1500));
        assert!(checked(all.clone()).is_empty());
        for i in [700, 2100] {
            all[i].leaf = Hash::of(&[b"x"]);
        }
        assert_eq!(checked(all), vec![700, 2100]);
        // Several batches: one key's, one spanning the rotation, the next key's; one broken in
        // each, and both keys' sides of the rotation.
        let mut all = jobs(&k, 6000);
        all.extend(jobs(&k2, 9000).into_iter().skip(6000));
        assert!(checked(all.clone()).is_empty());
        for i in [100, 5000, 7000, 8500] {
            all[i].leaf = Hash::of(&[b"x"]);
        }
        assert_eq!(checked(all), vec![100, 5000, 7000, 8500]);
    }

    /// Encodings strict verification refuses fail the equation itself, whatever `s` says: an R
    /// of small order (the identity), an R whose y is not reduced, and a key of small order, with
    /// which `R = s·B` would otherwise pass for any message.
    #[test]
    fn what_strict_verification_refuses_fails_the_equation() {
        let k = key(1);
        let mut all = jobs(&k, 64);
        let identity = curve25519_dalek::edwards::EdwardsPoint::default().compress();
        let mut b = all[5].sig.to_bytes();
        b[..32].copy_from_slice(identity.as_bytes());
        all[5].sig = Signature::from_bytes(&b);
        assert!(!equation_holds(&all), "small-order R");
        assert_eq!(checked(all), vec![5]);
        // y = p + 1 encodes the same point as y = 1 (the identity) without being reduced.
        let mut y = [0xffu8; 32];
        y[0] = 0xee;
        y[31] = 0x7f;
        let mut all = jobs(&k, 64);
        let mut b = all[9].sig.to_bytes();
        b[..32].copy_from_slice(&y);
        all[9].sig = Signature::from_bytes(&b);
        assert!(!equation_holds(&all), "non-canonical R");
        assert_eq!(checked(all), vec![9]);
        // A small-order key: R = s·B satisfies the cofactored equation for any message.
        let weak = VerifyingKey::from_bytes(identity.as_bytes()).unwrap();
        let forged: Vec<SigJob> = (0..64u64)
            .map(|seq| {
                let s = Scalar::from(seq + 1);
                let r = EdwardsPoint::mul_base(&s).compress();
                let mut b = [0u8; 64];
                b[..32].copy_from_slice(r.as_bytes());
                b[32..].copy_from_slice(s.as_bytes());
                SigJob {
                    seq,
                    key: weak,
                    leaf: Hash::of(&[&seq.to_be_bytes()]),
                    sig: Signature::from_bytes(&b),
                }
            })
            .collect();
        assert!(!equation_holds(&forged), "small-order key");
        assert_eq!(checked(forged).len(), 64);
    }

    #[test]
    fn non_canonical_y_is_recognised() {
        let mut p = [0xffu8; 32];
        p[31] = 0x7f;
        p[0] = 0xec;
        assert!(canonical_y(&p), "p - 1");
        p[0] = 0xed;
        assert!(!canonical_y(&p), "p");
        p[31] = 0xff;
        assert!(!canonical_y(&p), "p with the sign bit");
        assert!(canonical_y(&[0u8; 32]));
    }
}
