"""A Conductor deploy worker that carries the requester's and approver's identity to changetrail.

It takes one task of the example workflow (deploy-workflow.json, task `deploy`) shaped as a worker
polls it from Conductor: `taskId`, `workflowInstanceId`, `referenceTaskName`, `taskType`,
`retryCount`, `retriedTaskId`, `workerId`, `inputData`. It joins the workflow's trace from
`inputData.traceparent` (W3C Trace Context, so one workflow is one trace), runs the deploy, and
exports one span by the ingest contract (src/ingest/CONVENTIONS.md, "Identity propagation through
Conductor tasks"):

- the change, the run (`inputData.workflowId`, Conductor's workflowId) and the attempt (`taskId`,
  `retryCount`, `retriedTaskId`, `referenceTaskName`, `taskType`, the worker id);
- the requester's token as `changetrail.change.requester.token` and as the attempt's executing
  identity (`changetrail.identity.token`: the deploy runs on the requester's behalf), and the
  approver's token as `changetrail.approval.token`. changetrail stores tokens only as their
  SHA-256; this script never prints or logs them.

Standalone: `worker.py --endpoint http://localhost:4318 --task task.json` (the ingest token from
`--token` or CHANGETRAIL_INGEST_TOKEN; `--task -` reads standard input). It prints one JSON object:
the trace and span ids it exported, the parent it joined, whether the export was accepted, and the
`outputData` the task would report to Conductor (its `trace_id` and `span_id` let a later import of
the execution name the same attempt). It exits 1 when the export was not accepted.

No Conductor runs in the tests (none can be installed there), so this takes the task as a file.
A real worker wraps `handle` in Conductor's poll loop, for example:

    while True:
        r = http.get(f"{conductor}/api/tasks/poll/{task_type}", params={"workerid": worker_id})
        if r.status_code == 204:      # nothing to do
            time.sleep(1)
            continue
        task = r.json()
        out = handle(task, tracer, exporter)
        http.post(f"{conductor}/api/tasks", json={
            "taskId": task["taskId"], "workflowInstanceId": task["workflowInstanceId"],
            "workerId": worker_id, "status": "COMPLETED" if out["ok"] else "FAILED",
            "outputData": out["outputData"]})
"""

import argparse
import json
import os
import sys

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult, SpanProcessor
from opentelemetry.trace import Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator


class Ended(SpanProcessor):
    """Keeps ended spans so that `handle` exports them itself and learns whether they were accepted."""

    def __init__(self):
        self.spans = []

    def on_start(self, span, parent_context=None):
        pass

    def on_end(self, span):
        self.spans.append(span)

    def shutdown(self):
        pass

    def force_flush(self, timeout_millis=30000):
        return True


def deploy(inputs):
    """The deploy itself: roll `inputs["image"]` out to `inputs["environment"]`. Here a placeholder
    that reports the image's tag as the deployed version."""
    image = inputs.get("image") or ""
    return {"deployedVersion": image.rsplit(":", 1)[-1] if ":" in image else None}


def attributes(task, worker_id):
    """The deploy span's attributes: the attempt, the change and run, and the propagated identities."""
    inputs = task.get("inputData") or {}
    attrs = {
        "changetrail.change.id": inputs.get("changeId"),
        "cicd.pipeline.run.id": inputs.get("workflowId") or task.get("workflowInstanceId"),
        "cicd.pipeline.task.run.id": task.get("taskId"),
        "cicd.pipeline.task.type": task.get("taskType"),
        "cicd.pipeline.task.name": task.get("referenceTaskName"),
        "changetrail.task.attempt": int(task.get("retryCount") or 0),
        "changetrail.task.retried_from": task.get("retriedTaskId"),
        "cicd.worker.id": worker_id,
        "deployment.environment.name": inputs.get("environment"),
        "artifact.hash": inputs.get("artifactDigest"),
        # Who the deploy runs for, proven by the requester's token; and the approval it carries.
        "changetrail.identity.principal": inputs.get("requestedBy"),
        "changetrail.identity.token": inputs.get("requestToken"),
        "changetrail.change.requester": inputs.get("requestedBy"),
        "changetrail.change.requester.token": inputs.get("requestToken"),
        "changetrail.approval.approver": inputs.get("approvedBy"),
        "changetrail.approval.token": inputs.get("approvalToken"),
    }
    return {k: v for k, v in attrs.items() if v not in (None, "")}


def handle(task, tracer, ended, exporter, worker_id):
    """Runs one deploy task inside the workflow's trace and exports its span; what to report back."""
    inputs = task.get("inputData") or {}
    carrier = {k: inputs[k] for k in ("traceparent", "tracestate") if inputs.get(k)}
    if "traceparent" not in carrier:
        print("worker: the task carries no traceparent; its span starts a trace of its own", file=sys.stderr)
    parent = TraceContextTextMapPropagator().extract(carrier)
    with tracer.start_as_current_span(
        f"deploy {inputs.get('service') or task.get('referenceTaskName')}",
        context=parent,
        attributes=attributes(task, worker_id),
    ) as span:
        try:
            output = deploy(inputs)
            span.set_attribute("cicd.pipeline.task.run.result", "success")
        except Exception as e:  # the deploy failed: the span says so, and so does the task
            output = {"error": type(e).__name__}
            span.set_attribute("cicd.pipeline.task.run.result", "failure")
            span.set_status(Status(StatusCode.ERROR, type(e).__name__))
        ctx = span.get_span_context()
    spans, ended.spans = ended.spans, []
    accepted = exporter.export(spans) == SpanExportResult.SUCCESS
    parent_id = spans[0].parent.span_id if spans and spans[0].parent else None
    output = dict(output, trace_id=format(ctx.trace_id, "032x"), span_id=format(ctx.span_id, "016x"))
    return {
        "trace_id": output["trace_id"],
        "span_id": output["span_id"],
        "parent_span_id": format(parent_id, "016x") if parent_id else None,
        "ok": accepted and "error" not in output,
        "exported": accepted,
        "outputData": output,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoint", required=True, help="changetrail's OTLP/HTTP listener, e.g. http://localhost:4318")
    p.add_argument("--token", default=os.environ.get("CHANGETRAIL_INGEST_TOKEN"),
                   help="an ingest token (default: $CHANGETRAIL_INGEST_TOKEN)")
    p.add_argument("--task", required=True, help="the polled task as JSON: a file, or - for standard input")
    p.add_argument("--worker-id", help="this worker's id (default: the task's workerId, else the host name)")
    a = p.parse_args()
    if not a.token:
        p.error("an ingest token is needed: --token or CHANGETRAIL_INGEST_TOKEN")
    if a.task == "-":
        task = json.load(sys.stdin)
    else:
        with open(a.task, encoding="utf-8") as f:
            task = json.load(f)
    worker_id = a.worker_id or task.get("workerId") or os.uname().nodename

    exporter = OTLPSpanExporter(
        endpoint=f"{a.endpoint.rstrip('/')}/v1/traces",
        headers={"authorization": f"Bearer {a.token}"},
        timeout=10,
    )
    ended = Ended()
    provider = TracerProvider(resource=Resource.create({"service.name": "deploy-worker"}))
    provider.add_span_processor(ended)
    result = handle(task, provider.get_tracer("changetrail-conductor-worker"), ended, exporter, worker_id)
    provider.shutdown()
    exporter.shutdown()
    print(json.dumps(result), flush=True)
    return 0 if result["exported"] else 1


if __name__ == "__main__":
    sys.exit(main())
