//! From decoded OTLP requests to what the ledger keeps: per-item validation, contract
//! detection, redaction of secrets, and the exact bytes (and digest) each kept item is stored as.

use crate::core::evidence::contract::{
    self, APPROVAL_EVENT, KeepRule, REDACTED, Redaction, Redactor, SUBJECT_KEYS,
};
use crate::core::evidence::telemetry::{LogRow, SpanRow};
use crate::core::evidence::{AttrValue, Attrs, ItemInfo, Source};
use crate::ingest::binder::Parkable;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use prost::Message;
use std::sync::{Arc, OnceLock};

mod journal;
pub use journal::{JournalRequest, journal_request};

/// Reasons quoted in a partial-success message at most.
const MAX_REASONS: usize = 5;

/// Why an item was rejected (also the metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reject {
    TraceId,
    SpanId,
    ParentSpanId,
    Timestamps,
    /// A time further ahead of the receiver's clock than `[evidence] max_clock_skew`: event
    /// times are claims weighed against the receipt, and one from the future cannot be.
    FutureTime,
    /// A change or run id longer than `MAX_SUBJECT_BYTES`.
    Subject,
}

impl Reject {
    pub fn label(self) -> &'static str {
        match self {
            Reject::TraceId => "invalid_trace_id",
            Reject::SpanId => "invalid_span_id",
            Reject::ParentSpanId => "invalid_parent_span_id",
            Reject::Timestamps => "invalid_timestamps",
            Reject::FutureTime => "future_time",
            Reject::Subject => "invalid_subject",
        }
    }
}

/// A resource, decoded once and shared by every scope, span, parked span and row of it (a request
/// may repeat one large resource over thousands of scopes: it must cost once, not per copy).
#[derive(Debug)]
pub struct ResourcePart {
    pub resource: Option<Resource>,
    pub schema_url: String,
    /// The resource carries a contract attribute.
    pub contract: bool,
    pub subject: Option<String>,
    pub service: String,
    /// Its field in a stored row (redacted, encoded), built once when a first row needs it.
    stored: OnceLock<Vec<u8>>,
    /// Approximate memory it holds (its stored form included, once built), counted once by the
    /// binder while parked spans share it.
    pub approx_bytes: usize,
}

impl ResourcePart {
    pub fn new(resource: Option<Resource>, schema_url: String) -> Arc<ResourcePart> {
        let attrs = resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or(&[]);
        let subject = subject_of(attrs);
        let service = service_name(attrs).unwrap_or("unknown_service").to_owned();
        // The Arc's counts, the struct, what its fields point to, and the stored form.
        let approx_bytes = 2 * std::mem::size_of::<usize>()
            + std::mem::size_of::<ResourcePart>()
            + resource
                .as_ref()
                .map_or(0, |r| resource_heap(r) + r.encoded_len())
            + schema_url.len()
            + subject.as_ref().map_or(0, String::len)
            + service.len();
        Arc::new(ResourcePart {
            contract: has_contract(attrs),
            subject,
            service,
            resource,
            schema_url,
            stored: OnceLock::new(),
            approx_bytes,
        })
    }

    fn attributes(&self) -> &[KeyValue] {
        self.resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or(&[])
    }

    /// Field 1 of a stored `ResourceSpans` / `ResourceLogs`: the redacted resource.
    fn stored(&self, r: &Redactor) -> &[u8] {
        self.stored.get_or_init(|| {
            let mut buf = Vec::new();
            if let Some(res) = &self.resource {
                let mut res = res.clone();
                redact(&mut res.attributes, r);
                prost::encoding::message::encode(1, &res, &mut buf);
            }
            buf
        })
    }
}

/// Where spans come from: their shared resource and their scope.
#[derive(Debug)]
pub struct Origin {
    pub res: Arc<ResourcePart>,
    pub scope: Option<InstrumentationScope>,
    pub scope_schema: String,
    /// Field 1 of a stored `ScopeSpans` / `ScopeLogs`, built once.
    stored: OnceLock<Vec<u8>>,
    /// Approximate memory of the scope part (the resource is counted by `res`).
    pub approx_bytes: usize,
}

