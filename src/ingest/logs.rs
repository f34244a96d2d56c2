//! The log-record path of an export: log records that carry the contract are evidence; the
//! rest are counted and not stored.

use super::traces::bind_all;
use super::*;

impl Ingestor {
    pub async fn logs(
        &self,
        req: ExportLogsServiceRequest,
        sender: SentBy,
        hold: &mut admission::Reservation,
    ) -> Result<Outcome, IngestError> {
        let source = SourceId::of(&sender);
        let intake = self.intake(sender);
        let (items, rejections) = convert::logs(
            req.resource_logs,
            intake.received_ns.max(0) as u64,
            self.config.max_clock_skew_ns.max(0) as u64,
        );
        let m = &self.metrics;
        m.add(
            "changetrail_log_records_received_total",
            &[],
            items.len() as u64 + rejections.count,
        );
        for (why, n) in &rejections.by_reason {
            m.add(
                "changetrail_log_records_rejected_total",
                &[("reason", why.label())],
                *n,
            );
        }
        let mut kept = Vec::new();
        let mut released = Vec::new();
        let mut unrelated = 0u64;
        self.binder.with(Instant::now(), |v| {
            for (n, item) in items.iter().enumerate() {
                let bound = item.trace_id.and_then(|t| v.bound(&t).map(str::to_owned));
                if !item.contract && bound.is_none() {
                    unrelated += 1;
                    continue;
                }
                let subject = item.subject.clone().or(bound).unwrap_or_default();
                if item.contract
                    && let Some(t) = item.trace_id
                {
                    released.extend(bind_all(v, t, &subject));
                }
                kept.push((n, subject));
            }
        });
        // Facts and rows are built outside the binder's lock.
        let released = self.take_released(released, hold);
        let mut rows = Vec::with_capacity(kept.len());
        let mut facts = Vec::new();
        for (n, subject) in kept {
            let item = &items[n];
            let attrs = convert::rule_attrs(&item.origin, &item.record.attributes);
            facts.extend(evidence::facts_from_item(
                &convert::log_info(item),
                &attrs,
                &self.config.policy,
                &self.config.identity,
                &intake,
            ));
            rows.push(convert::log_row(item, &subject, &self.redactor));
        }
        m.add("changetrail_log_records_unrelated_total", &[], unrelated);
        let outcome = Outcome {
            rejected: rejections.count,
            message: rejections.message("log records"),
        };
        if rows.is_empty() && released.is_empty() && facts.is_empty() {
            return Ok(outcome);
        }
        let spans: Vec<_> = released
            .iter()
            .map(|(item, rule, subject)| convert::span_row(item, *rule, subject, &self.redactor))
            .collect();
        let stored: usize = spans.iter().map(|r| r.body.len()).sum::<usize>()
            + rows.iter().map(|r| r.body.len()).sum::<usize>();
        if let Err(e) = self.pace(hold.sender(), stored) {
            self.repark(released, source);
            return Err(e);
        }
        let count = rows.len() as u64;
        match self
            .appender
            .append_telemetry_holding(
                Telemetry {
                    spans,
                    logs: rows,
                    facts,
                },
                Box::new(hold.take()),
            )
            .await
        {
            Ok(_) => {
                m.add("changetrail_log_records_accepted_total", &[], count);
                Ok(outcome)
            }
            Err(e) => {
                self.repark(released, source);
                Err(self.append_error(&e))
            }
        }
    }
}
