//! The architecture, held by a test: reads every `.rs` file under `src/`, works out which part it
//! belongs to and what it refers to (`use` lines and paths in code, `super::` resolved), and fails
//! on an edge the README's "Architecture" section forbids:
//!
//! - `core` imports no I/O crate (tokio, sqlx, axum, tonic, hyper, reqwest, std::fs, std::net,
//!   std::process), reads no clock or random source, and nothing outside `core`;
//! - `storage` never imports `api`, `ingest`, `report`, `read` or `app`;
//! - `ingest` never imports `storage` (it reaches stored state through `auth` and `read`);
//! - only `app` imports `app` (the shell sits on top; nothing below it reaches back up);
//! - no loose `.rs` file at `src/` besides `main.rs` and `lib.rs`;
//! - no file over 800 lines without a one-line reason in its module doc (`//! Long because …`),
//!   and no function over 150 lines.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A source file: its path under `src/` (with `/`) and its text.
struct Source {
    path: String,
    text: String,
}

fn sources(root: &Path) -> Vec<Source> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<Source>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, root, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                let rel = p
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                out.push(Source {
                    path: rel,
                    text: std::fs::read_to_string(&p).unwrap(),
                });
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out
}

/// The module path of a file (`ingest/mod.rs` → `[ingest]`, `core/ledger/hash.rs` →
/// `[core, ledger, hash]`).
fn module_path(path: &str) -> Vec<String> {
    let mut parts: Vec<String> = path
        .trim_end_matches(".rs")
        .split('/')
        .map(String::from)
        .collect();
    if parts
        .last()
        .is_some_and(|l| l == "mod" || l == "lib" || l == "main")
    {
        parts.pop();
    }
    parts
}

/// The code of a file without comments and string literals, so a word in a doc line or a message
/// is not taken for an import.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
        } else if b[i] == b'r'
            && (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#'))
            && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
        {
            // Raw string: r"…", r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push(b[i] as char);
                i += 1;
                continue;
            }
            j += 1;
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            while j < b.len() && !b[j..].starts_with(&close) {
                j += 1;
            }
            i = j + close.len();
            out.push_str("\"\"");
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' {
            // A char literal ('x', '\n', '"'), or a lifetime ('a): skip only the literal.
            if b.get(i + 1) == Some(&b'\\') {
                let mut j = i + 2;
                while j < b.len() && b[j] != b'\'' {
                    j += 1;
                }
                i = j + 1;
            } else if b.get(i + 2) == Some(&b'\'') {
                i += 3;
            } else {
                out.push('\'');
                i += 1;
            }
        } else {
            let ch = text[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// Every path the code names, as `a::b::c` segments: paths in `use` trees are expanded
/// (`use x::{a, b::c}` → `x::a`, `x::b::c`), and `super::`/`self::`/`crate::` are resolved
/// against the file's module path to absolute `crate::…` paths.
fn referenced_paths(src: &Source) -> BTreeSet<String> {
    let code = code_only(&src.text);
    let here = module_path(&src.path);
    let mut out = BTreeSet::new();
    for raw in expand_use_trees(&code)
        .into_iter()
        .chain(plain_paths(&code))
    {
        out.insert(resolve(&raw, &here));
    }
    out
}

fn expand_use_trees(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(pos) = find_word(rest, "use") {
        let after = &rest[pos + 3..];
        let Some(end) = after.find(';') else { break };
        // Drop renames (`x as y`) before the whitespace, which would glue them to the path.
        let words: Vec<&str> = after[..end].split_whitespace().collect();
        let mut kept = String::new();
        let mut k = 0;
        while k < words.len() {
            if words[k] == "as" {
                // Keep what follows the new name (`_,` keeps `,`).
                if let Some(w) = words.get(k + 1) {
                    kept.push_str(w.trim_start_matches(|c: char| c.is_alphanumeric() || c == '_'));
                }
                k += 2;
                continue;
            }
            kept.push_str(words[k]);
            k += 1;
        }
        let tree = kept;
        expand(&tree, "", &mut out);
        rest = &after[end..];
    }
    out
}

fn find_word(s: &str, w: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut from = 0;
    while let Some(p) = s[from..].find(w) {
        let at = from + p;
        let before_ok = at == 0 || !(b[at - 1].is_ascii_alphanumeric() || b[at - 1] == b'_');
        let after_ok = b.get(at + w.len()).is_some_and(|c| c.is_ascii_whitespace());
        if before_ok && after_ok {
            return Some(at);
        }
        from = at + w.len();
    }
    None
}

fn expand(tree: &str, prefix: &str, out: &mut Vec<String>) {
    if let Some(open) = tree.find('{') {
        let head = &tree[..open];
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let mut depth = 0;
        let mut start = 0;
        let join = |p: &str, h: &str| format!("{p}{h}");
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&inner[start..i], &join(prefix, head), out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand(&inner[start..], &join(prefix, head), out);
    } else if !tree.is_empty() {
        out.push(
            format!("{prefix}{tree}")
                .trim_end_matches("::self")
                .to_string(),
        );
    }
}

/// Paths written in code (`tokio::spawn`, `crate::storage::Store`, `std::fs::read`): a run of
/// `ident::ident…` not preceded by another path segment.
fn plain_paths(code: &str) -> Vec<String> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let starts = (b[i].is_ascii_alphabetic() || b[i] == b'_')
            && (i == 0
                || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_' || b[i - 1] == b':'));
        if !starts {
            i += 1;
            continue;
        }
        let mut j = i;
        loop {
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                j += 1;
            }
            if code[j..].starts_with("::")
                && b.get(j + 2)
                    .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
            {
                j += 2;
            } else {
                break;
            }
        }
        if code[i..j].contains("::") {
            out.push(code[i..j].to_string());
        }
        i = j.max(i + 1);
    }
    out
}

