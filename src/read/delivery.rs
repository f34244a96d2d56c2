//! The four keys of a period (`GET /v1/delivery`, the console's dashboard): the production
//! changes that may land in it or restore what failed in it, folded and judged like the list,
//! reduced to `core::evidence::delivery`; and the period's exceptions by code and week.

use crate::core::evidence::delivery::{Delivery, Landing, four_keys};
use crate::core::evidence::report::week_of;
use crate::read::changes::{ChangeFilter, Criteria, exceptions, for_each_change};
use crate::storage::{StorageError, Store};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Changes requested this long before the period may deploy in it.
const LOOKBACK_NS: i64 = 90 * 24 * 3600 * 1_000_000_000;
/// Changes requested this long after the period may still restore a failure in it.
const LOOKAHEAD_NS: i64 = 30 * 24 * 3600 * 1_000_000_000;

/// The four keys, and the exceptions of the production changes requested in the period: per
/// week (starting Monday, UTC), how many changes got each code.
#[derive(Debug, Serialize)]
pub struct DeliveryView {
    #[serde(flatten)]
    pub keys: Delivery,
    pub exceptions_by_week: BTreeMap<String, BTreeMap<String, u64>>,
}

/// The four keys of `[from_ns, to_ns)`, of one service (any case) or all.
pub async fn delivery(
    store: &Store,
    c: &Criteria,
    from_ns: i64,
    to_ns: i64,
    service: Option<&str>,
) -> Result<DeliveryView, StorageError> {
    let filter = ChangeFilter {
        from_ns: from_ns.saturating_sub(LOOKBACK_NS),
        to_ns: to_ns.saturating_add(LOOKAHEAD_NS),
        service: service.map(str::to_owned),
        ..Default::default()
    };
    let mut landings = Vec::new();
    let mut by_week: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for_each_change(store, &filter, c, |ev, broken| {
        landings.extend(Landing::of(ev));
        let requested = ev.change.requested_ns.or(ev.timeline.requested_ns);
        if let Some(t) = requested.filter(|t| *t >= from_ns && *t < to_ns)
            && ev.change.production
        {
            let codes: BTreeSet<&str> = exceptions(ev, broken, &c.rules)
                .iter()
                .map(|x| x.code)
                .collect();
            let week = by_week.entry(week_of(t)).or_default();
            for code in codes {
                *week.entry(code.to_owned()).or_default() += 1;
            }
        }
    })
    .await?;
    Ok(DeliveryView {
        keys: four_keys(&landings, from_ns, to_ns),
        exceptions_by_week: by_week,
    })
}
