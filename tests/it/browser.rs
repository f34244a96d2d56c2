//! report.html as a person sees it: headless Chromium (Debian's `chromium`, installed by
//! `.ci/run`) renders it to a screenshot and a PDF. The test reads the pixels back to check that
//! the tables and the charts were drawn, not just that a file exists. Screenshots are written to
//! `target/tmp/screenshots/` for a person to look at (never committed).

use crate::helpers::{TestDb, spawn_app_with};
use crate::reports::{build_january, send_scenarios};
use crate::scenarios::scenario_config;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The browser, or `None` with a clear note that the test is skipped.
pub fn chromium() -> Option<PathBuf> {
    let p = std::env::var("CHANGETRAIL_TEST_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/usr/bin/chromium"));
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "SKIPPED (browser test): no Chromium at {}; `apt-get install chromium` or set CHANGETRAIL_TEST_CHROMIUM (.ci/run installs it)",
            p.display()
        );
        None
    }
}

/// Chromium headless with the flags this machine needs (no network, no sandbox as root).
fn headless(browser: &Path, profile: &Path) -> Command {
    let mut c = Command::new(browser);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// A decoded 8-bit RGB(A) PNG, enough for Chromium's screenshots.
pub struct Image {
    pub width: usize,
    pub height: usize,
    rgb: Vec<[u8; 3]>,
}

pub fn decode_png(bytes: &[u8]) -> Image {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let (mut pos, mut idat) = (8, Vec::new());
    let (mut width, mut height, mut channels) = (0, 0, 0);
    while pos + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        let kind = &bytes[pos + 4..pos + 8];
        let data = &bytes[pos + 8..pos + 8 + len];
        match kind {
            b"IHDR" => {
                width = u32::from_be_bytes(data[0..4].try_into().unwrap()) as usize;
                height = u32::from_be_bytes(data[4..8].try_into().unwrap()) as usize;
                assert_eq!(data[8], 8, "bit depth");
                assert_eq!(data[12], 0, "interlaced");
                channels = match data[9] {
                    2 => 3,
                    6 => 4,
                    t => panic!("colour type {t}"),
                };
            }
            b"IDAT" => idat.extend_from_slice(data),
            _ => {}
        }
        pos += 12 + len;
    }
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(idat.as_slice())
        .read_to_end(&mut raw)
        .unwrap();
    let stride = width * channels;
    let mut prev = vec![0u8; stride];
    let mut rgb = Vec::with_capacity(width * height);
    for y in 0..height {
        let row = &raw[y * (stride + 1)..(y + 1) * (stride + 1)];
        let (filter, src) = (row[0], &row[1..]);
        let mut cur = vec![0u8; stride];
        for x in 0..stride {
            let a = if x >= channels { cur[x - channels] } else { 0 };
            let b = prev[x];
            let c = if x >= channels { prev[x - channels] } else { 0 };
            let pred = match filter {
                0 => 0,
                1 => a,
                2 => b,
                3 => ((a as u16 + b as u16) / 2) as u8,
                4 => {
                    let p = a as i16 + b as i16 - c as i16;
                    let (pa, pb, pc) = (
                        (p - a as i16).abs(),
                        (p - b as i16).abs(),
                        (p - c as i16).abs(),
                    );
                    if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    }
                }
                f => panic!("PNG filter {f}"),
            };
            cur[x] = src[x].wrapping_add(pred);
        }
        for px in cur.chunks(channels) {
            rgb.push([px[0], px[1], px[2]]);
        }
        prev = cur;
    }
    Image { width, height, rgb }
}

impl Image {
    /// Pixels within a small distance of `c` (anti-aliasing blurs edges, not the middle of a bar).
    pub fn count(&self, c: [u8; 3]) -> usize {
        self.rgb
            .iter()
            .filter(|p| p.iter().zip(c).all(|(a, b)| a.abs_diff(b) <= 6))
            .count()
    }

