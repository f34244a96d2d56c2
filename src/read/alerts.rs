//! The alerts list (`GET /v1/alerts`, the console): every `alert.raised` and `alert.resolved`
//! entry with where it was delivered. What an alert said and that it was delivered come from the
//! signed entries; only deliveries still under way (and refusals) come from the outbox, which is
//! operational state.

use crate::core::alerts::{
    AlertCode, AlertEvent, Delivered, FIRING, RAISED, RESOLVED, RESOLVED_STATUS,
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
    /// Newest first, at most `limit`; the next page is `before=` the last one's `entry_seq`.
    pub alerts: Vec<AlertView>,
    /// Events matching the filter, in all.
    pub total: usize,
    /// Every code open now (within the change filter), oldest first.
    pub open: Vec<OpenAlert>,
}

/// Alert events, newest first, before entry `before`, at most `limit`; `status` (`firing` /
/// `resolved`) and `change_id` filter them. Reads what it shows, the count, and every event
/// once as a stream for what is open (holding only the open codes).
pub async fn list(
    store: &Store,
    change_id: Option<&str>,
    status: Option<&str>,
    before: u64,
    limit: usize,
) -> Result<AlertList, StorageError> {
    let kind = status.map(|s| {
        if s == RESOLVED_STATUS {
            RESOLVED
        } else {
            RAISED
        }
    });
    let rows = store
        .alert_event_page(change_id, kind, before, limit as u64)
        .await?;
    let total =
        usize::try_from(store.alert_event_count(change_id, kind).await?).unwrap_or(usize::MAX);
    let mut open: BTreeMap<(String, String), (u64, i64)> = BTreeMap::new();
    store
        .for_each_alert_event(change_id, |(seq, kind, subject, time, payload)| {
            let Some(ev) = payload.and_then(|p| serde_json::from_str::<AlertEvent>(&p).ok()) else {
                return;
            };
            for c in ev.codes {
                let key = (subject.clone(), c.code);
                if kind == RAISED {
                    open.entry(key).or_insert((seq, time));
                } else {
                    open.remove(&key);
                }
            }
        })
        .await?;
    let shown: Vec<u64> = rows.iter().map(|r| r.0).collect();
    let outbox = store.alert_deliveries(&shown).await?;
    // A delivery counts as made only when its alert.delivered entry says so.
    let recorded: BTreeMap<u64, Delivered> = store
        .alert_delivered_entries(
            &outbox
                .iter()
                .filter_map(|d| d.delivered_seq)
                .collect::<Vec<_>>(),
        )
        .await?
        .into_iter()
        .filter_map(|(seq, p)| Some((seq, serde_json::from_str(p.as_deref()?).ok()?)))
        .collect();
    let mut by_event: BTreeMap<u64, Vec<DeliveryView>> = BTreeMap::new();
    for d in outbox {
        let proven = d
            .delivered_seq
            .and_then(|s| recorded.get(&s))
            .is_some_and(|r| r.event_seq == d.event_seq && r.destination == d.destination);
        let state = match (d.state.as_str(), proven) {
            (_, true) => "delivered".to_owned(),
            ("delivered", false) => "unrecorded".to_owned(),
            (other, false) => other.to_owned(),
        };
        by_event.entry(d.event_seq).or_default().push(DeliveryView {
            destination: d.destination,
            state,
            delivered_seq: d.delivered_seq.filter(|_| proven),
            attempts: d.attempts,
            last_error: d.last_error,
        });
    }
    let alerts = rows
        .into_iter()
        .map(|(seq, kind, subject, time, payload)| {
            let ev = payload.and_then(|p| serde_json::from_str::<AlertEvent>(&p).ok());
            let erased = ev.is_none();
            let ev = ev.unwrap_or_else(|| AlertEvent::about(&subject));
            AlertView {
                entry_seq: seq,
                status: if kind == RESOLVED {
                    RESOLVED_STATUS
                } else {
                    FIRING
                },
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
                deliveries: by_event.remove(&seq).unwrap_or_default(),
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
