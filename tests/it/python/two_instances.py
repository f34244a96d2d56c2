"""Plays deploys across two changetrail instances the way the OpenTelemetry Collector's
`loadbalancing` exporter with `routing_key: traceID` does: every span of a trace goes to the same
instance, chosen by its trace id. Uses the real OpenTelemetry Python SDK gRPC exporter.

Used by tests/it/instances.rs. Per change: a `deploy` trace (the audit span carrying the change id,
and service spans under it) and a `verify` span in a trace of its own that links to the deploy
(so it may land on the other instance). The service spans end first and are exported first, so
they are parked until their deploy span arrives: late binding.

  1. exports every service and verify span, prints {"event": "runtime_done"}, waits for "go";
  2. exports the deploy spans one change at a time. A failed export is retried, with a new
     exporter, until it succeeds or --deadline passes (what a Collector's sending queue does), so
     an instance that is killed and restarted on the same port gets the retry.

Prints one JSON line per exported span: kind (runtime, verify, audit), change, trace_id,
span_id, instance, result (SUCCESS or FAILURE), attempts; then {"event": "done"}.
"""

import argparse
import json
import sys
import time

from grpc import Compression
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult, SpanProcessor


class Collect(SpanProcessor):
    def __init__(self):
        self.ended = []

    def on_start(self, span, parent_context=None):
        pass

    def on_end(self, span):
        self.ended.append(span)

    def shutdown(self):
        pass

    def force_flush(self, timeout_millis=30000):
        return True


def instance_of(trace_id, n):
    # The Collector hashes the trace id onto a ring; any stable function of it routes the same way.
    return (trace_id >> 64) % n


def export(endpoints, token, instance, spans, deadline):
    attempts = 0
    while True:
        attempts += 1
        exporter = OTLPSpanExporter(
            endpoint=endpoints[instance],
            headers={"authorization": f"Bearer {token}"},
            compression=Compression.Gzip,
            timeout=3,
        )
        result = exporter.export(spans)
        exporter.shutdown()
        if result == SpanExportResult.SUCCESS or time.monotonic() > deadline:
            return result, attempts
        time.sleep(0.2)


def report(kind, change, span, instance, result, attempts):
    print(json.dumps({
        "kind": kind,
        "change": change,
        "trace_id": format(span.context.trace_id, "032x"),
        "span_id": format(span.context.span_id, "016x"),
        "instance": instance,
        "result": "SUCCESS" if result == SpanExportResult.SUCCESS else "FAILURE",
        "attempts": attempts,
    }), flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", action="append", required=True, help="one per instance")
    p.add_argument("--token", required=True)
    p.add_argument("--changes", type=int, default=40)
    p.add_argument("--children", type=int, default=3)
    p.add_argument("--pause", type=float, default=0.05, help="seconds between deploy exports")
    p.add_argument("--deadline", type=float, default=120.0)
    a = p.parse_args()
    deadline = time.monotonic() + a.deadline
    n = len(a.endpoint)

    collect = Collect()
    provider = TracerProvider(resource=Resource.create({
        "service.name": "deployer",
        "deployment.environment.name": "production",
    }))
    provider.add_span_processor(collect)
    tracer = provider.get_tracer("changetrail-two-instances")
    plan = []
    for i in range(a.changes):
        change = f"CHG-LB-{i:03}"
        collect.ended = []
        with tracer.start_as_current_span("deploy", attributes={
            "cicd.pipeline.run.id": f"wf-{change}",
            "changetrail.change.id": change,
            "cicd.pipeline.name": "deploy",
            "cicd.pipeline.result": "success",
            "changetrail.change.requester": "alice@example.com",
        }) as deploy:
            for c in range(a.children):
                with tracer.start_as_current_span(f"service-call-{c}"):
                    pass
        deploy_ctx = deploy.get_span_context()
        with tracer.start_as_current_span(
            "verify", context=trace.set_span_in_context(trace.INVALID_SPAN),
            links=[trace.Link(deploy_ctx)],
        ):
            pass
        children, audit, verify = collect.ended[:-2], collect.ended[-2], collect.ended[-1]
        plan.append((change, children, audit, verify))

    # 1. Service and verify spans, per instance, a few changes per export.
    for inst in range(n):
        batch = []
        for change, children, _, verify in plan:
            batch += [("runtime", change, s) for s in children
                      if instance_of(s.context.trace_id, n) == inst]
            if instance_of(verify.context.trace_id, n) == inst:
                batch.append(("verify", change, verify))
        for k in range(0, len(batch), 10):
            part = batch[k:k + 10]
            result, attempts = export(a.endpoint, a.token, inst, [s for _, _, s in part], deadline)
            for kind, change, s in part:
                report(kind, change, s, inst, result, attempts)
    print(json.dumps({"event": "runtime_done"}), flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1

    # 2. The deploy spans, one export each, in change order.
    for change, _, audit, _ in plan:
        inst = instance_of(audit.context.trace_id, n)
        result, attempts = export(a.endpoint, a.token, inst, [audit], deadline)
        report("audit", change, audit, inst, result, attempts)
        time.sleep(a.pause)
    print(json.dumps({"event": "done"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
