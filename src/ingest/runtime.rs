//! Runtime spans counted per (environment, service, version, minute) as they arrive, whether they
//! are kept, parked or dropped, and appended as signed `runtime.minute` entries once each minute
//! has closed (`core::runtime` says what a cell holds and how the entries are read).
//!
//! Spans are counted only once their export is answered OK (a refused export's retry is not
//! counted twice), into cells of at most ~8 KiB (256 sketch buckets, 9 error kinds and 5
//! senders of at most 128 bytes, a key of at most 3 × 256 bytes): memory is bounded by
//! `max_cells` of them. A span needing a cell beyond that, or beyond `MAX_KEYS_PER_REQUEST` new
//! keys in one export, is not counted (`changetrail_runtime_overflow_total`), and the next flush
//! appends the oldest minutes early to make room. A span's minute is its end time as stated (a
//! claim, bounded: the receiver rejects times ahead of its clock, and a span ending longer than
//! `max_age` before its receipt is not counted, `changetrail_runtime_too_old_total`), so history
//! sent late lands in the minute it happened in, and entries of one minute add up. Each cell
//! names the ingest tokens that sent its spans. What a crash loses is the cells not yet
//! appended: up to a minute plus `flush_after` + `flush_interval` of counts.

use super::Ingestor;
use super::convert::{self, ResourcePart, SpanItem};
use crate::core::evidence::Policy;
use crate::core::ledger::batch::Draft;
use crate::core::runtime::{self, Cell, Minute};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind, status::StatusCode};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// `[suspects]` as the receiver applies it.
#[derive(Debug, Clone)]
pub struct Settings {
    pub enabled: bool,
    pub max_age_ns: i64,
    pub max_cells: usize,
    pub flush_after_ns: i64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            enabled: false,
            max_age_ns: 3_600_000_000_000,
            max_cells: 10_000,
            flush_after_ns: 30_000_000_000,
        }
    }
}

/// (environment in lower case, service, version, minute).
type Key = (String, String, String, i64);

/// Minutes appended per transaction at most.
const FLUSH_PIECE: usize = 1_024;

/// Distinct keys one export may add: a request of thousands of made-up services costs this
/// many cells, not more.
pub const MAX_KEYS_PER_REQUEST: usize = 1_024;

/// One export's counts, added to the shared cells once the export is answered OK.
#[derive(Default)]
pub struct Local {
    cells: HashMap<Key, Cell>,
    pub counted: Counted,
}

#[derive(Default)]
pub struct Aggregator {
    cells: Mutex<HashMap<Key, Cell>>,
    /// Cells taken for an append that has not finished yet.
    appending: std::sync::atomic::AtomicUsize,
    /// New cells each sender made since the last flush: one token may make at most a quarter
    /// of `max_cells` per flush, so it can neither fill the cells for everyone else nor have the
    /// ledger write more than that many entries per `flush_interval`.
    made_by: Mutex<HashMap<String, usize>>,
}

/// What one request added.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counted {
    pub spans: u64,
    pub too_old: u64,
    pub overflow: u64,
}

/// Whether a span is one of the service's entry points: the requests it serves (SERVER) or the
/// messages it consumes (CONSUMER). Internal and client spans would count one request many times.
fn is_entry(span: &Span) -> bool {
    span.kind == SpanKind::Server as i32 || span.kind == SpanKind::Consumer as i32
}

/// What kind of error a failed span shows: its first exception event's `exception.type`, else
/// its `error.type` attribute, else "error". Both are types by convention (low cardinality, no
/// user data); the free-text status message is never used, as it is signed into the ledger.
fn error_kind(span: &Span) -> &str {
    fn text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> Option<&str> {
        match v.as_ref().and_then(|v| v.value.as_ref()) {
            Some(Value::StringValue(s)) if !s.is_empty() => Some(s.as_str()),
            _ => None,
        }
    }
    span.events
        .iter()
        .filter(|e| e.name == "exception")
        .find_map(|e| {
            e.attributes
                .iter()
                .find(|kv| kv.key == "exception.type")
                .and_then(|kv| text(&kv.value))
        })
        .or_else(|| {
            span.attributes
                .iter()
                .find(|kv| kv.key == "error.type")
                .and_then(|kv| text(&kv.value))
        })
        .unwrap_or("error")
}

