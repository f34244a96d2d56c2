//! Parked spans as the parking journal records them (`ingest/journal`): one OTLP request, the
//! spans exactly as received.

use super::{Origin, ParkedSpan};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, message, string};
use std::ops::Range;
use std::sync::Arc;

/// Parked spans as one `ExportTraceServiceRequest`, exactly as they were received (the parking
/// journal is encrypted, so nothing is redacted yet): consecutive spans of one resource share one
/// `ResourceSpans`, of one scope one `ScopeSpans`.
pub fn journal_request<'a>(spans: impl IntoIterator<Item = &'a ParkedSpan>) -> Vec<u8> {
    let plan = JournalRequest::of(spans.into_iter().collect());
    let mut out = Vec::with_capacity(plan.encoded_len());
    plan.write(&mut out);
    out
}

/// A length-delimited field of `n` bytes, with its key (fields 1 to 3: one byte).
fn field(n: usize) -> usize {
    1 + encoded_len_varint(n as u64) + n
}

fn put(buf: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(bytes.len() as u64, buf);
    buf.extend_from_slice(bytes);
}

/// The request's shape, measured before it is written: every nested length is known up front,
/// so the request is written once into a buffer of its exact size (no nested buffers copied
/// into their parents).
pub struct JournalRequest<'a> {
    spans: Vec<&'a ParkedSpan>,
    /// Consecutive spans of one scope: their range and the `ScopeSpans` message's length.
    scopes: Vec<(Range<usize>, usize)>,
    /// Consecutive scopes of one resource: their range in `scopes` and the `ResourceSpans`
    /// message's length.
    resources: Vec<(Range<usize>, usize)>,
}

impl<'a> JournalRequest<'a> {
    pub fn of(spans: Vec<&'a ParkedSpan>) -> JournalRequest<'a> {
        let mut scopes: Vec<(Range<usize>, usize)> = Vec::new();
        for (i, p) in spans.iter().enumerate() {
            match scopes.last_mut() {
                Some((r, _)) if Arc::ptr_eq(&spans[r.start].origin, &p.origin) => r.end = i + 1,
                _ => scopes.push((i..i + 1, 0)),
            }
        }
        for (r, len) in &mut scopes {
            let o: &Origin = &spans[r.start].origin;
            *len = o.scope.as_ref().map_or(0, |s| field(s.encoded_len()))
                + spans[r.clone()]
                    .iter()
                    .map(|p| field(p.bytes.len()))
                    .sum::<usize>()
                + schema(&o.scope_schema);
        }
        let mut resources: Vec<(Range<usize>, usize)> = Vec::new();
        for (k, (r, _)) in scopes.iter().enumerate() {
            let res = &spans[r.start].origin.res;
            match resources.last_mut() {
                Some((rs, _)) if Arc::ptr_eq(&spans[scopes[rs.start].0.start].origin.res, res) => {
                    rs.end = k + 1
                }
                _ => resources.push((k..k + 1, 0)),
            }
        }
        for (rs, len) in &mut resources {
            let res = &spans[scopes[rs.start].0.start].origin.res;
            *len = res.resource.as_ref().map_or(0, |r| field(r.encoded_len()))
                + scopes[rs.clone()]
                    .iter()
                    .map(|(_, l)| field(*l))
                    .sum::<usize>()
                + schema(&res.schema_url);
        }
        JournalRequest {
            spans,
            scopes,
            resources,
        }
    }

    /// The request's encoded length.
    pub fn encoded_len(&self) -> usize {
        self.resources.iter().map(|(_, l)| field(*l)).sum()
    }

    /// Appends the request to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        for (rs, len) in &self.resources {
            let res = &self.spans[self.scopes[rs.start].0.start].origin.res;
            encode_key(1, WireType::LengthDelimited, out);
            encode_varint(*len as u64, out);
            if let Some(r) = &res.resource {
                message::encode(1, r, out);
            }
            for (r, len) in &self.scopes[rs.clone()] {
                let o: &Origin = &self.spans[r.start].origin;
                encode_key(2, WireType::LengthDelimited, out);
                encode_varint(*len as u64, out);
                if let Some(scope) = &o.scope {
                    message::encode(1, scope, out);
                }
                for p in &self.spans[r.clone()] {
                    put(out, 2, &p.bytes);
                }
                if !o.scope_schema.is_empty() {
                    string::encode(3, &o.scope_schema, out);
                }
            }
            if !res.schema_url.is_empty() {
                string::encode(3, &res.schema_url, out);
            }
        }
    }
}

/// Field 3 (a schema URL) when it is set.
fn schema(url: &str) -> usize {
    if url.is_empty() { 0 } else { field(url.len()) }
}
