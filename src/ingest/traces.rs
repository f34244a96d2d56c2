//! The span path of an export: validate, decide what is evidence, park the rest for late
//! binding, release what a binding unlocks, and commit before answering.

use super::*;

impl Ingestor {
    /// Ingests spans. `hold` is the export's reservation: rows that parked spans released by a
    /// binding become are charged to it, and it stays held until their commit.
    pub async fn traces(
        &self,
        req: ExportTraceServiceRequest,
        sender: SentBy,
        hold: &mut admission::Reservation,
    ) -> Result<Outcome, IngestError> {
        let source = SourceId::of(&sender);
        let intake = self.intake(sender);
        let now = intake.received_ns.max(0) as u64;
        let skew = self.config.max_clock_skew_ns.max(0) as u64;
        let (items, rejections) = convert::spans(req.resource_spans, now, skew);
        let m = &self.metrics;
        let sender = intake
            .sent_by
            .as_ref()
            .map(|s| s.token_id.clone().unwrap_or_else(|| s.name.clone()))
            .unwrap_or_default();
        // Counted now, added to the minutes only once the export is answered OK.
        let runtime = runtime::Aggregator::prepare(
            &items,
            &self.config.policy,
            &self.config.runtime,
            (intake.received_ns, &sender),
        );
        m.add(
            "changetrail_spans_received_total",
            &[],
            items.len() as u64 + rejections.count,
        );
        for (why, n) in &rejections.by_reason {
            m.add(
                "changetrail_spans_rejected_total",
                &[("reason", why.label())],
                *n,
            );
        }
        let (mut facts, sightings) = self
            .versions
            .sightings(&self.history, &items, &self.config.policy, &intake)
            .await
            .map_err(|e| self.read_error(&e))?;
        let (kept, released) = self.classify(items, source, &intake, hold);
        let rows = self.span_rows(kept.iter().chain(released.iter()), &intake, &mut facts);
        let outcome = Outcome {
            rejected: rejections.count,
            message: rejections.message("spans"),
        };
        if rows.is_empty() && facts.is_empty() {
            self.versions.commit(sightings);
            self.count_runtime(runtime, &sender);
            return Ok(outcome);
        }
        let stored: usize = rows.iter().map(|r| r.body.len()).sum();
        if let Err(e) = self.pace(hold.sender(), stored) {
            self.repark(released, source);
            return Err(e);
        }
        let count = rows.len() as u64;
        match self
            .appender
            .append_telemetry_holding(
                Telemetry {
                    spans: rows,
                    logs: Vec::new(),
                    facts,
                },
                Box::new(hold.take()),
            )
            .await
        {
            Ok(done) => {
                self.versions.commit(sightings);
                self.count_runtime(runtime, &sender);
                m.add("changetrail_spans_accepted_total", &[], count);
                m.add(
                    "changetrail_spans_duplicate_total",
                    &[],
                    done.spans_duplicate,
                );
                Ok(outcome)
            }
            Err(e) => {
                self.repark(released, source);
                Err(self.append_error(&e))
            }
        }
    }

    /// Adds an answered export's runtime counts to the minutes.
    fn count_runtime(&self, local: runtime::Local, sender: &str) {
        let c = self.runtime.commit(local, &self.config.runtime, sender);
        let m = &self.metrics;
        m.add("changetrail_runtime_spans_total", &[], c.spans);
        m.add("changetrail_runtime_too_old_total", &[], c.too_old);
        m.add("changetrail_runtime_overflow_total", &[], c.overflow);
    }

    /// Puts spans taken out of parking for an export that then failed back: the client's retry
    /// (or the next sync) binds their trace again and takes them along then.
    pub(super) fn repark(&self, released: Vec<(SpanItem, KeepRule, String)>, source: SourceId) {
        self.binder.with(Instant::now(), |v| {
            for (item, _, _) in released {
                park_item(v, item, source);
            }
        });
    }

