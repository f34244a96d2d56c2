//! The witness client: for each `[[tlog.witnesses]]`, a task that notices the newest checkpoint
//! and sends it to the witness's `add-checkpoint` with a consistency proof from the size that
//! witness last cosigned, stores the cosignatures that verify under the configured key, and
//! reports what a witness refuses. Each witness runs on its own, so a slow or dead one delays
//! nothing but itself, and never ingest (it only reads the store).
//!
//! Only the newest checkpoint is submitted each round: a witness only needs to move forward,
//! and the consistency proof covers every size skipped.

use crate::core::ledger::cosign::{Cosignature, CosignerKey};
use crate::core::ledger::policy::Policy;
use crate::read::export::consistency_proof;
use crate::storage::{CheckpointRow, CosignatureRow, Store};
use crate::sys::metrics::Registry;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often each task looks for a new checkpoint.
const POLL: Duration = Duration::from_millis(500);
/// The longest wait between tries at a witness that keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A witness answer larger than this is not an answer (a few signature lines or a size).
const MAX_ANSWER: usize = 64 * 1024;

pub const COSIGNATURES_TOTAL: &str = "changetrail_tlog_cosignatures_total";
pub const ERRORS_TOTAL: &str = "changetrail_tlog_witness_errors_total";

/// One configured witness.
#[derive(Debug, Clone)]
pub struct Witness {
    /// Its submission prefix.
    pub url: String,
    pub key: CosignerKey,
}

impl Witness {
    /// `<prefix>/add-checkpoint`, with exactly one slash between.
    fn add_checkpoint_url(&self) -> String {
        format!("{}/add-checkpoint", self.url.trim_end_matches('/'))
    }
}

/// Why a round at a witness failed: the `reason` label of the errors metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 409 naming a size larger than our newest checkpoint: the witness cosigned a bigger tree
    /// than this ledger has, so this ledger was rolled back or forked.
    Ahead(String),
    /// 409 that a retry did not settle: the witness keeps disagreeing about the old size.
    Conflict(String),
    /// 422: the witness finds our checkpoint inconsistent with what it saw: a possible fork.
    Inconsistent(String),
    /// 403: our log signature is not one it trusts.
    Forbidden(String),
    /// 404: it does not know our origin.
    UnknownLog(String),
    /// 400 or another 4xx.
    BadRequest(String),
    /// 5xx, timeouts, connection trouble, or an answer we cannot read: tried again later.
    Unavailable(String),
}

impl Refusal {
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Ahead(_) => "ahead",
            Refusal::Conflict(_) => "conflict",
            Refusal::Inconsistent(_) => "inconsistent",
            Refusal::Forbidden(_) => "forbidden",
            Refusal::UnknownLog(_) => "unknown_log",
            Refusal::BadRequest(_) => "bad_request",
            Refusal::Unavailable(_) => "unavailable",
        }
    }

    fn detail(&self) -> &str {
        match self {
            Refusal::Ahead(d)
            | Refusal::Conflict(d)
            | Refusal::Inconsistent(d)
            | Refusal::Forbidden(d)
            | Refusal::UnknownLog(d)
            | Refusal::BadRequest(d)
            | Refusal::Unavailable(d) => d,
        }
    }
}

/// Whether the newest checkpoint meets the policy, for `/metrics` and the console.
#[derive(Debug, Default)]
pub struct Witnessing {
    /// -1 unknown (no checkpoint or no policy), 0 no, 1 yes.
    pub latest_witnessed: AtomicI64,
    /// The newest checkpoint's size when it lacks the quorum, else 0.
    pub unwitnessed_size: AtomicU64,
    /// Entries beyond the newest checkpoint that met the quorum (while this process watched).
    pub lag_entries: AtomicU64,
}

/// What the client needs; built at startup from `[tlog]`.
pub struct WitnessClient {
    pub store: Store,
    pub witnesses: Vec<Witness>,
    pub policy: Option<Arc<Policy>>,
    pub timeout: Duration,
    pub metrics: Arc<Registry>,
    pub witnessing: Arc<Witnessing>,
}

