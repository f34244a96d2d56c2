//! What the summary and the charts are computed from, gathered as rows stream past, and the charts
//! themselves: inline SVG, no script, prints as it shows.

use super::time_cell;
use crate::core::evidence::Evidence;
use crate::core::evidence::rules::Exception;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

const DAY_NS: i64 = 86_400_000_000_000;

/// The Monday (UTC) of the week holding `ns`, as YYYY-MM-DD.
pub fn week_of(ns: i64) -> String {
    let day = ns.div_euclid(DAY_NS);
    // 1970-01-01 was a Thursday: Monday-based weekday index is (day + 3) mod 7.
    let monday = day - (day + 3).rem_euclid(7);
    time_cell(Some(monday * DAY_NS))
        .get(..10)
        .unwrap_or_default()
        .to_owned()
}

/// Buckets for "how long from request to approval".
pub const LEAD_TIME_BUCKETS: [(&str, i64); 6] = [
    ("< 1 h", 3_600_000_000_000),
    ("1–4 h", 4 * 3_600_000_000_000),
    ("4–24 h", DAY_NS),
    ("1–3 d", 3 * DAY_NS),
    ("3–7 d", 7 * DAY_NS),
    ("> 7 d", i64::MAX),
];

/// What the summary, the charts and the control results are computed from, gathered as rows
/// stream past.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Tally {
    pub changes: u64,
    pub by_kind: BTreeMap<String, u64>,
    pub changes_with_exceptions: u64,
    pub exceptions_by_code: BTreeMap<String, u64>,
    pub per_week: BTreeMap<String, u64>,
    pub lead_time: Vec<u64>,
    pub retried_deploys: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
}

impl Tally {
    pub fn new() -> Tally {
        Tally {
            lead_time: vec![0; LEAD_TIME_BUCKETS.len()],
            ..Default::default()
        }
    }

    pub fn seqs(&mut self, first: Option<u64>, last: Option<u64>) {
        if let Some(f) = first {
            self.first_seq = Some(self.first_seq.map_or(f, |s| s.min(f)));
        }
        if let Some(l) = last {
            self.last_seq = Some(self.last_seq.map_or(l, |s| s.max(l)));
        }
    }

    pub fn change(&mut self, e: &Evidence, exceptions: &[Exception]) {
        self.changes += 1;
        *self.by_kind.entry(e.change.kind.clone()).or_default() += 1;
        if let Some(t) = e.change.requested_ns.or(e.timeline.requested_ns) {
            *self.per_week.entry(week_of(t)).or_default() += 1;
        }
        if let (Some(r), Some(a)) = (e.timeline.requested_ns, e.timeline.approved_ns) {
            let lead = a.saturating_sub(r).max(0);
            let i = LEAD_TIME_BUCKETS
                .iter()
                .position(|(_, lim)| lead < *lim)
                .unwrap_or(LEAD_TIME_BUCKETS.len() - 1);
            self.lead_time[i] += 1;
        }
        if e.steps.iter().any(|s| s.attempts.len() > 1) {
            self.retried_deploys += 1;
        }
        if !exceptions.is_empty() {
            self.changes_with_exceptions += 1;
        }
        for x in exceptions {
            self.exception(x.code);
        }
    }