fn resolve(path: &str, here: &[String]) -> String {
    let segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let mut base: Vec<String> = here.to_vec();
    let mut k = 0;
    match segs.first() {
        Some(&"crate") => {
            base.clear();
            k = 1;
        }
        Some(&"self") => k = 1,
        Some(&"super") => {
            while segs.get(k) == Some(&"super") {
                base.pop();
                k += 1;
            }
        }
        _ => return segs.join("::"),
    }
    let mut all = vec!["crate".to_string()];
    all.extend(base);
    all.extend(segs[k..].iter().map(|s| s.to_string()));
    all.join("::")
}

/// The part a file belongs to: its first directory under `src/` (`core`, `ingest`, …).
fn part(path: &str) -> &str {
    path.split('/')
        .next()
        .unwrap_or(path)
        .trim_end_matches(".rs")
}

/// Every rule the architecture states, checked over `files`; one line per violation.
fn violations(files: &[Source]) -> Vec<String> {
    const IO: &[&str] = &[
        "tokio",
        "tokio_util",
        "sqlx",
        "axum",
        "tonic",
        "hyper",
        "hyper_util",
        "reqwest",
        "tower",
        "tower_http",
        "std::fs",
        "std::net",
        "std::process",
        "std::env",
        "getrandom",
        "rand",
        "std::time::SystemTime",
        "std::time::Instant",
        "mimalloc",
        "indicatif",
    ];
    let mut out = Vec::new();
    for f in files {
        let p = part(&f.path);
        if !f.path.contains('/') && !matches!(f.path.as_str(), "main.rs" | "lib.rs") {
            out.push(format!(
                "src/{}: a loose file at src/; put it in a named part",
                f.path
            ));
        }
        let refs = referenced_paths(f);
        for r in &refs {
            let target = r
                .strip_prefix("crate::")
                .map(|t| t.split("::").next().unwrap_or(t));
            let forbidden = match (p, target) {
                ("core", Some(t)) if t != "core" => Some(format!("core reaches outside core: {r}")),
                ("core", None)
                    if IO
                        .iter()
                        .any(|io| r == io || r.starts_with(&format!("{io}::"))) =>
                {
                    Some(format!("core uses I/O or the clock: {r}"))
                }
                ("storage", Some(t @ ("api" | "ingest" | "report" | "read" | "app"))) => {
                    Some(format!("storage imports {t}: {r}"))
                }
                ("ingest", Some("storage")) => Some(format!("ingest imports storage: {r}")),
                (from, Some("app")) if from != "app" && from != "main.rs" && from != "main" => {
                    Some(format!("{from} reaches up into the application shell: {r}"))
                }
                _ => None,
            };
            if let Some(why) = forbidden {
                out.push(format!("src/{}: {why}", f.path));
            }
        }
        out.extend(size_violations(f));
    }
    out
}

fn size_violations(f: &Source) -> Vec<String> {
    let mut out = Vec::new();
    let lines: Vec<&str> = f.text.lines().collect();
    if lines.len() > 800
        && !lines
            .iter()
            .take_while(|l| l.starts_with("//!") || l.starts_with("#!"))
            .any(|l| l.contains("Long because"))
    {
        out.push(format!(
            "src/{}: {} lines, over 800 without a \"Long because …\" line in its module doc",
            f.path,
            lines.len()
        ));
    }
    for (name, start, len) in functions(&lines) {
        if len > 150 {
            out.push(format!(
                "src/{}:{start}: fn {name} is {len} lines (at most 150)",
                f.path
            ));
        }
    }
    out
}