impl WitnessClient {
    /// Starts one task per witness and, with a policy, one that watches the quorum.
    pub fn spawn(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.metrics.describe(
            COSIGNATURES_TOTAL,
            "counter",
            "Valid cosignatures received from each witness ([[tlog.witnesses]]).",
        );
        self.metrics.describe(
            ERRORS_TOTAL,
            "counter",
            "Rounds a witness refused or failed, by reason: ahead (409: the witness cosigned a larger tree than ours: rollback or fork), conflict (409 a retry did not settle), inconsistent (422: possible fork), forbidden (403), unknown_log (404), bad_request (400), unavailable (5xx, timeout).",
        );
        // No redirects: a witness URL answering 307 would have the checkpoint re-posted anywhere.
        let http = reqwest::Client::builder()
            .timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| anyhow::anyhow!("witness HTTP client: {e}"))?;
        for w in &self.witnesses {
            let task = Submitter {
                store: self.store.clone(),
                witness: w.clone(),
                http: http.clone(),
                metrics: self.metrics.clone(),
            };
            tokio::spawn(task.run(shutdown.clone()));
        }
        if let Some(policy) = self.policy {
            tokio::spawn(watch_quorum(self.store, policy, self.witnessing, shutdown));
        }
        Ok(())
    }
}

struct Submitter {
    store: Store,
    witness: Witness,
    http: reqwest::Client,
    metrics: Arc<Registry>,
}

impl Submitter {
    async fn run(self, shutdown: CancellationToken) {
        let name = self.witness.key.name().to_owned();
        let mut done: Option<(u64, crate::core::ledger::hash::Hash)> = None;
        let mut backoff = Duration::ZERO;
        let mut last_problem: Option<String> = None;
        loop {
            let wait = POLL.max(backoff);
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            let cp = match self.store.latest_checkpoint().await {
                Ok(Some(cp)) => cp,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "Witness client cannot read the newest checkpoint.");
                    continue;
                }
            };
            if done == Some((cp.size, cp.root)) {
                continue;
            }
            match self.submit(&cp).await {
                Ok(n) => {
                    self.metrics
                        .add(COSIGNATURES_TOTAL, &[("witness", &name)], n);
                    if last_problem.take().is_some() {
                        tracing::info!(witness = %name, size = cp.size, "Witness cosigns again.");
                    }
                    done = Some((cp.size, cp.root));
                    backoff = Duration::ZERO;
                }
                Err(r) => {
                    self.metrics.add(
                        ERRORS_TOTAL,
                        &[("witness", &name), ("reason", r.reason())],
                        1,
                    );
                    let problem = format!("{}: {}", r.reason(), r.detail());
                    // Once per distinct problem: a dead witness must not flood the log.
                    if last_problem.as_deref() != Some(problem.as_str()) {
                        tracing::error!(
                            witness = %name, size = cp.size, reason = r.reason(),
                            detail = r.detail(), "Witness did not cosign the checkpoint."
                        );
                        last_problem = Some(problem);
                    }
                    backoff = (backoff * 2).clamp(Duration::from_secs(1), MAX_BACKOFF);
                }
            }
        }
    }

    /// One add-checkpoint exchange (and one retry after a 409 naming a size we can prove
    /// from); the number of cosignatures stored.
    async fn submit(&self, cp: &CheckpointRow) -> Result<u64, Refusal> {
        let vkey = self.witness.key.to_string();
        let unavailable = |e: &dyn std::fmt::Display| Refusal::Unavailable(e.to_string());
        let mut old = self
            .store
            .witness_known_size(&vkey)
            .await
            .map_err(|e| unavailable(&e))?
            .unwrap_or(0)
            .min(cp.size);
        for attempt in 0..2 {
            let body = self.request_body(old, cp).await?;
            let resp = self
                .http
                .post(self.witness.add_checkpoint_url())
                .body(body)
                .send()
                .await
                // Without the URL: it may carry a credential, and it is in the configuration.
                .map_err(|e| unavailable(&e.without_url()))?;
            let status = resp.status().as_u16();
            let text = read_limited(resp).await?;
            match status {
                200 => return self.store_cosignatures(cp, &text).await,
                409 => {
                    let theirs = parse_size(&text).ok_or_else(|| {
                        Refusal::Conflict(format!("409 without a readable size: {text:.80}"))
                    })?;
                    if theirs > cp.size {
                        return Err(Refusal::Ahead(format!(
                            "the witness has cosigned size {theirs}, larger than our newest \
                             checkpoint {}: a rollback or a fork",
                            cp.size
                        )));
                    }
                    if attempt == 1 {
                        return Err(Refusal::Conflict(format!(
                            "the witness still disagrees about the old size (says {theirs})"
                        )));
                    }
                    old = theirs;
                    let _ = self
                        .store
                        .set_witness_known_size(&vkey, theirs, crate::sys::now_ns())
                        .await;
                }
                422 => {
                    return Err(Refusal::Inconsistent(format!(
                        "size {} from old size {old} refused as inconsistent with what the \
                         witness saw (possible fork): {text:.200}",
                        cp.size
                    )));
                }
                403 => return Err(Refusal::Forbidden(format!("403: {text:.200}"))),
                404 => return Err(Refusal::UnknownLog(format!("404: {text:.200}"))),
                400..=499 => return Err(Refusal::BadRequest(format!("{status}: {text:.200}"))),
                _ => return Err(Refusal::Unavailable(format!("{status}: {text:.200}"))),
            }
        }
        Err(Refusal::Conflict("unreachable retry end".into()))
    }

    /// `old <size>\n`, the proof lines, an empty line, the log-signed checkpoint.
    async fn request_body(&self, old: u64, cp: &CheckpointRow) -> Result<String, Refusal> {
        let mut body = format!("old {old}\n");
        if old > 0 && old < cp.size {
            let proof = consistency_proof(&self.store, old, cp.size)
                .await
                .map_err(|e| Refusal::Unavailable(format!("consistency proof: {e}")))?;
            for h in proof {
                body.push_str(&h.to_b64());
                body.push('\n');
            }
        }
        body.push('\n');
        body.push_str(&cp.note);
        Ok(body)
    }

    /// Keeps the lines that are this witness's valid cosignatures of `cp`; the others are
    /// ignored as C2SP asks. An answer with none is a failure worth reporting.
    async fn store_cosignatures(&self, cp: &CheckpointRow, text: &str) -> Result<u64, Refusal> {
        let body = cp
            .note
            .find("\n\n")
            .map(|i| &cp.note[..=i])
            .ok_or_else(|| Refusal::Unavailable("stored checkpoint note is malformed".into()))?;
        let now = crate::sys::now_ns();
        let mut stored = 0;
        for line in text.lines().filter(|l| !l.is_empty()) {
            let Ok(c) = Cosignature::parse_line(line) else {
                continue;
            };
            if !self.witness.key.verify(body, &c) {
                continue;
            }
            let row = CosignatureRow {
                checkpoint_size: cp.size,
                witness: c.name.clone(),
                key_id: c.key_id.to_hex(),
                line: line.to_owned(),
                timestamp_s: c.timestamp,
                received_ns: now,
            };
            self.store
                .insert_cosignature(&row)
                .await
                .map_err(|e| Refusal::Unavailable(format!("storing a cosignature: {e}")))?;
            stored += 1;
        }
        if stored == 0 {
            return Err(Refusal::BadRequest(
                "200 without a valid cosignature under the configured vkey (check the vkey)".into(),
            ));
        }
        let vkey = self.witness.key.to_string();
        self.store
            .set_witness_known_size(&vkey, cp.size, now)
            .await
            .map_err(|e| Refusal::Unavailable(format!("storing the witness's size: {e}")))?;
        Ok(stored)
    }
}

