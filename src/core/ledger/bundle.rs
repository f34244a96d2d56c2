//! The offline evidence bundle (FORMAT.md "Bundles"): JSON Lines, one object per line.
//!
//! Writing produces ASCII-only compact JSON (non-ASCII escaped), so a bundle survives any
//! transport that mangles encodings. Reading is strict: unknown fields, missing fields and fields
//! that belong to another line type are errors.

use super::hash::{Hash, b64};
use serde::Deserialize;
use std::borrow::Cow;
use std::fmt::Write as _;

pub const FORMAT: &str = "changetrail-bundle/v1";

/// One parsed bundle line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line<'a> {
    Header {
        format: Cow<'a, str>,
        origin: Cow<'a, str>,
        created_at: Cow<'a, str>,
    },
    Key {
        vkey: Cow<'a, str>,
        from_seq: u64,
        to_seq: Option<u64>,
    },
    Prefix {
        size: u64,
        peaks: Vec<Cow<'a, str>>,
    },
    Entry(EntryLine<'a>),
    Checkpoint {
        note: Cow<'a, str>,
    },
    Consistency {
        from: u64,
        to: u64,
        proof: Vec<Cow<'a, str>>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryLine<'a> {
    pub seq: u64,
    pub entry: Cow<'a, str>,
    pub sig: Cow<'a, str>,
    pub salt: Option<Cow<'a, str>>,
    pub payload: Option<Cow<'a, str>>,
}

/// Every field any line may carry; which ones a line must carry depends on its type.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLine<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    format: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    origin: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    created_at: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    vkey: Option<Cow<'a, str>>,
    #[serde(default)]
    from_seq: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    to_seq: Option<Option<u64>>,
    #[serde(default)]
    size: Option<u64>,
    #[serde(borrow, default)]
    peaks: Option<Vec<Cow<'a, str>>>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(borrow, default)]
    entry: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    sig: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "present")]
    salt: Option<Option<Cow<'a, str>>>,
    #[serde(borrow, default, deserialize_with = "present")]
    payload: Option<Option<Cow<'a, str>>>,
    #[serde(borrow, default)]
    note: Option<Cow<'a, str>>,
    #[serde(default)]
    from: Option<u64>,
    #[serde(default)]
    to: Option<u64>,
    #[serde(borrow, default)]
    proof: Option<Vec<Cow<'a, str>>>,
}

/// Distinguishes a field that is present with `null` (Some(None)) from an absent one (None).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LineError {
    #[error(
        "line is not in canonical form (field order, escapes or whitespace differ from what the exporter writes)"
    )]
    NotCanonical,
    #[error("line is not valid JSON for a bundle line: {0}")]
    Json(String),
    #[error("unknown line type {0:?}")]
    UnknownType(String),
    #[error("{kind} line: {problem}")]
    Shape { kind: &'static str, problem: String },
}

