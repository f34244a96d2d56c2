//! From an export's received bytes to a decoded request within the limits, in the blocking pool:
//! decompression, the cost scan, decoding and the per-item limits are CPU work on hostile input
//! and must not stall the async workers that serve every other connection. Every buffer is
//! charged to the export's reservation before it is allocated.

use super::admission::{Refused, Reservation};
use super::limits::{Applied, Limits};
use super::{Export, IngestError, scan};
use std::io::Read;

/// How the body is encoded (OTLP/HTTP chooses by Content-Type; gRPC is always protobuf).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Protobuf,
    Json,
}

/// How the body is compressed (Content-Encoding, grpc-encoding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    /// zlib-wrapped, as HTTP's "deflate" is (RFC 9110).
    Deflate,
    Zstd,
}

/// A request ready for ingest, with what the limits cut and the bytes it holds.
pub struct Decoded<T> {
    pub request: T,
    pub applied: Applied,
    /// Set when the request carried bytes but no items this receiver understands.
    pub unread: Option<String>,
    pub reservation: Reservation,
}

/// Decompression reads this much at a time, charging each piece before it is kept.
const CHUNK: usize = 64 * 1024;

/// The largest zstd window accepted (2^23 = 8 MiB).
const ZSTD_WINDOW_LOG: u32 = 23;

pub fn refused(r: Refused, what: &str, per_sender: usize) -> IngestError {
    match r {
        Refused::Full => IngestError::Unavailable {
            message: "changetrail holds as many export bytes as it allows; retry shortly".into(),
            retry_after: std::time::Duration::from_secs(1),
        },
        Refused::Share => IngestError::Unavailable {
            message: "this ingest token holds its share of the receiver; retry shortly".into(),
            retry_after: std::time::Duration::from_secs(1),
        },
        Refused::TooLarge => IngestError::TooLarge(format!(
            "{what} needs more than the {per_sender} bytes one ingest token may hold at once \
             ([otlp] max_inflight_bytes_per_token); send fewer or smaller items per request"
        )),
    }
}

fn decompress(
    raw: Vec<u8>,
    c: Compression,
    limit: usize,
    res: &mut Reservation,
    per_sender: usize,
) -> Result<Vec<u8>, IngestError> {
    let name = match c {
        Compression::None => return Ok(raw),
        Compression::Gzip => "gzip",
        Compression::Deflate => "deflate",
        Compression::Zstd => "zstd",
    };
    let mut reader: Box<dyn Read + '_> = match c {
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(&raw[..])),
        Compression::Deflate => Box::new(flate2::read::ZlibDecoder::new(&raw[..])),
        _ => {
            let mut d = zstd::stream::read::Decoder::new(&raw[..])
                .map_err(|e| IngestError::InvalidArgument(format!("zstd: {e}")))?;
            // A frame may ask for a window of up to 2 GiB; 8 MiB covers the levels clients use
            // by default and bounds the decoder's own buffer.
            d.window_log_max(ZSTD_WINDOW_LOG)
                .map_err(|e| IngestError::InvalidArgument(format!("zstd: {e}")))?;
            Box::new(d)
        }
    };
    let mut out = Vec::new();
    // The read buffer and the decoder's own state (its window) are held too.
    let window = if c == Compression::Zstd {
        1 << ZSTD_WINDOW_LOG
    } else {
        64 << 10
    };
    res.grow(CHUNK + window)
        .map_err(|r| refused(r, "decompression", per_sender))?;
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let n = reader.read(&mut chunk).map_err(|e| {
            IngestError::InvalidArgument(format!("the {name} body is corrupt: {e}"))
        })?;
        if n == 0 {
            return Ok(out);
        }
        if out.len() + n > limit {
            return Err(IngestError::TooLarge(format!(
                "the request exceeds the {limit}-byte limit after {name} decompression"
            )));
        }
        let need = out.len() + n;
        if need > out.capacity() {
            // Grown by doubling, as Vec would, but held before it is allocated.
            let cap = need.max(out.capacity() * 2).min(limit);
            res.grow(cap - out.capacity())
                .map_err(|r| refused(r, "the decompressed request", per_sender))?;
            out.reserve_exact(cap - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

/// Decompresses, scans, decodes and limits one export. Runs in the blocking pool. `reservation`
/// already holds the received bytes (`raw`).
pub fn decode<T: Export>(
    raw: Vec<u8>,
    compression: Compression,
    format: Format,
    limit: usize,
    limits: &Limits,
    mut reservation: Reservation,
    per_sender: usize,
) -> Result<Decoded<T>, IngestError> {
    // Everything held so far is the received and decompressed bytes: given back once decoded.
    let body = decompress(raw, compression, limit, &mut reservation, per_sender)?;
    let bad = |e: String| {
        // Decoder messages may quote the input (a whole string value): a short prefix only.
        let e: String = e.chars().take(256).collect();
        IngestError::InvalidArgument(format!(
            "the request is not a valid OTLP {} message: {e}",
            match format {
                Format::Json => "JSON",
                Format::Protobuf => "protobuf",
            }
        ))
    };
    let (cost, misspelled) = match format {
        _ if body.is_empty() => (0, None),
        Format::Protobuf => (
            scan::protobuf(&body, T::LOGS)
                .map_err(|e| bad(e.0))?
                .decoded_bytes,
            None,
        ),
        Format::Json => {
            let (c, m) = scan::json(&body).map_err(|e| bad(e.to_string()))?;
            (c.decoded_bytes, m)
        }
    };
    let buffers = reservation.bytes();
    reservation
        .grow(cost)
        .map_err(|r| refused(r, "the decoded request", per_sender))?;
    let mut request = match format {
        _ if body.is_empty() => T::default(),
        Format::Protobuf => T::decode(body.as_slice()).map_err(|e| bad(e.to_string()))?,
        Format::Json => serde_json::from_slice::<T>(&body).map_err(|e| bad(e.to_string()))?,
    };
    let unread = if request.item_count() > 0 {
        None
    } else {
        match format {
            Format::Protobuf => request.unread_protobuf(body.len()),
            Format::Json => misspelled.map(|k| {
                format!(
                    "the request holds no {}, but has the key {k:?}: OTLP/JSON keys are lowerCamelCase (e.g. resourceSpans, scopeSpans, traceId)",
                    T::ITEMS
                )
            }),
        }
    };
    // The wire and decompressed bytes are gone once decoded; what the rows will copy is held
    // instead, before a row is built.
    drop(body);
    let applied = request.apply_limits(limits);
    reservation.shrink(buffers);
    reservation
        .grow(applied.row_bytes)
        .map_err(|r| refused(r, "the rows this request would store", per_sender))?;
    Ok(Decoded {
        request,
        applied,
        unread,
        reservation,
    })
}