impl Origin {
    pub fn new(
        res: Arc<ResourcePart>,
        scope: Option<InstrumentationScope>,
        scope_schema: String,
    ) -> Arc<Origin> {
        let approx_bytes = 2 * std::mem::size_of::<usize>()
            + std::mem::size_of::<Origin>()
            + scope.as_ref().map_or(0, |s| {
                s.name.len() + s.version.len() + attrs_heap(&s.attributes) + s.encoded_len()
            })
            + scope_schema.len();
        Arc::new(Origin {
            res,
            scope,
            scope_schema,
            stored: OnceLock::new(),
            approx_bytes,
        })
    }

    fn stored_scope(&self) -> &[u8] {
        self.stored.get_or_init(|| {
            let mut buf = Vec::new();
            if let Some(scope) = &self.scope {
                prost::encoding::message::encode(1, scope, &mut buf);
            }
            buf
        })
    }

    /// The stored form of one item: `Resource{Spans,Logs}` holding this resource, one
    /// `Scope{Spans,Logs}` with this scope and the item (`encoded`, field 2), byte for byte what
    /// prost would encode, from the parts encoded once.
    fn stored_body(&self, r: &Redactor, encoded: &[u8]) -> Vec<u8> {
        use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
        let field = |n: usize| 1 + encoded_len_varint(n as u64) + n;
        let res = self.res.stored(r);
        let scope = self.stored_scope();
        let scope_schema = (!self.scope_schema.is_empty()).then(|| field(self.scope_schema.len()));
        let inner = scope.len() + field(encoded.len()) + scope_schema.unwrap_or(0);
        let res_schema =
            (!self.res.schema_url.is_empty()).then(|| field(self.res.schema_url.len()));
        let mut buf = Vec::with_capacity(res.len() + field(inner) + res_schema.unwrap_or(0));
        buf.extend_from_slice(res);
        encode_key(2, WireType::LengthDelimited, &mut buf);
        encode_varint(inner as u64, &mut buf);
        buf.extend_from_slice(scope);
        encode_key(2, WireType::LengthDelimited, &mut buf);
        encode_varint(encoded.len() as u64, &mut buf);
        buf.extend_from_slice(encoded);
        if scope_schema.is_some() {
            prost::encoding::string::encode(3, &self.scope_schema, &mut buf);
        }
        if res_schema.is_some() {
            prost::encoding::string::encode(3, &self.res.schema_url, &mut buf);
        }
        buf
    }
}

/// A valid span with the context it came with.
#[derive(Debug)]
pub struct SpanItem {
    pub origin: Arc<Origin>,
    pub span: Span,
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub contract: bool,
    pub subject: Option<String>,
}

/// A span waiting in parking, kept encoded: what it costs is its wire size, not the several
/// times larger decoded form (thousands of spans per second are parked).
pub struct ParkedSpan {
    origin: Arc<Origin>,
    bytes: Vec<u8>,
    trace_id: [u8; 16],
    span_id: [u8; 8],
}

impl ParkedSpan {
    pub fn park(item: SpanItem) -> ParkedSpan {
        ParkedSpan {
            bytes: item.span.encode_to_vec(),
            origin: item.origin,
            trace_id: item.trace_id,
            span_id: item.span_id,
        }
    }

    pub fn trace_id(&self) -> [u8; 16] {
        self.trace_id
    }

    /// Traces this span links to.
    pub fn linked_traces(item: &SpanItem) -> Vec<[u8; 16]> {
        item.span
            .links
            .iter()
            .filter_map(|l| l.trace_id.as_slice().try_into().ok())
            .collect()
    }

    /// What its stored row will take: the span, its resource's and scope's stored forms.
    pub fn row_bytes(&self, r: &Redactor) -> usize {
        self.bytes.len() + self.origin.res.stored(r).len() + self.origin.stored_scope().len() + 64
    }

    /// Back to a span, as it was parked (it was valid then, so it decodes).
    pub fn unpark(self) -> Option<SpanItem> {
        let span = Span::decode(self.bytes.as_slice()).ok()?;
        Some(SpanItem {
            origin: self.origin,
            span,
            trace_id: self.trace_id,
            span_id: self.span_id,
            contract: false,
            subject: None,
        })
    }
}

