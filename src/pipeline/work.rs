//! What one append transaction does besides appending the caller's drafts (`Work`): the drafts
//! each kind of work appends, decided under the head lock from the stored state (a heartbeat only
//! if still idle, a revocation only of an active token, an erasure only of what may be erased,
//! alerts only for codes not yet open), and the rows stored beside them in the same transaction.

use super::fresh::FreshTelemetry;
use super::writer::{AppendError, Telemetry};
use crate::core::alerts::{self, AlertEvent, Look};
use crate::core::ledger::batch::{self, Draft, Head};
use crate::core::ledger::entry::{ErasurePayload, TokenCreated, TokenRevoked, kinds};
use crate::core::ledger::keys::LedgerKey;
use crate::storage::{AppendTx, HeadRow, KeyRow, TokenRow};
use crate::sys::now_ns;
use std::borrow::Cow;
use std::sync::Arc;

/// What one append transaction does besides appending drafts.
pub(super) enum Work<'a> {
    Drafts(&'a [Draft], &'a Telemetry),
    Rotate(Arc<LedgerKey>),
    Erase {
        seq: u64,
        reason: String,
        requested_by: String,
    },
    Checkpoint,
    /// A `heartbeat` entry if nothing was appended for this many nanoseconds, decided under the
    /// head lock: several instances on one database append one heartbeat, not one each.
    Heartbeat(i64),
    /// A token row stored with its `token.created` entry.
    CreateToken {
        row: &'a TokenRow,
        by: &'a str,
    },
    RevokeToken {
        id: &'a str,
        by: &'a str,
    },
    /// `token.created` entries for rows made before tokens were recorded.
    AdoptTokens(&'a [TokenRow]),
    /// `alert.raised` / `alert.resolved` for each look at a change whose codes differ from the
    /// open ones (decided under the head lock, so instances raise a code once), each with an
    /// outbox row per destination.
    Alerts {
        looks: &'a [Look],
        destinations: &'a [String],
    },
    /// `alert.delivered`, only while the delivery is still claimed by `token`.
    AlertDelivered {
        change_id: &'a str,
        delivered: &'a alerts::Delivered,
        token: i64,
    },
}

impl<'a> Work<'a> {
    /// The drafts this work appends, checked against the stored state under the head lock, and
    /// the part of its telemetry not stored yet (whose entries follow the caller's drafts).
    pub(super) async fn drafts(
        &self,
        tx: &mut AppendTx,
        head: &Head,
    ) -> Result<(Cow<'a, [Draft]>, FreshTelemetry<'a>), AppendError> {
        let fresh = match self {
            Work::Drafts(_, t) if !t.is_empty() => FreshTelemetry::find(tx, t).await?,
            _ => FreshTelemetry {
                all_fresh: true,
                ..FreshTelemetry::default()
            },
        };
        let drafts = match self {
            Work::Drafts(d, t) if t.is_empty() => Cow::Borrowed(*d),
            Work::Drafts(d, _) => Cow::Owned(
                d.iter()
                    .cloned()
                    .chain(fresh.entries.iter().map(|e| e.draft.clone()))
                    .collect(),
            ),
            Work::Checkpoint => Cow::Borrowed(&[][..]),
            Work::Heartbeat(idle_ns) => {
                if now_ns().saturating_sub(head.last_time_ns) >= *idle_ns {
                    Cow::Owned(vec![Draft::of(
                        kinds::HEARTBEAT,
                        "",
                        &serde_json::json!({ "reason": "idle" }),
                    )?])
                } else {
                    Cow::Borrowed(&[][..])
                }
            }
            Work::CreateToken { row, by } => Cow::Owned(vec![Draft::of(
                kinds::TOKEN_CREATED,
                "",
                &token_created(row, by, false),
            )?]),
            Work::RevokeToken { id, by } => {
                if tx.token(id).await?.is_none_or(|t| t.revoked_ns.is_some()) {
                    return Err(AppendError::NoActiveToken((*id).to_owned()));
                }
                let p = TokenRevoked {
                    token_id: (*id).to_owned(),
                    by: (*by).to_owned(),
                };
                Cow::Owned(vec![Draft::of(kinds::TOKEN_REVOKED, "", &p)?])
            }
            Work::AdoptTokens(rows) => Cow::Owned(
                rows.iter()
                    .map(|r| Draft::of(kinds::TOKEN_CREATED, "", &token_created(r, "", true)))
                    .collect::<Result<_, _>>()?,
            ),
            Work::Alerts { looks, .. } => Cow::Owned(alert_drafts(tx, looks).await?),
            Work::AlertDelivered {
                change_id,
                delivered,
                token,
            } => {
                let d = delivered;
                if tx
                    .take_alert_claim(d.event_seq, &d.destination, *token)
                    .await?
                {
                    Cow::Owned(vec![Draft::of(alerts::DELIVERED, change_id, d)?])
                } else {
                    Cow::Borrowed(&[][..])
                }
            }
            Work::Rotate(new_key) => Cow::Owned(vec![batch::rotation_draft(new_key, head.size)?]),
            Work::Erase {
                seq,
                reason,
                requested_by,
            } => Cow::Owned(vec![erasure_draft(tx, *seq, reason, requested_by).await?]),
        };
        Ok((drafts, fresh))
    }

