//! Slow and idle connections on every listener: held open, and reopened whenever the server
//! closes them, while the honest exporter runs.

use super::attackers::Targets;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Descriptors this process and the server need besides the slow connections (exporters,
/// attackers, SQLite, the runtime), when checking the open-files limit.
const FD_MARGIN: usize = 256;

/// How many slow connections per listener the open-files limit leaves room for, and a note when
/// that is fewer than asked (std cannot raise the limit without libc).
pub(super) fn slow_connections_allowed(asked: usize, clients: usize) -> (usize, Option<String>) {
    let Some(soft) = open_files_limit() else {
        return (asked, None);
    };
    let margin = FD_MARGIN + clients;
    if 3 * asked + margin <= soft {
        return (asked, None);
    }
    let n = soft.saturating_sub(margin) / 3;
    (
        n,
        Some(format!(
            "the open-files limit (ulimit -n) is {soft}: too low for 3 × {asked} slow connections \
             plus {margin} others in this process and in the server; holding {n} per listener \
             instead (raise it with `ulimit -n {}`)",
            3 * asked + margin
        )),
    )
}

/// The soft RLIMIT_NOFILE, from /proc (this process's; the server inherits it).
fn open_files_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        return Some(usize::MAX / 4);
    }
    soft.parse().ok()
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Listener {
    Api,
    Grpc,
    Otlp,
}

pub(super) const LISTENERS: [Listener; 3] = [Listener::Api, Listener::Grpc, Listener::Otlp];

impl Listener {
    pub(super) fn name(self) -> &'static str {
        match self {
            Listener::Api => "REST",
            Listener::Grpc => "OTLP gRPC",
            Listener::Otlp => "OTLP HTTP",
        }
    }

    fn addr(self, t: &Targets) -> SocketAddr {
        match self {
            Listener::Api => t.api,
            Listener::Grpc => t.grpc,
            Listener::Otlp => t.otlp,
        }
    }

    /// An HTTP/1.1 request head whose body the server reads once the token is accepted; for gRPC
    /// followed by the message's frame header, announcing the rest of the body.
    fn head(self, token: &str, length: usize) -> Vec<u8> {
        let (path, content_type) = match self {
            Listener::Api => ("/v1/import/conductor", "application/json"),
            Listener::Grpc => (crate::ingest::grpc::TRACE_EXPORT, "application/grpc"),
            Listener::Otlp => ("/v1/traces", "application/x-protobuf"),
        };
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nhost: changetrail\r\ncontent-type: {content_type}\r\n\
             authorization: Bearer {token}\r\ncontent-length: {length}\r\n\r\n"
        )
        .into_bytes();
        if self == Listener::Grpc {
            head.push(0);
            head.extend_from_slice(&u32::try_from(length - 5).unwrap_or(0).to_be_bytes());
        }
        head
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum SlowKind {
    /// Connects and sends nothing.
    Idle,
    /// Half a request head, then one more byte every few seconds.
    Header,
    /// A whole head (the attacker's token, a 1 MB body announced), then a few bytes a second.
    Body,
}

pub(super) const SLOW_KINDS: [SlowKind; 3] = [SlowKind::Idle, SlowKind::Header, SlowKind::Body];
const SLOW_BODY_LENGTH: usize = 1_000_000;

impl SlowKind {
    /// 40% idle, 30% slow header, 30% slow body.
    fn of(i: usize) -> SlowKind {
        match i % 10 {
            0..=3 => SlowKind::Idle,
            4..=6 => SlowKind::Header,
            _ => SlowKind::Body,
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            SlowKind::Idle => "idle",
            SlowKind::Header => "slow header",
            SlowKind::Body => "slow body",
        }
    }
}

#[derive(Default)]
pub(super) struct SlowStats {
    /// [listener]
    pub(super) opened: [AtomicU64; 3],
    open: [AtomicI64; 3],
    pub(super) connect_failed: [AtomicU64; 3],
    /// [listener][kind]
    pub(super) closed: [[AtomicU64; 3]; 3],
    /// Closed within a second of opening: refused rather than timed out.
    pub(super) closed_at_once: [AtomicU64; 3],
    /// What the server answered before closing, by listener, kind and status line.
    pub(super) answers: Mutex<BTreeMap<(usize, usize, String), u64>>,
}

impl SlowStats {
    pub(super) fn opened_total(&self) -> u64 {
        self.opened.iter().map(|o| o.load(Ordering::Relaxed)).sum()
    }

    pub(super) fn open_total(&self) -> i64 {
        self.open.iter().map(|o| o.load(Ordering::Relaxed)).sum()
    }
}

