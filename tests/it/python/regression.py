"""Runtime spans around a deploy, sent with the real OpenTelemetry Python SDK exporter (OTLP/HTTP).

Used by tests/it/suspects.rs. Around a deploy ending at --deploy-ns:
- checkout runs 1.9.0 before it (25 requests a minute, one Timeout every 5 minutes) and 2.0.0
  after it (25 a minute, 10 of them failing with ConnectionError);
- payments (downstream) serves 20 a minute without errors, 6 of them failing with UpstreamError
  from the minute after the deploy;
- search serves 15 a minute, never failing.
Every request is its own trace (a SERVER span). Exports synchronously in batches and exits 1 if
any export fails. Prints one JSON object: {"spans": n, "first_error_trace": hex of checkout's
first error after the deploy}.
"""

import argparse
import json
import sys

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult, SpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

MINUTE = 60_000_000_000
MS = 1_000_000


class Batches(SpanProcessor):
    def __init__(self, exporter):
        self.exporter = exporter
        self.buffer = []
        self.sent = 0

    def on_start(self, span, parent_context=None):
        pass

    def on_end(self, span):
        self.buffer.append(span)
        if len(self.buffer) >= 200:
            self.flush()

    def flush(self):
        if not self.buffer:
            return
        if self.exporter.export(self.buffer) != SpanExportResult.SUCCESS:
            print("export failed", file=sys.stderr)
            sys.exit(1)
        self.sent += len(self.buffer)
        self.buffer = []

    def shutdown(self):
        self.flush()

    def force_flush(self, timeout_millis=30000):
        self.flush()
        return True


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--deploy-ns", type=int, required=True)
    a = p.parse_args()

    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    exporter = OTLPSpanExporter(
        endpoint=f"{a.endpoint}/v1/traces",
        headers={"authorization": f"Bearer {a.token}"},
        timeout=10,
    )
    processor = Batches(exporter)
    tracers = {}

    def tracer(service, version):
        key = (service, version)
        if key not in tracers:
            provider = TracerProvider(resource=Resource.create({
                "service.name": service,
                "service.version": version,
                "deployment.environment.name": "production",
            }))
            provider.add_span_processor(processor)
            tracers[key] = provider.get_tracer("shop")
        return tracers[key]

    deploy_minute = a.deploy_ns - a.deploy_ns % MINUTE
    first_error = None

    def request(service, version, start, ms, error=None):
        nonlocal first_error
        span = tracer(service, version).start_span(
            f"GET /{service}", kind=SpanKind.SERVER, start_time=start)
        if error:
            span.add_event("exception", {"exception.type": error, "exception.message": "failed"},
                           timestamp=start + ms * MS)
            span.set_status(Status(StatusCode.ERROR, error))
            if service == "checkout" and start >= a.deploy_ns and (
                    first_error is None or start < first_error[0]):
                first_error = (start, format(span.get_span_context().trace_id, "032x"))
        span.end(end_time=start + ms * MS)

    for k in range(-15, 10):
        m = deploy_minute + k * MINUTE
        for i in range(25):
            t = m + i * 2_000 * MS
            if t < a.deploy_ns:
                request("checkout", "1.9.0", t, 80, "Timeout" if i == 0 and k % 5 == 0 else None)
            else:
                request("checkout", "2.0.0", t, 95, "ConnectionError" if i % 5 < 2 else None)
        for i in range(20):
            t = m + i * 2_500 * MS
            failing = k >= 1 and i % 10 < 3
            request("payments", "7", t, 30, "UpstreamError" if failing else None)
        for i in range(15):
            request("search", "3", m + i * 3_000 * MS, 12)
    processor.flush()
    print(json.dumps({"spans": processor.sent, "first_error_trace": first_error[1]}))


if __name__ == "__main__":
    main()
