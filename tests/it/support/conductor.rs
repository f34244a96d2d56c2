//! A stand-in Conductor server on a free port, answering the endpoints the reconciler uses as
//! Conductor documents them: `GET /api/workflow/search` (a SearchResult of WorkflowSummary:
//! `totalHits`, `results`, ISO 8601 times, `input`/`output` as JSON text; `start`, `size`,
//! `sort`, `query` such as `updateTime>N AND workflowType IN (a,b)`),
//! `GET /api/workflow/{id}?includeTasks=true` (the Workflow with epoch-ms times; 404 with
//! Conductor's error body when absent) and Orkes' `POST /api/token` (`{"keyId","keySecret"}` →
//! `{"token"}`, then `X-Authorization`). Tests change its executions and tell it to misbehave:
//! 5xx, stalls past the client's timeout, 429, 401, expired tokens, small pages.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The repository's realistic execution (a deploy with an approval and a retried deploy task).
pub fn vector_execution() -> Value {
    serde_json::from_str(include_str!("../vectors/conductor-deploy-execution.json")).unwrap()
}

/// The vector under another workflow id and change id.
pub fn execution(workflow_id: &str, change_id: &str) -> Value {
    let mut e = vector_execution();
    e["workflowId"] = json!(workflow_id);
    e["correlationId"] = json!(change_id);
    if let Some(c) = e.pointer_mut("/input/change/id") {
        *c = json!(change_id);
    }
    // Task ids are unique per execution in Conductor.
    if let Some(tasks) = e["tasks"].as_array_mut() {
        for t in tasks {
            let id = format!("{workflow_id}-{}", t["seq"]);
            t["taskId"] = json!(id);
            t["workflowInstanceId"] = json!(workflow_id);
        }
    }
    e
}

#[derive(Default)]
struct Server {
    /// workflow id → (execution, its updateTime in ms).
    executions: BTreeMap<String, (Value, i64)>,
    last_update_ms: i64,
    /// Orkes mode: the access key, and the tokens issued and still valid.
    key: Option<(String, String)>,
    tokens: BTreeSet<String>,
    issued: u64,
    /// Misbehaviour, each for the next N requests to the workflow endpoints.
    fail: u32,
    stall: u32,
    rate_limit: u32,
    unauthorized: u32,
    /// Every workflow request answers 503 while set.
    down: bool,
    /// The server answers at most this many results per page, whatever `size` asks.
    max_page: Option<usize>,
    /// Every search answers all its hits from `start`, whatever `size` asks.
    ignore_size: bool,
    calls: BTreeMap<&'static str, u64>,
    /// Executions whose next N fetches answer 500, and each execution's fetches.
    broken: BTreeMap<String, u32>,
    fetched: BTreeMap<String, u64>,
    /// The `query` parameter of each search.
    queries: Vec<String>,
}

#[derive(Clone)]
pub struct StandIn {
    pub url: String,
    state: Arc<Mutex<Server>>,
}

/// How long a stall lasts: longer than any test's client timeout.
pub const STALL: Duration = Duration::from_secs(3);

fn now_ms() -> i64 {
    changetrail::sys::now_ns() / 1_000_000
}

/// ISO 8601 UTC with milliseconds, as Conductor writes a WorkflowSummary's times.
fn iso(ms: i64) -> String {
    let secs = changetrail::core::time::rfc3339(ms * 1_000_000);
    format!("{}.{:03}Z", secs.trim_end_matches('Z'), ms.rem_euclid(1000))
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"status": status.as_u16(), "message": message,
                    "instance": "conductor-stand-in", "retryable": status.is_server_error()})),
    )
        .into_response()
}

impl StandIn {
    /// OSS Conductor: no authentication.
    pub async fn start() -> StandIn {
        Self::serve(Server::default()).await
    }

    /// Orkes Conductor: tokens from `POST /api/token` for this access key.
    pub async fn orkes(key_id: &str, key_secret: &str) -> StandIn {
        Self::serve(Server {
            key: Some((key_id.into(), key_secret.into())),
            ..Server::default()
        })
        .await
    }