impl Aggregator {
    /// Counts a request's production entry spans (received at `received_ns` from `sender`), for
    /// `commit` once the export is answered OK.
    pub fn prepare(
        items: &[SpanItem],
        policy: &Policy,
        s: &Settings,
        (received_ns, sender): (i64, &str),
    ) -> Local {
        let mut counted = Counted::default();
        if !s.enabled {
            return Local::default();
        }
        // Each resource's key is worked out once; its spans share it.
        let mut resources: HashMap<*const ResourcePart, Option<(String, String, String)>> =
            HashMap::new();
        let mut local: HashMap<Key, Cell> = HashMap::new();
        for item in items.iter().filter(|i| !i.contract && is_entry(&i.span)) {
            let key = resources
                .entry(Arc::as_ptr(&item.origin.res))
                .or_insert_with(|| {
                    convert::deployed_version(&item.origin)
                        .filter(|(_, env, _)| policy.is_production(env))
                        .map(|(svc, env, ver)| (env.to_ascii_lowercase(), svc, ver))
                });
            let Some((env, svc, ver)) = key else {
                continue;
            };
            let end = i64::try_from(item.span.end_time_unix_nano).unwrap_or(i64::MAX);
            if received_ns.saturating_sub(end) > s.max_age_ns {
                counted.too_old += 1;
                continue;
            }
            let duration = item
                .span
                .end_time_unix_nano
                .saturating_sub(item.span.start_time_unix_nano);
            let failed = item
                .span
                .status
                .as_ref()
                .is_some_and(|st| st.code == StatusCode::Error as i32);
            let key = (
                env.clone(),
                svc.clone(),
                ver.clone(),
                runtime::minute_of(end),
            );
            if !local.contains_key(&key) && local.len() >= MAX_KEYS_PER_REQUEST {
                counted.overflow += 1;
                continue;
            }
            let cell = local.entry(key).or_insert_with(|| {
                let mut c = Cell::default();
                c.sent_by(sender);
                c
            });
            cell.add(
                duration,
                failed.then(|| (error_kind(&item.span), end, &item.trace_id)),
            );
            counted.spans += 1;
        }
        Local {
            cells: local,
            counted,
        }
    }

    /// Adds `sender`'s export's counts, once it was answered OK; what finds no room (or is past
    /// the sender's share) is not counted.
    pub fn commit(&self, local: Local, s: &Settings, sender: &str) -> Counted {
        use std::sync::atomic::Ordering;
        let mut counted = local.counted;
        if local.cells.is_empty() {
            return counted;
        }
        let (Ok(mut cells), Ok(mut made_by)) = (self.cells.lock(), self.made_by.lock()) else {
            return counted;
        };
        let share = (s.max_cells / 4).max(1);
        let made = made_by.entry(sender.to_owned()).or_default();
        for (key, cell) in local.cells {
            // Cells being appended still hold their memory.
            let room =
                cells.len() + self.appending.load(Ordering::Acquire) < s.max_cells && *made < share;
            match cells.get_mut(&key) {
                Some(c) => c.absorb(&cell),
                None if room => {
                    cells.insert(key, cell);
                    *made += 1;
                }
                None => {
                    counted.spans -= cell.spans;
                    counted.overflow += cell.spans;
                }
            }
        }
        counted
    }

    /// Takes the cells whose minute ended at least `flush_after_ns` before `now_ns` (all of them
    /// when `all`), and, when the cells are near `max_cells`, the oldest minutes to make room.
    pub fn take(&self, now_ns: i64, s: &Settings, all: bool) -> Vec<Minute> {
        let Ok(mut cells) = self.cells.lock() else {
            return Vec::new();
        };
        let out = Self::take_from(&mut cells, now_ns, s, all);
        if let Ok(mut made_by) = self.made_by.lock() {
            made_by.clear();
        }
        // Counted as held before the lock is let go: a reader never sees them nowhere.
        self.appending
            .fetch_add(out.len(), std::sync::atomic::Ordering::AcqRel);
        out
    }

