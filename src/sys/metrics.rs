//! A small Prometheus text-format registry: labelled counters incremented on the hot path
//! (a short lock per request, not per span), labelled gauges moved up and down (connections),
//! and gauges read at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

type Key = (&'static str, Vec<(&'static str, String)>);

#[derive(Default)]
pub struct Registry {
    counters: Mutex<BTreeMap<Key, u64>>,
    help: Mutex<BTreeMap<&'static str, (&'static str, &'static str)>>,
}

impl Registry {
    /// Declares a metric's type ("counter"/"gauge") and help text, shown even before it moves.
    pub fn describe(&self, name: &'static str, kind: &'static str, help: &'static str) {
        if let Ok(mut h) = self.help.lock() {
            h.insert(name, (kind, help));
        }
    }

    pub fn add(&self, name: &'static str, labels: &[(&'static str, &str)], n: u64) {
        if n == 0 {
            return;
        }
        let key = (
            name,
            labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        );
        if let Ok(mut c) = self.counters.lock() {
            *c.entry(key).or_default() += n;
        }
    }

    /// Lowers a gauge kept here (connections open); never below zero.
    pub fn sub(&self, name: &'static str, labels: &[(&'static str, &str)], n: u64) {
        let key = (
            name,
            labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        );
        if let Ok(mut c) = self.counters.lock()
            && let Some(v) = c.get_mut(&key)
        {
            *v = v.saturating_sub(n);
        }
    }

    pub fn get(&self, name: &'static str, labels: &[(&'static str, &str)]) -> u64 {
        let key = (
            name,
            labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        );
        self.counters
            .lock()
            .ok()
            .and_then(|c| c.get(&key).copied())
            .unwrap_or(0)
    }

    /// Renders the counters plus values read at scrape time: (name, type, help, value).
    pub fn render(&self, extra: &[(&'static str, &'static str, &'static str, f64)]) -> String {
        let mut out = String::new();
        let help = self.help.lock().map(|h| h.clone()).unwrap_or_default();
        let counters = self.counters.lock().map(|c| c.clone()).unwrap_or_default();
        let mut names: Vec<&'static str> = help.keys().copied().collect();
        for (n, _) in counters.keys() {
            if !names.contains(n) {
                names.push(n);
            }
        }
        names.sort_unstable();
        for name in names {
            let (kind, text) = help.get(name).copied().unwrap_or(("counter", ""));
            let _ = writeln!(out, "# HELP {name} {text}\n# TYPE {name} {kind}");
            let mut any = false;
            for ((n, labels), v) in &counters {
                if n != &name {
                    continue;
                }
                any = true;
                let _ = writeln!(out, "{name}{} {v}", render_labels(labels));
            }
            if !any && kind == "counter" {
                let _ = writeln!(out, "{name} 0");
            }
        }
        for (name, kind, text, value) in extra {
            let _ = writeln!(
                out,
                "# HELP {name} {text}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }
}

fn render_labels(labels: &[(&'static str, String)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}=\"{}\"",
                v.replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n")
            )
        })
        .collect();
    format!("{{{}}}", inner.join(","))
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

    #[test]
    fn renders_prometheus_text() {
        let r = Registry::default();
        r.describe("ct_spans_received_total", "counter", "Spans received.");
        r.describe("ct_idle_total", "counter", "Never moves.");
        r.add("ct_spans_received_total", &[("transport", "grpc")], 3);
        r.add("ct_spans_received_total", &[("transport", "grpc")], 2);
        r.add("ct_spans_received_total", &[("transport", "h\"ttp")], 1);
        let text = r.render(&[("ct_queue_depth", "gauge", "Queued requests.", 4.0)]);
        assert!(
            text.contains("ct_spans_received_total{transport=\"grpc\"} 5\n"),
            "{text}"
        );
        assert!(text.contains("ct_spans_received_total{transport=\"h\\\"ttp\"} 1\n"));
        assert!(text.contains("ct_idle_total 0\n"));
        assert!(text.contains("# TYPE ct_queue_depth gauge\nct_queue_depth 4\n"));
        assert_eq!(
            r.get("ct_spans_received_total", &[("transport", "grpc")]),
            5
        );
    }

    #[test]
    fn gauges_go_down_but_not_below_zero() {
        let r = Registry::default();
        r.describe("ct_open", "gauge", "Open.");
        r.add("ct_open", &[("listener", "api")], 3);
        r.sub("ct_open", &[("listener", "api")], 1);
        assert_eq!(r.get("ct_open", &[("listener", "api")]), 2);
        r.sub("ct_open", &[("listener", "api")], 5);
        assert_eq!(r.get("ct_open", &[("listener", "api")]), 0);
        // A gauge back at zero still shows, labelled.
        assert!(r.render(&[]).contains("ct_open{listener=\"api\"} 0\n"));
    }
}
