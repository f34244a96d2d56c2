//! Parked spans as the parking journal records them (`ingest/journal`): one OTLP request, the
//! spans exactly as received.

use super::{Origin, ParkedSpan, ResourcePart};
use std::sync::Arc;

/// Parked spans as one `ExportTraceServiceRequest`, exactly as they were received (the parking
/// journal is encrypted, so nothing is redacted yet): consecutive spans of one resource share one
/// `ResourceSpans`, of one scope one `ScopeSpans`.
pub fn journal_request<'a>(spans: impl IntoIterator<Item = &'a ParkedSpan>) -> Vec<u8> {
    use prost::encoding::{WireType, encode_key, encode_varint, message, string};
    fn put(buf: &mut Vec<u8>, field: u32, bytes: &[u8]) {
        encode_key(field, WireType::LengthDelimited, buf);
        encode_varint(bytes.len() as u64, buf);
        buf.extend_from_slice(bytes);
    }
    fn close_scope(rs: &mut Vec<u8>, ss: &mut Vec<u8>, origin: &Origin) {
        if !origin.scope_schema.is_empty() {
            string::encode(3, &origin.scope_schema, ss);
        }
        put(rs, 2, ss);
        ss.clear();
    }
    fn close_resource(out: &mut Vec<u8>, rs: &mut Vec<u8>, res: &ResourcePart) {
        if !res.schema_url.is_empty() {
            string::encode(3, &res.schema_url, rs);
        }
        put(out, 1, rs);
        rs.clear();
    }
    let mut out = Vec::new();
    let (mut rs, mut ss) = (Vec::new(), Vec::new());
    let mut open: Option<&Arc<Origin>> = None;
    for p in spans {
        let same_res = open.is_some_and(|o| Arc::ptr_eq(&o.res, &p.origin.res));
        let same_scope = open.is_some_and(|o| Arc::ptr_eq(o, &p.origin));
        if let Some(o) = open
            && !same_scope
        {
            close_scope(&mut rs, &mut ss, o);
            if !same_res {
                close_resource(&mut out, &mut rs, &o.res);
            }
        }
        if !same_res && let Some(r) = &p.origin.res.resource {
            message::encode(1, r, &mut rs);
        }
        if !same_scope && let Some(scope) = &p.origin.scope {
            message::encode(1, scope, &mut ss);
        }
        put(&mut ss, 2, &p.bytes);
        open = Some(&p.origin);
    }
    if let Some(o) = open {
        close_scope(&mut rs, &mut ss, o);
        close_resource(&mut out, &mut rs, &o.res);
    }
    out
}