    async fn serve(state: Server) -> StandIn {
        let state = Arc::new(Mutex::new(state));
        let app = axum::Router::new()
            .route("/api/workflow/search", axum::routing::get(search))
            .route("/api/workflow/{id}", axum::routing::get(workflow))
            .route("/api/token", axum::routing::post(token))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        StandIn {
            url: format!("http://{addr}"),
            state,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Server) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    /// Adds or replaces an execution, updated a moment ago (each update strictly later than the
    /// last, and none in the future: several in one millisecond must not run ahead of the clock).
    pub fn put(&self, doc: Value) {
        self.with(|s| {
            let t = (now_ms() - 10_000).max(s.last_update_ms + 1);
            s.last_update_ms = t;
            let id = doc["workflowId"].as_str().unwrap().to_owned();
            s.executions.insert(id, (doc, t));
        });
    }

    /// Adds an execution updated at exactly `update_ms` (several may share it).
    pub fn put_at(&self, doc: Value, update_ms: i64) {
        self.with(|s| {
            s.last_update_ms = s.last_update_ms.max(update_ms);
            let id = doc["workflowId"].as_str().unwrap().to_owned();
            s.executions.insert(id, (doc, update_ms));
        });
    }

    /// Changes an execution as a Conductor API call would (its updateTime moves).
    pub fn edit(&self, id: &str, f: impl FnOnce(&mut Value)) {
        let mut doc = self.get(id);
        f(&mut doc);
        self.put(doc);
    }

    /// Changes an execution behind Conductor's back (a database edit: updateTime stays).
    pub fn edit_quietly(&self, id: &str, f: impl FnOnce(&mut Value)) {
        self.with(|s| f(&mut s.executions.get_mut(id).unwrap().0));
    }

    pub fn get(&self, id: &str) -> Value {
        self.with(|s| s.executions[id].0.clone())
    }

    pub fn delete(&self, id: &str) {
        self.with(|s| s.executions.remove(id));
    }

    pub fn fail_next(&self, n: u32) {
        self.with(|s| s.fail = n);
    }

    pub fn stall_next(&self, n: u32) {
        self.with(|s| s.stall = n);
    }

    pub fn rate_limit_next(&self, n: u32) {
        self.with(|s| s.rate_limit = n);
    }

    pub fn unauthorized_next(&self, n: u32) {
        self.with(|s| s.unauthorized = n);
    }

    /// Every token issued so far stops being accepted (they expired).
    pub fn expire_tokens(&self) {
        self.with(|s| s.tokens.clear());
    }

    pub fn set_down(&self, down: bool) {
        self.with(|s| s.down = down);
    }

    /// Searches answer more than asked: every hit from `start`.
    pub fn ignore_size(&self) {
        self.with(|s| s.ignore_size = true);
    }

    pub fn cap_page(&self, n: usize) {
        self.with(|s| s.max_page = Some(n));
    }

    /// Requests answered per endpoint: "search", "workflow", "token" (and "refused" for the
    /// workflow requests turned away by an injected failure).
    pub fn calls(&self, what: &str) -> u64 {
        self.with(|s| s.calls.get(what).copied().unwrap_or(0))
    }

    /// The next `n` fetches of execution `id` answer 500.
    pub fn fail_workflow(&self, id: &str, n: u32) {
        self.with(|s| s.broken.insert(id.to_owned(), n));
    }

    /// How often execution `id` was fetched (answered or not).
    pub fn workflow_calls(&self, id: &str) -> u64 {
        self.with(|s| s.fetched.get(id).copied().unwrap_or(0))
    }

    pub fn queries(&self) -> Vec<String> {
        self.with(|s| s.queries.clone())
    }
}

type Shared = Arc<Mutex<Server>>;

/// The injected misbehaviour and the token check, for the workflow endpoints: `Err` to answer
/// with, or a stall to sleep through first.
fn gate(state: &Shared, headers: &HeaderMap, what: &'static str) -> Result<bool, Box<Response>> {
    let mut s = state.lock().unwrap();
    *s.calls.entry(what).or_default() += 1;
    let refuse = |s: &mut Server, r: Response| {
        *s.calls.entry("refused").or_default() += 1;
        Err(Box::new(r))
    };
    if s.down {
        return refuse(&mut s, error(StatusCode::SERVICE_UNAVAILABLE, "down"));
    }
    if s.fail > 0 {
        s.fail -= 1;
        return refuse(
            &mut s,
            error(StatusCode::INTERNAL_SERVER_ERROR, "injected failure"),
        );
    }
    if s.rate_limit > 0 {
        s.rate_limit -= 1;
        let mut r = error(StatusCode::TOO_MANY_REQUESTS, "rate limited");
        r.headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("1"));
        return refuse(&mut s, r);
    }
    if s.unauthorized > 0 {
        s.unauthorized -= 1;
        return refuse(&mut s, error(StatusCode::UNAUTHORIZED, "INVALID_TOKEN"));
    }
    if s.key.is_some() {
        let token = headers
            .get("x-authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !s.tokens.contains(token) {
            return refuse(&mut s, error(StatusCode::UNAUTHORIZED, "EXPIRED_TOKEN"));
        }
    }
    let stall = s.stall > 0;
    s.stall = s.stall.saturating_sub(1);
    Ok(stall)
}