    /// Distinct colours: a blank or broken page has a handful.
    pub fn colours(&self) -> usize {
        self.rgb
            .iter()
            .map(|p| (p[0] as u32) << 16 | (p[1] as u32) << 8 | p[2] as u32)
            .collect::<std::collections::HashSet<_>>()
            .len()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_page_renders_its_tables_and_charts() {
    let Some(browser) = chromium() else {
        return;
    };
    let db = TestDb::sqlite().await;
    let mut cfg = scenario_config(&db);
    cfg.reports.approver_roles = vec!["release-approver".into()];
    let app = spawn_app_with(cfg.clone()).await;
    send_scenarios(&app).await;
    let dir = db.path().join("report");
    let settings = cfg.report_settings(None).unwrap();
    let out = build_january(&app, &settings, &dir, Some((3, "s")))
        .await
        .unwrap();
    app.stop().await;
    let page = format!("file://{}", dir.join("report.html").display());
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();

    // The DOM as Chromium parsed it: every control is a row of the table, every chart has bars.
    let profile = tempfile::tempdir().unwrap();
    let dom = headless(&browser, profile.path())
        .arg("--dump-dom")
        .arg(&page)
        .output()
        .unwrap();
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom = String::from_utf8_lossy(&dom.stdout);
    let controls = dom
        .split("<table id=\"controls-table\">")
        .nth(1)
        .and_then(|t| t.split("</table>").next())
        .expect("the controls table");
    assert_eq!(
        controls.matches("<tr>").count(),
        out.controls.len() + 1,
        "a header and one row per control"
    );
    for id in ["chart-weeks", "chart-lead", "chart-codes"] {
        let svg = dom
            .split(&format!("<svg id=\"{id}\""))
            .nth(1)
            .and_then(|t| t.split("</svg>").next())
            .unwrap_or_else(|| panic!("chart {id} is missing"));
        assert!(
            svg.matches("class=\"bar\"").count() >= 3,
            "{id} has no bars"
        );
    }
    assert!(dom.contains("SELF_APPROVAL") && dom.contains("CHG-SELF"));

    // The pixels: at 1280 px and at 800 px, the bars and the table bands were painted.
    for width in [1280, 800] {
        let png = shots.join(format!("report-{width}.png"));
        let profile = tempfile::tempdir().unwrap();
        let o = headless(&browser, profile.path())
            .arg(format!("--window-size={width},3600"))
            .arg(format!("--screenshot={}", png.display()))
            .arg(&page)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let img = decode_png(&std::fs::read(&png).unwrap());
        assert_eq!((img.width, img.height), (width, 3600));
        let bars = img.count([0x2f, 0x5d, 0x8a]);
        let exception_bars = img.count([0xb3, 0x26, 0x1e]);
        let bands = img.count([0xf4, 0xf6, 0xf8]);
        eprintln!(
            "{}: {bars} bar pixels, {exception_bars} exception-bar pixels, {bands} band pixels, {} colours",
            png.display(),
            img.colours()
        );
        assert!(
            bars > 2000,
            "the charts' bars were not painted ({bars} pixels)"
        );
        assert!(exception_bars > 500, "exception bars were not painted");
        assert!(bands > 5000, "the table headers and cards were not painted");
        assert!(img.colours() > 200, "text was not rendered");
    }

    // Printing: a PDF of more than one page (the page is long) that starts as PDFs do.
    let pdf = shots.join("report.pdf");
    let profile = tempfile::tempdir().unwrap();
    let o = headless(&browser, profile.path())
        .arg("--no-pdf-header-footer")
        .arg(format!("--print-to-pdf={}", pdf.display()))
        .arg(&page)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bytes = std::fs::read(&pdf).unwrap();
    assert!(bytes.starts_with(b"%PDF-"));
    let pages = String::from_utf8_lossy(&bytes)
        .matches("/Type /Page\n")
        .count()
        + String::from_utf8_lossy(&bytes)
            .matches("/Type /Page>")
            .count()
        + String::from_utf8_lossy(&bytes)
            .matches("/Type /Page/")
            .count();
    assert!(
        bytes.len() > 20_000,
        "the PDF is too small to hold the report"
    );
    eprintln!(
        "{}: {} bytes, {pages} page markers",
        pdf.display(),
        bytes.len()
    );
}
