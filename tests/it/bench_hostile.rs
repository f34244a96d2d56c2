//! `changetrail bench hostile`, the real binary end to end on a short run: it starts its own
//! server, attacks it beside an honest exporter, and reports memory, throughput and losses.

use crate::support::server::ct;

#[test]
fn bench_hostile_reports_no_loss_a_verified_chain_and_the_peak_rss() {
    let dir = tempfile::tempdir().unwrap();
    let out = ct(dir.path())
        .args(["bench", "hostile", "--duration", "3s", "--attackers", "4"])
        .args(["--slow-connections", "100"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("Result: nothing acknowledged was lost; the chain verifies."),
        "{stdout}"
    );
    let audit = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("audit spans"))
        .unwrap_or_else(|| panic!("no audit spans line: {stdout}"));
    assert!(audit.contains(" 0 lost"), "{audit}");
    assert!(
        stdout.contains("Result: OK: intact and covered by signed checkpoints"),
        "{stdout}"
    );
    // "server peak RSS    217.3 MB (under attack; …"
    let rss = stdout
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("server peak RSS"))
        .unwrap_or_else(|| panic!("no peak RSS line: {stdout}"));
    let mb: f64 = rss
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number in {rss:?}"));
    assert!(mb > 1.0, "{rss}");
    assert!(stdout.contains("attacker answers"), "{stdout}");
}
