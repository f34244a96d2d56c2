//! The attackers: each sends the attack requests in turn, back to back, over OTLP HTTP or gRPC,
//! and counts what the server answered.

use super::attacks::Attack;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use prost::bytes::Bytes;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub(super) struct Targets {
    pub(super) api: SocketAddr,
    pub(super) grpc: SocketAddr,
    pub(super) otlp: SocketAddr,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Transport {
    Http,
    Grpc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    Ok,
    Partial,
    TooLarge,
    Unavailable,
    Other,
    /// No answer: the connection failed or was closed.
    Broken,
}

const ANSWERS: [Answer; 6] = [
    Answer::Ok,
    Answer::Partial,
    Answer::TooLarge,
    Answer::Unavailable,
    Answer::Other,
    Answer::Broken,
];

/// Answers per attack kind and transport, and a sample of the unexpected ones.
pub(super) struct Answers {
    /// [attack][transport][answer]
    counts: Vec<[[AtomicU64; 6]; 2]>,
    /// Sum of answer times per attack, µs.
    pub(super) micros: Vec<AtomicU64>,
    pub(super) odd: Mutex<BTreeMap<String, u64>>,
}

impl Answers {
    pub(super) fn new(attacks: &[Attack]) -> Answers {
        Answers {
            counts: attacks.iter().map(|_| Default::default()).collect(),
            micros: attacks.iter().map(|_| AtomicU64::new(0)).collect(),
            odd: Mutex::new(BTreeMap::new()),
        }
    }

    fn add(
        &self,
        attack: usize,
        t: Transport,
        answer: Answer,
        note: Option<String>,
        took: Duration,
    ) {
        let ti = usize::from(t == Transport::Grpc);
        let ai = ANSWERS.iter().position(|a| *a == answer).unwrap_or(4);
        self.counts[attack][ti][ai].fetch_add(1, Ordering::Relaxed);
        self.micros[attack].fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        if let Some(n) = note {
            let mut odd = self.odd.lock().unwrap_or_else(|p| p.into_inner());
            // Distinct messages only, and not unboundedly many.
            if odd.len() < 40 || odd.contains_key(&n) {
                *odd.entry(n).or_default() += 1;
            }
        }
    }

    pub(super) fn get(&self, attack: usize, answer: Answer) -> u64 {
        let ai = ANSWERS.iter().position(|a| *a == answer).unwrap_or(4);
        self.counts[attack]
            .iter()
            .map(|t| t[ai].load(Ordering::Relaxed))
            .sum()
    }

    pub(super) fn total(&self, attack: usize) -> u64 {
        ANSWERS.iter().map(|a| self.get(attack, *a)).sum()
    }
}

/// One attacker: the attack kinds in turn, back to back, on one transport, until stopped.
pub(super) async fn attacker(
    index: usize,
    transport: Transport,
    targets: Targets,
    token: String,
    attacks: Arc<Vec<Attack>>,
    answers: Arc<Answers>,
    stop: CancellationToken,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(90))
        .build();
    let Ok(http) = http else {
        return;
    };
    let url = format!("http://{}/v1/traces", targets.otlp);
    let mut grpc: Option<GrpcConn> = None;
    let mut k = index / 2;
    while !stop.is_cancelled() && !attacks.is_empty() {
        let which = k % attacks.len();
        k += 1;
        let attack = &attacks[which];
        let body = attack.body();
        let started = Instant::now();
        let sent = async {
            match transport {
                Transport::Http => send_http(&http, &url, &token, body).await,
                Transport::Grpc => {
                    let conn = match grpc.take() {
                        Some(c) => c,
                        None => match GrpcConn::connect(targets.grpc).await {
                            Ok(c) => c,
                            Err(e) => {
                                return (Answer::Broken, Some(format!("gRPC connect: {e}")), None);
                            }
                        },
                    };
                    let (answer, note) = conn.send(&token, body).await;
                    let keep = (answer != Answer::Broken).then_some(conn);
                    (answer, note, keep)
                }
            }
        };
        let (answer, note, conn) = tokio::select! {
            _ = stop.cancelled() => break,
            r = sent => r,
        };
        grpc = conn;
        answers.add(which, transport, answer, note, started.elapsed());
        if answer == Answer::Broken {
            // Not a busy loop against a listener that refuses connections.
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }
}

/// An error with its causes ("error sending request" alone does not say what happened), the
/// URL left out so equal failures count as one.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        parts.push(err.to_string());
        next = err.source();
    }
    let text = parts.join(": ");
    match text.split_once(" for url (") {
        Some((head, rest)) => format!("{head}{}", rest.split_once(')').map_or("", |r| r.1)),
        None => text,
    }
}