impl<'a> Line<'a> {
    /// Parses one line, accepting only its canonical text.
    pub fn parse(text: &'a str) -> Result<Line<'a>, LineError> {
        // Nearly every line of a bundle is an entry: those are read straight from their canonical
        // spelling, without a JSON parse and a re-serialisation to compare. Anything the reader
        // does not take goes the general way, which decides (and words) the error.
        match canonical::entry(text) {
            Some(e) => Ok(Line::Entry(e)),
            None => Line::parse_general(text),
        }
    }

    /// Parses any line type as JSON, then refuses it unless `to_text` gives back `text` exactly.
    fn parse_general(text: &'a str) -> Result<Line<'a>, LineError> {
        let raw: RawLine<'a> =
            serde_json::from_str(text).map_err(|e| LineError::Json(e.to_string()))?;
        // Which fields each type owns; anything else present is an error.
        let present = [
            ("format", raw.format.is_some()),
            ("origin", raw.origin.is_some()),
            ("created_at", raw.created_at.is_some()),
            ("vkey", raw.vkey.is_some()),
            ("from_seq", raw.from_seq.is_some()),
            ("to_seq", raw.to_seq.is_some()),
            ("size", raw.size.is_some()),
            ("peaks", raw.peaks.is_some()),
            ("seq", raw.seq.is_some()),
            ("entry", raw.entry.is_some()),
            ("sig", raw.sig.is_some()),
            ("salt", raw.salt.is_some()),
            ("payload", raw.payload.is_some()),
            ("note", raw.note.is_some()),
            ("from", raw.from.is_some()),
            ("to", raw.to.is_some()),
            ("proof", raw.proof.is_some()),
        ];
        let (kind, owned): (&'static str, &[&str]) = match raw.kind.as_ref() {
            "bundle" => ("bundle", &["format", "origin", "created_at"]),
            "key" => ("key", &["vkey", "from_seq", "to_seq"]),
            "prefix" => ("prefix", &["size", "peaks"]),
            "entry" => ("entry", &["seq", "entry", "sig", "salt", "payload"]),
            "checkpoint" => ("checkpoint", &["note"]),
            "consistency" => ("consistency", &["from", "to", "proof"]),
            other => return Err(LineError::UnknownType(other.chars().take(40).collect())),
        };
        for (name, is_present) in present {
            let belongs = owned.contains(&name);
            if belongs != is_present {
                let problem = if is_present {
                    format!("unexpected field {name:?}")
                } else {
                    format!("missing field {name:?}")
                };
                return Err(LineError::Shape { kind, problem });
            }
        }
        // Presence was checked above, so the unwrap_or_defaults below never apply.
        let line = match kind {
            "bundle" => Line::Header {
                format: raw.format.unwrap_or_default(),
                origin: raw.origin.unwrap_or_default(),
                created_at: raw.created_at.unwrap_or_default(),
            },
            "key" => Line::Key {
                vkey: raw.vkey.unwrap_or_default(),
                from_seq: raw.from_seq.unwrap_or_default(),
                to_seq: raw.to_seq.flatten(),
            },
            "prefix" => Line::Prefix {
                size: raw.size.unwrap_or_default(),
                peaks: raw.peaks.unwrap_or_default(),
            },
            "entry" => Line::Entry(EntryLine {
                seq: raw.seq.unwrap_or_default(),
                entry: raw.entry.unwrap_or_default(),
                sig: raw.sig.unwrap_or_default(),
                salt: raw.salt.flatten(),
                payload: raw.payload.flatten(),
            }),
            "checkpoint" => Line::Checkpoint {
                note: raw.note.unwrap_or_default(),
            },
            _ => Line::Consistency {
                from: raw.from.unwrap_or_default(),
                to: raw.to.unwrap_or_default(),
                proof: raw.proof.unwrap_or_default(),
            },
        };
        // Only the canonical spelling is accepted, so no edit of a line's bytes (a different
        // escape, whitespace) can leave its meaning unchanged.
        if line.to_text() != text {
            return Err(LineError::NotCanonical);
        }
        Ok(line)
    }
}

/// Reads the canonical text of an entry line directly.
///
/// Every token is matched against the one spelling `to_text` writes (`push_json_str` for
/// strings, `{}` for numbers, fields in their order), so whatever it accepts is text `to_text`
/// gives back byte for byte and JSON that the general path parses to the same line: the two
/// paths accept the same lines (the differential test below holds them to it). It returns `None`
/// for anything else; the general path then refuses the line with the precise reason.
mod canonical {
    use super::EntryLine;
    use std::borrow::Cow;

    pub(super) fn entry(text: &str) -> Option<EntryLine<'_>> {
        let mut r = Reader { text, pos: 0 };
        r.literal("{\"type\":\"entry\",\"seq\":")?;
        let seq = r.number()?;
        r.literal(",\"entry\":")?;
        let entry = r.string()?;
        r.literal(",\"sig\":")?;
        let sig = r.string()?;
        r.literal(",\"salt\":")?;
        let salt = r.nullable()?;
        r.literal(",\"payload\":")?;
        let payload = r.nullable()?;
        r.literal("}")?;
        (r.pos == text.len()).then_some(EntryLine {
            seq,
            entry,
            sig,
            salt,
            payload,
        })
    }

    struct Reader<'a> {
        text: &'a str,
        pos: usize,
    }

    impl<'a> Reader<'a> {
        fn rest(&self) -> &'a [u8] {
            &self.text.as_bytes()[self.pos..]
        }

        fn literal(&mut self, lit: &str) -> Option<()> {
            self.rest().starts_with(lit.as_bytes()).then(|| {
                self.pos += lit.len();
            })
        }

