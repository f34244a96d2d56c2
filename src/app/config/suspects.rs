//! `[suspects]`: how runtime spans are summarised per minute, and what makes a deploy's
//! comparison a regression.

use super::ConfigError;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SuspectsConfig {
    pub enabled: bool,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    #[serde(with = "humantime_serde")]
    pub baseline: Duration,
    pub min_spans: u64,
    pub error_rate_increase: f64,
    pub latency_ratio: f64,
    #[serde(with = "humantime_serde")]
    pub min_latency_increase: Duration,
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub flush_after: Duration,
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    pub max_cells: usize,
    #[serde(with = "humantime_serde")]
    pub settle: Duration,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

impl SuspectsConfig {
    pub fn thresholds(&self) -> crate::core::runtime::Thresholds {
        crate::core::runtime::Thresholds {
            window_ns: nanos(self.window),
            baseline_ns: nanos(self.baseline),
            min_spans: self.min_spans,
            error_rate_increase: self.error_rate_increase,
            latency_ratio: self.latency_ratio,
            min_latency_increase_ns: nanos(self.min_latency_increase),
        }
    }

    /// How minutes are read back.
    pub fn reading(&self, max_clock_skew: Duration) -> crate::read::suspects::Reading {
        crate::read::suspects::Reading {
            thresholds: self.thresholds(),
            max_age_ns: nanos(self.max_age),
            max_skew_ns: nanos(max_clock_skew),
        }
    }

    /// How the comparer runs.
    pub fn comparer(&self, max_clock_skew: Duration) -> crate::read::suspects::Comparer {
        crate::read::suspects::Comparer {
            reading: self.reading(max_clock_skew),
            settle_ns: nanos(self.settle),
            interval: self.interval,
        }
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(format!("suspects.{m}")));
        let minute = Duration::from_secs(60);
        if self.window < minute || self.baseline < minute {
            return invalid(
                "window and baseline must be at least 1m (runtime spans are summarised per minute)",
            );
        }
        if self.window > Duration::from_secs(24 * 3600)
            || self.baseline > Duration::from_secs(7 * 24 * 3600)
        {
            return invalid("window is at most 24h and baseline at most 7d");
        }
        if !(self.error_rate_increase > 0.0 && self.error_rate_increase <= 1.0) {
            return invalid("error_rate_increase must be in (0, 1]");
        }
        if !(self.latency_ratio > 1.0 && self.latency_ratio.is_finite()) {
            return invalid("latency_ratio must be above 1");
        }
        if self.flush_interval.is_zero() || self.interval.is_zero() {
            return invalid("flush_interval and interval must be positive");
        }
        if self.max_cells == 0 {
            return invalid("max_cells must be at least 1");
        }
        if self.max_age < minute {
            return invalid("max_age must be at least 1m");
        }
        Ok(())
    }
}