fn partial(body: &[u8]) -> Answer {
    match ExportTraceServiceResponse::decode(body) {
        Ok(r)
            if r.partial_success
                .as_ref()
                .is_some_and(|p| p.rejected_spans > 0) =>
        {
            Answer::Partial
        }
        _ => Answer::Ok,
    }
}

async fn send_http(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: Bytes,
) -> (Answer, Option<String>, Option<GrpcConn>) {
    let r = http
        .post(url)
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .bearer_auth(token)
        .body(body)
        .send()
        .await;
    let r = match r {
        Ok(r) => r,
        Err(e) => return (Answer::Broken, Some(format!("HTTP: {}", chain(&e))), None),
    };
    let status = r.status().as_u16();
    let body = r.bytes().await.unwrap_or_default();
    let answer = match status {
        200 => partial(&body),
        413 => Answer::TooLarge,
        503 => Answer::Unavailable,
        _ => Answer::Other,
    };
    let note = (answer == Answer::Other).then(|| {
        let message = tonic_types::pb::Status::decode(body.as_ref())
            .map(|s| s.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).chars().take(200).collect());
        format!("HTTP {status}: {message}")
    });
    (answer, note, None)
}

/// One HTTP/2 connection speaking unary gRPC with a body already compressed (tonic's client
/// would compress it again for every call).
struct GrpcConn {
    send: hyper::client::conn::http2::SendRequest<http_body_util::Full<Bytes>>,
    authority: String,
}

impl GrpcConn {
    async fn connect(addr: SocketAddr) -> anyhow::Result<GrpcConn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await?;
        tokio::spawn(conn);
        Ok(GrpcConn {
            send,
            authority: addr.to_string(),
        })
    }

    async fn send(&self, token: &str, gz: Bytes) -> (Answer, Option<String>) {
        use http_body_util::BodyExt;
        let mut frame = Vec::with_capacity(gz.len() + 5);
        frame.push(1);
        frame.extend_from_slice(&u32::try_from(gz.len()).unwrap_or(u32::MAX).to_be_bytes());
        frame.extend_from_slice(&gz);
        let req = hyper::Request::post(format!(
            "http://{}{}",
            self.authority,
            crate::ingest::grpc::TRACE_EXPORT
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-encoding", "gzip")
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Full::new(Bytes::from(frame)));
        let req = match req {
            Ok(r) => r,
            Err(e) => return (Answer::Other, Some(format!("gRPC request: {e}"))),
        };
        let mut send = self.send.clone();
        let resp = match send.send_request(req).await {
            Ok(r) => r,
            Err(e) => return (Answer::Broken, Some(format!("gRPC: {}", chain(&e)))),
        };
        let http_status = resp.status().as_u16();
        let head_status = resp.headers().get("grpc-status").cloned();
        let head_message = resp.headers().get("grpc-message").cloned();
        let collected = match resp.into_body().collect().await {
            Ok(c) => c,
            Err(e) => return (Answer::Broken, Some(format!("gRPC body: {}", chain(&e)))),
        };
        let trailers = collected.trailers().cloned();
        let data = collected.to_bytes();
        let code = head_status
            .or_else(|| {
                trailers
                    .as_ref()
                    .and_then(|t| t.get("grpc-status").cloned())
            })
            .and_then(|v| v.to_str().ok().and_then(|s| s.parse::<i32>().ok()));
        let message = head_message
            .or_else(|| {
                trailers
                    .as_ref()
                    .and_then(|t| t.get("grpc-message").cloned())
            })
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        match code {
            Some(0) => (partial(data.get(5..).unwrap_or_default()), None),
            Some(8) => (Answer::TooLarge, None),
            Some(14) => (Answer::Unavailable, None),
            Some(c) => (Answer::Other, Some(format!("gRPC {c}: {message}"))),
            None => (
                Answer::Other,
                Some(format!("HTTP {http_status} without grpc-status")),
            ),
        }
    }
}