/// Functions with bodies: (name, first line, length in lines), by their indentation: a body ends
/// at the first `}` line indented like the `fn` line (rustfmt lays every file out so).
fn functions(lines: &[&str]) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        let indent = l.len() - t.len();
        let t = t
            .trim_start_matches("pub(crate) ")
            .trim_start_matches("pub(super) ")
            .trim_start_matches("pub ")
            .trim_start_matches("const ")
            .trim_start_matches("async ");
        let Some(rest) = t.strip_prefix("fn ") else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        // The signature may span lines; it ends in `{` (a body) or `;` (a declaration).
        let Some(open) = (i..lines.len()).find(|&j| {
            let e = lines[j].trim_end();
            e.ends_with('{') || e.ends_with(';')
        }) else {
            continue;
        };
        if lines[open].trim_end().ends_with(';') {
            continue;
        }
        let close = (open + 1..lines.len()).find(|&j| {
            let l = lines[j];
            l.len() > indent && l[..indent].trim().is_empty() && l[indent..].starts_with('}')
        });
        if let Some(c) = close {
            out.push((name, i + 1, c - i + 1));
        }
    }
    out
}

fn src_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn the_source_tree_keeps_the_architecture() {
    let files = sources(&src_root());
    assert!(files.len() > 50, "read {} files under src/", files.len());
    let v = violations(&files);
    assert!(v.is_empty(), "architecture violations:\n{}", v.join("\n"));
}

#[test]
fn a_forbidden_import_is_caught() {
    // The checker against small trees, so it cannot pass by reading nothing.
    let file = |path: &str, text: &str| Source {
        path: path.into(),
        text: text.into(),
    };
    let cases: &[(&str, &str, Option<&str>)] = &[
        (
            "core/ledger/hash.rs",
            "use tokio::sync::Mutex;",
            Some("core uses I/O"),
        ),
        (
            "core/ledger/hash.rs",
            "fn f() { let _ = std::fs::read(\"x\"); }",
            Some("core uses I/O"),
        ),
        (
            "core/evidence/fold.rs",
            "use crate::storage::Store;",
            Some("core reaches outside core"),
        ),
        (
            "core/evidence/fold.rs",
            "use super::super::super::sys::now_ns;",
            Some("core reaches outside core"),
        ),
        (
            "core/evidence/fold.rs",
            "use crate::core::{ledger::hash::Hash, time};",
            None,
        ),
        (
            "core/evidence/fold.rs",
            "// tokio::spawn is not used here\nconst S: &str = \"sqlx::query\";",
            None,
        ),
        (
            "core/evidence/fold.rs",
            "fn f() { let _ = std::time::SystemTime::now(); }",
            Some("core uses I/O"),
        ),
        (
            "storage/mod.rs",
            "use crate::{api::ApiError, core::ledger::hash::Hash};",
            Some("storage imports api"),
        ),
        (
            "storage/mod.rs",
            "use crate::report::Period;",
            Some("storage imports report"),
        ),
        (
            "ingest/mod.rs",
            "use crate::storage::Store;",
            Some("ingest imports storage"),
        ),
        (
            "ingest/grpc.rs",
            "fn f(s: &super::super::storage::Store) {}",
            Some("ingest imports storage"),
        ),
        ("ingest/mod.rs", "use crate::auth::Authenticator;", None),
        (
            "pipeline/writer.rs",
            "use crate::app::config::Config;",
            Some("reaches up into the application shell"),
        ),
        (
            "app/startup.rs",
            "use crate::storage::Store; use crate::app::config::Config;",
            None,
        ),
        ("util.rs", "", Some("a loose file")),
    ];
    for (path, text, want) in cases {
        let v = violations(&[file(path, text)]);
        match want {
            Some(w) => assert!(
                v.iter().any(|x| x.contains(w)),
                "{path}: {text:?} should be caught as {w:?}; got {v:?}"
            ),
            None => assert!(v.is_empty(), "{path}: {text:?} is allowed; got {v:?}"),
        }
    }
    let long_fn = format!("fn f() {{\n{}}}\n", "    let _ = 1;\n".repeat(151));
    assert!(
        violations(&[file("core/x.rs", &long_fn)])
            .iter()
            .any(|x| x.contains("fn f is 153 lines"))
    );
    let long_file = "const A: u8 = 0;\n".repeat(801);
    assert!(
        violations(&[file("core/x.rs", &long_file)])
            .iter()
            .any(|x| x.contains("over 800"))
    );
    let explained = format!("//! Long because the table is one unit.\n{long_file}");
    assert!(violations(&[file("core/x.rs", &explained)]).is_empty());
}