        /// A `u64` as `{}` writes it: no sign, no leading zero, no exponent, no overflow.
        fn number(&mut self) -> Option<u64> {
            let digits = self
                .rest()
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            let text = &self.rest()[..digits];
            if digits == 0 || (digits > 1 && text[0] == b'0') {
                return None;
            }
            let mut v: u64 = 0;
            for d in text {
                v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            }
            self.pos += digits;
            Some(v)
        }

        fn nullable(&mut self) -> Option<Option<Cow<'a, str>>> {
            if self.literal("null").is_some() {
                return Some(None);
            }
            self.string().map(Some)
        }

        /// A string literal as `push_json_str` writes it, unescaped; borrowed when it has no
        /// escape.
        fn string(&mut self) -> Option<Cow<'a, str>> {
            self.literal("\"")?;
            let bytes = self.text.as_bytes();
            let mut owned: Option<String> = None;
            loop {
                // A run of bytes written as they are (ASCII, so both ends are char boundaries),
                // then the closing quote or an escape.
                let from = self.pos;
                let end = from + memchr::memchr2(b'"', b'\\', &bytes[from..])?;
                let run = &self.text[from..end];
                // Printable ASCII or DEL throughout (a fold without early exit, which the
                // compiler turns into vector code: bundles are mostly such runs).
                let outside = run
                    .bytes()
                    .fold(0u8, |acc, b| acc | u8::from(b.wrapping_sub(0x20) >= 0x60));
                if outside != 0 {
                    return None;
                }
                self.pos = end + 1;
                match bytes[end] {
                    b'"' => {
                        return Some(match owned {
                            None => Cow::Borrowed(run),
                            Some(mut s) => {
                                s.push_str(run);
                                Cow::Owned(s)
                            }
                        });
                    }
                    _ => {
                        let s = owned.get_or_insert_with(|| String::with_capacity(2 * run.len()));
                        s.push_str(run);
                        s.push(self.escape()?);
                    }
                }
            }
        }

        /// The char after a backslash, if `push_json_str` would have written it this way.
        fn escape(&mut self) -> Option<char> {
            let b = *self.rest().first()?;
            self.pos += 1;
            let c = match b {
                b'"' => '"',
                b'\\' => '\\',
                b'n' => '\n',
                b'r' => '\r',
                b't' => '\t',
                b'b' => '\u{8}',
                b'f' => '\u{c}',
                b'u' => {
                    let unit = self.hex4()?;
                    let c = match unit {
                        0xD800..=0xDBFF => {
                            self.literal("\\u")?;
                            let low = self.hex4()?;
                            if !(0xDC00..=0xDFFF).contains(&low) {
                                return None;
                            }
                            let code = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                            char::from_u32(code)?
                        }
                        _ => char::from_u32(unit)?,
                    };
                    // Only what has no shorter spelling is written as \u.
                    let named = matches!(c, '\n' | '\r' | '\t' | '\u{8}' | '\u{c}');
                    if (c.is_ascii() && !c.is_ascii_control()) || c == '\u{7f}' || named {
                        return None;
                    }
                    c
                }
                _ => return None,
            };
            Some(c)
        }

        /// Four lowercase hex digits, as `{:04x}` writes them.
        fn hex4(&mut self) -> Option<u32> {
            let digits = self.rest().get(..4)?;
            let mut v = 0;
            for &d in digits {
                let n = match d {
                    b'0'..=b'9' => d - b'0',
                    b'a'..=b'f' => d - b'a' + 10,
                    _ => return None,
                };
                v = v * 16 + u32::from(n);
            }
            self.pos += 4;
            Some(v)
        }
    }
}

/// Appends `s` as a JSON string literal: printable ASCII as is, the short escapes JSON names,
/// everything else as lowercase `\uXXXX` (the spelling Python's `json.dumps` also produces).
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    // Runs of bytes that need no escaping are copied whole: bundles are mostly base64 and JSON
    // payloads. Scanning bytes, not chars, keeps the canonical-form check of every line cheap.
    let bytes = s.as_bytes();
    let (mut run_start, mut i) = (0, 0);
    while i < bytes.len() {
        let b = bytes[i];
        if (0x20..=0x7f).contains(&b) && b != b'"' && b != b'\\' {
            i += 1;
            continue;
        }
        out.push_str(&s[run_start..i]);
        // `i` is on a char boundary: only whole chars have been stepped over.
        let c = s[i..].chars().next().unwrap_or_default();
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            _ => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{u:04x}");
                }
            }
        }
        i += c.len_utf8();
        run_start = i;
    }
    out.push_str(&s[run_start..]);
    out.push('"');
}

