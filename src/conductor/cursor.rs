//! Where reconciliation stands, and what a search page holds: plain values and functions (no
//! I/O), so the paging rules are tested alone.
//!
//! The cursor is the last `updateTime` (epoch ms) up to which every execution was imported, plus
//! the executions imported at exactly that time. Conductor's search can only say `updateTime>T`;
//! asking for `> T-1` and leaving out the ids already imported at `T` means executions sharing a
//! timestamp across a page boundary are neither skipped nor fetched twice.

use crate::core::time::parse_rfc3339;
use serde_json::Value;
use std::collections::BTreeSet;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    pub update_time_ms: i64,
    pub ids_at: BTreeSet<String>,
}

/// One WorkflowSummary of a search page: enough to decide whether to fetch it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub workflow_id: String,
    pub update_time_ms: i64,
}

/// A search page: `totalHits` and its summaries, in the order Conductor gave them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub total_hits: u64,
    pub results: Vec<Summary>,
}

/// A Conductor time as epoch milliseconds: a number, digits, or ISO 8601 text (WorkflowSummary
/// spells `updateTime` as text, executions as a number).
pub fn epoch_ms(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .ok()
            .or_else(|| parse_rfc3339(s.trim()).map(|ns| ns.div_euclid(1_000_000))),
        _ => None,
    }
}

/// Reads `GET /api/workflow/search`'s SearchResult. A summary without `workflowId` or a readable
/// `updateTime` (else `startTime`) cannot be placed on the cursor: the page is refused rather
/// than a run silently passed over.
pub fn page(doc: &Value) -> Result<Page, String> {
    let results = doc
        .get("results")
        .and_then(Value::as_array)
        .ok_or("the search answer has no results array")?;
    let mut out = Vec::with_capacity(results.len());
    for r in results {
        let id = r
            .get("workflowId")
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .ok_or("a search result has no workflowId")?;
        let t = r
            .get("updateTime")
            .and_then(epoch_ms)
            .or_else(|| r.get("startTime").and_then(epoch_ms))
            .ok_or_else(|| format!("search result {id} has no readable updateTime"))?;
        out.push(Summary {
            workflow_id: id.to_owned(),
            update_time_ms: t,
        });
    }
    Ok(Page {
        total_hits: doc
            .get("totalHits")
            .and_then(Value::as_u64)
            .unwrap_or(out.len() as u64),
        results: out,
    })
}

impl Cursor {
    /// The search `query` for executions updated at or after the cursor, of the named
    /// workflows (all when none are named).
    pub fn query(&self, workflow_names: &[String]) -> String {
        let mut q = format!("updateTime>{}", self.update_time_ms.saturating_sub(1));
        let names: Vec<&str> = workflow_names
            .iter()
            .map(|n| n.trim())
            .filter(|n| !n.is_empty())
            .collect();
        if !names.is_empty() {
            q.push_str(&format!(" AND workflowType IN ({})", names.join(",")));
        }
        q
    }

    /// Whether a summary is still to import: updated after the cursor, or at it and not yet
    /// imported there. Anything older was imported already (the search index may repeat it).
    pub fn wants(&self, s: &Summary) -> bool {
        s.update_time_ms > self.update_time_ms
            || (s.update_time_ms == self.update_time_ms && !self.ids_at.contains(&s.workflow_id))
    }

    /// The cursor after importing `done` (in any order): the latest time among them and the ids
    /// at it (joined with those already at it when the time did not move).
    pub fn advanced(&self, done: &[Summary]) -> Cursor {
        let Some(latest) = done.iter().map(|s| s.update_time_ms).max() else {
            return self.clone();
        };
        if latest < self.update_time_ms {
            return self.clone();
        }
        let mut ids_at = if latest == self.update_time_ms {
            self.ids_at.clone()
        } else {
            BTreeSet::new()
        };
        ids_at.extend(
            done.iter()
                .filter(|s| s.update_time_ms == latest)
                .map(|s| s.workflow_id.clone()),
        );
        Cursor {
            update_time_ms: latest,
            ids_at,
        }
    }

    /// As stored: `(update_time_ms, JSON array of ids)`.
    pub fn to_stored(&self) -> (i64, String) {
        let ids: Vec<&String> = self.ids_at.iter().collect();
        (
            self.update_time_ms,
            serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into()),
        )
    }

    pub fn from_stored((t, ids): &(i64, String)) -> Result<Cursor, String> {
        let ids: Vec<String> = serde_json::from_str(ids)
            .map_err(|e| format!("the stored Conductor cursor does not parse: {e}"))?;
        Ok(Cursor {
            update_time_ms: *t,
            ids_at: ids.into_iter().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s(id: &str, t: i64) -> Summary {
        Summary {
            workflow_id: id.into(),
            update_time_ms: t,
        }
    }

    #[test]
    fn query_includes_the_cursor_time_and_names() {
        let c = Cursor {
            update_time_ms: 1_000,
            ids_at: BTreeSet::new(),
        };
        assert_eq!(c.query(&[]), "updateTime>999");
        assert_eq!(
            c.query(&["deploy".into(), " ".into(), "rollback".into()]),
            "updateTime>999 AND workflowType IN (deploy,rollback)"
        );
    }

    #[test]
    fn equal_times_across_pages_are_neither_skipped_nor_repeated() {
        let start = Cursor::default();
        // Page one ends in the middle of three executions updated at 5.
        let one = [s("a", 4), s("b", 5)];
        assert!(one.iter().all(|x| start.wants(x)));
        let c = start.advanced(&one);
        assert_eq!(c.update_time_ms, 5);
        assert_eq!(c.ids_at, BTreeSet::from(["b".to_owned()]));
        // Page two repeats b (same time) and holds c and d at 5: only c and d are new.
        let two = [s("b", 5), s("c", 5), s("d", 5), s("a", 4)];
        let wanted: Vec<&str> = two
            .iter()
            .filter(|x| c.wants(x))
            .map(|x| x.workflow_id.as_str())
            .collect();
        assert_eq!(wanted, ["c", "d"]);
        let c2 = c.advanced(&[s("c", 5), s("d", 5)]);
        assert_eq!(c2.ids_at.len(), 3);
        let c3 = c2.advanced(&[s("e", 7)]);
        assert_eq!((c3.update_time_ms, c3.ids_at.len()), (7, 1));
        // Nothing imported, or only older ones: the cursor stays.
        assert_eq!(c3.advanced(&[]), c3);
        assert_eq!(c3.advanced(&[s("z", 1)]), c3);
        // And it survives storage.
        assert_eq!(Cursor::from_stored(&c2.to_stored()).unwrap(), c2);
    }

    #[test]
    fn pages_parse_as_conductor_writes_them() {
        let doc = json!({"totalHits": 3, "results": [
            {"workflowId": "w1", "workflowType": "deploy", "updateTime": "2026-12-07T10:00:00.123Z"},
            {"workflowId": "w2", "updateTime": 1_700_000_000_000_i64},
            {"workflowId": "w3", "startTime": "1700000000001"}]});
        let p = page(&doc).unwrap();
        assert_eq!(p.total_hits, 3);
        assert_eq!(p.results[0].update_time_ms % 1000, 123);
        assert_eq!(p.results[1].update_time_ms, 1_700_000_000_000);
        assert_eq!(p.results[2].update_time_ms, 1_700_000_000_001);
        let e = page(&json!({"totalHits": 1, "results": [{"workflowId": "w"}]})).unwrap_err();
        assert!(e.contains("no readable updateTime"), "{e}");
        assert!(page(&json!({"error": "x"})).is_err());
    }
}