    /// The rows kept spans are stored as, and (into `facts`) the facts they state.
    pub(super) fn span_rows<'a>(
        &self,
        items: impl Iterator<Item = &'a (SpanItem, KeepRule, String)>,
        intake: &Intake,
        facts: &mut Vec<evidence::FactRecord>,
    ) -> Vec<crate::core::evidence::telemetry::SpanRow> {
        let mut rows = Vec::with_capacity(items.size_hint().0);
        for (item, rule, subject) in items {
            // Facts first: token attributes are read (and verified) before redaction drops them.
            let attrs = convert::rule_attrs(&item.origin, &item.span.attributes);
            facts.extend(evidence::facts_from_item(
                &convert::span_info(item),
                &attrs,
                &self.config.policy,
                &self.config.identity,
                intake,
            ));
            rows.push(convert::span_row(item, *rule, subject, &self.redactor));
        }
        rows
    }

    /// Splits valid spans into kept ones (with why and for which change), the parked spans their
    /// binding released, and — out of sight — the parked rest.
    #[allow(clippy::type_complexity)]
    fn classify(
        &self,
        items: Vec<SpanItem>,
        source: SourceId,
        intake: &Intake,
        hold: &mut admission::Reservation,
    ) -> (
        Vec<(SpanItem, KeepRule, String)>,
        Vec<(SpanItem, KeepRule, String)>,
    ) {
        let mut kept = Vec::new();
        let mut released = Vec::new();
        // Sized up front: a span is a few hundred bytes, and growing these vectors would move
        // every one of them again (most spans of a flood are parked).
        let mut others = Vec::with_capacity(items.len());
        let mut evidence = Vec::new();
        for item in items {
            match item.contract {
                true => evidence.push(item),
                false => others.push(item),
            }
        }
        let mut to_park = Vec::with_capacity(others.len());
        self.binder.with(Instant::now(), |v| {
            // Spans carrying the contract bind their trace first, so the order of spans inside
            // one request does not matter.
            for item in evidence {
                let subject = item
                    .subject
                    .clone()
                    .or_else(|| v.bound(&item.trace_id).map(str::to_owned))
                    .unwrap_or_default();
                released.extend(bind_all(v, item.trace_id, &subject));
                kept.push((item, KeepRule::Attribute, subject));
            }
            for item in others {
                match keep_now(v, &item.trace_id, &ParkedSpan::linked_traces(&item)) {
                    Some((rule, subject)) => {
                        if rule == KeepRule::Link {
                            released.extend(bind_all(v, item.trace_id, &subject));
                        }
                        kept.push((item, rule, subject));
                    }
                    None => to_park.push(item),
                }
            }
        });
        // Spans are encoded for parking outside the lock, so a large request does not hold every
        // other one up. A trace bound meanwhile by another request is looked at again below.
        let prepared: Vec<(Vec<[u8; 16]>, ParkedSpan)> = to_park
            .into_iter()
            .map(|i| (ParkedSpan::linked_traces(&i), ParkedSpan::park(i)))
            .collect();
        // Journaled before they are parked, so before the export is answered: a crash after the
        // answer still has them (ingest/journal). Spans bound meanwhile are journaled too; their
        // replay finds them stored and changes nothing.
        if !prepared.is_empty() {
            self.journal_parked(prepared.iter().map(|(_, p)| p), intake);
        }
        let mut parked = 0u64;
        if !prepared.is_empty() {
            self.binder.with(Instant::now(), |v| {
                for (links, p) in prepared {
                    match keep_now(v, &p.trace_id(), &links) {
                        Some((rule, subject)) => {
                            let Some(item) = p.unpark() else { continue };
                            if rule == KeepRule::Link {
                                released.extend(bind_all(v, item.trace_id, &subject));
                            }
                            kept.push((item, rule, subject));
                        }
                        None => {
                            park(v, links, p, source);
                            parked += 1;
                        }
                    }
                }
            });
        }
        self.metrics
            .add("changetrail_spans_parked_total", &[], parked);
        (kept, self.take_released(released, hold))
    }

    /// Parked spans a binding released become rows, each with a copy of its resource: they are
    /// held in the export's reservation before they are decoded, and those that do not fit are
    /// dropped and counted (parking is best effort; the binding itself is never refused for them).
    pub(super) fn take_released(
        &self,
        released: Vec<(ParkedSpan, KeepRule, String)>,
        hold: &mut admission::Reservation,
    ) -> Vec<(SpanItem, KeepRule, String)> {
        let mut out = Vec::with_capacity(released.len());
        let mut dropped = 0u64;
        for (p, rule, subject) in released {
            if hold.grow(p.row_bytes(&self.redactor)).is_err() {
                dropped += 1;
                continue;
            }
            if let Some(item) = p.unpark() {
                out.push((item, rule, subject));
            }
        }
        if dropped > 0 {
            self.metrics
                .add("changetrail_spans_release_dropped_total", &[], dropped);
        }
        out
    }
}

/// Whether a span not carrying the contract is kept now: its trace is bound (rule: trace), or it
/// links to a bound trace (rule: link; its own trace is then bound too).
fn keep_now(
    v: &binder::BinderView<'_, ParkedSpan>,
    trace: &[u8; 16],
    links: &[[u8; 16]],
) -> Option<(KeepRule, String)> {
    if let Some(subject) = v.bound(trace) {
        return Some((KeepRule::Trace, subject.to_owned()));
    }
    links
        .iter()
        .find_map(|t| v.bound(t))
        .map(|subject| (KeepRule::Link, subject.to_owned()))
}

pub(super) fn park_item(
    v: &mut binder::BinderView<'_, ParkedSpan>,
    item: SpanItem,
    source: SourceId,
) {
    let links = ParkedSpan::linked_traces(&item);
    park(v, links, ParkedSpan::park(item), source);
}

fn park(
    v: &mut binder::BinderView<'_, ParkedSpan>,
    links: Vec<[u8; 16]>,
    p: ParkedSpan,
    source: SourceId,
) {
    if links.is_empty() {
        v.park(p.trace_id(), p, source);
    } else {
        v.park_linking(p.trace_id(), &links, p, source);
    }
}

/// Binds `trace` and takes everything that waited for it: its own parked spans (rule: trace), and
/// parked spans that link to it (rule: link), whose own traces become bound in turn.
/// (Spans come out still encoded: they are decoded, and charged, outside the binder's lock.)
pub(super) fn bind_all(
    v: &mut binder::BinderView<'_, ParkedSpan>,
    trace: [u8; 16],
    subject: &str,
) -> Vec<(ParkedSpan, KeepRule, String)> {
    let mut out = Vec::new();
    let mut queue = vec![(trace, KeepRule::Trace)];
    while let Some((t, _)) = queue.pop() {
        for p in v.bind(t, subject) {
            out.push((p, KeepRule::Trace, subject.to_owned()));
        }
        for (own, p) in v.release_linking(&t) {
            out.push((p, KeepRule::Link, subject.to_owned()));
            if v.bound(&own).is_none() {
                queue.push((own, KeepRule::Link));
            }
        }
    }
    out
}