fn push_str_field(out: &mut String, name: &str, value: Option<&str>) {
    out.push_str(",\"");
    out.push_str(name);
    out.push_str("\":");
    match value {
        Some(v) => push_json_str(out, v),
        None => out.push_str("null"),
    }
}

fn push_num_field(out: &mut String, name: &str, value: Option<u64>) {
    out.push_str(",\"");
    out.push_str(name);
    out.push_str("\":");
    match value {
        Some(v) => {
            let _ = write!(out, "{v}");
        }
        None => out.push_str("null"),
    }
}

fn push_list(out: &mut String, name: &str, items: &[Cow<'_, str>]) {
    out.push_str(",\"");
    out.push_str(name);
    out.push_str("\":[");
    for (i, h) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(out, h);
    }
    out.push(']');
}

impl Line<'_> {
    /// The canonical text of this line (no trailing newline). `parse` accepts only this text.
    pub fn to_text(&self) -> String {
        let mut s = String::with_capacity(256);
        match self {
            Line::Header {
                format,
                origin,
                created_at,
            } => {
                s.push_str("{\"type\":\"bundle\"");
                push_str_field(&mut s, "format", Some(format));
                push_str_field(&mut s, "origin", Some(origin));
                push_str_field(&mut s, "created_at", Some(created_at));
            }
            Line::Key {
                vkey,
                from_seq,
                to_seq,
            } => {
                s.push_str("{\"type\":\"key\"");
                push_str_field(&mut s, "vkey", Some(vkey));
                push_num_field(&mut s, "from_seq", Some(*from_seq));
                push_num_field(&mut s, "to_seq", *to_seq);
            }
            Line::Prefix { size, peaks } => {
                s.push_str("{\"type\":\"prefix\"");
                push_num_field(&mut s, "size", Some(*size));
                push_list(&mut s, "peaks", peaks);
            }
            Line::Entry(e) => {
                s.push_str("{\"type\":\"entry\"");
                push_num_field(&mut s, "seq", Some(e.seq));
                push_str_field(&mut s, "entry", Some(&e.entry));
                push_str_field(&mut s, "sig", Some(&e.sig));
                push_str_field(&mut s, "salt", e.salt.as_deref());
                push_str_field(&mut s, "payload", e.payload.as_deref());
            }
            Line::Checkpoint { note } => {
                s.push_str("{\"type\":\"checkpoint\"");
                push_str_field(&mut s, "note", Some(note));
            }
            Line::Consistency { from, to, proof } => {
                s.push_str("{\"type\":\"consistency\"");
                push_num_field(&mut s, "from", Some(*from));
                push_num_field(&mut s, "to", Some(*to));
                push_list(&mut s, "proof", proof);
            }
        }
        s.push('}');
        s
    }
}

/// Builders for the lines the service writes.
pub mod write {
    use super::*;

    pub fn header(origin: &str, created_at: &str) -> String {
        Line::Header {
            format: FORMAT.into(),
            origin: origin.into(),
            created_at: created_at.into(),
        }
        .to_text()
    }

    pub fn key(vkey: &str, from_seq: u64, to_seq: Option<u64>) -> String {
        Line::Key {
            vkey: vkey.into(),
            from_seq,
            to_seq,
        }
        .to_text()
    }

    pub fn prefix(size: u64, peaks: &[Hash]) -> String {
        Line::Prefix {
            size,
            peaks: peaks.iter().map(|h| Cow::Owned(h.to_b64())).collect(),
        }
        .to_text()
    }

    pub fn entry(
        seq: u64,
        entry: &[u8],
        sig: &[u8],
        salt: Option<&[u8]>,
        payload: Option<&str>,
    ) -> String {
        Line::Entry(EntryLine {
            seq,
            entry: b64(entry).into(),
            sig: b64(sig).into(),
            salt: salt.map(|s| b64(s).into()),
            payload: payload.map(Cow::Borrowed),
        })
        .to_text()
    }

