//! The worst requests the server's limits let through, built once for its configuration: the
//! issue's amplification request, the densest spans per wire byte, the largest evidence rows, and
//! arrays nested to the depth limit.

use crate::app::config::Config;
use crate::ingest::{limits, scan};
use crate::sys::{now_ns, random_bytes};
use anyhow::{Context, bail};
use flate2::{Compress, Compression, Crc, FlushCompress};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::Event;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use prost::bytes::Bytes;
use std::io::Write;

/// One kind of attack request, built for the server's limits.
pub(super) struct Attack {
    pub(super) name: &'static str,
    pub(super) what: String,
    /// Encoded protobuf length (what the server decompresses to).
    pub(super) decoded_len: usize,
    /// The server's own estimate of what it will hold once decoded (`ingest::scan`).
    pub(super) estimate: usize,
    body: AttackBody,
}

enum AttackBody {
    /// The same gzip bytes every time: not evidence, so repeats cost the server the same.
    Fixed(Bytes),
    /// Evidence spans: fresh ids in every request, or the server would find them stored already
    /// and skip writing them.
    Fresh(Spliced),
}

impl Attack {
    pub(super) fn body(&self) -> Bytes {
        match &self.body {
            AttackBody::Fixed(b) => b.clone(),
            AttackBody::Fresh(s) => s.fresh(),
        }
    }

    pub(super) fn wire_len(&self) -> usize {
        match &self.body {
            AttackBody::Fixed(b) => b.len(),
            AttackBody::Fresh(s) => s.wire_len(),
        }
    }

    pub(super) fn all(cfg: &Config) -> anyhow::Result<Vec<Attack>> {
        let l = &cfg.otlp.limits;
        let mut v = vec![fixed(
            "amplification",
            "the issue's request: 1 resource of 1,000 attributes of 1 KB, 6,000 scopes × 2 spans"
                .into(),
            amplification(),
        )?];
        // As many dense spans as the request size allows: refused once scanned, after the
        // server has decompressed and read every byte.
        let dense_max = max_spans_by_size(cfg, |n| dense(n, l));
        v.push(fixed(
            "dense-max",
            format!(
                "{dense_max} spans × ({} empty attributes, {} empty events), max_request_bytes",
                l.max_span_attributes, l.max_events_per_span
            ),
            dense(dense_max, l),
        )?);
        // The same spans, as many as one token's share admits: decoded in full.
        let dense_fit = largest_admitted(cfg, |n| dense(n, l), dense_max);
        v.push(fixed(
            "dense-fit",
            format!("{dense_fit} such spans: the most one token's share admits"),
            dense(dense_fit, l),
        )?);
        let evidence_n = largest_admitted(cfg, |n| evidence(n, l), l.max_spans_per_request);
        v.push(Attack::spliced(
            "evidence",
            format!(
                "{evidence_n} evidence spans × {} attributes of {} bytes, fresh ids",
                l.max_span_attributes, l.max_attribute_value_length
            ),
            evidence(evidence_n, l),
        )?);
        let nested_max = max_spans_by_size(cfg, |n| nested(n, l));
        let nested_n = largest_admitted(cfg, |n| nested(n, l), nested_max);
        v.push(fixed(
            "nested",
            format!(
                "{nested_n} spans × {} arrays nested {} deep (the depth limit), {} values innermost",
                l.max_span_attributes,
                l.max_value_depth.saturating_sub(1),
                l.max_array_length
            ),
            nested(nested_n, l),
        )?);
        Ok(v)
    }

    fn spliced(
        name: &'static str,
        what: String,
        req: ExportTraceServiceRequest,
    ) -> anyhow::Result<Attack> {
        let raw = req.encode_to_vec();
        let estimate = scan::protobuf(&raw, false)
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))?
            .decoded_bytes;
        let ids: Vec<[u8; 16]> = req
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .filter_map(|s| s.trace_id.as_slice().try_into().ok())
            .collect();
        Ok(Attack {
            name,
            what,
            decoded_len: raw.len(),
            estimate,
            body: AttackBody::Fresh(Spliced::new(&raw, &ids)?),
        })
    }
}

fn fixed(
    name: &'static str,
    what: String,
    req: ExportTraceServiceRequest,
) -> anyhow::Result<Attack> {
    let raw = req.encode_to_vec();
    let estimate = scan::protobuf(&raw, false)
        .map_err(|e| anyhow::anyhow!("{name}: {e}"))?
        .decoded_bytes;
    // Built once: the smallest wire for the decoded size.
    let mut e = flate2::write::GzEncoder::new(Vec::new(), Compression::best());
    e.write_all(&raw)?;
    Ok(Attack {
        name,
        what,
        decoded_len: raw.len(),
        estimate,
        body: AttackBody::Fixed(Bytes::from(e.finish()?)),
    })
}

