//! Per-item limits on decoded OTLP, in the terms the OpenTelemetry SDKs and Collector use
//! (attribute count and value length, events and links per span, …), applied before anything is
//! classified, stored or copied, so no item costs more downstream than the limits allow.
//!
//! What happens to an item over a limit, documented in `defaults.toml` and said in the partial
//! success message:
//! - attributes beyond the count limit are dropped (the first ones are kept, like the SDKs) and
//!   the item's `dropped_attributes_count` grows by as many; so are attributes whose key is longer
//!   than the key limit;
//! - string and bytes values are cut at the value length limit (strings at a character
//!   boundary), arrays and kvlists at their length limit, and a value nested deeper than the depth
//!   limit is emptied;
//! - events and links beyond their limits are dropped (`dropped_events_count`,
//!   `dropped_links_count` grow);
//! - names, trace states, status messages, schema URLs and log severity texts are cut like
//!   attribute values, and NUL (which PostgreSQL text cannot hold) becomes U+FFFD everywhere;
//! - spans or log records beyond the per-request limit are rejected (partial success), the first
//!   ones are kept.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde::{Deserialize, Serialize};

/// `[otlp.limits]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_resource_attributes: usize,
    pub max_scope_attributes: usize,
    pub max_span_attributes: usize,
    pub max_event_attributes: usize,
    pub max_link_attributes: usize,
    pub max_log_record_attributes: usize,
    pub max_attribute_key_length: usize,
    pub max_attribute_value_length: usize,
    pub max_array_length: usize,
    pub max_kvlist_length: usize,
    pub max_value_depth: usize,
    pub max_events_per_span: usize,
    pub max_links_per_span: usize,
    pub max_spans_per_request: usize,
    pub max_log_records_per_request: usize,
}

impl Default for Limits {
    /// The SDKs' span limits (128 attributes, events, links, attributes per event and link),
    /// a value limit well above any identity token, and the Collector's default batch size twice.
    fn default() -> Self {
        Limits {
            max_resource_attributes: 128,
            max_scope_attributes: 128,
            max_span_attributes: 128,
            max_event_attributes: 128,
            max_link_attributes: 128,
            max_log_record_attributes: 128,
            max_attribute_key_length: 256,
            max_attribute_value_length: 16 * 1024,
            max_array_length: 128,
            max_kvlist_length: 128,
            max_value_depth: 8,
            max_events_per_span: 128,
            max_links_per_span: 128,
            max_spans_per_request: 16_384,
            max_log_records_per_request: 16_384,
        }
    }
}

/// What a limit cut, by what (the `/metrics` label), and the items refused for the per-request
/// count.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// (what, how many), in a fixed order.
    pub truncated: Vec<(&'static str, u64)>,
    /// Spans or log records beyond the per-request limit, rejected.
    pub excess_items: u64,
    /// What the kept items can become as stored rows at most: each stored span or log record
    /// carries a copy of its resource and scope, so this is counted before any row is built.
    pub row_bytes: usize,
}

impl Applied {
    fn cut(&mut self, what: &'static str, n: u64) {
        if n == 0 {
            return;
        }
        match self.truncated.iter_mut().find(|(w, _)| *w == what) {
            Some((_, c)) => *c += n,
            None => self.truncated.push((what, n)),
        }
    }

    /// The warning a partial success carries when nothing was rejected but something was cut.
    pub fn message(&self) -> String {
        if self.truncated.is_empty() {
            return String::new();
        }
        let parts: Vec<String> = self
            .truncated
            .iter()
            .map(|(w, n)| format!("{n} × {}", w.replace('_', " ")))
            .collect();
        format!(
            "truncated to the receiver's [otlp.limits]: {}",
            parts.join(", ")
        )
    }
}

/// Cuts a string at `max` bytes (at a character boundary) and replaces NUL, which PostgreSQL text
/// columns cannot hold; a changed string gives back its spare capacity (what was cut must not stay
/// allocated behind a parked span).
fn text(s: &mut String, max: usize, what: &'static str, a: &mut Applied) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.shrink_to_fit();
        a.cut(what, 1);
    }
    if s.contains('\0') {
        *s = s.replace('\0', "\u{FFFD}");
        a.cut("nul_replaced", 1);
    }
}

fn u32_add(a: u32, b: usize) -> u32 {
    a.saturating_add(u32::try_from(b).unwrap_or(u32::MAX))
}