    pub fn checkpoint(note: &str) -> String {
        Line::Checkpoint { note: note.into() }.to_text()
    }

    pub fn consistency(from: u64, to: u64, proof: &[Hash]) -> String {
        Line::Consistency {
            from,
            to,
            proof: proof.iter().map(|h| Cow::Owned(h.to_b64())).collect(),
        }
        .to_text()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn written_lines_parse_back() {
        let h = Hash([7; 32]);
        let lines = [
            write::header("o.example/x", "2026-01-01T00:00:00Z"),
            write::key("o+01020304+AQ==", 0, None),
            write::prefix(3, &[h, h]),
            write::entry(
                5,
                b"abc",
                &[1; 64],
                Some(&[2; 32]),
                Some("{\"a\":\"\u{e9}\u{1F600}\"}"),
            ),
            write::entry(6, b"abc", &[1; 64], None, None),
            write::checkpoint("o\n1\nx\n\n\u{2014} o AAAA\n"),
            write::consistency(1, 2, &[h]),
        ];
        for l in &lines {
            assert!(l.is_ascii(), "{l}");
            Line::parse(l).unwrap_or_else(|e| panic!("{l}: {e}"));
        }
        match Line::parse(&lines[3]).unwrap() {
            Line::Entry(e) => assert_eq!(e.payload.as_deref(), Some("{\"a\":\"\u{e9}\u{1F600}\"}")),
            other => panic!("{other:?}"),
        }
    }

    /// The exact spelling (what Python's `json.dumps` writes): a parser sharing the writer's
    /// mistakes would still round-trip, so the bytes themselves are the test.
    #[test]
    fn strings_are_escaped_like_json_dumps() {
        let mut out = String::new();
        push_json_str(
            &mut out,
            "a\"b\\c\n\r\t\u{8}\u{c}\u{1}\u{7f}\u{e9}\u{1F600} z",
        );
        let expected = concat!(
            r#""a\"b\\c\n\r\t\b\f\u0001"#,
            "\u{7f}",
            r#"\u00e9\ud83d\ude00 z""#
        );
        assert_eq!(out, expected);
    }

    /// Chars that exercise every spelling `push_json_str` has: raw ASCII, the named escapes,
    /// `\u` for controls and non-ASCII (astral ones as surrogate pairs), and DEL, which is raw.
    fn any_text() -> impl Strategy<Value = String> {
        let c = prop_oneof![
            Just('"'),
            Just('\\'),
            Just('\n'),
            Just('\u{8}'),
            Just('\u{1}'),
            Just('\u{7f}'),
            Just('\u{e9}'),
            Just('\u{1F600}'),
            Just('/'),
            proptest::char::range(' ', '~'),
            any::<char>(),
        ];
        proptest::collection::vec(c, 0..12).prop_map(|v| v.into_iter().collect())
    }

    fn any_entry() -> impl Strategy<Value = EntryLine<'static>> {
        let text = any_text;
        (
            any::<u64>(),
            text(),
            text(),
            proptest::option::of(text()),
            proptest::option::of(text()),
        )
            .prop_map(|(seq, entry, sig, salt, payload)| EntryLine {
                seq,
                entry: entry.into(),
                sig: sig.into(),
                salt: salt.map(Into::into),
                payload: payload.map(Into::into),
            })
    }

    /// Small edits aimed at the spellings the reader must refuse: other escapes, upper-case
    /// hex, lone surrogates, leading zeros, whitespace, raw non-ASCII.
    fn any_edit() -> impl Strategy<Value = (prop::sample::Index, u8, char)> {
        let c = prop::sample::select(vec![
            '\\', 'u', 'U', 'd', 'D', '8', 'c', 'A', 'E', '0', '1', '7', 'f', '"', ' ', '/', 'n',
            'l', '-', '}', ',', '\u{e9}', '\n', '\u{1}', 'r', 't', 'b', 'a', 'e', '\u{7f}', '\t',
        ]);
        (any::<prop::sample::Index>(), 0u8..3, c)
    }