impl Parkable for ParkedSpan {
    /// Memory held while parked: the bytes, the binder's slot and index entry for it, and the
    /// scope part of its origin (small within the limits; counted per span, which errs towards
    /// evicting).
    fn weight(&self) -> usize {
        self.bytes.capacity()
            + crate::ingest::binder::slot_bytes::<ParkedSpan>()
            + self.origin.approx_bytes
    }

    /// The resource, shared with the other spans (of every scope) of the same request.
    fn shared(&self) -> Option<(usize, usize)> {
        Some((
            Arc::as_ptr(&self.origin.res) as usize,
            self.origin.res.approx_bytes + crate::ingest::binder::SHARED_BYTES,
        ))
    }
}

#[derive(Debug, Default)]
pub struct Rejections {
    pub count: u64,
    pub by_reason: Vec<(Reject, u64)>,
    reasons: Vec<String>,
}

/// A name as quoted in a message: its first 64 characters, escaped.
fn quote(name: &str) -> String {
    let head: String = name.chars().take(64).collect();
    if head.len() < name.len() {
        format!("{head:?}…")
    } else {
        format!("{head:?}")
    }
}

/// A subject (change id, run id) longer than this is refused: it is stored with every row and
/// remembered per bound trace.
pub const MAX_SUBJECT_BYTES: usize = 256;

const SUBJECT_TOO_LONG: &str = "its change or run id is longer than 256 bytes";

fn too_long(subject: &Option<String>) -> bool {
    subject
        .as_ref()
        .is_some_and(|s| s.len() > MAX_SUBJECT_BYTES)
}

impl Rejections {
    fn add(&mut self, why: Reject, detail: String) {
        self.count += 1;
        match self.by_reason.iter_mut().find(|(r, _)| *r == why) {
            Some((_, n)) => *n += 1,
            None => self.by_reason.push((why, 1)),
        }
        if self.reasons.len() < MAX_REASONS {
            self.reasons.push(detail);
        }
    }

    /// The English partial-success message.
    pub fn message(&self, what: &str) -> String {
        if self.count == 0 {
            return String::new();
        }
        let mut m = format!(
            "{} {what} rejected: {}",
            self.count,
            self.reasons.join("; ")
        );
        if self.count as usize > self.reasons.len() {
            m.push_str("; …");
        }
        m
    }
}

fn str_value(v: &Option<AnyValue>) -> Option<&str> {
    match v.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => Some(s),
        _ => None,
    }
}

pub fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| str_value(&kv.value))
}

/// A resource's `service.name`, as the spans table records it (absent: "unknown_service").
pub fn service_name(attrs: &[KeyValue]) -> Option<&str> {
    attr(attrs, "service.name")
}