/// Cuts one attribute list to `max` entries, and every key and value within; returns how many
/// attributes were dropped.
fn attributes(v: &mut Vec<KeyValue>, max: usize, l: &Limits, a: &mut Applied) -> usize {
    let before = v.len();
    let long_keys = {
        let n = v.len();
        v.retain(|kv| kv.key.len() <= l.max_attribute_key_length);
        n - v.len()
    };
    a.cut("attribute_key_length", long_keys as u64);
    if v.len() > max {
        a.cut("attributes", (v.len() - max) as u64);
        v.truncate(max);
    }
    if v.len() < before {
        v.shrink_to_fit();
    }
    for kv in v.iter_mut() {
        text(
            &mut kv.key,
            l.max_attribute_key_length,
            "attribute_key_length",
            a,
        );
        if let Some(val) = kv.value.as_mut() {
            value(val, 1, l, a);
        }
    }
    before - v.len()
}

fn value(v: &mut AnyValue, depth: usize, l: &Limits, a: &mut Applied) {
    match v.value.as_mut() {
        Some(Value::StringValue(s)) => {
            text(s, l.max_attribute_value_length, "attribute_value_length", a);
        }
        Some(Value::BytesValue(b)) if b.len() > l.max_attribute_value_length => {
            b.truncate(l.max_attribute_value_length);
            b.shrink_to_fit();
            a.cut("attribute_value_length", 1);
        }
        Some(Value::ArrayValue(arr)) => {
            if depth >= l.max_value_depth {
                a.cut("value_depth", 1);
                arr.values.clear();
                return;
            }
            if arr.values.len() > l.max_array_length {
                a.cut(
                    "array_length",
                    (arr.values.len() - l.max_array_length) as u64,
                );
                arr.values.truncate(l.max_array_length);
            }
            for item in &mut arr.values {
                value(item, depth + 1, l, a);
            }
        }
        Some(Value::KvlistValue(list)) => {
            if depth >= l.max_value_depth {
                a.cut("value_depth", 1);
                list.values = Vec::new();
                return;
            }
            let n = list.values.len();
            list.values
                .retain(|kv| kv.key.len() <= l.max_attribute_key_length);
            a.cut("attribute_key_length", (n - list.values.len()) as u64);
            if list.values.len() > l.max_kvlist_length {
                a.cut(
                    "kvlist_length",
                    (list.values.len() - l.max_kvlist_length) as u64,
                );
                list.values.truncate(l.max_kvlist_length);
            }
            if list.values.len() < n {
                list.values.shrink_to_fit();
            }
            for kv in &mut list.values {
                text(
                    &mut kv.key,
                    l.max_attribute_key_length,
                    "attribute_key_length",
                    a,
                );
                if let Some(val) = kv.value.as_mut() {
                    value(val, depth + 1, l, a);
                }
            }
        }
        _ => {}
    }
}

fn resource(r: &mut Option<Resource>, l: &Limits, a: &mut Applied) {
    if let Some(r) = r.as_mut() {
        let d = attributes(&mut r.attributes, l.max_resource_attributes, l, a);
        r.dropped_attributes_count = u32_add(r.dropped_attributes_count, d);
        // Entity references name attribute keys; they are not evidence and not kept bounded
        // otherwise.
        if !r.entity_refs.is_empty() {
            a.cut("entity_refs", r.entity_refs.len() as u64);
            r.entity_refs = Vec::new();
        }
    }
}

fn scope(s: &mut Option<InstrumentationScope>, l: &Limits, a: &mut Applied) {
    if let Some(s) = s.as_mut() {
        let d = attributes(&mut s.attributes, l.max_scope_attributes, l, a);
        s.dropped_attributes_count = u32_add(s.dropped_attributes_count, d);
        for t in [&mut s.name, &mut s.version] {
            text(t, l.max_attribute_value_length, "text_length", a);
        }
    }
}

