//! A latency sketch with relative accuracy (the DDSketch idea: logarithmic buckets, so any
//! quantile is within ~2 % of the true value whatever the range), small enough to sign once per
//! (service, version, minute), and mergeable: two instances' sketches of one minute add up.
//!
//! Written here rather than taken from a crate: the buckets are part of a signed entry
//! (`runtime.minute`), so their encoding must be ours, stable and canonical (`[bucket, count]`
//! pairs in bucket order), and a verifier in another language can rebuild quantiles from it with one formula.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Bucket `i` holds values in (γ^(i-1), γ^i] microseconds; γ = 1.04 gives a relative error of
/// (γ-1)/(γ+1) ≈ 1.96 %.
pub const GAMMA: f64 = 1.04;

/// Buckets kept per sketch. When more are needed the lowest ones are merged upward: low
/// quantiles lose accuracy, the high ones (p95, p99) that regressions show in never do. 256
/// buckets span a factor of 1.04^256 ≈ 23,000 between the lowest and highest kept value.
pub const MAX_BUCKETS: usize = 256;

/// The bucket of a duration in microseconds (0 and 1 µs share bucket 0).
pub fn bucket(micros: u64) -> i32 {
    if micros <= 1 {
        return 0;
    }
    ((micros as f64).ln() / GAMMA.ln()).ceil() as i32
}

/// The value a bucket stands for, in microseconds: the point whose relative distance to both
/// bounds is equal.
pub fn value(bucket: i32) -> f64 {
    2.0 * GAMMA.powi(bucket) / (GAMMA + 1.0)
}

/// Encoded as `[[bucket, count], …]` in bucket order; decoding refuses any other order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "Vec<(i32, u64)>", try_from = "Vec<(i32, u64)>")]
pub struct Sketch {
    /// bucket → count, in bucket order.
    buckets: BTreeMap<i32, u64>,
}

impl From<Sketch> for Vec<(i32, u64)> {
    fn from(s: Sketch) -> Self {
        s.buckets.into_iter().collect()
    }
}

impl TryFrom<Vec<(i32, u64)>> for Sketch {
    type Error = &'static str;

    fn try_from(pairs: Vec<(i32, u64)>) -> Result<Self, Self::Error> {
        if pairs.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err("sketch buckets must be in increasing order, each once");
        }
        Ok(Sketch {
            buckets: pairs.into_iter().collect(),
        })
    }
}

impl Sketch {
    pub fn add(&mut self, micros: u64) {
        self.add_n(bucket(micros), 1);
    }

    fn add_n(&mut self, bucket: i32, n: u64) {
        if n == 0 {
            return;
        }
        *self.buckets.entry(bucket).or_default() += n;
        while self.buckets.len() > MAX_BUCKETS {
            // Collapse the lowest bucket into the next one up.
            let Some((low, c)) = self.buckets.pop_first() else {
                return;
            };
            let next = self.buckets.keys().next().copied().unwrap_or(low);
            *self.buckets.entry(next).or_default() += c;
        }
    }

    pub fn merge(&mut self, other: &Sketch) {
        for (&b, &n) in &other.buckets {
            self.add_n(b, n);
        }
    }

    pub fn count(&self) -> u64 {
        self.buckets.values().sum()
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// The nearest-rank quantile `q` (0..=1) in microseconds, `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (&b, &n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return Some(value(b));
            }
        }
        self.buckets.keys().next_back().map(|&b| value(b))
    }

    /// Whether the buckets are a sketch this code could have written: at most `MAX_BUCKETS`, no
    /// empty bucket, indexes within what a u64 of microseconds can reach.
    pub fn is_valid(&self) -> bool {
        self.buckets.len() <= MAX_BUCKETS
            && self.buckets.values().all(|&n| n > 0)
            && self
                .buckets
                .keys()
                .all(|&b| (0..=bucket(u64::MAX)).contains(&b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_the_relative_error() {
        let mut s = Sketch::default();
        let values: Vec<u64> = (1..=10_000).map(|i| i * 37).collect();
        for v in &values {
            s.add(*v);
        }
        for q in [0.5, 0.9, 0.95, 0.99] {
            let exact = values[((q * values.len() as f64).ceil() as usize) - 1] as f64;
            let got = s.quantile(q).unwrap();
            assert!(
                ((got - exact) / exact).abs() <= 0.02,
                "q{q}: {got} against {exact}"
            );
        }
        assert_eq!(s.count(), 10_000);
        assert!(s.is_valid());
    }

    #[test]
    fn merging_is_adding_and_the_bucket_count_is_bounded() {
        let (mut a, mut b, mut both) = (Sketch::default(), Sketch::default(), Sketch::default());
        for v in 1..5_000u64 {
            let x = v * v * 13;
            if v % 2 == 0 { &mut a } else { &mut b }.add(x);
            both.add(x);
        }
        a.merge(&b);
        assert_eq!(a, both, "merge is order-free");
        assert!(a.len() <= MAX_BUCKETS);
        assert_eq!(a.count(), 4_999);
        // The high quantiles survive the collapse of the low buckets.
        let exact = {
            let mut v: Vec<u64> = (1..5_000u64).map(|v| v * v * 13).collect();
            v.sort();
            v[(0.95f64 * v.len() as f64).ceil() as usize - 1] as f64
        };
        let p95 = a.quantile(0.95).unwrap();
        assert!(
            ((p95 - exact) / exact).abs() <= 0.02,
            "{p95} against {exact}"
        );
        assert_eq!(Sketch::default().quantile(0.5), None);
    }

    #[test]
    fn the_encoding_is_buckets_in_order() {
        let mut s = Sketch::default();
        s.add(1_000);
        s.add(10);
        s.add(1_000);
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(text, format!("[[{},1],[{},2]]", bucket(10), bucket(1_000)));
        let back: Sketch = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);
        let bad: Sketch = serde_json::from_str("[[-3,1]]").unwrap();
        assert!(!bad.is_valid());
        assert!(serde_json::from_str::<Sketch>("[[5,1],[3,1]]").is_err());
        assert!(serde_json::from_str::<Sketch>("[[5,1],[5,1]]").is_err());
    }
}