pub(super) fn spawn_slow_connections(
    targets: &Targets,
    per_listener: usize,
    token: &str,
    stats: &Arc<SlowStats>,
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (li, l) in LISTENERS.into_iter().enumerate() {
        for i in 0..per_listener {
            let (addr, token, stats, stop) = (
                l.addr(targets),
                token.to_owned(),
                stats.clone(),
                stop.clone(),
            );
            // Spread over about a second: a thousand SYNs at once overflow the accept backlog.
            let delay = Duration::from_micros((i as u64 * 1_000_000) / per_listener.max(1) as u64);
            tasks.push(tokio::spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                slow_connection(addr, l, li, SlowKind::of(i), &token, &stats, &stop).await;
            }));
        }
    }
    tasks
}

/// Keeps one slow connection of `kind` open, replacing it whenever the server closes it.
async fn slow_connection(
    addr: SocketAddr,
    l: Listener,
    li: usize,
    kind: SlowKind,
    token: &str,
    stats: &SlowStats,
    stop: &CancellationToken,
) {
    let ki = SLOW_KINDS.iter().position(|k| *k == kind).unwrap_or(0);
    while !stop.is_cancelled() {
        let connected = tokio::select! {
            _ = stop.cancelled() => return,
            r = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)) => r,
        };
        let Ok(Ok(mut s)) = connected else {
            stats.connect_failed[li].fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            continue;
        };
        stats.opened[li].fetch_add(1, Ordering::Relaxed);
        stats.open[li].fetch_add(1, Ordering::Relaxed);
        let opened = Instant::now();
        let closed = hold(&mut s, l, kind, token, stop).await;
        stats.open[li].fetch_sub(1, Ordering::Relaxed);
        let Some(answer) = closed else {
            return;
        };
        stats.closed[li][ki].fetch_add(1, Ordering::Relaxed);
        let status = String::from_utf8_lossy(&answer)
            .lines()
            .next()
            .map_or_else(|| "(nothing)".to_owned(), |l| l.trim().to_owned());
        *stats
            .answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((li, ki, status))
            .or_default() += 1;
        if opened.elapsed() < Duration::from_secs(1) {
            // Refused at once (the cap, or the token's share for a slow body): reconnecting
            // immediately would only spin.
            stats.closed_at_once[li].fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

/// Behaves as `kind` until the server closes the connection (the start of what it answered) or
/// the phase ends (`None`).
async fn hold(
    s: &mut TcpStream,
    l: Listener,
    kind: SlowKind,
    token: &str,
    stop: &CancellationToken,
) -> Option<Vec<u8>> {
    let (first, every, more): (Vec<u8>, Duration, &[u8]) = match kind {
        SlowKind::Idle => (Vec::new(), Duration::from_secs(3600), b""),
        SlowKind::Header => {
            let head = l.head(token, SLOW_BODY_LENGTH);
            (
                head[..head.len() / 3].to_vec(),
                Duration::from_secs(3),
                b"a",
            )
        }
        // A few bytes a second, far below min_body_rate.
        SlowKind::Body => (
            l.head(token, SLOW_BODY_LENGTH),
            Duration::from_secs(1),
            b"    ",
        ),
    };
    let mut answer = Vec::new();
    if !first.is_empty() && s.write_all(&first).await.is_err() {
        return Some(answer);
    }
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let mut buf = [0u8; 2048];
    loop {
        tokio::select! {
            _ = stop.cancelled() => return None,
            r = s.read(&mut buf) => match r {
                Ok(0) | Err(_) => return Some(answer),
                // An answer (a refusal, a timeout): the connection closes after it.
                Ok(n) => {
                    if answer.len() < 256 {
                        answer.extend_from_slice(&buf[..n.min(256)]);
                    }
                }
            },
            _ = tick.tick(), if !more.is_empty() => {
                if s.write_all(more).await.is_err() {
                    // Closed while writing: whatever was answered may still be readable.
                    if let Ok(Ok(n)) =
                        tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await
                    {
                        answer.extend_from_slice(&buf[..n.min(256)]);
                    }
                    return Some(answer);
                }
            }
        }
    }
}

/// The slow connections held open while the honest exporter runs: the fewest and the mean of
/// samples every half second.
pub(super) struct OpenSampler {
    task: tokio::task::JoinHandle<(i64, f64)>,
}

impl OpenSampler {
    pub(super) fn start(stats: Arc<SlowStats>, stop: CancellationToken) -> OpenSampler {
        let task = tokio::spawn(async move {
            let (mut min, mut sum, mut n) = (i64::MAX, 0i64, 0i64);
            while !stop.is_cancelled() {
                let open = stats.open_total();
                min = min.min(open);
                sum += open;
                n += 1;
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
            (if n == 0 { 0 } else { min }, sum as f64 / n.max(1) as f64)
        });
        OpenSampler { task }
    }

    pub(super) async fn finish(self) -> (i64, f64) {
        self.task.await.unwrap_or((0, 0.0))
    }
}
