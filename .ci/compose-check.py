"""Checks what `docker compose config` cannot: the collector config inlined in docker-compose.yml.

Reads the output of `docker compose config --format json` on stdin. Compose has already validated the
file against the compose specification and interpolated it; this script parses the collector's config
(a string to compose) as YAML and checks the properties the README promises: both exporters exist,
audit spans reach changetrail through no sampling or filtering, the changetrail exporter retries and
queues, the ingest token is read from the collector's environment (not pasted into the config), and
the init job registers that token before changetrail serves. Exit 1 with one line per problem.
"""

import json
import re
import sys

import yaml

problems = []


def need(ok, what):
    if not ok:
        problems.append(what)
    return ok


project = json.load(sys.stdin)
services = project.get("services", {})
for name in ["postgres", "changetrail-init", "changetrail", "otel-collector", "jaeger"]:
    need(name in services, f"service {name} is missing")

for name, svc in services.items():
    image = svc.get("image", "")
    tag = image.rpartition(":")[2] if ":" in image else ""
    if "build" not in svc:
        need(
            re.search(r"\d", tag) is not None,
            f"service {name}: image {image!r} is not pinned to a version",
        )

# `config` escapes `$` as `$$` so that its output can be read again; the container gets single `$`.
raw = project.get("configs", {}).get("otelcol", {}).get("content")
if need(isinstance(raw, str), "configs.otelcol.content (the collector config) is missing"):
    try:
        col = yaml.safe_load(raw.replace("$$", "$"))
    except yaml.YAMLError as e:
        col = None
        need(False, f"the collector config is not YAML: {e}")
    if need(isinstance(col, dict), "the collector config is not a mapping"):
        exporters = col.get("exporters") or {}
        defined = {
            kind: set((col.get(kind) or {}).keys())
            for kind in ["receivers", "processors", "exporters", "connectors", "extensions"]
        }
        ct = exporters.get("otlp_grpc/changetrail")
        jaeger = exporters.get("otlp_grpc/jaeger")
        need(ct is not None, "exporter otlp_grpc/changetrail is missing")
        need(jaeger is not None, "exporter otlp_grpc/jaeger is missing")
        if ct:
            need(ct.get("endpoint") == "changetrail:4317", "otlp_grpc/changetrail must send to changetrail:4317")
            auth = (ct.get("headers") or {}).get("authorization")
            need(
                auth == "Bearer ${env:CHANGETRAIL_INGEST_TOKEN}",
                "otlp_grpc/changetrail must send authorization: Bearer ${env:CHANGETRAIL_INGEST_TOKEN} "
                "(written $${env:...} in docker-compose.yml, so compose leaves it to the collector)",
            )
            retry = ct.get("retry_on_failure") or {}
            need(retry.get("enabled") is True, "otlp_grpc/changetrail must retry (retry_on_failure.enabled)")
            need(
                str(retry.get("max_elapsed_time")) in ("0", "0s"),
                "otlp_grpc/changetrail must never give up retrying (max_elapsed_time: 0)",
            )
            need(
                (ct.get("sending_queue") or {}).get("enabled") is True,
                "otlp_grpc/changetrail must queue (sending_queue.enabled)",
            )
        if jaeger:
            need(jaeger.get("endpoint") == "jaeger:4317", "otlp_grpc/jaeger must send to jaeger:4317")

        service = col.get("service") or {}
        for ext in service.get("extensions") or []:
            need(ext in defined["extensions"], f"service.extensions names undefined {ext}")
        pipelines = service.get("pipelines") or {}
        sampled_to_jaeger = False
        audit_signals = set()
        for pname, p in pipelines.items():
            for kind in ["receivers", "processors", "exporters"]:
                for comp in p.get(kind) or []:
                    pool = defined[kind] | (defined["connectors"] if kind != "processors" else set())
                    need(comp in pool, f"pipeline {pname} names undefined {kind[:-1]} {comp}")
            procs = p.get("processors") or []
            exps = p.get("exporters") or []
            if "otlp_grpc/changetrail" in exps:
                audit_signals.add(pname.split("/")[0])
                for proc in procs:
                    need(
                        not re.match(r"(tail_sampling|probabilistic_sampler|filter)(/|$)", proc),
                        f"pipeline {pname} sends to changetrail through {proc}: audit evidence "
                        "must not be sampled or filtered away",
                    )
                need(
                    "otlp_grpc/jaeger" not in exps,
                    f"pipeline {pname} must not share changetrail's path with the sampled Jaeger export",
                )
            if "otlp_grpc/jaeger" in exps and any(x.startswith("tail_sampling") for x in procs):
                sampled_to_jaeger = True
        need("traces" in audit_signals, "no traces pipeline exports to otlp_grpc/changetrail")
        need(sampled_to_jaeger, "no pipeline tail-samples to otlp_grpc/jaeger")

collector = services.get("otel-collector", {})
need(
    "CHANGETRAIL_INGEST_TOKEN" in (collector.get("environment") or {}),
    "otel-collector needs CHANGETRAIL_INGEST_TOKEN in its environment",
)
init = services.get("changetrail-init", {})
command = " ".join(init.get("command") or [])
need(
    "tokens create" in command and "--token-file=/run/secrets/ingest_token" in command,
    "changetrail-init must run `tokens create --token-file=/run/secrets/ingest_token`",
)
ct_deps = services.get("changetrail", {}).get("depends_on") or {}
need(
    (ct_deps.get("changetrail-init") or {}).get("condition") == "service_completed_successfully",
    "changetrail must wait for changetrail-init to complete successfully",
)

if problems:
    for p in problems:
        print(f"docker-compose.yml: {p}", file=sys.stderr)
    sys.exit(1)
print(
    f"docker-compose.yml: {len(services)} services; collector config parses; "
    "exporters otlp_grpc/changetrail (unsampled, retried, queued) and otlp_grpc/jaeger (tail-sampled)"
)