/// One length-delimited field's size on the wire, key and length prefix included.
fn field_len(len: usize) -> usize {
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

/// Applies the limits to a trace export in place.
pub fn traces(req: &mut ExportTraceServiceRequest, l: &Limits) -> Applied {
    let mut a = Applied::default();
    let mut seen = 0usize;
    for rs in &mut req.resource_spans {
        resource(&mut rs.resource, l, &mut a);
        text(
            &mut rs.schema_url,
            l.max_attribute_value_length,
            "text_length",
            &mut a,
        );
        let res_len = rs
            .resource
            .as_ref()
            .map_or(0, |r| field_len(r.encoded_len()))
            + field_len(rs.schema_url.len());
        for ss in &mut rs.scope_spans {
            let room = l.max_spans_per_request.saturating_sub(seen);
            if ss.spans.len() > room {
                a.excess_items += (ss.spans.len() - room) as u64;
                ss.spans.truncate(room);
                ss.spans.shrink_to_fit();
            }
            seen += ss.spans.len();
            scope(&mut ss.scope, l, &mut a);
            text(
                &mut ss.schema_url,
                l.max_attribute_value_length,
                "text_length",
                &mut a,
            );
            let scope_len = ss.scope.as_ref().map_or(0, |s| field_len(s.encoded_len()))
                + field_len(ss.schema_url.len());
            for span in &mut ss.spans {
                // Names, states and messages are bounded like attribute values: they are stored,
                // and quoted back in messages.
                let max = l.max_attribute_value_length;
                text(&mut span.name, max, "text_length", &mut a);
                text(&mut span.trace_state, max, "text_length", &mut a);
                if let Some(st) = span.status.as_mut() {
                    text(&mut st.message, max, "text_length", &mut a);
                }
                let d = attributes(&mut span.attributes, l.max_span_attributes, l, &mut a);
                span.dropped_attributes_count = u32_add(span.dropped_attributes_count, d);
                if span.events.len() > l.max_events_per_span {
                    let n = span.events.len() - l.max_events_per_span;
                    a.cut("events", n as u64);
                    span.events.truncate(l.max_events_per_span);
                    span.events.shrink_to_fit();
                    span.dropped_events_count = u32_add(span.dropped_events_count, n);
                }
                if span.links.len() > l.max_links_per_span {
                    let n = span.links.len() - l.max_links_per_span;
                    a.cut("links", n as u64);
                    span.links.truncate(l.max_links_per_span);
                    span.links.shrink_to_fit();
                    span.dropped_links_count = u32_add(span.dropped_links_count, n);
                }
                for e in &mut span.events {
                    text(&mut e.name, max, "text_length", &mut a);
                    let d = attributes(&mut e.attributes, l.max_event_attributes, l, &mut a);
                    e.dropped_attributes_count = u32_add(e.dropped_attributes_count, d);
                }
                for k in &mut span.links {
                    text(&mut k.trace_state, max, "text_length", &mut a);
                    let d = attributes(&mut k.attributes, l.max_link_attributes, l, &mut a);
                    k.dropped_attributes_count = u32_add(k.dropped_attributes_count, d);
                }
                a.row_bytes = a
                    .row_bytes
                    .saturating_add(res_len + scope_len + field_len(span.encoded_len()) + 16);
            }
        }
    }
    a
}

/// Applies the limits to a log export in place.
pub fn logs(req: &mut ExportLogsServiceRequest, l: &Limits) -> Applied {
    let mut a = Applied::default();
    let mut seen = 0usize;
    for rl in &mut req.resource_logs {
        resource(&mut rl.resource, l, &mut a);
        text(
            &mut rl.schema_url,
            l.max_attribute_value_length,
            "text_length",
            &mut a,
        );
        let res_len = rl
            .resource
            .as_ref()
            .map_or(0, |r| field_len(r.encoded_len()))
            + field_len(rl.schema_url.len());
        for sl in &mut rl.scope_logs {
            let room = l.max_log_records_per_request.saturating_sub(seen);
            if sl.log_records.len() > room {
                a.excess_items += (sl.log_records.len() - room) as u64;
                sl.log_records.truncate(room);
                sl.log_records.shrink_to_fit();
            }
            seen += sl.log_records.len();
            scope(&mut sl.scope, l, &mut a);
            text(
                &mut sl.schema_url,
                l.max_attribute_value_length,
                "text_length",
                &mut a,
            );
            let scope_len = sl.scope.as_ref().map_or(0, |s| field_len(s.encoded_len()))
                + field_len(sl.schema_url.len());
            for r in &mut sl.log_records {
                let max = l.max_attribute_value_length;
                text(&mut r.severity_text, max, "text_length", &mut a);
                text(&mut r.event_name, max, "text_length", &mut a);
                let d = attributes(&mut r.attributes, l.max_log_record_attributes, l, &mut a);
                r.dropped_attributes_count = u32_add(r.dropped_attributes_count, d);
                if let Some(body) = r.body.as_mut() {
                    value(body, 1, l, &mut a);
                }
                a.row_bytes = a
                    .row_bytes
                    .saturating_add(res_len + scope_len + field_len(r.encoded_len()) + 16);
            }
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span};

    fn kv(k: &str, v: Value) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    fn s(v: &str) -> Value {
        Value::StringValue(v.into())
    }

    fn request(spans: usize, attrs: usize) -> ExportTraceServiceRequest {
        let span = Span {
            name: "x".into(),
            attributes: (0..attrs).map(|i| kv(&format!("k{i}"), s("v"))).collect(),
            events: (0..200).map(|_| span::Event::default()).collect(),
            links: (0..3).map(|_| span::Link::default()).collect(),
            ..Default::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: (0..1000)
                        .map(|i| kv(&format!("r{i}"), s(&"x".repeat(1024))))
                        .collect(),
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![span; spans],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn counts_are_cut_to_the_first_items_and_said() {
        let l = Limits {
            max_spans_per_request: 5,
            ..Limits::default()
        };
        let mut r = request(8, 130);
        let a = traces(&mut r, &l);
        let spans = &r.resource_spans[0].scope_spans[0].spans;
        assert_eq!(spans.len(), 5);
        assert_eq!(a.excess_items, 3);
        assert_eq!(spans[0].attributes.len(), 128);
        assert_eq!(spans[0].attributes[127].key, "k127");
        assert_eq!(spans[0].dropped_attributes_count, 2);
        assert_eq!(spans[0].events.len(), 128);
        assert_eq!(spans[0].dropped_events_count, 72);
        assert_eq!(spans[0].links.len(), 3);
        let res = r.resource_spans[0].resource.as_ref().unwrap();
        assert_eq!(res.attributes.len(), 128);
        assert_eq!(res.dropped_attributes_count, 872);
        assert!(a.truncated.contains(&("attributes", 872 + 5 * 2)));
        assert!(a.message().contains("events"), "{}", a.message());
        // The row bound counts the resource once per span, after the cut.
        assert!(a.row_bytes >= 5 * res.encoded_len());
        assert!(a.row_bytes < 6 * (res.encoded_len() + spans[0].encoded_len()) + 200);
    }

    #[test]
    fn values_are_cut_in_length_and_depth() {
        let l = Limits {
            max_attribute_value_length: 4,
            max_array_length: 2,
            max_value_depth: 2,
            max_attribute_key_length: 3,
            ..Limits::default()
        };
        let mut nested = AnyValue {
            value: Some(s("deep")),
        };
        for _ in 0..5 {
            nested = AnyValue {
                value: Some(Value::ArrayValue(ArrayValue {
                    values: vec![nested.clone(), nested],
                })),
            };
        }
        let mut attrs = vec![
            kv("a", s("héllo")),
            kv("long-key", s("v")),
            kv("b", Value::BytesValue(vec![1; 10])),
            kv(
                "c",
                Value::ArrayValue(ArrayValue {
                    values: vec![
                        AnyValue {
                            value: Some(s("1"))
                        };
                        5
                    ],
                }),
            ),
            kv("d", nested.value.clone().unwrap()),
            kv(
                "e",
                Value::KvlistValue(KeyValueList {
                    values: vec![kv("toolong", s("x")), kv("ok", s("y"))],
                }),
            ),
        ];
        let mut a = Applied::default();
        let dropped = attributes(&mut attrs, 128, &l, &mut a);
        assert_eq!(dropped, 1, "the long key is dropped");
        let get = |k: &str| attrs.iter().find(|kv| kv.key == k).unwrap().value.clone();
        // "hé" is 3 bytes, "hél" would cut the é: kept at a character boundary.
        assert_eq!(get("a").unwrap().value, Some(s("hél")));
        assert_eq!(get("b").unwrap().value, Some(Value::BytesValue(vec![1; 4])));
        let Some(Value::ArrayValue(c)) = get("c").unwrap().value else {
            panic!()
        };
        assert_eq!(c.values.len(), 2);
        let Some(Value::ArrayValue(d)) = get("d").unwrap().value else {
            panic!()
        };
        // Depth 1 is the attribute's value, depth 2 its elements: their arrays are emptied.
        for inner in &d.values {
            let Some(Value::ArrayValue(x)) = &inner.value else {
                panic!()
            };
            assert!(x.values.is_empty());
        }
        let Some(Value::KvlistValue(e)) = get("e").unwrap().value else {
            panic!()
        };
        assert_eq!(e.values.len(), 1);
        for what in [
            "attribute_key_length",
            "attribute_value_length",
            "array_length",
            "value_depth",
        ] {
            assert!(a.truncated.iter().any(|(w, _)| *w == what), "{what}");
        }
    }

    #[test]
    fn a_request_within_limits_is_untouched() {
        let mut r = request(3, 10);
        for rs in &mut r.resource_spans {
            rs.resource.as_mut().unwrap().attributes.truncate(20);
            for ss in &mut rs.scope_spans {
                for sp in &mut ss.spans {
                    sp.events.truncate(10);
                }
            }
        }
        let before = r.clone();
        let a = traces(&mut r, &Limits::default());
        assert_eq!(r, before);
        assert!(a.truncated.is_empty());
        assert_eq!(a.excess_items, 0);
        assert_eq!(a.message(), "");
    }
}
