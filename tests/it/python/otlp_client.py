"""Sends spans and log records to changetrail with the real OpenTelemetry Python SDK exporters.

Used by tests/it/python.rs. Prints one JSON object per exported span on stdout:
{"trace_id": hex, "span_id": hex, "name": str, "result": "SUCCESS" | "FAILURE"}.
"""

import argparse
import json
import sys
import time

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult, SpanProcessor


def exporters(transport, endpoint, token):
    headers = {"authorization": f"Bearer {token}"}
    if transport == "grpc":
        from grpc import Compression
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return (
            OTLPSpanExporter(endpoint=endpoint, headers=headers, compression=Compression.Gzip, timeout=10),
            OTLPLogExporter(endpoint=endpoint, headers=headers, compression=Compression.Gzip, timeout=10),
        )
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return (
        OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces", headers=headers, compression=Compression.Gzip, timeout=10),
        OTLPLogExporter(endpoint=f"{endpoint}/v1/logs", headers=headers, compression=Compression.Gzip, timeout=10),
    )


class Recording(SpanProcessor):
    """Exports every `batch` ended spans synchronously and records what the exporter was told."""

    def __init__(self, exporter, batch):
        self.exporter = exporter
        self.batch = batch
        self.buffer = []

    def on_start(self, span, parent_context=None):
        pass

    def on_end(self, span):
        self.buffer.append(span)
        if len(self.buffer) >= self.batch:
            self.flush()

    def flush(self):
        if not self.buffer:
            return
        result = self.exporter.export(self.buffer)
        for s in self.buffer:
            print(json.dumps({
                "trace_id": format(s.context.trace_id, "032x"),
                "span_id": format(s.context.span_id, "016x"),
                "name": s.name,
                "result": "SUCCESS" if result == SpanExportResult.SUCCESS else "FAILURE",
            }), flush=True)
        self.buffer = []

    def shutdown(self):
        self.flush()

    def force_flush(self, timeout_millis=30000):
        self.flush()
        return True


def send_logs(log_exporter, change, trace_id):
    from opentelemetry._logs import LogRecord, SeverityNumber
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor

    provider = LoggerProvider(resource=Resource.create({"service.name": "approvals"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))
    logger = provider.get_logger("changetrail-test")
    logger.emit(LogRecord(
        timestamp=time.time_ns(),
        trace_id=trace_id,
        span_id=0,
        event_name="changetrail.approval",
        severity_text="INFO",
        severity_number=SeverityNumber.INFO,
        body="approved",
        attributes={
            "event.name": "changetrail.approval",
            "changetrail.change.id": change,
            "changetrail.approval.decision": "approved",
            "changetrail.approval.approver": "bob@example.com",
            "changetrail.approval.token": "eyJhbGciOiJFZERTQSJ9.not-a-real-token.sig",
        },
    ))
    provider.shutdown()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--transport", choices=["grpc", "http"], required=True)
    p.add_argument("--endpoint", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--change", required=True)
    p.add_argument("--deploys", type=int, default=1, help="deploy traces to send")
    p.add_argument("--children", type=int, default=2, help="service spans per deploy trace")
    p.add_argument("--unrelated", type=int, default=2, help="spans of unrelated traces")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--pause", type=float, default=0.0, help="seconds between deploy traces")
    p.add_argument("--logs", action="store_true")
    a = p.parse_args()

    span_exporter, log_exporter = exporters(a.transport, a.endpoint, a.token)
    provider = TracerProvider(resource=Resource.create({"service.name": "deployer", "deployment.environment.name": "production"}))
    recording = Recording(span_exporter, a.batch)
    provider.add_span_processor(recording)
    tracer = provider.get_tracer("changetrail-test")
    last_trace = 0
    for i in range(a.deploys):
        with tracer.start_as_current_span("deploy", attributes={
            "cicd.pipeline.run.id": f"wf-{a.change}-{i}",
            "changetrail.change.id": a.change,
            "cicd.pipeline.task.type": "deploy",
            "http.request.header.authorization": "Bearer must-not-be-stored",
        }) as deploy:
            last_trace = deploy.get_span_context().trace_id
            for c in range(a.children):
                with tracer.start_as_current_span(f"service-call-{c}"):
                    pass
        if a.pause:
            time.sleep(a.pause)
    for u in range(a.unrelated):
        with tracer.start_as_current_span(f"unrelated-{u}", context=None):
            pass
    provider.force_flush()
    provider.shutdown()
    if a.logs:
        send_logs(log_exporter, a.change, last_trace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