fn kv(k: &str, v: Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn one_resource(resource: Resource, scopes: Vec<ScopeSpans>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource),
            scope_spans: scopes,
            ..Default::default()
        }],
    }
}

fn small_resource() -> Resource {
    Resource {
        attributes: vec![kv("service.name", Value::StringValue("hostile".into()))],
        ..Default::default()
    }
}

fn span(trace: [u8; 16], id: u64, name: &str) -> Span {
    let now = now_ns().max(0) as u64;
    Span {
        trace_id: trace.to_vec(),
        span_id: id.max(1).to_be_bytes().to_vec(),
        name: name.into(),
        kind: 2,
        start_time_unix_nano: now - 1_000_000,
        end_time_unix_nano: now,
        ..Default::default()
    }
}

/// `n` copies of `template` with distinct span ids, in one scope.
fn spans_of(template: Span, n: usize) -> Vec<ScopeSpans> {
    let mut spans = vec![template; n];
    for (i, s) in spans.iter_mut().enumerate() {
        s.span_id = (i as u64 + 1).to_be_bytes().to_vec();
    }
    vec![ScopeSpans {
        spans,
        ..Default::default()
    }]
}

/// The request (item 1): 1.6 MB decoded, 12,000 spans each carrying a copy of a 1 MB
/// resource once stored.
fn amplification() -> ExportTraceServiceRequest {
    let t = random_bytes::<16>();
    let resource = Resource {
        attributes: (0..1000)
            .map(|i| kv(&format!("attr.{i}"), Value::StringValue("a".repeat(1024))))
            .collect(),
        ..Default::default()
    };
    let scopes = (0..6000u64)
        .map(|i| ScopeSpans {
            spans: vec![span(t, 2 * i + 1, "s"), span(t, 2 * i + 2, "s")],
            ..Default::default()
        })
        .collect();
    one_resource(resource, scopes)
}

/// Keys of one or two characters: the shortest distinct attribute names.
fn short_key(i: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let first = CHARS[i % CHARS.len()] as char;
    match i / CHARS.len() {
        0 => first.to_string(),
        k => format!("{first}{}", CHARS[(k - 1) % CHARS.len()] as char),
    }
}

/// The most decoded structure per wire byte the limits let through: spans with as many empty
/// attributes (short keys, no value) and empty events as allowed; an empty event is 2 bytes on
/// the wire and a whole struct decoded.
fn dense(n: usize, l: &limits::Limits) -> ExportTraceServiceRequest {
    let mut s = span(random_bytes(), 1, "d");
    s.attributes = (0..l.max_span_attributes)
        .map(|i| KeyValue {
            key: short_key(i),
            ..Default::default()
        })
        .collect();
    s.events = vec![Event::default(); l.max_events_per_span];
    one_resource(small_resource(), spans_of(s, n))
}

/// Evidence spans (they carry `changetrail.change.id`, so they are stored) with every attribute
/// the limits allow at the longest value allowed: the largest rows a request can make.
fn evidence(n: usize, l: &limits::Limits) -> ExportTraceServiceRequest {
    let spans = (0..n)
        .map(|i| {
            let mut s = span(random_bytes(), i as u64 + 1, "hostile evidence");
            s.attributes.push(kv(
                "changetrail.change.id",
                Value::StringValue(format!("CHG-HOSTILE-{i}")),
            ));
            let value = "x".repeat(l.max_attribute_value_length);
            for j in 1..l.max_span_attributes {
                s.attributes.push(kv(
                    &format!("hostile.{j}"),
                    Value::StringValue(value.clone()),
                ));
            }
            s
        })
        .collect();
    one_resource(
        small_resource(),
        vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
    )
}

/// Spans whose every attribute is an array nested to the depth limit (an attribute's value is
/// depth 1; an array at the limit would be emptied), the innermost holding as many empty values
/// as an array may.
fn nested(n: usize, l: &limits::Limits) -> ExportTraceServiceRequest {
    let mut v = Value::ArrayValue(ArrayValue {
        values: vec![AnyValue::default(); l.max_array_length],
    });
    for _ in 2..l.max_value_depth {
        v = Value::ArrayValue(ArrayValue {
            values: vec![AnyValue { value: Some(v) }],
        });
    }
    let mut s = span(random_bytes(), 1, "n");
    s.attributes = (0..l.max_span_attributes)
        .map(|i| kv(&short_key(i), v.clone()))
        .collect();
    one_resource(small_resource(), spans_of(s, n))
}

/// Size, decoded estimate and row bytes of a request, as the server will charge them.
#[derive(Clone, Copy)]
struct Charge {
    len: usize,
    estimate: usize,
    rows: usize,
}

