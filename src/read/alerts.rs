//! The alerts list (`GET /v1/alerts`, the console): every `alert.raised` and `alert.resolved`
//! entry with where it was delivered. What an alert said and that it was delivered come from the
//! signed entries; only deliveries still under way (and refusals) come from the outbox, which is
//! operational state.

use crate::core::alerts::{
    AlertCode, AlertEvent, DELIVERED, Delivered, FIRING, RESOLVED, RESOLVED_STATUS,
};
use crate::core::time::rfc3339;
use crate::storage::{StorageError, Store};
use serde::Serialize;
use std::collections::BTreeMap;

/// One alert event as listed.
#[derive(Debug, Serialize)]
pub struct AlertView {
    pub entry_seq: u64,
    /// `firing` (alert.raised) or `resolved` (alert.resolved).
    pub status: &'static str,
    pub time: String,
    pub change_id: String,
    /// The codes this event raised or resolved (empty when its payload was erased).
    pub codes: Vec<AlertCode>,
    /// Every code open on the change after this event.
    pub open: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    pub erased: bool,
    pub deliveries: Vec<DeliveryView>,
}

/// Where one event went.
#[derive(Debug, Serialize)]
pub struct DeliveryView {
    pub destination: String,
    /// `delivered` (an alert.delivered entry says so), `pending`, `claimed` (being sent) or
    /// `refused`.
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered_seq: Option<u64>,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A code open now on a change.
#[derive(Debug, Serialize)]
pub struct OpenAlert {
    pub change_id: String,
    pub code: String,
    /// The alert.raised entry that raised it.
    pub raised_seq: u64,
    pub since: String,
}

/// What the list answers.
#[derive(Debug, Serialize)]
pub struct AlertList {
    /// Newest first, at most `limit`.
    pub alerts: Vec<AlertView>,
    /// Events matching the filter, in all.
    pub total: usize,
    /// Every code open now (within the change filter), oldest first.
    pub open: Vec<OpenAlert>,
}

/// Alert events, newest first, `status` (`firing`/`resolved`) and `change_id` filtering them.
pub async fn list(
    store: &Store,
    change_id: Option<&str>,
    status: Option<&str>,
    limit: usize,
) -> Result<AlertList, StorageError> {
    let rows = store.alert_entries(change_id).await?;
    let mut delivered: BTreeMap<u64, Vec<DeliveryView>> = BTreeMap::new();
    let mut events = Vec::new();
    for (seq, kind, subject, time, payload) in rows {
        if kind == DELIVERED {
            if let Some(d) = payload.and_then(|p| serde_json::from_str::<Delivered>(&p).ok()) {
                delivered
                    .entry(d.event_seq)
                    .or_default()
                    .push(DeliveryView {
                        destination: d.destination,
                        state: "delivered".into(),
                        delivered_seq: Some(seq),
                        attempts: 0,
                        last_error: None,
                    });
            }
            continue;
        }
        let status = if kind == RESOLVED {
            RESOLVED_STATUS
        } else {
            FIRING
        };
        let ev = payload.and_then(|p| serde_json::from_str::<AlertEvent>(&p).ok());
        events.push((seq, status, subject, time, ev));
    }
    // Open codes, oldest event first.
    let mut open: BTreeMap<(String, String), (u64, i64)> = BTreeMap::new();
    for (seq, status, subject, time, ev) in events.iter().rev() {
        for c in ev.iter().flat_map(|e| &e.codes) {
            let key = (subject.clone(), c.code.clone());
            if *status == FIRING {
                open.entry(key).or_insert((*seq, *time));
            } else {
                open.remove(&key);
            }
        }
    }
    events.retain(|(_, s, ..)| status.is_none_or(|want| want == *s));
    let total = events.len();
    events.truncate(limit);
    let from = events.iter().map(|e| e.0).min().unwrap_or(u64::MAX);
    let mut outbox: BTreeMap<u64, Vec<crate::storage::DeliveryState>> = BTreeMap::new();
    if !events.is_empty() {
        for d in store.alert_deliveries(from).await? {
            outbox.entry(d.event_seq).or_default().push(d);
        }
    }
    let alerts = events
        .into_iter()
        .map(|(seq, status, subject, time, ev)| {
            let mut deliveries = delivered.remove(&seq).unwrap_or_default();
            for d in outbox.remove(&seq).unwrap_or_default() {
                match deliveries
                    .iter_mut()
                    .find(|x| x.destination == d.destination)
                {
                    Some(x) => x.attempts = d.attempts,
                    None => deliveries.push(DeliveryView {
                        destination: d.destination,
                        // An outbox row saying delivered without its entry is not believed.
                        state: if d.state == "delivered" {
                            "unrecorded".into()
                        } else {
                            d.state
                        },
                        delivered_seq: None,
                        attempts: d.attempts,
                        last_error: d.last_error,
                    }),
                }
            }
            deliveries.sort_by(|a, b| a.destination.cmp(&b.destination));
            let erased = ev.is_none();
            let ev = ev.unwrap_or_else(|| AlertEvent::about(&subject));
            AlertView {
                entry_seq: seq,
                status,
                time: rfc3339(time),
                change_id: subject,
                codes: ev.codes,
                open: ev.open,
                service: ev.service,
                environment: ev.environment,
                version: ev.version,
                requested_by: ev.requested_by,
                approved_by: ev.approved_by,
                erased,
                deliveries,
            }
        })
        .collect();
    let mut open: Vec<OpenAlert> = open
        .into_iter()
        .map(|((change_id, code), (raised_seq, t))| OpenAlert {
            change_id,
            code,
            raised_seq,
            since: rfc3339(t),
        })
        .collect();
    open.sort_by_key(|o| o.raised_seq);
    Ok(AlertList {
        alerts,
        total,
        open,
    })
}
