//! The process's Prometheus registry, kept by `prometheus-client`: labelled counters incremented
//! on the hot path (a short lock per request, not per span), labelled gauges moved up and down
//! (connections), and values read at scrape time, rendered as Prometheus text or OpenMetrics.
//!
//! Call sites name a metric as it is exposed (counters end in `_total`) and label it with pairs
//! known only at run time, so each name holds one `Family` keyed by those pairs in call order
//! (the order they are rendered in).

use prometheus_client::encoding::{EncodeMetric as _, prometheus_text, text};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

/// A series' labels, in the order the call site gives them.
type Labels = Vec<(&'static str, String)>;

/// One metric's series, of the type its `describe` gave (a counter when it moved undescribed).
enum Series {
    Counter(Family<Labels, Counter>),
    Gauge(Family<Labels, Gauge<u64, AtomicU64>>),
}

impl Series {
    fn new(gauge: bool) -> Series {
        if gauge {
            Series::Gauge(Family::default())
        } else {
            Series::Counter(Family::default())
        }
    }
}

struct Metric {
    help: &'static str,
    series: Series,
}

/// The counters and gauges one process exposes on /metrics.
#[derive(Default)]
pub struct Registry {
    metrics: RwLock<BTreeMap<&'static str, Metric>>,
}

impl Registry {
    /// Declares a metric's type ("counter"/"gauge") and help text; a counter shows 0 before it
    /// moves, a gauge nothing until it is set.
    pub fn describe(&self, name: &'static str, kind: &'static str, help: &'static str) {
        let gauge = kind == "gauge";
        let mut metrics = self.metrics.write().unwrap_or_else(PoisonError::into_inner);
        let metric = metrics.entry(name).or_insert_with(|| Metric {
            help,
            series: Series::new(gauge),
        });
        metric.help = help;
        // A type can only change while nothing has been counted under the old one.
        let (is_gauge, empty) = match &metric.series {
            Series::Counter(f) => (false, f.is_empty()),
            Series::Gauge(f) => (true, f.is_empty()),
        };
        if is_gauge != gauge && empty {
            metric.series = Series::new(gauge);
        }
    }

    /// Raises a counter, or a gauge kept here (connections open), by `n`.
    pub fn add(&self, name: &'static str, labels: &[(&'static str, &str)], n: u64) {
        if n == 0 {
            return;
        }
        let key = key(labels);
        let bump = |series: &Series| match series {
            Series::Counter(f) => {
                f.get_or_create(&key).inc_by(n);
            }
            Series::Gauge(f) => {
                f.get_or_create(&key).inc_by(n);
            }
        };
        {
            let metrics = self.metrics.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(m) = metrics.get(name) {
                return bump(&m.series);
            }
        }
        let mut metrics = self.metrics.write().unwrap_or_else(PoisonError::into_inner);
        let m = metrics.entry(name).or_insert_with(|| Metric {
            help: "",
            series: Series::new(false),
        });
        bump(&m.series);
    }

    /// Sets a gauge kept here (a lag) to `v`; a name not described as a gauge is left alone.
    pub fn set(&self, name: &'static str, labels: &[(&'static str, &str)], v: u64) {
        let metrics = self.metrics.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(Metric {
            series: Series::Gauge(f),
            ..
        }) = metrics.get(name)
        {
            f.get_or_create(&key(labels)).set(v);
        }
    }

    /// Lowers a gauge kept here (connections open); never below zero. Counters never go down.
    pub fn sub(&self, name: &'static str, labels: &[(&'static str, &str)], n: u64) {
        let metrics = self.metrics.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(Metric {
            series: Series::Gauge(f),
            ..
        }) = metrics.get(name)
            && let Some(g) = f.get(&key(labels))
        {
            let _ = g
                .inner()
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                    Some(v.saturating_sub(n))
                });
        }
    }

    /// A series' current value (0 when it never moved).
    pub fn get(&self, name: &'static str, labels: &[(&'static str, &str)]) -> u64 {
        let metrics = self.metrics.read().unwrap_or_else(PoisonError::into_inner);
        let key = key(labels);
        match metrics.get(name).map(|m| &m.series) {
            Some(Series::Counter(f)) => f.get(&key).map_or(0, |c| c.get()),
            Some(Series::Gauge(f)) => f.get(&key).map_or(0, |g| g.get()),
            None => 0,
        }
    }

    /// Renders the metrics plus values read at scrape time, (name, type, help, value), in the
    /// Prometheus text format (0.0.4).
    pub fn render(&self, extra: &[(&'static str, &'static str, &'static str, f64)]) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &self.snapshot(extra));
        out
    }

    /// As `render`, in the OpenMetrics text format (counter families named without `_total`,
    /// ending in `# EOF`).
    pub fn render_openmetrics(
        &self,
        extra: &[(&'static str, &'static str, &'static str, f64)],
    ) -> String {
        let mut out = String::new();
        let _ = text::encode(&mut out, &self.snapshot(extra));
        out
    }

    /// A registry for one scrape: the families kept here, by name, then `extra` in its order.
    fn snapshot(
        &self,
        extra: &[(&'static str, &'static str, &'static str, f64)],
    ) -> prometheus_client::registry::Registry {
        let mut r = prometheus_client::registry::Registry::default();
        let metrics = self.metrics.read().unwrap_or_else(PoisonError::into_inner);
        for (name, m) in metrics.iter() {
            let help = help(m.help);
            match &m.series {
                // A counter shows 0 before it moves (a gauge shows nothing until set).
                Series::Counter(f) if f.is_empty() => {
                    r.register(family(name), help, ConstCounter::new(0u64));
                }
                Series::Counter(f) => r.register(family(name), help, f.clone()),
                Series::Gauge(f) => r.register(*name, help, f.clone()),
            }
        }
        for &(name, kind, text, value) in extra {
            register_value(&mut r, name, kind, help(text), value);
        }
        r
    }
}

/// Registers a value read at scrape time; whole ones (counts, bytes) are written without a
/// fraction, as Prometheus clients write integers.
fn register_value(
    r: &mut prometheus_client::registry::Registry,
    name: &'static str,
    kind: &str,
    help: &str,
    value: f64,
) {
    // Up to 2^53 every whole f64 is an exact integer.
    let whole = value.fract() == 0.0 && value.abs() <= 9_007_199_254_740_992.0;
    match (kind == "gauge", whole) {
        (true, true) => r.register(name, help, ConstGauge::new(value as i64)),
        (true, false) => r.register(name, help, ConstGauge::new(value)),
        (false, true) if value >= 0.0 => {
            r.register(family(name), help, ConstCounter::new(value as u64));
        }
        (false, _) => r.register(family(name), help, ConstCounter::new(value)),
    }
}

fn key(labels: &[(&'static str, &str)]) -> Labels {
    labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

/// A counter's family name: the encoder adds `_total` to its samples.
fn family(name: &str) -> &str {
    name.strip_suffix("_total").unwrap_or(name)
}

/// Help text without its full stop: the encoder adds one.
fn help(text: &str) -> &str {
    text.strip_suffix('.').unwrap_or(text)
}

/// The process's resident and peak resident memory in bytes, from /proc (Linux).
pub fn memory() -> (u64, u64) {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return (0, 0);
    };
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Registry {
        let r = Registry::default();
        r.describe("ct_spans_received_total", "counter", "Spans received.");
        r.describe("ct_idle_total", "counter", "Never moves.");
        r.add("ct_spans_received_total", &[("transport", "grpc")], 3);
        r.add("ct_spans_received_total", &[("transport", "grpc")], 2);
        r.add("ct_spans_received_total", &[("transport", "h\"ttp")], 1);
        r
    }

    const EXTRA: [(&str, &str, &str, f64); 3] = [
        ("ct_queue_depth", "gauge", "Queued requests.", 4.0),
        ("ct_commits_total", "counter", "Commits.", 7.0),
        (
            "ct_commit_seconds_total",
            "counter",
            "Time committing.",
            0.25,
        ),
    ];

    #[test]
    fn renders_prometheus_text() {
        let r = sample();
        let text = r.render(&EXTRA);
        assert!(
            text.contains(
                "# HELP ct_spans_received_total Spans received.\n\
                 # TYPE ct_spans_received_total counter\n"
            ),
            "{text}"
        );
        // Series within a family come in no particular order.
        assert!(text.contains("\nct_spans_received_total{transport=\"grpc\"} 5\n"));
        assert!(text.contains("\nct_spans_received_total{transport=\"h\\\"ttp\"} 1\n"));
        assert!(text.contains("# TYPE ct_idle_total counter\nct_idle_total 0\n"));
        assert!(text.contains("# TYPE ct_queue_depth gauge\nct_queue_depth 4\n"));
        assert!(text.contains("# TYPE ct_commits_total counter\nct_commits_total 7\n"));
        assert!(text.contains("\nct_commit_seconds_total 0.25\n"));
        assert!(
            !text.contains("_total_total") && !text.contains(".."),
            "{text}"
        );
        assert_eq!(
            r.get("ct_spans_received_total", &[("transport", "grpc")]),
            5
        );
    }

    #[test]
    fn renders_openmetrics() {
        let text = sample().render_openmetrics(&EXTRA);
        assert!(
            text.contains(
                "# HELP ct_spans_received Spans received.\n\
                 # TYPE ct_spans_received counter\n"
            ),
            "{text}"
        );
        assert!(text.contains("\nct_spans_received_total{transport=\"grpc\"} 5\n"));
        assert!(text.contains("# TYPE ct_idle counter\nct_idle_total 0\n"));
        assert!(!text.contains("_total_total"), "{text}");
        assert!(text.contains("\nct_commits_total 7\n"));
        assert!(
            text.ends_with("ct_commit_seconds_total 0.25\n# EOF\n"),
            "{text}"
        );
    }

    #[test]
    fn counts_metrics_never_described() {
        let r = Registry::default();
        r.add("ct_surprise_total", &[("why", "x")], 2);
        assert_eq!(r.get("ct_surprise_total", &[("why", "x")]), 2);
        let text = r.render(&[]);
        assert!(
            text.contains("# TYPE ct_surprise_total counter\nct_surprise_total{why=\"x\"} 2\n"),
            "{text}"
        );
    }

    #[test]
    fn gauges_go_down_but_not_below_zero() {
        let r = Registry::default();
        r.describe("ct_open", "gauge", "Open.");
        r.describe("ct_open", "gauge", "Open.");
        r.add("ct_open", &[("listener", "api")], 3);
        r.sub("ct_open", &[("listener", "api")], 1);
        assert_eq!(r.get("ct_open", &[("listener", "api")]), 2);
        r.sub("ct_open", &[("listener", "api")], 5);
        assert_eq!(r.get("ct_open", &[("listener", "api")]), 0);
        // A gauge back at zero still shows, labelled; described twice, it shows once.
        let text = r.render(&[]);
        assert!(text.contains("ct_open{listener=\"api\"} 0\n"), "{text}");
        assert_eq!(text.matches("# TYPE ct_open gauge").count(), 1, "{text}");
    }
}