    proptest! {
        #[test]
        fn the_entry_reader_takes_every_line_the_writer_writes(e in any_entry()) {
            let text = Line::Entry(e.clone()).to_text();
            prop_assert_eq!(canonical::entry(&text), Some(e.clone()));
            prop_assert_eq!(Line::parse_general(&text), Ok(Line::Entry(e)));
        }

        /// The reader and the general path agree on edited lines: what one takes as an entry,
        /// the other takes as the same entry.
        #[test]
        fn the_entry_reader_agrees_with_the_general_path(
            e in any_entry(),
            edits in proptest::collection::vec(any_edit(), 1..4),
        ) {
            let mut chars: Vec<char> = Line::Entry(e).to_text().chars().collect();
            for (at, op, c) in edits {
                let i = at.index(chars.len() + 1);
                match op {
                    0 => chars.insert(i, c),
                    1 if i < chars.len() => chars[i] = c,
                    _ if i < chars.len() => {
                        chars.remove(i);
                    }
                    _ => chars.push(c),
                }
            }
            let text: String = chars.into_iter().collect();
            match canonical::entry(&text) {
                Some(line) => prop_assert_eq!(Line::parse_general(&text), Ok(Line::Entry(line))),
                None => prop_assert!(
                    !matches!(Line::parse_general(&text), Ok(Line::Entry(_))),
                    "the general path took an entry the reader refused: {}", text
                ),
            }
        }
    }

    /// Spellings of the same values that only the exporter's exact text may use: refused by the
    /// reader and by `parse`.
    #[test]
    fn entry_lines_in_another_spelling_are_refused() {
        let line = |seq: &str, payload: &str| {
            format!(
                r#"{{"type":"entry","seq":{seq},"entry":"AA==","sig":"AA==","salt":null,"payload":{payload}}}"#
            )
        };
        let good = [
            line("0", "null"),
            line("18446744073709551615", "null"),
            line("7", r#""\u00e9\ud83d\ude00\u0001\"\\\n\b\f""#),
            line("7", "\"\u{7f}~ /\""),
        ];
        for text in &good {
            assert!(canonical::entry(text).is_some(), "{text}");
            assert!(Line::parse(text).is_ok(), "{text}");
        }
        let bad = [
            line("01", "null"),
            line("-1", "null"),
            line("18446744073709551616", "null"),
            line("1.0", "null"),
            line("1e2", "null"),
            line(" 1", "null"),
            line("1", r#""\u00E9""#),
            line("1", r#""\u0041""#),
            line("1", r#""\u0022""#),
            line("1", r#""\u005c""#),
            line("1", r#""\u000a""#),
            line("1", r#""\u0009""#),
            line("1", r#""\u0008""#),
            line("1", r#""\u000c""#),
            line("1", r#""\u000d""#),
            line("1", r#""\ud83d\ud83d""#),
            line("1", r#""\ud83d\uDE00""#),
            line("1", "\"\u{1}\""),
            line("1", "\"\u{1f}\""),
            line("1", "null").replace(
                r#""salt":null,"payload":null"#,
                r#""payload":null,"salt":null"#,
            ),
            line("1", "null").replace(r#","payload":null"#, r#","salt":null,"payload":null"#),
            line("1", r#""\u007f""#),
            line("1", r#""\/""#),
            line("1", r#""\udc00""#),
            line("1", r#""\ud83d""#),
            line("1", r#""\ud83dx""#),
            line("1", r#""\ud83d\u0041""#),
            line("1", "\"\u{e9}\""),
            line("1", "\"\t\""),
            line("1", "\"x"),
            line("1", "nul"),
            format!("{} ", line("1", "null")),
            line("1", "null").replace(",\"salt\"", ", \"salt\""),
        ];
        for text in &bad {
            assert_eq!(canonical::entry(text), None, "{text}");
            assert!(Line::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn rejects_foreign_missing_and_unknown_fields() {
        for bad in [
            r#"{"type":"checkpoint","note":"x","seq":1}"#,
            r#"{"type":"entry","seq":1,"entry":"","sig":"","salt":null}"#,
            r#"{"type":"entry","seq":1,"entry":"","sig":"","salt":null,"payload":null,"x":1}"#,
            r#"{"type":"mystery"}"#,
            r#"{"type":"checkpoint","note":"x"} "#,
            r#"{"type":"checkpoint","note":"x","note":"y"}"#,
            r#"{"type":"checkpoint","note":"\u00E9"}"#,
            r#"{"note":"x","type":"checkpoint"}"#,
        ] {
            assert!(Line::parse(bad).is_err(), "{bad}");
        }
    }
}