    /// What the work stores beside its entries (`seqs`, its own entries' seqs), in the same
    /// transaction; returns the key that signs the checkpoint and whether one must follow now,
    /// whatever `checkpoint_every` says.
    pub(super) async fn insert_rows(
        &self,
        tx: &mut AppendTx,
        row: &mut HeadRow,
        seqs: &[u64],
        key: &Arc<LedgerKey>,
        batch_time: i64,
    ) -> Result<(Arc<LedgerKey>, bool), AppendError> {
        let mut force_checkpoint = matches!(self, Work::Checkpoint | Work::Heartbeat(_));
        let mut signer = key.clone();
        match self {
            Work::Rotate(new_key) => {
                let seq = seqs.first().copied().unwrap_or_default();
                tx.insert_key(&KeyRow {
                    key_id: new_key.key_id().to_hex(),
                    vkey: new_key.vkey().to_string(),
                    from_seq: seq + 1,
                    rotation_seq: Some(seq),
                })
                .await?;
                row.head.key_id = new_key.key_id();
                signer = new_key.clone();
                force_checkpoint = true;
            }
            Work::Erase { seq, .. } => {
                let erasure_seq = seqs.first().copied().unwrap_or_default();
                tx.erase_payload(*seq, erasure_seq).await?;
                // Every copy goes: the chain keeps only the commitment.
                tx.erase_derived(*seq).await?;
                force_checkpoint = true;
            }
            Work::CreateToken { row, .. } => tx.insert_token(row).await?,
            Work::RevokeToken { id, .. } => {
                tx.revoke_token(id, batch_time).await?;
            }
            Work::Alerts { destinations, .. } => {
                for seq in seqs {
                    tx.insert_alert_outbox(*seq, destinations, batch_time)
                        .await?;
                }
            }
            Work::AlertDelivered { delivered, .. } => {
                if let Some(seq) = seqs.first() {
                    tx.mark_alert_delivered(delivered.event_seq, &delivered.destination, *seq)
                        .await?;
                }
            }
            _ => {}
        }
        Ok((signer, force_checkpoint))
    }
}

/// The `payload.erased` entry for erasing entry `seq`, if that entry may be erased: one the
/// ledger or its access control is verified by may not, nor one already erased.
async fn erasure_draft(
    tx: &mut AppendTx,
    seq: u64,
    reason: &str,
    requested_by: &str,
) -> Result<Draft, AppendError> {
    let (kind, has_payload) = tx
        .entry_kind(seq)
        .await?
        .ok_or_else(|| AppendError::Erase(seq, "no such entry".into()))?;
    if [
        kinds::LEDGER_CREATED,
        kinds::KEY_ROTATED,
        kinds::PAYLOAD_ERASED,
        kinds::TOKEN_CREATED,
        kinds::TOKEN_REVOKED,
        crate::ingest::issuers::IDENTITY_KEYS,
    ]
    .contains(&kind.as_str())
    {
        return Err(AppendError::Erase(
            seq,
            format!("{kind} entries are needed to verify the ledger and who may use it"),
        ));
    }
    if !has_payload {
        return Err(AppendError::Erase(
            seq,
            "its payload is already erased".into(),
        ));
    }
    let p = ErasurePayload {
        erased_seq: seq,
        reason: reason.to_owned(),
        requested_by: requested_by.to_owned(),
    };
    Ok(Draft::of(kinds::PAYLOAD_ERASED, "", &p)?)
}

/// The alert entries the looks call for, given each subject's alert entries so far (those
/// whose payload was erased are left out: a code they raised may be raised again, which beats
/// never alerting on the subject again). A look judged before a later fact about its change was
/// recorded is dropped: whoever looks at that fact judges the change again.
async fn alert_drafts(tx: &mut AppendTx, looks: &[Look]) -> Result<Vec<Draft>, AppendError> {
    let mut drafts = Vec::new();
    // What earlier looks of this call drafted, per subject: a later look of the same subject
    // decides after them (two sightings of one version in one step raise it once).
    let mut drafted: std::collections::HashMap<String, Vec<(&'static str, AlertEvent)>> =
        std::collections::HashMap::new();
    for look in looks {
        let subject = &look.event.change_id;
        if let Some(as_of) = look.as_of
            && tx.change_facts_after(subject, as_of).await?
        {
            continue;
        }
        let before = alerts::parse_events(&tx.alert_events(subject).await?);
        let pending = drafted.entry(subject.clone()).or_default();
        let before: Vec<(u64, &str, &AlertEvent)> = before
            .iter()
            .map(|(s, k, _, e)| (*s, k.as_str(), e))
            .chain(pending.iter().map(|(k, e)| (u64::MAX, *k, e)))
            .collect();
        let new = alerts::events_for(&before, &look.event);
        for (kind, ev) in &new {
            drafts.push(Draft::of(kind, subject, ev)?);
        }
        pending.extend(new);
    }
    Ok(drafts)
}

fn token_created(row: &TokenRow, by: &str, adopted: bool) -> TokenCreated {
    TokenCreated {
        token_id: row.id.clone(),
        name: row.name.clone(),
        role: row.role.clone(),
        secret_sha256: hex::encode(&row.secret_hash),
        by: by.to_owned(),
        adopted,
    }
}
