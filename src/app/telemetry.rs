//! Logging: lines on stderr, filtered by `RUST_LOG` or `--log`, human-readable (`text`, the
//! default) or one JSON object per line (`json`, for production log pipelines).
//!
//! Every HTTP request and OTLP export runs inside a `request` span carrying its method, path,
//! trace id (from the caller's W3C `traceparent`, or a fresh one) and, once authenticated, the
//! principal (token id, name, role — never the token). Every event logged while handling it
//! carries those fields too.

use std::io::IsTerminal;
use tracing::field::Empty;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    #[default]
    Text,
    /// One JSON object per line, with the current span's fields.
    Json,
}

/// Installs the global subscriber once; later calls (tests) are ignored.
pub fn init(default_filter: &str) {
    init_with(default_filter, LogFormat::Text);
}

pub fn init_with(default_filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

/// The span one request or export is handled in; the principal fields are filled in by
/// `Principal::record_on_span` once the token is checked.
pub fn request_span<B>(req: &axum::http::Request<B>) -> tracing::Span {
    let trace_id = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(trace_id_of)
        .unwrap_or_else(fresh_trace_id);
    tracing::info_span!(
        "request",
        method = %req.method(),
        // The path only: a query string is the caller's data and may be long.
        path = %req.uri().path(),
        trace_id = %trace_id,
        token_id = Empty,
        principal = Empty,
        role = Empty,
    )
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`); strict, so a malformed
/// header is ignored rather than logged.
pub fn trace_id_of(header: &str) -> Option<String> {
    let parts: Vec<&str> = header.trim().split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    match parts.as_slice() {
        [version, trace, parent, flags]
            if hex(version, 2)
                && *version != "ff"
                && hex(trace, 32)
                && hex(parent, 16)
                && hex(flags, 2)
                && trace.bytes().any(|b| b != b'0')
                && parent.bytes().any(|b| b != b'0') =>
        {
            Some((*trace).to_owned())
        }
        _ => None,
    }
}

fn fresh_trace_id() -> String {
    let mut b = [0u8; 16];
    // Without randomness the line still needs an id; all zeros says "none" honestly.
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_parsed_strictly() {
        let t = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            trace_id_of(t).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(trace_id_of(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_fresh_trace_id_is_32_hex_digits() {
        let a = fresh_trace_id();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, fresh_trace_id());
    }
}