    pub fn exception(&mut self, code: &str) {
        *self.exceptions_by_code.entry(code.to_owned()).or_default() += 1;
    }
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A vertical bar chart (one bar per label) with value labels, `id` for tests and links.
pub fn bar_chart(id: &str, title: &str, bars: &[(String, u64)], accent: bool) -> String {
    let (w, h, left, bottom, top) = (720.0_f64, 260.0_f64, 40.0, 70.0, 28.0);
    let max = bars.iter().map(|b| b.1).max().unwrap_or(0).max(1) as f64;
    let n = bars.len().max(1) as f64;
    let slot = (w - left - 10.0) / n;
    let bar_w = (slot * 0.7).max(1.0);
    let plot_h = h - bottom - top;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg id="{id}" class="chart" role="img" aria-label="{t}" viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg"><title>{t}</title>"#,
        t = esc(title)
    );
    let _ = write!(
        s,
        r##"<line x1="{left}" y1="{y}" x2="{x2}" y2="{y}" stroke="#555" stroke-width="1"/>"##,
        y = h - bottom,
        x2 = w - 10.0
    );
    if bars.is_empty() {
        let _ = write!(
            s,
            r##"<text x="{x}" y="{y}" text-anchor="middle" fill="#555" font-size="13">no data in the period</text>"##,
            x = w / 2.0,
            y = h / 2.0
        );
    }
    // Long label lists (many weeks) print every k-th label so they stay legible.
    let every = (bars.len() / 16).max(1);
    for (i, (label, v)) in bars.iter().enumerate() {
        let bh = (*v as f64 / max) * plot_h;
        let x = left + slot * i as f64 + (slot - bar_w) / 2.0;
        let y = h - bottom - bh;
        let fill = if accent && *v > 0 {
            "#b3261e"
        } else {
            "#2f5d8a"
        };
        let _ = write!(
            s,
            r#"<rect class="bar" x="{x:.1}" y="{y:.1}" width="{bar_w:.1}" height="{bh:.1}" fill="{fill}"><title>{l}: {v}</title></rect>"#,
            l = esc(label)
        );
        if *v > 0 && bars.len() <= 40 {
            let _ = write!(
                s,
                r##"<text x="{cx:.1}" y="{ty:.1}" text-anchor="middle" font-size="11" fill="#222">{v}</text>"##,
                cx = x + bar_w / 2.0,
                ty = y - 4.0
            );
        }
        if i % every == 0 {
            let _ = write!(
                s,
                r##"<text x="{cx:.1}" y="{ly:.1}" font-size="11" fill="#333" text-anchor="end" transform="rotate(-40 {cx:.1} {ly:.1})">{l}</text>"##,
                cx = x + bar_w / 2.0,
                ly = h - bottom + 14.0,
                l = esc(label)
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// A horizontal bar chart: long labels (exception codes) stay readable in print and at 800 px.
pub fn hbar_chart(id: &str, title: &str, bars: &[(String, u64)], accent: bool) -> String {
    let (w, row, label_w, top) = (720.0_f64, 22.0_f64, 250.0_f64, 8.0_f64);
    let h = top * 2.0 + row * bars.len().max(1) as f64;
    let max = bars.iter().map(|b| b.1).max().unwrap_or(0).max(1) as f64;
    let plot_w = w - label_w - 50.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg id="{id}" class="chart" role="img" aria-label="{t}" viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg"><title>{t}</title>"#,
        t = esc(title)
    );
    for (i, (label, v)) in bars.iter().enumerate() {
        let y = top + row * i as f64;
        let bw = (*v as f64 / max) * plot_w;
        let fill = if accent && *v > 0 {
            "#b3261e"
        } else {
            "#2f5d8a"
        };
        let _ = write!(
            s,
            r##"<text x="{lx:.1}" y="{ty:.1}" text-anchor="end" font-size="12" fill="#333">{l}</text><rect class="bar" x="{label_w}" y="{ry:.1}" width="{bw:.1}" height="{bh:.1}" fill="{fill}"><title>{l}: {v}</title></rect><text x="{vx:.1}" y="{ty:.1}" font-size="12" fill="#222">{v}</text>"##,
            lx = label_w - 8.0,
            ty = y + row * 0.68,
            l = esc(label),
            ry = y + 3.0,
            bh = row - 6.0,
            vx = label_w + bw + 6.0,
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weeks_start_on_monday() {
        // 2026-01-01 is a Thursday; its week starts Monday 2025-12-29.
        assert_eq!(week_of(1_767_261_600_000_000_000), "2025-12-29");
        assert_eq!(week_of(0), "1969-12-29");
    }

    #[test]
    fn charts_escape_labels_and_draw_one_bar_per_value() {
        let svg = bar_chart(
            "c",
            "t<&>",
            &[("<x>".into(), 3), ("y".into(), 0), ("z".into(), 7)],
            false,
        );
        assert_eq!(svg.matches("<rect class=\"bar\"").count(), 3);
        assert!(svg.contains("&lt;x&gt;") && !svg.contains("<x>"));
        assert!(svg.contains("t&lt;&amp;&gt;"));
        assert!(bar_chart("e", "empty", &[], false).contains("no data"));
        let h = hbar_chart(
            "h",
            "codes",
            &[("NO_APPROVAL".into(), 2), ("<b>".into(), 0)],
            true,
        );
        assert_eq!(h.matches("<rect class=\"bar\"").count(), 2);
        assert!(h.contains("#b3261e") && h.contains("&lt;b&gt;"));
    }
}