    fn take_from(
        cells: &mut HashMap<Key, Cell>,
        now_ns: i64,
        s: &Settings,
        all: bool,
    ) -> Vec<Minute> {
        let closed = now_ns
            .saturating_sub(s.flush_after_ns)
            .saturating_sub(runtime::MINUTE_NS);
        let mut keys: Vec<Key> = cells
            .keys()
            .filter(|k| all || k.3 <= closed)
            .cloned()
            .collect();
        let high = s.max_cells - s.max_cells / 10;
        if cells.len() > high && !all {
            let mut rest: Vec<Key> = cells.keys().filter(|k| k.3 > closed).cloned().collect();
            rest.sort_by_key(|k| k.3);
            let extra = (cells.len() - keys.len()).saturating_sub(s.max_cells / 2);
            keys.extend(rest.into_iter().take(extra));
        }
        let mut out: Vec<Minute> = keys
            .into_iter()
            .filter_map(|k| {
                let cell = cells.remove(&k)?;
                Some(Minute {
                    environment: k.0,
                    service: k.1,
                    version: k.2,
                    minute_ns: k.3,
                    cell,
                })
            })
            .collect();
        out.sort_by(|a, b| {
            (a.minute_ns, &a.environment, &a.service, &a.version).cmp(&(
                b.minute_ns,
                &b.environment,
                &b.service,
                &b.version,
            ))
        });
        out
    }

    /// Puts back minutes an append failed to store, to be tried again.
    pub fn put_back(&self, minutes: Vec<Minute>) {
        let Ok(mut cells) = self.cells.lock() else {
            return;
        };
        for m in minutes {
            cells
                .entry((m.environment, m.service, m.version, m.minute_ns))
                .or_default()
                .absorb(&m.cell);
        }
    }

    /// Cells held, those being appended included.
    pub fn len(&self) -> usize {
        self.cells.lock().map_or(0, |c| c.len())
            + self.appending.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The entries minutes are appended as.
pub fn drafts(minutes: &[Minute]) -> Vec<Draft> {
    minutes
        .iter()
        .filter_map(|m| {
            Draft::of(
                runtime::MINUTE_KIND,
                &runtime::subject(&m.environment, &m.service),
                m,
            )
            .ok()
        })
        .collect()
}

impl Ingestor {
    /// Cells held until appended.
    pub fn runtime_cells(&self) -> usize {
        self.runtime.len()
    }

    /// Appends the closed minutes (all of them when `all`); what cannot be appended now is put
    /// back for the next try.
    pub async fn flush_runtime(&self, all: bool) {
        let s = &self.config.runtime;
        use std::sync::atomic::Ordering;
        let minutes = self.runtime.take(crate::sys::now_ns(), s, all);
        if minutes.is_empty() {
            return;
        }
        // In pieces of at most a sequencer batch, each waiting for room in the queue rather than
        // failing at once (counts are no client's export to answer 503 to); a piece that fails
        // is put back for the next flush.
        for piece in minutes.chunks(FLUSH_PIECE) {
            let n = piece.len();
            let drafts = drafts(piece);
            let made = drafts.len();
            let result = self.appender.append_waiting(drafts).await;
            if result.is_err() {
                self.runtime.put_back(piece.to_vec());
            }
            self.runtime.appending.fetch_sub(n, Ordering::AcqRel);
            match result {
                Ok(_) => {
                    self.metrics
                        .add("changetrail_runtime_minutes_total", &[], made as u64);
                    if made < n {
                        tracing::warn!(
                            dropped = n - made,
                            "Runtime minutes whose entry could not be made (a name the ledger refuses) were dropped."
                        );
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, minutes = n, "Runtime minutes could not be appended; retrying at the next flush.");
                }
            }
        }
    }
}

/// Appends closed minutes every `interval` until shutdown (what is still held then is appended
/// by `App::run` once the listeners have answered their last export).
pub async fn run_runtime_flush(
    ingestor: Arc<Ingestor>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => ingestor.flush_runtime(false).await,
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_come_from_the_exception_then_the_attribute_never_the_message() {
        use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
        use opentelemetry_proto::tonic::trace::v1::{Status, span::Event};
        let kv = |k: &str, v: &str| KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(v.into())),
            }),
            ..Default::default()
        };
        let mut span = Span {
            status: Some(Status {
                message: "boom".into(),
                code: StatusCode::Error as i32,
            }),
            ..Default::default()
        };
        assert_eq!(
            error_kind(&span),
            "error",
            "the free-text message is not a kind"
        );
        span.attributes.push(kv("error.type", "500"));
        assert_eq!(error_kind(&span), "500");
        span.events.push(Event {
            name: "exception".into(),
            attributes: vec![kv("exception.type", "ConnectionError")],
            ..Default::default()
        });
        assert_eq!(error_kind(&span), "ConnectionError");
        span.status = None;
        span.attributes.clear();
        span.events.clear();
        assert_eq!(error_kind(&span), "error");
        span.kind = SpanKind::Internal as i32;
        assert!(!is_entry(&span));
        span.kind = SpanKind::Consumer as i32;
        assert!(is_entry(&span));
    }
}
