//! Admission by bytes in flight: every export holds a reservation that grows as its body
//! arrives, is decompressed, is decoded and becomes rows, and is given back when it is answered.
//! A reservation that cannot grow is answered "retry shortly" (UNAVAILABLE / 503), so overload
//! never turns into memory; one sender (ingest token) can hold at most its share, so a slow or
//! greedy client cannot take every slot from the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Every sender together holds the whole budget.
    Full,
    /// This sender holds its share.
    Share,
    /// One request alone would need more than a sender may ever hold: retrying cannot help.
    TooLarge,
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    by_sender: HashMap<String, usize>,
}

#[derive(Debug)]
pub struct Budget {
    max_total: usize,
    max_per_sender: usize,
    held: Mutex<Held>,
}

impl Budget {
    pub fn new(max_total: usize, max_per_sender: usize) -> Arc<Budget> {
        let max_total = max_total.max(1);
        Arc::new(Budget {
            max_total,
            max_per_sender: max_per_sender.clamp(1, max_total),
            held: Mutex::new(Held::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        match self.held.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Bytes held by everyone now.
    pub fn held(&self) -> usize {
        self.lock().total
    }

    pub fn max_per_sender(&self) -> usize {
        self.max_per_sender
    }

    pub fn max_total(&self) -> usize {
        self.max_total
    }

    /// An empty reservation for `sender`.
    pub fn reservation(self: &Arc<Budget>, sender: &str) -> Reservation {
        Reservation {
            budget: self.clone(),
            sender: sender.to_owned(),
            bytes: 0,
        }
    }
}

/// Bytes one export holds; given back on drop.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<Budget>,
    sender: String,
    bytes: usize,
}

impl Reservation {
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Moves everything held into a new reservation (handed to the append queue, so what waits
    /// there stays counted whatever becomes of the caller).
    pub fn take(&mut self) -> Reservation {
        let bytes = std::mem::take(&mut self.bytes);
        Reservation {
            budget: self.budget.clone(),
            sender: self.sender.clone(),
            bytes,
        }
    }

    /// Whose reservation this is (the ingest token id).
    pub fn sender(&self) -> &str {
        &self.sender
    }

    /// Gives back `n` bytes no longer held (a buffer dropped once decoded).
    pub fn shrink(&mut self, n: usize) {
        let n = n.min(self.bytes);
        if n == 0 {
            return;
        }
        let mut h = self.budget.lock();
        h.total -= n;
        if let Some(mine) = h.by_sender.get_mut(&self.sender) {
            *mine -= n;
            if *mine == 0 {
                h.by_sender.remove(&self.sender);
            }
        }
        self.bytes -= n;
    }

    /// Holds `n` more bytes, or says why not (and holds nothing more).
    pub fn grow(&mut self, n: usize) -> Result<(), Refused> {
        if n == 0 {
            return Ok(());
        }
        let want = self.bytes.saturating_add(n);
        if want > self.budget.max_per_sender {
            return Err(Refused::TooLarge);
        }
        let mut h = self.budget.lock();
        if h.total.saturating_add(n) > self.budget.max_total {
            return Err(Refused::Full);
        }
        let mine = h.by_sender.entry(self.sender.clone()).or_default();
        if mine.saturating_add(n) > self.budget.max_per_sender {
            return Err(Refused::Share);
        }
        *mine += n;
        h.total += n;
        self.bytes = want;
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.shrink(self.bytes);
    }
}

/// How fast one sender may have rows stored: a token bucket per sender, refilled at `rate` bytes
/// a second up to `burst`. The single writer is shared by every sender; without this, one token
/// storing the largest rows the limits allow keeps everyone else's commits waiting behind its own.
/// A request may take the bucket below zero (a large one still passes once); the sender then
/// waits until it is refilled.
#[derive(Debug)]
pub struct Pacer {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, std::time::Instant)>>,
}

impl Pacer {
    /// `rate` 0 turns pacing off.
    pub fn new(rate: usize) -> Pacer {
        Pacer {
            rate: rate as f64,
            burst: 4.0 * rate as f64,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `bytes` for `sender` at `now`, or says how long until it may store again.
    pub fn take(
        &self,
        sender: &str,
        bytes: usize,
        now: std::time::Instant,
    ) -> Result<(), std::time::Duration> {
        if self.rate <= 0.0 || bytes == 0 {
            return Ok(());
        }
        let mut b = match self.buckets.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if b.len() > 1024 {
            // Senders whose bucket has refilled are remembered no longer.
            let (rate, burst) = (self.rate, self.burst);
            b.retain(|_, (level, at)| {
                *level + rate * now.saturating_duration_since(*at).as_secs_f64() < burst
            });
        }
        let (level, at) = b.entry(sender.to_owned()).or_insert((self.burst, now));
        *level =
            (*level + self.rate * now.saturating_duration_since(*at).as_secs_f64()).min(self.burst);
        *at = now;
        if *level <= 0.0 {
            return Err(std::time::Duration::from_secs_f64(-*level / self.rate));
        }
        *level -= bytes as f64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_storing_faster_than_its_rate_waits_and_others_do_not() {
        let p = Pacer::new(1000);
        let t0 = std::time::Instant::now();
        // A burst of four seconds' worth passes, the request that overdraws it too.
        p.take("a", 3000, t0).unwrap();
        p.take("a", 5000, t0).unwrap();
        // Now 4,000 bytes in debt: four seconds to wait.
        let wait = p.take("a", 1, t0).unwrap_err();
        assert_eq!(wait.as_secs(), 4);
        // Another sender has its own bucket.
        p.take("b", 3000, t0).unwrap();
        // Refilled with time.
        let later = t0 + std::time::Duration::from_secs(5);
        p.take("a", 100, later).unwrap();
        // Off when the rate is 0.
        Pacer::new(0).take("a", usize::MAX, t0).unwrap();
    }

    #[test]
    fn reservations_are_bounded_in_total_and_per_sender_and_given_back() {
        let b = Budget::new(100, 60);
        let mut a1 = b.reservation("a");
        let mut a2 = b.reservation("a");
        let mut c = b.reservation("c");
        a1.grow(40).unwrap();
        // A's second export would take A past its share while others wait.
        assert_eq!(a2.grow(30), Err(Refused::Share));
        a2.grow(20).unwrap();
        c.grow(40).unwrap();
        assert_eq!(b.held(), 100);
        let mut d = b.reservation("d");
        assert_eq!(d.grow(1), Err(Refused::Full));
        // One request needing more than any sender may hold can never be admitted.
        assert_eq!(b.reservation("e").grow(61), Err(Refused::TooLarge));
        drop(a1);
        assert_eq!(b.held(), 60);
        d.grow(40).unwrap();
        drop((a2, c, d));
        assert_eq!(b.held(), 0);
        assert!(b.lock().by_sender.is_empty());
    }
}
