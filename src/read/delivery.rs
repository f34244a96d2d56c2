//! The four keys of a period (`GET /v1/delivery`, the report's delivery section): the production
//! changes that may land in it or restore what failed in it, folded and judged like the list,
//! reduced to `core::evidence::delivery`.

use crate::core::evidence::delivery::{Delivery, Landing, four_keys};
use crate::read::changes::{ChangeFilter, Criteria, for_each_change};
use crate::storage::{StorageError, Store};

/// Changes requested this long before the period may deploy in it.
const LOOKBACK_NS: i64 = 90 * 24 * 3600 * 1_000_000_000;
/// Changes requested this long after the period may still restore a failure in it.
const LOOKAHEAD_NS: i64 = 30 * 24 * 3600 * 1_000_000_000;

/// The four keys of `[from_ns, to_ns)`, of one service (any case) or all.
pub async fn delivery(
    store: &Store,
    c: &Criteria,
    from_ns: i64,
    to_ns: i64,
    service: Option<&str>,
) -> Result<Delivery, StorageError> {
    let filter = ChangeFilter {
        from_ns: from_ns.saturating_sub(LOOKBACK_NS),
        to_ns: to_ns.saturating_add(LOOKAHEAD_NS),
        service: service.map(str::to_owned),
        ..Default::default()
    };
    let mut landings = Vec::new();
    for_each_change(store, &filter, c, |ev| landings.extend(Landing::of(ev))).await?;
    Ok(four_keys(&landings, from_ns, to_ns))
}
