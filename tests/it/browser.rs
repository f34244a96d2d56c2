//! report.html as a person sees it: headless Chromium (Debian's `chromium`, installed by
//! `.ci/run`) renders it to a screenshot and a PDF. The test reads the pixels back to check that
//! the tables and the charts were drawn, not just that a file exists. Screenshots are written to
//! `target/tmp/screenshots/` for a person to look at (never committed).

use crate::support::browser::{chromium, decode_png};
use crate::support::report::build_january;
use crate::support::scenario::{scenario_config, send_scenarios};
use crate::support::server::{TestDb, spawn_app_with};
use std::path::{Path, PathBuf};
use std::process::Command;

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
