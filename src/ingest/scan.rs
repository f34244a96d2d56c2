//! What an OTLP request will cost once decoded, read off its bytes before anything is allocated.
//!
//! Decoded structures are many times their wire size (an empty span is 2 bytes on the wire and
//! a few hundred decoded), so admission charges this estimate, not the body's length. The
//! estimate is an upper bound of what prost or serde allocate: every message instance at twice
//! its struct size (a `Vec` grows by doubling), plus every string and byte field's length.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use std::mem::size_of;

/// prost refuses messages nested deeper than this; the scan stops there too (and says so).
const MAX_DEPTH: usize = 100;

/// What the scan found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    /// Estimated bytes the decoded request will hold.
    pub decoded_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Msg {
    TraceRequest,
    LogsRequest,
    ResourceSpans,
    ResourceLogs,
    Resource,
    EntityRef,
    ScopeSpans,
    ScopeLogs,
    Scope,
    Span,
    Event,
    Link,
    Status,
    LogRecord,
    KeyValue,
    AnyValue,
    ArrayValue,
    KvList,
}

impl Msg {
    fn size(self) -> usize {
        match self {
            Msg::TraceRequest => size_of::<ExportTraceServiceRequest>(),
            Msg::LogsRequest => size_of::<ExportLogsServiceRequest>(),
            Msg::ResourceSpans => size_of::<ResourceSpans>(),
            Msg::ResourceLogs => size_of::<ResourceLogs>(),
            Msg::Resource => size_of::<Resource>(),
            Msg::EntityRef => size_of::<EntityRef>(),
            Msg::ScopeSpans => size_of::<ScopeSpans>(),
            Msg::ScopeLogs => size_of::<ScopeLogs>(),
            Msg::Scope => size_of::<InstrumentationScope>(),
            Msg::Span => size_of::<Span>(),
            Msg::Event => size_of::<span::Event>(),
            Msg::Link => size_of::<span::Link>(),
            Msg::Status => size_of::<Status>(),
            Msg::LogRecord => size_of::<LogRecord>(),
            Msg::KeyValue => size_of::<KeyValue>(),
            Msg::AnyValue => size_of::<AnyValue>(),
            Msg::ArrayValue => size_of::<ArrayValue>(),
            Msg::KvList => size_of::<KeyValueList>(),
        }
    }

    /// The message type of a length-delimited field, or `None` for strings and bytes.
    fn child(self, field: u64) -> Option<Msg> {
        Some(match (self, field) {
            (Msg::TraceRequest, 1) => Msg::ResourceSpans,
            (Msg::LogsRequest, 1) => Msg::ResourceLogs,
            (Msg::ResourceSpans, 1) | (Msg::ResourceLogs, 1) => Msg::Resource,
            (Msg::ResourceSpans, 2) => Msg::ScopeSpans,
            (Msg::ResourceLogs, 2) => Msg::ScopeLogs,
            (Msg::Resource, 1) => Msg::KeyValue,
            (Msg::Resource, 3) => Msg::EntityRef,
            (Msg::ScopeSpans, 1) | (Msg::ScopeLogs, 1) => Msg::Scope,
            (Msg::ScopeSpans, 2) => Msg::Span,
            (Msg::ScopeLogs, 2) => Msg::LogRecord,
            (Msg::Scope, 3) => Msg::KeyValue,
            (Msg::Span, 9) | (Msg::Event, 3) | (Msg::Link, 4) | (Msg::LogRecord, 6) => {
                Msg::KeyValue
            }
            (Msg::Span, 11) => Msg::Event,
            (Msg::Span, 13) => Msg::Link,
            (Msg::Span, 15) => Msg::Status,
            (Msg::LogRecord, 5) | (Msg::KeyValue, 2) | (Msg::ArrayValue, 1) => Msg::AnyValue,
            (Msg::AnyValue, 5) => Msg::ArrayValue,
            (Msg::AnyValue, 6) => Msg::KvList,
            (Msg::KvList, 1) => Msg::KeyValue,
            _ => return None,
        })
    }
}

/// Why the bytes are not OTLP protobuf (the decoder would refuse them too).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

fn varint(buf: &mut &[u8]) -> Result<u64, Malformed> {
    prost::encoding::decode_varint(buf).map_err(|e| Malformed(e.to_string()))
}