fn subject_of(attrs: &[KeyValue]) -> Option<String> {
    SUBJECT_KEYS
        .iter()
        .find_map(|k| attr(attrs, k))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn has_contract(attrs: &[KeyValue]) -> bool {
    attrs.iter().any(|kv| contract::is_contract_key(&kv.key))
}

// Decoded sizes are walked rather than taken from the wire size: an empty array element is two
// bytes on the wire and a few dozen decoded, so the wire size could undercount many times over.

fn resource_heap(r: &Resource) -> usize {
    attrs_heap(&r.attributes)
        + r.entity_refs
            .iter()
            .map(|e| {
                std::mem::size_of_val(e)
                    + e.schema_url.len()
                    + e.r#type.len()
                    + e.id_keys
                        .iter()
                        .chain(&e.description_keys)
                        .map(|k| std::mem::size_of::<String>() + k.len())
                        .sum::<usize>()
            })
            .sum::<usize>()
}

#[allow(clippy::ptr_arg)] // the capacity is what is held
fn attrs_heap(attrs: &Vec<KeyValue>) -> usize {
    // Capacity, not length: what is allocated is what is held.
    (attrs.capacity() - attrs.len()) * std::mem::size_of::<KeyValue>()
        + attrs
            .iter()
            .map(|kv| {
                std::mem::size_of::<KeyValue>()
                    + kv.key.capacity()
                    + kv.value.as_ref().map_or(0, value_heap)
            })
            .sum::<usize>()
}

fn value_heap(v: &AnyValue) -> usize {
    match &v.value {
        Some(Value::StringValue(s)) => s.capacity(),
        Some(Value::BytesValue(b)) => b.capacity(),
        Some(Value::ArrayValue(a)) => {
            a.values
                .iter()
                .map(|v| std::mem::size_of::<AnyValue>() + value_heap(v))
                .sum::<usize>()
                + (a.values.capacity() - a.values.len()) * std::mem::size_of::<AnyValue>()
        }
        Some(Value::KvlistValue(l)) => attrs_heap(&l.values),
        _ => 0,
    }
}

/// Says what is wrong with an id that `id` refused.
fn bad_id(want: usize, got: &[u8]) -> String {
    if got.len() == want {
        "is all zero".to_owned()
    } else {
        format!("must be {want} bytes, not {}", got.len())
    }
}

fn id<const N: usize>(bytes: &[u8]) -> Option<[u8; N]> {
    let a: [u8; N] = bytes.try_into().ok()?;
    (a != [0u8; N]).then_some(a)
}

/// Validates every span against the receiver's clock (`now_ns`, and at most `max_skew_ns`
/// ahead of it); returns the valid ones and what was rejected.
pub fn spans(
    request: Vec<ResourceSpans>,
    now_ns: u64,
    max_skew_ns: u64,
) -> (Vec<SpanItem>, Rejections) {
    let mut items = Vec::new();
    let mut rej = Rejections::default();
    for rs in request {
        let res = ResourcePart::new(rs.resource, rs.schema_url);
        for ss in rs.scope_spans {
            let o = Origin::new(res.clone(), ss.scope, ss.schema_url);
            for span in ss.spans {
                let (Some(trace_id), Some(span_id)) =
                    (id::<16>(&span.trace_id), id::<8>(&span.span_id))
                else {
                    let (why, field, want, got) = if id::<16>(&span.trace_id).is_none() {
                        (Reject::TraceId, "trace_id", 16, &span.trace_id)
                    } else {
                        (Reject::SpanId, "span_id", 8, &span.span_id)
                    };
                    rej.add(
                        why,
                        format!("span {}: {field} {}", quote(&span.name), bad_id(want, got)),
                    );
                    continue;
                };
                if !span.parent_span_id.is_empty() && id::<8>(&span.parent_span_id).is_none() {
                    rej.add(
                        Reject::ParentSpanId,
                        format!(
                            "span {}: parent_span_id must be empty or 8 bytes and not all zero",
                            quote(&span.name)
                        ),
                    );
                    continue;
                }
                let (start, end) = (span.start_time_unix_nano, span.end_time_unix_nano);
                if start == 0 || end < start {
                    rej.add(Reject::Timestamps, format!(
                        "span {}: timestamps must have 0 < start <= end (start {start}, end {end})",
                        quote(&span.name)
                    ));
                    continue;
                }
                if end > now_ns.saturating_add(max_skew_ns) {
                    rej.add(Reject::FutureTime, format!(
                        "span {}: it ends {} s ahead of the receiver's clock (at most {} s of clock skew is accepted)",
                        quote(&span.name),
                        (end - now_ns) / 1_000_000_000,
                        max_skew_ns / 1_000_000_000
                    ));
                    continue;
                }
                let contract = o.res.contract || has_contract(&span.attributes);
                let subject = subject_of(&span.attributes).or_else(|| o.res.subject.clone());
                if too_long(&subject) {
                    rej.add(
                        Reject::Subject,
                        format!("span {}: {SUBJECT_TOO_LONG}", quote(&span.name)),
                    );
                    continue;
                }
                items.push(SpanItem {
                    origin: o.clone(),
                    span,
                    trace_id,
                    span_id,
                    contract,
                    subject,
                });
            }
        }
    }
    (items, rej)
}

/// Replaces secret attribute values, recursively through maps and arrays.
fn redact(attrs: &mut [KeyValue], r: &Redactor) {
    for kv in attrs {
        match r.rule(&kv.key) {
            Redaction::Keep => {
                if let Some(v) = kv.value.as_mut() {
                    redact_value(v, r);
                }
            }
            Redaction::Drop => kv.value = Some(string(REDACTED)),
            Redaction::Digest => {
                let digest = str_value(&kv.value).map(contract::credential_digest);
                kv.value = Some(string(digest.as_deref().unwrap_or(REDACTED)));
            }
        }
    }
}

fn redact_value(v: &mut AnyValue, r: &Redactor) {
    match v.value.as_mut() {
        Some(Value::KvlistValue(list)) => redact(&mut list.values, r),
        Some(Value::ArrayValue(arr)) => {
            for item in &mut arr.values {
                redact_value(item, r);
            }
        }
        _ => {}
    }
}

fn string(s: &str) -> AnyValue {
    AnyValue {
        value: Some(Value::StringValue(s.to_owned())),
    }
}

/// The stored form of a kept span: one resource, one scope, this span, secrets redacted.
pub fn span_row(item: &SpanItem, rule: KeepRule, subject: &str, r: &Redactor) -> SpanRow {
    let mut span = item.span.clone();
    redact(&mut span.attributes, r);
    for e in &mut span.events {
        redact(&mut e.attributes, r);
    }
    for l in &mut span.links {
        redact(&mut l.attributes, r);
    }
    let body = item.origin.stored_body(r, &span.encode_to_vec());
    SpanRow {
        trace_id: item.trace_id,
        span_id: item.span_id,
        parent_span_id: id::<8>(&span.parent_span_id),
        digest: contract::telemetry_digest(b"span", &body),
        body,
        service: item.origin.res.service.clone(),
        name: span.name,
        start_ns: span.start_time_unix_nano,
        end_ns: span.end_time_unix_nano,
        subject: subject.to_owned(),
        rule,
    }
}

/// A valid log record with its context.
pub struct LogItem {
    pub origin: Arc<Origin>,
    pub record: LogRecord,
    pub trace_id: Option<[u8; 16]>,
    pub span_id: Option<[u8; 8]>,
    pub contract: bool,
    pub subject: Option<String>,
}

/// Validates log records: ids, when present, must be well formed, and the record's time may be
/// at most `max_skew_ns` ahead of the receiver's clock (`now_ns`).
pub fn logs(
    request: Vec<ResourceLogs>,
    now_ns: u64,
    max_skew_ns: u64,
) -> (Vec<LogItem>, Rejections) {
    let mut items = Vec::new();
    let mut rej = Rejections::default();
    for rl in request {
        let res = ResourcePart::new(rl.resource, rl.schema_url);
        for sl in rl.scope_logs {
            let o = Origin::new(res.clone(), sl.scope, sl.schema_url);
            for record in sl.log_records {
                let trace_id = if record.trace_id.is_empty() {
                    None
                } else if let Some(t) = id::<16>(&record.trace_id) {
                    Some(t)
                } else {
                    rej.add(
                        Reject::TraceId,
                        format!("log record: trace_id {}", bad_id(16, &record.trace_id)),
                    );
                    continue;
                };
                let span_id = if record.span_id.is_empty() {
                    None
                } else if let Some(s) = id::<8>(&record.span_id) {
                    Some(s)
                } else {
                    rej.add(
                        Reject::SpanId,
                        format!("log record: span_id {}", bad_id(8, &record.span_id)),
                    );
                    continue;
                };
                let time = record.time_unix_nano.max(record.observed_time_unix_nano);
                if time > now_ns.saturating_add(max_skew_ns) {
                    rej.add(
                        Reject::FutureTime,
                        format!(
                            "log record: its time is {} s ahead of the receiver's clock (at most {} s of clock skew is accepted)",
                            (time - now_ns) / 1_000_000_000,
                            max_skew_ns / 1_000_000_000
                        ),
                    );
                    continue;
                }
                let contract = o.res.contract
                    || has_contract(&record.attributes)
                    || record.event_name == APPROVAL_EVENT
                    || attr(&record.attributes, "event.name") == Some(APPROVAL_EVENT);
                let subject = subject_of(&record.attributes).or_else(|| o.res.subject.clone());
                if too_long(&subject) {
                    rej.add(Reject::Subject, format!("log record: {SUBJECT_TOO_LONG}"));
                    continue;
                }
                items.push(LogItem {
                    origin: o.clone(),
                    record,
                    trace_id,
                    span_id,
                    contract,
                    subject,
                });
            }
        }
    }
    (items, rej)
}

pub fn log_row(item: &LogItem, subject: &str, r: &Redactor) -> LogRow {
    let mut record = item.record.clone();
    redact(&mut record.attributes, r);
    if let Some(body) = record.body.as_mut() {
        redact_value(body, r);
    }
    let time_ns = if record.time_unix_nano != 0 {
        record.time_unix_nano
    } else {
        record.observed_time_unix_nano
    };
    let event_name = if !record.event_name.is_empty() {
        record.event_name.clone()
    } else {
        attr(&record.attributes, "event.name")
            .unwrap_or_default()
            .to_owned()
    };
    let body = item.origin.stored_body(r, &record.encode_to_vec());
    LogRow {
        digest: contract::telemetry_digest(b"log", &body),
        body,
        trace_id: item.trace_id,
        span_id: item.span_id,
        time_ns,
        event_name,
        subject: subject.to_owned(),
    }
}

fn attr_value(v: &Option<AnyValue>) -> Option<AttrValue> {
    Some(match v.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => AttrValue::Str(s.clone()),
        Value::IntValue(i) => AttrValue::Int(*i),
        Value::DoubleValue(d) => AttrValue::Double(*d),
        Value::BoolValue(b) => AttrValue::Bool(*b),
        Value::ArrayValue(a) => AttrValue::List(
            a.values
                .iter()
                .filter_map(|v| match v.value.as_ref()? {
                    Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
        ),
        _ => return None,
    })
}

/// The item's attributes over its resource's, as the correlation rules read them (before any
/// redaction: token attributes must be seen to be verified).
pub fn rule_attrs(origin: &Origin, item: &[KeyValue]) -> Attrs {
    let mut a = Attrs::new();
    for kv in origin
        .res
        .attributes()
        .iter()
        .chain(item)
        .filter(|kv| contract::is_rule_key(&kv.key))
    {
        if let Some(v) = attr_value(&kv.value) {
            a.insert(kv.key.clone(), v);
        }
    }
    a
}

pub fn span_info(item: &SpanItem) -> ItemInfo {
    ItemInfo {
        source: Source::Span,
        start_ns: i64::try_from(item.span.start_time_unix_nano).unwrap_or(i64::MAX),
        end_ns: i64::try_from(item.span.end_time_unix_nano).unwrap_or(i64::MAX),
        // STATUS_CODE_ERROR = 2
        error: item.span.status.as_ref().is_some_and(|s| s.code == 2),
        trace_id: Some(hex::encode(item.trace_id)),
        span_id: Some(hex::encode(item.span_id)),
    }
}

pub fn log_info(item: &LogItem) -> ItemInfo {
    let t = if item.record.time_unix_nano != 0 {
        item.record.time_unix_nano
    } else {
        item.record.observed_time_unix_nano
    };
    let t = i64::try_from(t).unwrap_or(i64::MAX);
    ItemInfo {
        source: Source::Log,
        start_ns: t,
        end_ns: t,
        error: false,
        trace_id: item.trace_id.map(hex::encode),
        span_id: item.span_id.map(hex::encode),
    }
}

/// The (service, environment, version) a resource runs, when it says all three.
pub fn deployed_version(origin: &Origin) -> Option<(String, String, String)> {
    let attrs = origin.res.attributes();
    // Each is remembered per process for every service running: a name or version longer than
    // any real one is remembered by its first 256 bytes.
    let cut = |v: &str| {
        let mut end = v.len().min(256);
        while !v.is_char_boundary(end) {
            end -= 1;
        }
        v[..end].to_owned()
    };
    Some((
        cut(attr(attrs, "service.name")?),
        cut(attr(attrs, "deployment.environment.name")?),
        cut(attr(attrs, "service.version")?),
    ))
}

#[cfg(test)]
mod tests;
