//! Links back into the team's tracing UI: a URL template with `{trace_id}` in it
//! (`[links] trace_url`), checked once when the configuration loads and filled per trace.
//!
//! The template comes from an operator, the trace id from a sender: only a trace id that is
//! exactly 32 lowercase hex digits (what the ledger stores) is ever put into a URL, so nothing a
//! sender writes can change where a link points.

/// What replaces a trace id in the template.
pub const TRACE_ID: &str = "{trace_id}";

/// A checked `trace_url` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceUrl(String);

impl TraceUrl {
    /// Checks a template: an absolute `http` or `https` URL naming `{trace_id}` at least once,
    /// with no other `{…}` placeholder and nothing a browser or a log would read differently
    /// (spaces, quotes, angle brackets, control characters).
    pub fn parse(template: &str) -> Result<TraceUrl, String> {
        let rest = template
            .strip_prefix("https://")
            .or_else(|| template.strip_prefix("http://"))
            .ok_or_else(|| {
                format!("{template:?} is not an http:// or https:// URL, e.g. https://jaeger.example/trace/{{trace_id}}")
            })?;
        // The host part: no user info (`https://good@evil/` goes to evil), not empty, ASCII only
        // (no look-alike or right-to-left characters a reader would misread).
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.is_empty() || authority.starts_with(':') {
            return Err(format!("{template:?} names no host"));
        }
        if authority.contains('%') {
            return Err(format!(
                "{template:?} percent-encodes its host, which hides what it names"
            ));
        }
        if authority.contains('@') {
            return Err(format!(
                "{template:?} holds user info before its host; write the host alone"
            ));
        }
        if !template.is_ascii() {
            return Err(format!(
                "{template:?} holds non-ASCII characters; percent-encode them"
            ));
        }
        if let Some(c) = template.chars().find(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '<' | '>' | '\\' | '`')
        }) {
            return Err(format!("{template:?} holds {c:?}, which a URL must not"));
        }
        if !template.contains(TRACE_ID) {
            return Err(format!("{template:?} does not name {TRACE_ID}"));
        }
        if template.replace(TRACE_ID, "").contains(['{', '}']) {
            return Err(format!(
                "{template:?} holds a placeholder other than {TRACE_ID}"
            ));
        }
        Ok(TraceUrl(template.to_owned()))
    }

    /// The link for one trace; `None` unless `trace_id` is 32 hex digits, not all zero (an
    /// invalid id in OTLP). The id goes in lower case, as W3C Trace Context writes it (a
    /// Conductor workflow may state it in upper case).
    pub fn to(&self, trace_id: &str) -> Option<String> {
        let hex = trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit());
        (hex && trace_id.bytes().any(|b| b != b'0'))
            .then(|| self.0.replace(TRACE_ID, &trace_id.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    #[test]
    fn jaeger_and_lightstep_templates_fill_in_the_trace() {
        let j = TraceUrl::parse("http://jaeger.example:16686/trace/{trace_id}").unwrap();
        assert_eq!(
            j.to(ID).unwrap(),
            format!("http://jaeger.example:16686/trace/{ID}")
        );
        let l = TraceUrl::parse(
            "https://app.lightstep.com/acme/trace?trace_handle={trace_id}&selected={trace_id}",
        )
        .unwrap();
        assert_eq!(
            l.to(ID).unwrap(),
            format!("https://app.lightstep.com/acme/trace?trace_handle={ID}&selected={ID}")
        );
    }

    #[test]
    fn a_trace_id_that_is_not_32_hex_digits_gets_no_link() {
        let t = TraceUrl::parse("https://t.example/{trace_id}").unwrap();
        assert_eq!(
            t.to("4BF92F3577B34DA6A3CE929D0E0E4736").unwrap(),
            format!("https://t.example/{ID}"),
            "upper case goes in as lower case"
        );
        for bad in [
            "",
            "4bf92f3577b34da6a3ce929d0e0e473",
            "4bf92f3577b34da6a3ce929d0e0e4736/../x",
            "00000000000000000000000000000000",
            "4bf92f3577b34da6a3ce929d0e0e473g",
        ] {
            assert_eq!(t.to(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn templates_that_could_mislead_are_refused() {
        for bad in [
            "",
            "/trace/{trace_id}",
            "javascript:alert(1)//{trace_id}",
            "ftp://x.example/{trace_id}",
            "https://",
            "https:///{trace_id}",
            "https://x.example/trace",
            "https://x.example/{trace_id}/{span_id}",
            "https://x.example/{trace_id}\"onclick=x",
            "https://x.example/ {trace_id}",
            "https://x.example/<b>{trace_id}",
            "https://x.example/{trace_id}\n",
            "https://good.example@evil.example/{trace_id}",
            "https://?q={trace_id}",
            "https://:443/{trace_id}",
            "https://evil%2eexample/{trace_id}",
            "https://x.example/\u{202e}{trace_id}",
            "https://xn--pple-43d.example/{trace_id}\u{430}",
        ] {
            assert!(TraceUrl::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