fn charge(req: &ExportTraceServiceRequest, l: &limits::Limits) -> Charge {
    let raw = req.encode_to_vec();
    Charge {
        len: raw.len(),
        estimate: scan::protobuf(&raw, false).map_or(usize::MAX, |c| c.decoded_bytes),
        rows: limits::traces(&mut req.clone(), l).row_bytes,
    }
}

/// What one more span adds: the requests are built of identical spans, so every charge is
/// linear in their number; measured on one and two spans rather than building big requests.
fn per_span(
    l: &limits::Limits,
    build: &impl Fn(usize) -> ExportTraceServiceRequest,
) -> (Charge, Charge) {
    let one = charge(&build(1), l);
    let two = charge(&build(2), l);
    let step = Charge {
        len: two.len.saturating_sub(one.len),
        estimate: two.estimate.saturating_sub(one.estimate),
        rows: two.rows.saturating_sub(one.rows),
    };
    (one, step)
}

fn predicted(one: Charge, step: Charge, n: usize) -> Charge {
    let k = n.saturating_sub(1);
    Charge {
        len: one.len + k * step.len,
        estimate: one.estimate.saturating_add(k.saturating_mul(step.estimate)),
        rows: one.rows.saturating_add(k.saturating_mul(step.rows)),
    }
}

/// The most spans that fit `max_request_bytes` (and the per-request span limit).
fn max_spans_by_size(cfg: &Config, build: impl Fn(usize) -> ExportTraceServiceRequest) -> usize {
    let l = &cfg.otlp.limits;
    let (one, step) = per_span(l, &build);
    let room = cfg.otlp.max_request_bytes.saturating_sub(one.len);
    (1 + room / step.len.max(1))
        .min(l.max_spans_per_request)
        .max(1)
}

/// Whether the server admits a request of this charge from a token holding nothing else: the
/// received and decompressed buffers beside the decoded estimate, then the estimate beside
/// the rows (`ingest::decode`), with room for the compressed body.
fn admitted(c: Charge, cfg: &Config) -> bool {
    let share = cfg.otlp.max_inflight_bytes_per_token;
    let limit = cfg.otlp.max_request_bytes;
    let wire = c.len / 16 + (64 << 10);
    let buffers = wire + c.len.next_power_of_two().min(limit);
    c.len <= limit
        && buffers.saturating_add(c.estimate) <= share
        && c.estimate.saturating_add(c.rows) <= share
}

/// The most spans (up to `max`) of which a request is still admitted, so it is decoded in full.
fn largest_admitted(
    cfg: &Config,
    build: impl Fn(usize) -> ExportTraceServiceRequest,
    max: usize,
) -> usize {
    let l = &cfg.otlp.limits;
    let (one, step) = per_span(l, &build);
    let (mut lo, mut hi) = (1usize, max.max(1));
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if admitted(predicted(one, step, mid), cfg) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// A gzip body whose span ids are fresh in every request without compressing megabytes each
/// time: the constant stretches between the ids are deflated once, each ending on a full flush
/// (byte-aligned, no back-references across it), and only the ids are deflated per request;
/// the CRC is combined from the stretches' CRCs.
struct Spliced {
    pieces: Vec<Piece>,
}

enum Piece {
    Constant {
        deflated: Vec<u8>,
        crc: Crc,
    },
    /// A span's `trace_id` and `span_id` fields: 16 bytes, the span_id key and length, 8 bytes.
    Ids,
}

const IDS_LEN: usize = 16 + 2 + 8;
const SPAN_ID_KEY: [u8; 2] = [0x12, 0x08];
/// A gzip member header: deflate, no name, no time, unknown OS.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
/// An empty final block with fixed codes: BFINAL=1, BTYPE=01, end-of-block.
const FINAL_BLOCK: [u8; 2] = [0x03, 0x00];

impl Spliced {
    /// `raw` is the encoded request; `traces` the trace ids of its spans, in order, each
    /// directly followed by its span id (prost writes fields in number order).
    fn new(raw: &[u8], traces: &[[u8; 16]]) -> anyhow::Result<Spliced> {
        let mut pieces = Vec::new();
        let mut at = 0;
        for t in traces {
            let found = raw[at..]
                .windows(16)
                .position(|w| w == t)
                .map(|p| at + p)
                .context("a trace id is not in the encoded request")?;
            if raw.get(found + 16..found + 18) != Some(&SPAN_ID_KEY[..]) {
                bail!("a span id does not follow its trace id in the encoded request");
            }
            pieces.push(constant(&raw[at..found])?);
            pieces.push(Piece::Ids);
            at = found + IDS_LEN;
        }
        pieces.push(constant(&raw[at..])?);
        Ok(Spliced { pieces })
    }

    fn wire_len(&self) -> usize {
        let ids = 40; // a deflated 26-byte piece of random ids, about
        GZIP_HEADER.len()
            + FINAL_BLOCK.len()
            + 8
            + self
                .pieces
                .iter()
                .map(|p| match p {
                    Piece::Constant { deflated, .. } => deflated.len(),
                    Piece::Ids => ids,
                })
                .sum::<usize>()
    }

    fn fresh(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.wire_len() + 64);
        out.extend_from_slice(&GZIP_HEADER);
        let mut crc = Crc::new();
        for p in &self.pieces {
            match p {
                Piece::Constant { deflated, crc: c } => {
                    out.extend_from_slice(deflated);
                    crc.combine(c);
                }
                Piece::Ids => {
                    let mut ids = [0u8; IDS_LEN];
                    ids[..16].copy_from_slice(&random_bytes::<16>());
                    ids[16..18].copy_from_slice(&SPAN_ID_KEY);
                    ids[18..].copy_from_slice(&random_bytes::<8>());
                    crc.update(&ids);
                    out.extend_from_slice(&deflate_flushed(&ids));
                }
            }
        }
        out.extend_from_slice(&FINAL_BLOCK);
        out.extend_from_slice(&crc.sum().to_le_bytes());
        out.extend_from_slice(&crc.amount().to_le_bytes());
        Bytes::from(out)
    }
}

