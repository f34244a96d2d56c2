//! Identity propagation through Conductor tasks (src/ingest/CONVENTIONS.md): the example workflow
//! (tests/conductor/deploy-workflow.json) puts changetrail's gate before the deploy and hands the
//! deploy worker the workflow's traceparent, the requester's and approver's tokens and the
//! workflow id; the example worker (tests/conductor/worker.py, the OpenTelemetry Python SDK) puts
//! them on its span, which binds to the workflow's change with the requester verified as the
//! identity the deploy ran for, inside the workflow's trace.

use crate::support::idp::{self, AUDIENCE, ISSUER};
use crate::support::python::{CONDUCTOR_WORKER, python};
use crate::support::scenario::{CONDUCTOR, codes, packet, scenario_config};
use crate::support::server::{TestApp, TestDb, spawn_app_with, verify_store};
use changetrail::app::config::Config;
use changetrail::sys::now_ns;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message;
use serde_json::{Value, json};

/// The example workflow definition, as registered with `POST /api/metadata/workflow`.
const WORKFLOW: &str = include_str!("../conductor/deploy-workflow.json");

/// The workflow's trace: what the process starting it put in its input.
const TRACE_ID: &str = "5a0c2f7e9b1d4c3a8e6f0b2d4c6a8e0f";
const PARENT_SPAN: &str = "7e3b9d1f5a2c4e60";

/// Every `${…}` expression in the strings of `v`.
fn expressions(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => {
            let mut rest = s.as_str();
            while let Some(i) = rest.find("${") {
                let Some(len) = rest[i..].find('}') else {
                    panic!("an unclosed expression in {s:?}")
                };
                out.push(rest[i + 2..i + len].to_owned());
                rest = &rest[i + len + 1..];
            }
        }
        Value::Array(a) => a.iter().for_each(|x| expressions(x, out)),
        Value::Object(o) => o.values().for_each(|x| expressions(x, out)),
        _ => {}
    }
}

fn task<'a>(def: &'a Value, reference: &str) -> (usize, &'a Value) {
    def["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .find(|(_, t)| t["taskReferenceName"] == reference)
        .unwrap_or_else(|| panic!("no task {reference}"))
}

#[test]
fn the_example_workflow_gates_the_deploy_and_hands_the_worker_its_identities() {
    let def: Value = serde_json::from_str(WORKFLOW).unwrap();
    assert_eq!(def["schemaVersion"], 2);
    assert!(def["name"].as_str().is_some_and(|n| !n.is_empty()));
    assert!(def["version"].is_u64());
    let inputs: Vec<&str> = def["inputParameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap())
        .collect();
    let tasks = def["tasks"].as_array().unwrap();
    let mut refs: Vec<&str> = Vec::new();
    for (i, t) in tasks.iter().enumerate() {
        for k in ["name", "taskReferenceName", "type"] {
            assert!(
                t[k].as_str().is_some_and(|v| !v.is_empty()),
                "task {i}: {k}"
            );
        }
        // Every reference names the workflow, a declared input, or a task that ran before.
        let mut exprs = Vec::new();
        expressions(&t["inputParameters"], &mut exprs);
        for e in exprs {
            let root = e.split('.').next().unwrap();
            if root == "workflow" {
                let rest = &e["workflow.".len()..];
                let ok = rest == "workflowId"
                    || rest.starts_with("secrets.")
                    || rest
                        .strip_prefix("input.")
                        .is_some_and(|k| inputs.contains(&k.split('.').next().unwrap()));
                assert!(ok, "task {i}: ${{{e}}} names no workflow input");
            } else {
                assert!(
                    refs.contains(&root),
                    "task {i}: ${{{e}}} names no earlier task"
                );
            }
        }
        refs.push(t["taskReferenceName"].as_str().unwrap());
    }
    let mut unique = refs.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), refs.len(), "reference names repeat: {refs:?}");
    let mut outs = Vec::new();
    expressions(&def["outputParameters"], &mut outs);
    assert!(!outs.is_empty());
    for e in outs {
        assert!(refs.contains(&e.split('.').next().unwrap()), "${{{e}}}");
    }

    // Approval, then the gate, then the deploy: a deny fails the gate and the deploy never runs.
    let correlation = Config::defaults().correlation;
    let (approval_at, approval) = task(&def, "approval");
    assert!(
        correlation
            .approval_task_types
            .contains(&approval["type"].as_str().unwrap().to_owned())
    );
    let (gate_at, gate) = task(&def, "gate");
    let (deploy_at, deploy) = task(&def, "deploy");
    assert!(approval_at < gate_at && gate_at < deploy_at);
    assert_eq!(gate["type"], "HTTP");
    assert_eq!(
        gate["optional"],
        Value::Null,
        "an optional gate lets a deny through"
    );
    let req = &gate["inputParameters"]["http_request"];
    assert_eq!(req["method"], "POST");
    assert_eq!(req["uri"], "${workflow.input.changetrailUrl}/v1/gate");
    assert_eq!(req["contentType"], "application/json");
    // The gate token is a secret of the Conductor cluster: workflow input is kept in the
    // execution's history, readable by anyone who can read the execution.
    assert!(
        req["headers"]["Authorization"]
            .as_str()
            .unwrap()
            .starts_with("Bearer ${workflow.secrets."),
        "{}",
        req["headers"]
    );
    assert_eq!(
        req["body"],
        json!({
            "change_id": "${workflow.input.change.id}",
            "environment": "${workflow.input.environment}",
            "artifact_digest": "${workflow.input.artifact.digest}",
        })
    );
    assert_eq!(deploy["type"], "SIMPLE");
    assert!(
        correlation
            .deploy_task_types
            .contains(&deploy["name"].as_str().unwrap().to_owned()),
        "the deploy task's type must be a deploy type"
    );
    let input = &deploy["inputParameters"];
    assert_eq!(input["traceparent"], "${workflow.input.traceparent}");
    assert_eq!(input["workflowId"], "${workflow.workflowId}");
    assert_eq!(input["changeId"], "${workflow.input.change.id}");
    assert_eq!(
        input["requestToken"],
        "${workflow.input.change.requestToken}"
    );
    assert_eq!(input["approvalToken"], "${approval.output.approvalToken}");
}