fn walk(mut buf: &[u8], m: Msg, depth: usize, cost: &mut usize) -> Result<(), Malformed> {
    if depth > MAX_DEPTH {
        return Err(Malformed(format!(
            "messages are nested more than {MAX_DEPTH} deep"
        )));
    }
    *cost = cost.saturating_add(2 * m.size());
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                varint(&mut buf)?;
            }
            1 | 5 => {
                let n = if wire == 1 { 8 } else { 4 };
                if buf.len() < n {
                    return Err(Malformed("a fixed-width field is cut short".into()));
                }
                buf = &buf[n..];
            }
            2 => {
                let len = usize::try_from(varint(&mut buf)?).unwrap_or(usize::MAX);
                if buf.len() < len {
                    return Err(Malformed("a length-delimited field is cut short".into()));
                }
                let (inner, rest) = buf.split_at(len);
                buf = rest;
                match m.child(field) {
                    Some(c) => walk(inner, c, depth + 1, cost)?,
                    // A string or bytes field (or one prost skips): its bytes, plus a String's
                    // own size for repeated strings.
                    None => *cost = cost.saturating_add(len + 48),
                }
            }
            // A group: OTLP has none, so it is an unknown field prost skips; so do we.
            3 => skip_group(&mut buf, field, depth + 1)?,
            _ => return Err(Malformed(format!("wire type {wire} out of place"))),
        }
    }
    Ok(())
}

/// Skips a group's fields up to its end-group key (nested groups included), costing nothing:
/// prost keeps no unknown fields.
fn skip_group(buf: &mut &[u8], field: u64, depth: usize) -> Result<(), Malformed> {
    if depth > MAX_DEPTH {
        return Err(Malformed(format!(
            "messages are nested more than {MAX_DEPTH} deep"
        )));
    }
    loop {
        if buf.is_empty() {
            return Err(Malformed("a group is not closed".into()));
        }
        let key = varint(buf)?;
        let (f, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                varint(buf)?;
            }
            1 | 5 => {
                let n = if wire == 1 { 8 } else { 4 };
                if buf.len() < n {
                    return Err(Malformed("a fixed-width field is cut short".into()));
                }
                *buf = &buf[n..];
            }
            2 => {
                let len = usize::try_from(varint(buf)?).unwrap_or(usize::MAX);
                if buf.len() < len {
                    return Err(Malformed("a length-delimited field is cut short".into()));
                }
                *buf = &buf[len..];
            }
            3 => skip_group(buf, f, depth + 1)?,
            4 if f == field => return Ok(()),
            _ => return Err(Malformed("a group ends with the wrong field".into())),
        }
    }
}

/// The cost of a protobuf `ExportTraceServiceRequest` (`logs = false`) or
/// `ExportLogsServiceRequest`.
pub fn protobuf(body: &[u8], logs: bool) -> Result<Cost, Malformed> {
    let mut cost = 0usize;
    let root = if logs {
        Msg::LogsRequest
    } else {
        Msg::TraceRequest
    };
    walk(body, root, 0, &mut cost)?;
    Ok(Cost {
        decoded_bytes: cost,
    })
}

/// The cost of an OTLP/JSON body, and the first key spelled the way OTLP/JSON does not spell
/// keys (snake_case, the legacy instrumentationLibrary*), for a body that decodes to nothing.
pub fn json(body: &[u8]) -> Result<(Cost, Option<String>), serde_json::Error> {
    use serde::de::DeserializeSeed;
    let mut state = JsonScan {
        cost: 0,
        misspelled: None,
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    Node(&mut state).deserialize(&mut de)?;
    de.end()?;
    Ok((
        Cost {
            decoded_bytes: state.cost,
        },
        state.misspelled,
    ))
}

/// The largest struct an OTLP/JSON object can become, twice (as for protobuf).
fn json_object_cost() -> usize {
    2 * [
        size_of::<Span>(),
        size_of::<LogRecord>(),
        size_of::<ResourceSpans>(),
        size_of::<KeyValue>(),
        size_of::<AnyValue>(),
        size_of::<span::Link>(),
        size_of::<span::Event>(),
    ]
    .into_iter()
    .max()
    .unwrap_or(512)
}

struct JsonScan {
    cost: usize,
    misspelled: Option<String>,
}

impl JsonScan {
    /// A scalar's place: a field, or a buffered value of 32 bytes in a `Vec` that doubles.
    fn scalar(&mut self) {
        self.cost = self.cost.saturating_add(64);
    }
}

/// One JSON value, walked without building it.
struct Node<'s>(&'s mut JsonScan);