/// A WorkflowSummary of an execution, as the search and the status listener give it.
fn summary(doc: &Value, update_ms: i64) -> Value {
    let time = |k: &str| doc[k].as_i64().filter(|t| *t > 0).map(iso);
    json!({
        "workflowType": doc["workflowName"], "version": doc["workflowVersion"],
        "workflowId": doc["workflowId"], "correlationId": doc["correlationId"],
        "startTime": time("startTime"), "updateTime": iso(update_ms), "endTime": time("endTime"),
        "status": doc["status"], "input": doc["input"].to_string(),
        "output": doc["output"].to_string(), "executionTime": 0,
        "failedReferenceTaskNames": "", "priority": 0,
    })
}

/// `updateTime>N` and `workflowType IN (a,b)` joined by AND, as the reconciler writes them.
fn matches(query: &str, doc: &Value, update_ms: i64) -> bool {
    query.split(" AND ").all(|clause| {
        let clause = clause.trim();
        if let Some(n) = clause.strip_prefix("updateTime>") {
            return update_ms > n.trim().parse::<i64>().unwrap();
        }
        if let Some(list) = clause.strip_prefix("workflowType IN (") {
            let names: Vec<&str> = list
                .trim_end_matches(')')
                .split(',')
                .map(str::trim)
                .collect();
            return names.contains(&doc["workflowName"].as_str().unwrap_or(""));
        }
        clause.is_empty()
    })
}

async fn search(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let stall = match gate(&state, &headers, "search") {
        Ok(stall) => stall,
        Err(r) => return *r,
    };
    if stall {
        tokio::time::sleep(STALL).await;
    }
    let mut s = state.lock().unwrap();
    let query = q.get("query").cloned().unwrap_or_default();
    s.queries.push(query.clone());
    assert_eq!(q.get("sort").map(String::as_str), Some("updateTime:ASC"));
    let mut hits: Vec<(&String, &(Value, i64))> = s
        .executions
        .iter()
        .filter(|(_, (doc, t))| matches(&query, doc, *t))
        .collect();
    hits.sort_by_key(|(id, (_, t))| (*t, (*id).clone()));
    let start: usize = q.get("start").map_or(0, |v| v.parse().unwrap());
    let size: usize = q.get("size").map_or(100, |v| v.parse().unwrap());
    let size = s.max_page.map_or(size, |m| size.min(m));
    let size = if s.ignore_size { usize::MAX } else { size };
    let results: Vec<Value> = hits
        .iter()
        .skip(start)
        .take(size)
        .map(|(_, (doc, t))| summary(doc, *t))
        .collect();
    Json(json!({"totalHits": hits.len(), "results": results})).into_response()
}

async fn workflow(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    {
        let mut s = state.lock().unwrap();
        *s.fetched.entry(id.clone()).or_default() += 1;
        if let Some(n) = s.broken.get_mut(&id).filter(|n| **n > 0) {
            *n -= 1;
            return error(StatusCode::INTERNAL_SERVER_ERROR, "injected failure");
        }
    }
    let stall = match gate(&state, &headers, "workflow") {
        Ok(stall) => stall,
        Err(r) => return *r,
    };
    if stall {
        tokio::time::sleep(STALL).await;
    }
    let s = state.lock().unwrap();
    let Some((doc, t)) = s.executions.get(&id) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("No such workflow found by id: {id}"),
        );
    };
    let mut doc = doc.clone();
    doc["updateTime"] = json!(t);
    if q.get("includeTasks").map(String::as_str) != Some("true") {
        doc.as_object_mut().unwrap().remove("tasks");
    }
    Json(doc).into_response()
}

async fn token(State(state): State<Shared>, Json(body): Json<Value>) -> Response {
    let mut s = state.lock().unwrap();
    *s.calls.entry("token").or_default() += 1;
    let Some((id, secret)) = s.key.clone() else {
        return error(StatusCode::NOT_FOUND, "no token endpoint on OSS Conductor");
    };
    if body["keyId"] != json!(id) || body["keySecret"] != json!(secret) {
        return error(StatusCode::UNAUTHORIZED, "invalid access key");
    }
    s.issued += 1;
    let token = format!(
        "tok-{}-{}",
        s.issued,
        hex::encode(changetrail::sys::random_bytes::<8>())
    );
    s.tokens.insert(token.clone());
    Json(json!({"token": token})).into_response()
}