/// What Conductor hands a task: its input parameters with each `${…}` resolved against the
/// execution (`workflow.input.…`, `workflow.workflowId`, `<reference>.output.…`).
fn resolve_inputs(params: &Value, execution: &Value) -> Value {
    let at = |v: &Value, path: &[&str]| path.iter().fold(v.clone(), |v, k| v[*k].clone());
    let mut out = serde_json::Map::new();
    for (k, v) in params.as_object().unwrap() {
        let expr = v.as_str().unwrap();
        let path: Vec<&str> = expr
            .strip_prefix("${")
            .and_then(|e| e.strip_suffix('}'))
            .unwrap_or_else(|| panic!("{k}: not one expression: {expr}"))
            .split('.')
            .collect();
        let value = match path.as_slice() {
            ["workflow", "workflowId"] => execution["workflowId"].clone(),
            ["workflow", "input", rest @ ..] => at(&execution["input"], rest),
            [reference, "output", rest @ ..] => {
                let t = execution["tasks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|t| t["referenceTaskName"] == *reference)
                    .unwrap_or_else(|| panic!("{k}: no task {reference} ran"));
                at(&t["outputData"], rest)
            }
            _ => panic!("{k}: {expr}"),
        };
        assert!(!value.is_null(), "{k}: {expr} resolves to nothing");
        out.insert(k.clone(), value);
    }
    Value::Object(out)
}

/// The people's tokens, minted by the test issuer (the approver's bound to the change and its
/// artifact).
struct Tokens {
    requester: String,
    approver: String,
}

/// The vector's execution as Conductor shows it while its deploy task runs: moved to start
/// `t0_ms`, carrying the workflow's traceparent and the test issuer's tokens, the gate passed, and
/// the deploy task polled with its input resolved from the example workflow.
fn running_execution(t0_ms: i64, app: &TestApp, tokens: &Tokens) -> Value {
    let mut doc: Value = serde_json::from_str(CONDUCTOR).unwrap();
    let shift = t0_ms - doc["createTime"].as_i64().unwrap();
    let moved = |v: &Value| json!(v.as_i64().unwrap() + shift);
    for k in ["createTime", "updateTime", "startTime"] {
        doc[k] = moved(&doc[k]);
    }
    doc["status"] = "RUNNING".into();
    let o = doc.as_object_mut().unwrap();
    o.remove("endTime");
    o.remove("output");
    let digest = doc["input"]["artifact"]["digest"].clone();
    doc["input"]["change"]["requestToken"] = tokens.requester.clone().into();
    doc["input"]["traceparent"] = format!("00-{TRACE_ID}-{PARENT_SPAN}-01").into();
    doc["input"]["changetrailUrl"] = app.base.clone().into();
    // What ran before the deploy: the validation and the approval, then the gate.
    let mut tasks: Vec<Value> = doc["tasks"].as_array().unwrap()[..2].to_vec();
    for t in &mut tasks {
        for k in ["scheduledTime", "startTime", "endTime"] {
            t[k] = moved(&t[k]);
        }
    }
    let approval = &mut tasks[1];
    approval["inputData"]["artifactDigest"] = digest;
    approval["outputData"]["approvedAt"] = approval["endTime"].clone();
    approval["outputData"]["approvalToken"] = tokens.approver.clone().into();
    let approved_ms = approval["endTime"].as_i64().unwrap();
    tasks.push(json!({
        "taskType": "HTTP", "referenceTaskName": "gate", "status": "COMPLETED",
        "taskId": "0a1b2c3d-0000-4000-8000-0000000000a1", "retryCount": 0,
        "scheduledTime": approved_ms + 10, "startTime": approved_ms + 11, "endTime": approved_ms + 40,
        "outputData": { "response": { "statusCode": 200, "body": { "decision": "allow" } } }
    }));
    doc["tasks"] = tasks.into();
    let def: Value = serde_json::from_str(WORKFLOW).unwrap();
    let inputs = resolve_inputs(&task(&def, "deploy").1["inputParameters"], &doc);
    let workflow_id = doc["workflowId"].clone();
    doc["tasks"].as_array_mut().unwrap().push(json!({
        "taskType": task(&def, "deploy").1["name"], "referenceTaskName": "deploy",
        "status": "IN_PROGRESS", "taskId": "0a1b2c3d-0000-4000-8000-0000000000d1",
        "retryCount": 0, "pollCount": 1, "workerId": "deployer-5c8b7-qz4",
        "workflowInstanceId": workflow_id, "correlationId": "CHG-2041",
        "scheduledTime": approved_ms + 50, "startTime": approved_ms + 60,
        "inputData": inputs
    }));
    doc
}

async fn import(app: &TestApp, execution: &Value) {
    let r = app
        .http
        .post(format!("{}/v1/import/conductor", app.base))
        .bearer_auth(&app.ingest)
        .json(execution)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

/// One string attribute of a stored span.
fn attr(rs: &ResourceSpans, key: &str) -> Option<String> {
    let span = &rs.scope_spans[0].spans[0];
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => Some(s.clone()),
            _ => None,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_worker_binds_to_the_workflows_change_sqlite() {
    the_python_worker_binds_to_the_workflows_change(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_worker_binds_to_the_workflows_change_postgres() {
    if let Some(db) = TestDb::postgres("the_python_worker_binds_to_the_workflows_change").await {
        the_python_worker_binds_to_the_workflows_change(db).await;
    }
}

/// A Conductor execution imported while its deploy runs (requester and approver verified), the
/// example worker run on the polled deploy task, then the finished execution imported: one
/// attempt, stated by both, in the workflow's trace, run for the verified requester.
async fn the_python_worker_binds_to_the_workflows_change(db: TestDb) {
    let Some(py) = python("the_python_worker_binds_to_the_workflows_change") else {
        return;
    };
    let app = spawn_app_with(scenario_config(&db)).await;
    let t0_ms = now_ns() / 1_000_000 - 30 * 60 * 1000;
    let digest = serde_json::from_str::<Value>(CONDUCTOR).unwrap()["input"]["artifact"]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let approved_s = t0_ms / 1000 + 15 * 60;
    let tokens = Tokens {
        requester: idp::token("alice@example.com", &["engineer"], t0_ms * 1_000_000),
        approver: idp::token_claims(&json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": "bob@example.com",
            "roles": ["release-approver"], "iat": approved_s - 600, "nbf": approved_s - 600,
            "exp": approved_s + 3000, "change_id": "CHG-2041", "artifact_digest": digest,
        })),
    };
    let mut execution = running_execution(t0_ms, &app, &tokens);
    import(&app, &execution).await;
    let before = packet(&app, "CHG-2041").await;
    assert_eq!(before["requester"]["established"], "verified");
    assert_eq!(
        before["approvals"][0]["approver"]["established"],
        "verified"
    );
    assert_eq!(before["steps"], json!([]), "the deploy has not finished");
    assert_eq!(before["spans"]["count"], 0);

    // The worker, on the task as it polled it.
    let polled = execution["tasks"][3].clone();
    let task_file = db.path().join("task.json");
    std::fs::write(&task_file, serde_json::to_vec(&polled).unwrap()).unwrap();
    let out = tokio::process::Command::new(&py)
        .arg(CONDUCTOR_WORKER)
        .args(["--endpoint", &app.otlp, "--token", &app.ingest, "--task"])
        .arg(&task_file)
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "the worker failed:\n{stderr}");
    for t in [&tokens.requester, &tokens.approver] {
        assert!(
            !stdout.contains(t.as_str()) && !stderr.contains(t.as_str()),
            "the worker printed a token"
        );
    }
    let ran: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(ran["exported"], true);
    assert_eq!(
        ran["trace_id"], TRACE_ID,
        "the span joined the workflow's trace"
    );
    assert_eq!(ran["parent_span_id"], PARENT_SPAN);
    let span_id = ran["span_id"].as_str().unwrap().to_owned();

    // Acknowledged means committed: the span is bound to the change, in the workflow's trace.
    let trace: [u8; 16] = hex::decode(TRACE_ID).unwrap().try_into().unwrap();
    let stored = app.store.spans_of_trace(&trace).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(hex::encode(stored[0].span_id), span_id);
    assert_eq!(stored[0].subject, "CHG-2041");
    assert_eq!(stored[0].rule, "attribute");
    let rs = ResourceSpans::decode(stored[0].body.as_slice()).unwrap();
    let span = &rs.scope_spans[0].spans[0];
    assert_eq!(hex::encode(&span.parent_span_id), PARENT_SPAN);
    assert_eq!(
        attr(&rs, "cicd.pipeline.run.id"),
        execution["workflowId"].as_str().map(str::to_owned)
    );
    let body = String::from_utf8_lossy(&stored[0].body).to_string();
    assert!(
        !body.contains(&tokens.requester) && !body.contains(&tokens.approver),
        "a token was stored"
    );

    let p = packet(&app, "CHG-2041").await;
    assert_eq!(p["spans"]["count"], 1);
    assert_eq!(p["spans"]["traces"], json!([TRACE_ID]));
    // The span carries the very tokens that proved the requester and the approver, as digests.
    let requester_digest = p["requester"]["token_sha256"].as_str().unwrap();
    let approver_digest = p["approvals"][0]["approver"]["token_sha256"]
        .as_str()
        .unwrap();
    assert_eq!(
        attr(&rs, "changetrail.change.requester.token"),
        Some(format!("sha256:{requester_digest}"))
    );
    assert_eq!(
        attr(&rs, "changetrail.approval.token"),
        Some(format!("sha256:{approver_digest}"))
    );
    let steps = p["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert_eq!(steps[0]["task"], "deploy");
    let attempt = &steps[0]["attempts"][0];
    assert_eq!(attempt["task_run_id"], polled["taskId"]);
    assert_eq!(attempt["trace_id"], TRACE_ID);
    assert_eq!(attempt["worker"], polled["workerId"]);
    assert_eq!(attempt["sources"], json!(["span"]));
    assert_eq!(attempt["identity"]["established"], "verified");
    assert_eq!(attempt["identity"]["subject"], "alice@example.com");
    assert_eq!(attempt["identity"]["token_sha256"], requester_digest);
    assert_eq!(p["approvals"][0]["before_first_deploy"], true);
    let codes = codes(&p);
    for c in [
        "UNVERIFIED_IDENTITY",
        "TOKEN_REUSED",
        "APPROVAL_TOKEN_MISMATCH",
        "NO_APPROVAL",
    ] {
        assert!(!codes.iter().any(|x| x == c), "{c} in {codes:?}");
    }

    // The workflow finishes; the worker reported its span ids to Conductor, and the finished
    // execution names the same attempt: one attempt, from both sources, still verified.
    let ended_ms = now_ns() / 1_000_000;
    let deploy = &mut execution["tasks"][3];
    deploy["status"] = "COMPLETED".into();
    deploy["endTime"] = ended_ms.into();
    deploy["outputData"] = ran["outputData"].clone();
    execution["status"] = "COMPLETED".into();
    execution["endTime"] = ended_ms.into();
    execution["output"] = json!({ "deployedVersion": ran["outputData"]["deployedVersion"] });
    import(&app, &execution).await;
    let p = packet(&app, "CHG-2041").await;
    let attempts = p["steps"][0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0]["sources"], json!(["span", "conductor"]));
    assert_eq!(attempts[0]["identity"]["established"], "verified");
    assert_eq!(attempts[0]["result"], "success");
    assert_eq!(p["change"]["result"], "success");
    assert_eq!(p["change"]["version"], "1.42.0");
    assert_eq!(p["conflicts"], json!([]));
    let report = verify_store(&app.store, &[&app.vkey]).await;
    assert_eq!(report.exit_code, 0, "{:?}", report.findings);
    app.stop().await;
}