/// Reads at most [`MAX_ANSWER`] bytes of an answer as text.
async fn read_limited(mut resp: reqwest::Response) -> Result<String, Refusal> {
    let mut buf = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| Refusal::Unavailable(e.to_string()))?
    {
        if buf.len() + chunk.len() > MAX_ANSWER {
            return Err(Refusal::Unavailable("answer larger than 64 KiB".into()));
        }
        buf.extend_from_slice(&chunk);
    }
    String::from_utf8(buf).map_err(|_| Refusal::Unavailable("answer is not UTF-8".into()))
}

/// A 409 body: `<size>\n`, canonical decimal.
fn parse_size(text: &str) -> Option<u64> {
    let s = text.strip_suffix('\n')?;
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if canonical { s.parse().ok() } else { None }
}

/// Keeps [`Witnessing`] current: whether the newest checkpoint, with its stored cosignatures,
/// meets the policy's quorum.
async fn watch_quorum(
    store: Store,
    policy: Arc<Policy>,
    w: Arc<Witnessing>,
    shutdown: CancellationToken,
) {
    w.latest_witnessed.store(-1, Ordering::Relaxed);
    let mut newest_witnessed: u64 = 0;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(POLL) => {}
        }
        let Ok(Some(cp)) = store.latest_checkpoint().await else {
            continue;
        };
        let Ok(note) = crate::read::tlog::served_checkpoint_note(&store, &cp).await else {
            continue;
        };
        let met = policy.check(&note).is_ok_and(|v| v.quorum_met);
        if met {
            newest_witnessed = newest_witnessed.max(cp.size);
        }
        w.latest_witnessed.store(i64::from(met), Ordering::Relaxed);
        w.unwitnessed_size
            .store(if met { 0 } else { cp.size }, Ordering::Relaxed);
        w.lag_entries
            .store(cp.size.saturating_sub(newest_witnessed), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn conflict_sizes_are_strict() {
        assert_eq!(parse_size("12\n"), Some(12));
        assert_eq!(parse_size("0\n"), Some(0));
        for bad in [
            "12",
            "012\n",
            "+1\n",
            "\n",
            "1 \n",
            "18446744073709551616\n",
        ] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }
}