impl<'de> serde::de::DeserializeSeed<'de> for Node<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Node<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an OTLP/JSON value")
    }

    // Every value is charged what serde may hold for it: `AnyValue` is `#[serde(flatten)]`, so
    // values inside it are first buffered whole, and a struct can be built from an array (`[]`
    // is a default `Span`) — so an array costs as much as an object, and a scalar its buffer.
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        self.0.scalar();
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        self.0.scalar();
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        self.0.scalar();
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        self.0.scalar();
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.scalar();
        Ok(())
    }
    fn visit_str<E>(self, s: &str) -> Result<(), E> {
        // The decoded string, and its copy in a flatten buffer.
        self.0.scalar();
        self.0.cost = self.0.cost.saturating_add(2 * s.len());
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.0.cost = self.0.cost.saturating_add(json_object_cost());
        while seq.next_element_seed(Node(self.0))?.is_some() {}
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.0.cost = self.0.cost.saturating_add(json_object_cost());
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if self.0.misspelled.is_none()
                && (key.contains('_') || key.starts_with("instrumentationLibrary"))
            {
                // Quoted back to the client: never more than a short prefix of it.
                self.0.misspelled = Some(key.chars().take(64).collect());
            }
            map.next_value_seed(Node(self.0))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use prost::Message;

    /// What a decoded request really holds on the heap and inline (capacities, not lengths, are
    /// not observable through prost's API; lengths are what the estimate must exceed).
    fn held(r: &ExportTraceServiceRequest) -> usize {
        fn kvs(v: &[KeyValue]) -> usize {
            v.iter()
                .map(|kv| size_of::<KeyValue>() + kv.key.len() + kv.value.as_ref().map_or(0, any))
                .sum()
        }
        fn any(v: &AnyValue) -> usize {
            size_of::<AnyValue>()
                + match &v.value {
                    Some(Value::StringValue(s)) => s.len(),
                    Some(Value::BytesValue(b)) => b.len(),
                    Some(Value::ArrayValue(a)) => a.values.iter().map(any).sum(),
                    Some(Value::KvlistValue(l)) => kvs(&l.values),
                    _ => 0,
                }
        }
        r.resource_spans
            .iter()
            .map(|rs| {
                size_of::<ResourceSpans>()
                    + rs.resource.as_ref().map_or(0, |r| kvs(&r.attributes))
                    + rs.scope_spans
                        .iter()
                        .map(|ss| {
                            size_of::<ScopeSpans>()
                                + ss.spans
                                    .iter()
                                    .map(|s| {
                                        size_of::<Span>()
                                            + s.name.len()
                                            + s.trace_id.len()
                                            + kvs(&s.attributes)
                                            + s.events
                                                .iter()
                                                .map(|e| {
                                                    size_of::<span::Event>() + kvs(&e.attributes)
                                                })
                                                .sum::<usize>()
                                    })
                                    .sum::<usize>()
                        })
                        .sum::<usize>()
            })
            .sum()
    }

    fn sample(spans: usize, attrs: usize) -> ExportTraceServiceRequest {
        let kv = |i: usize| KeyValue {
            key: format!("k{i}"),
            value: Some(AnyValue {
                value: Some(Value::StringValue("v".repeat(i % 7))),
            }),
            ..Default::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: (0..attrs).map(kv).collect(),
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: (0..spans)
                        .map(|i| Span {
                            name: format!("s{i}"),
                            trace_id: vec![1; 16],
                            attributes: (0..attrs).map(kv).collect(),
                            events: vec![span::Event::default(); i % 3],
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn the_estimate_bounds_what_decoding_holds() {
        for (spans, attrs) in [(0, 0), (1, 1), (50, 3), (500, 20), (10, 200)] {
            let r = sample(spans, attrs);
            let bytes = r.encode_to_vec();
            let c = protobuf(&bytes, false).unwrap();
            assert!(c.decoded_bytes >= held(&r), "{spans}×{attrs}");
            // …and is not absurdly above it (a loose bound would refuse honest traffic).
            assert!(c.decoded_bytes <= 4 * held(&r) + 1024, "{spans}×{attrs}");
            let text = serde_json::to_vec(&r).unwrap();
            let (j, miss) = json(&text).unwrap();
            assert!(j.decoded_bytes >= held(&r), "json {spans}×{attrs}");
            assert_eq!(miss, None);
        }
    }

    #[test]
    fn empty_messages_cost_their_decoded_size_not_their_two_bytes() {
        // 10,000 empty spans: 2 bytes each on the wire.
        let r = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span::default(); 10_000],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let bytes = r.encode_to_vec();
        assert!(bytes.len() < 30_000);
        let c = protobuf(&bytes, false).unwrap();
        assert!(c.decoded_bytes >= 10_000 * size_of::<Span>());
    }

    #[test]
    fn malformed_bytes_are_refused_not_walked() {
        assert!(protobuf(&[0x0a, 0x05, 0x01], false).is_err(), "cut short");
        assert!(protobuf(&[0x0b], false).is_err(), "an open group");
        // An unknown field as a closed group is skipped, as prost does.
        assert!(protobuf(&[0x7b, 0x08, 0x01, 0x7c], false).is_ok());
        assert!(ExportTraceServiceRequest::decode(&[0x7b, 0x08, 0x01, 0x7c][..]).is_ok());
        // 101 nested AnyValue arrays: deeper than prost allows.
        let mut v = AnyValue::default();
        for _ in 0..101 {
            v = AnyValue {
                value: Some(Value::ArrayValue(ArrayValue { values: vec![v] })),
            };
        }
        let r = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        body: Some(v),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        assert!(protobuf(&r.encode_to_vec(), true).is_err());
    }

    /// Arrays build structs (`[]` is a default span) and flattened values buffer whole: neither
    /// may cost less than it holds.
    #[test]
    fn json_arrays_and_nested_values_are_charged() {
        let mut body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":["#.to_vec();
        for i in 0..10_000 {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(b"[]");
        }
        body.extend_from_slice(b"]}]}]}");
        let (c, _) = json(&body).unwrap();
        assert!(
            c.decoded_bytes >= 10_000 * 2 * size_of::<Span>(),
            "{}",
            c.decoded_bytes
        );
        let nested = format!(r#"{{"x":{}{}}}"#, "[".repeat(100), "]".repeat(100));
        let (c, _) = json(nested.as_bytes()).unwrap();
        assert!(c.decoded_bytes >= 100 * 64, "{}", c.decoded_bytes);
    }

    #[test]
    fn json_misspellings_are_found_without_building_the_value() {
        let (_, m) = json(br#"{"resource_spans":[{"x":1}]}"#).unwrap();
        assert_eq!(m.as_deref(), Some("resource_spans"));
        let (_, m) = json(br#"{"resourceSpans":[{"instrumentationLibrarySpans":[]}]}"#).unwrap();
        assert_eq!(m.as_deref(), Some("instrumentationLibrarySpans"));
        assert!(json(b"{").is_err());
        assert!(json(b"{} x").is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 400, failure_persistence: None, ..Default::default() })]
        /// Whatever bytes arrive: the scan never panics, and whatever prost accepts the scan
        /// accepted and priced at no less than it holds.
        #[test]
        fn mutated_bytes_are_scanned_safely(
            muts in proptest::collection::vec((0usize..100_000, 0u8..=255, 0u8..3), 0..10),
            spans in 0usize..20,
        ) {
            let mut bytes = sample(spans, 5).encode_to_vec();
            for (at, b, op) in muts {
                if bytes.is_empty() { break; }
                let i = at % bytes.len();
                match op { 0 => bytes[i] = b, 1 => bytes.insert(i, b), _ => { bytes.remove(i); } }
            }
            let scanned = protobuf(&bytes, false);
            if let Ok(r) = ExportTraceServiceRequest::decode(bytes.as_slice()) {
                let c = scanned.expect("prost decoded what the scan refused");
                proptest::prop_assert!(c.decoded_bytes >= held(&r));
            }
            let _ = json(&bytes);
        }
    }
}