fn constant(data: &[u8]) -> anyhow::Result<Piece> {
    let mut crc = Crc::new();
    crc.update(data);
    Ok(Piece::Constant {
        deflated: deflate_flushed(data),
        crc,
    })
}

/// Raw deflate of `data` ending on a full flush: complete blocks, none final, byte-aligned.
fn deflate_flushed(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() / 4 + 64);
    loop {
        let done = c.total_in() as usize;
        // Compression errors only come from misuse of the stream; the input is plain bytes.
        if c.compress_vec(&data[done..], &mut out, FlushCompress::Full)
            .is_err()
        {
            break;
        }
        // Flushed once the input is consumed and the output did not fill the buffer.
        if c.total_in() as usize == data.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity().max(64));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_spliced_body_is_valid_gzip_with_fresh_ids() {
        let l = limits::Limits {
            max_attribute_value_length: 64,
            max_span_attributes: 4,
            ..Default::default()
        };
        let req = evidence(3, &l);
        let raw = req.encode_to_vec();
        let traces: Vec<[u8; 16]> = req.resource_spans[0].scope_spans[0]
            .spans
            .iter()
            .map(|s| s.trace_id.as_slice().try_into().unwrap())
            .collect();
        let s = Spliced::new(&raw, &traces).unwrap();
        let (a, b) = (s.fresh(), s.fresh());
        let unzip = |gz: &[u8]| {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(gz)
                .read_to_end(&mut out)
                .unwrap();
            ExportTraceServiceRequest::decode(out.as_slice()).unwrap()
        };
        let (a, b) = (unzip(&a), unzip(&b));
        let spans =
            |r: &ExportTraceServiceRequest| r.resource_spans[0].scope_spans[0].spans.clone();
        assert_eq!(spans(&a).len(), 3);
        for (x, y) in spans(&a).iter().zip(spans(&b).iter()) {
            assert_ne!(x.trace_id, y.trace_id);
            assert_ne!(x.span_id, y.span_id);
            assert_eq!(x.attributes, y.attributes);
        }
        // Apart from the ids, the request is the one encoded.
        let mut same = a.clone();
        for (s, orig) in same.resource_spans[0].scope_spans[0]
            .spans
            .iter_mut()
            .zip(spans(&req))
        {
            s.trace_id = orig.trace_id.clone();
            s.span_id = orig.span_id.clone();
        }
        assert_eq!(same, req);
    }

    #[test]
    fn attack_requests_are_sized_to_the_limits() {
        let cfg = Config::defaults();
        let l = &cfg.otlp.limits;
        let max = max_spans_by_size(&cfg, |n| dense(n, l));
        let c = charge(&dense(max, l), l);
        assert!(c.len <= cfg.otlp.max_request_bytes);
        assert!(max == l.max_spans_per_request || c.len + 2000 > cfg.otlp.max_request_bytes);
        let fit = largest_admitted(&cfg, |n| dense(n, l), max);
        assert!(admitted(charge(&dense(fit, l), l), &cfg));
        assert!(!admitted(charge(&dense(fit + 1, l), l), &cfg));
        let n = largest_admitted(&cfg, |n| evidence(n, l), l.max_spans_per_request);
        assert!(n >= 1);
        assert!(admitted(charge(&evidence(n, l), l), &cfg));
    }
}
