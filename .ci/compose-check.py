"""Checks what `docker compose config` cannot: the collector config inlined in docker-compose.yml.

Reads the output of `docker compose config --format json` on stdin. Compose has already validated the
file against the compose specification and interpolated it; this script parses the collector's config
(a string to compose) as YAML and checks the properties its comments promise: both exporters exist,
audit spans reach changetrail through no sampling or filtering, the changetrail exporter retries and
queues, the ingest token is read from the collector's environment (not pasted into the config), and
the init job registers that token before changetrail serves. Also that the collector is not an open
door: every OTLP receiver authenticates senders with a bearertokenauth extension reading a token
file (a compose secret of its own, not the ingest token), and every pipeline exporting anywhere but
changetrail deletes secret attributes (changetrail.*.token and the names of src/app/defaults.toml's
redact_attributes) first, while changetrail's own path keeps them. Exit 1 with one line per problem.
"""

import json
import re
import sys
import tomllib
from pathlib import Path

import yaml

problems = []

CHANGETRAIL_EXPORTER = "otlp_grpc/changetrail"
# Identity JWTs: changetrail verifies them (and stores only their SHA-256); no other backend may
# receive them.
TOKEN_KEYS = [
    "changetrail.approval.token",
    "changetrail.deployer.token",
    "changetrail.identity.token",
    "changetrail.change.requester.token",
]


def secret_keys():
    """TOKEN_KEYS and a key for each of changetrail's redact_attributes, as written and upper-case."""
    with open(Path(__file__).resolve().parent.parent / "src" / "app" / "defaults.toml", "rb") as f:
        patterns = tomllib.load(f)["otlp"]["redact_attributes"]
    keys = list(TOKEN_KEYS)
    for p in patterns:
        # As changetrail reads them: `*x*` matches names containing x, anything else one name.
        inner = p[1:-1] if len(p) > 2 and p.startswith("*") and p.endswith("*") else None
        k = f"app.{inner}.value" if inner else p
        keys += [k, k.upper()]
    return keys


SECRET_KEYS = secret_keys()
# What the deletion must leave alone: tail sampling and Jaeger's views need these.
KEEP_KEYS = ["service.name", "service.version", "deployment.environment.name", "cicd.pipeline.run.id",
             "changetrail.change.id", "http.route"]
# The attribute maps each signal carries to a backend, as the transform processor's contexts name
# them. (Span links' attributes have no context there; changetrail reads no token from a link.)
ATTRIBUTE_MAPS = {
    "traces": ["resource", "scope", "span", "spanevent"],
    "logs": ["resource", "scope", "log"],
    "metrics": ["resource", "scope", "datapoint"],
}
STATEMENTS_KEY = {"traces": "trace_statements", "logs": "log_statements", "metrics": "metric_statements"}
# `delete_matching_keys(<context>.attributes, "<regex>")`, whole, with no `where` clause. An OTTL
# string escapes `"` and `\` with a backslash.
DELETE_STATEMENT = re.compile(
    r'\s*delete_matching_keys\(\s*(?:([a-z_]+)\.)?attributes\s*,\s*"((?:[^"\\]|\\.)*)"\s*\)\s*'
)


def need(ok, what):
    if not ok:
        problems.append(what)
    return ok


def component_type(name):
    return str(name).split("/", 1)[0]


def ottl_string(body):
    """The value of an OTTL string literal's body (Go's escapes; JSON reads the ones a regex needs)."""
    try:
        return json.loads('"' + body + '"')
    except ValueError:
        return None


def deletions(pname, name, cfg, signal):
    """What processor `name` always deletes from `signal`: {attribute map: [compiled regex]}, and
    why any deletion it states does not count.

    Counted: the transform processor's `delete_matching_keys(<map>.attributes, "<regex>")` and the
    attributes processor's `action: delete` with `pattern:`. Not counted: statements with a `where`
    clause, groups with `conditions`, include/exclude filters, or an error mode that lets telemetry
    through when a statement fails (anything but `propagate`).
    """
    cfg = cfg if isinstance(cfg, dict) else {}
    out = {}
    notes = []

    def add(target, pattern, where):
        try:
            out.setdefault(target, []).append(re.compile(pattern))
        except re.error as e:
            need(False, f"{where}: regex {pattern!r} does not compile: {e}")

    kind = component_type(name)
    if kind == "transform":
        mode = str(cfg.get("error_mode", "propagate"))
        if mode != "propagate":
            return out, [f"{name}: error_mode {mode} passes telemetry on when a statement fails"]
        for group in cfg.get(STATEMENTS_KEY.get(signal)) or []:
            if isinstance(group, str):
                group = {"statements": [group]}
            if not isinstance(group, dict):
                continue
            mode = str(group.get("error_mode", "propagate"))
            if group.get("conditions") or mode != "propagate":
                why = "conditions" if group.get("conditions") else f"error_mode {mode}"
                notes.append(f"{name}: its {group.get('context') or 'inferred'} group has {why}")
                continue
            for st in group.get("statements") or []:
                m = DELETE_STATEMENT.fullmatch(str(st))
                if not m:
                    if "delete_matching_keys" in str(st):
                        notes.append(f"{name}: {str(st)!r} is conditional or not "
                                     'delete_matching_keys(<map>.attributes, "<regex>")')
                    continue
                target = m.group(1) or group.get("context")
                target = {"instrumentation_scope": "scope"}.get(target, target)
                pattern = ottl_string(m.group(2))
                if need(pattern is not None, f"processor {name}: cannot read the string in {st!r}"):
                    add(target, pattern, f"processor {name} (in {pname})")
    elif kind == "attributes" and signal in ("traces", "logs"):
        if cfg.get("include") or cfg.get("exclude"):
            return out, [f"{name}: include/exclude makes its deletions conditional"]
        for action in cfg.get("actions") or []:
            if isinstance(action, dict) and action.get("action") == "delete" and action.get("pattern"):
                target = "span" if signal == "traces" else "log"
                add(target, str(action["pattern"]), f"processor {name} (in {pname})")
    return out, notes


def describe(keys):
    keys = list(dict.fromkeys(keys))
    return ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")


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

        # Senders authenticate. The collector forwards with changetrail's ingest token, so an open
        # receiver lets anyone who reaches it write evidence under the collector's name. The token
        # senders present comes from a secret file of its own (never inline in this config, never
        # the ingest token itself).
        extensions = col.get("extensions") or {}
        enabled = set(service.get("extensions") or [])
        mounted = {
            s.get("target") or f"/run/secrets/{s.get('source')}": s.get("source")
            for s in (services.get("otel-collector", {}).get("secrets") or [])
        }
        top_secrets = project.get("secrets") or {}

        def origin(secret):
            return {k: v for k, v in (top_secrets.get(secret) or {}).items() if k != "name"}

        receivers = col.get("receivers") or {}
        otlp = [r for r in receivers if component_type(r) == "otlp"]
        need(otlp, "the collector config has no OTLP receiver")
        for rname in otlp:
            protocols = (receivers.get(rname) or {}).get("protocols") or {}
            need(protocols, f"receiver {rname} has no protocols")
            for proto, pcfg in protocols.items():
                where = f"receiver {rname} ({proto})"
                auth = ((pcfg or {}).get("auth") or {}).get("authenticator")
                if not need(
                    auth,
                    f"{where} takes telemetry from anyone: give it auth: authenticator: a "
                    "bearertokenauth extension reading the token senders present from a secret file",
                ):
                    continue
                if not need(
                    component_type(auth) == "bearertokenauth",
                    f"{where} authenticates with {auth}, not a bearertokenauth extension",
                ):
                    continue
                if not need(auth in extensions, f"{where} names undefined extension {auth}"):
                    continue
                need(
                    auth in enabled,
                    f"extension {auth} ({where}'s authenticator) is not in service.extensions",
                )
                ext = extensions.get(auth) or {}
                need(
                    not ext.get("token") and not ext.get("tokens"),
                    f"extension {auth} has an inline token (token:/tokens:): read it from a secret file "
                    "(filename: /run/secrets/...) instead",
                )
                fname = ext.get("filename")
                if not need(
                    isinstance(fname, str) and fname,
                    f"extension {auth} reads no token file: it needs filename: /run/secrets/<secret>",
                ):
                    continue
                source = mounted.get(fname)
                if not need(
                    source is not None,
                    f"extension {auth} reads {fname}, which is not a secret mounted into otel-collector",
                ):
                    continue
                need(
                    source != "ingest_token" and origin(source) != origin("ingest_token"),
                    f"extension {auth} reads secret {source}, which is changetrail's ingest token: senders "
                    "must present a token of their own (a separate secret such as collector_token)",
                )

        # Secret attributes stay out of every backend but changetrail: a pipeline exporting
        # elsewhere deletes them first (a processor in its own list or, through connectors, in
        # every pipeline feeding it; processors always run before a pipeline's exporters, and one
        # defined but not listed does nothing). changetrail's path must keep the tokens: it
        # verifies them and stores only their SHA-256.
        processors = col.get("processors") or {}
        connectors = defined["connectors"]

        def paths(pname, seen=()):
            """The processors along each way into pipeline `pname`, in order, as (pipeline, name)."""
            if pname in seen:
                return []
            p = pipelines.get(pname) or {}
            own = [(pname, x) for x in p.get("processors") or []]
            out = []
            for r in p.get("receivers") or []:
                if r in connectors:
                    for q, qp in pipelines.items():
                        if r in (qp.get("exporters") or []):
                            out += [up + own for up in paths(q, seen + (pname,))]
                else:
                    out.append(own)
            return out

        def deleted(path, signal):
            """{attribute map: set of SECRET_KEYS + KEEP_KEYS deleted} along `path` for `signal`, and
            why deletions stated there do not count."""
            gone, notes = {}, []
            for pname, proc in path:
                if pname.split("/")[0] != signal:
                    continue
                found, why = deletions(pname, proc, processors.get(proc), signal)
                notes += why
                for target, regexes in found.items():
                    for key in SECRET_KEYS + KEEP_KEYS:
                        if any(r.search(key) for r in regexes):
                            gone.setdefault(target, set()).add(key)
            return gone, notes

        for pname, p in pipelines.items():
            signal = pname.split("/")[0]
            exps = [x for x in p.get("exporters") or [] if x not in connectors]
            elsewhere = [x for x in exps if x != CHANGETRAIL_EXPORTER]
            for path in paths(pname):
                via = " -> ".join(proc for _, proc in path) or "no processors"
                gone, notes = deleted(path, signal)
                not_counted = f" (not counted: {'; '.join(dict.fromkeys(notes))})" if notes else ""
                if CHANGETRAIL_EXPORTER in exps:
                    stripped = sorted({k for keys in gone.values() for k in keys if k in TOKEN_KEYS})
                    need(
                        not stripped,
                        f"pipeline {pname} deletes {describe(stripped)} before {CHANGETRAIL_EXPORTER} "
                        f"({via}): changetrail needs the tokens to verify identities (it stores only "
                        "their SHA-256)",
                    )
                if not elsewhere:
                    continue
                if not need(
                    signal in ATTRIBUTE_MAPS,
                    f"pipeline {pname} exports {signal} to {', '.join(elsewhere)}: this check knows no "
                    "way to delete secret attributes there",
                ):
                    continue
                for target in ATTRIBUTE_MAPS[signal]:
                    missing = [k for k in SECRET_KEYS if k not in gone.get(target, set())]
                    need(
                        not missing,
                        f"pipeline {pname} exports to {', '.join(elsewhere)} without deleting "
                        f"{describe(missing)} from {target} attributes ({via}): list a processor with "
                        f'delete_matching_keys({target}.attributes, "<regex>") in its processors '
                        f"(a transform processor, error_mode: propagate, no where/conditions){not_counted}",
                    )
                kept = sorted({k for keys in gone.values() for k in keys if k in KEEP_KEYS})
                need(
                    not kept,
                    f"pipeline {pname} deletes {describe(kept)} too ({via}): the deletion regex must "
                    "match secret attributes only",
                )

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

# tests/compose/scale.yml, when merged in: the load-balanced audit path keeps every promise of the
# direct one (routed by trace id to every instance, unsampled, retried without limit, queued, the
# token from the environment), and every instance has a journal volume of its own.
lb_raw = project.get("configs", {}).get("otelcol-lb", {}).get("content")
if isinstance(lb_raw, str):
    lb = yaml.safe_load(lb_raw.replace("$$", "$")) or {}
    exp = (lb.get("exporters") or {}).get("loadbalancing/changetrail") or {}
    need(exp.get("routing_key") == "traceID", "loadbalancing/changetrail must route by traceID")
    otlp = (exp.get("protocol") or {}).get("otlp") or {}
    retry = otlp.get("retry_on_failure") or {}
    need(
        retry.get("enabled") is True and str(retry.get("max_elapsed_time")) in ("0", "0s"),
        "loadbalancing/changetrail must retry without a time limit",
    )
    need((otlp.get("sending_queue") or {}).get("enabled") is True,
         "loadbalancing/changetrail needs a sending queue")
    auth = str((otlp.get("headers") or {}).get("authorization", ""))
    need(auth == "Bearer ${env:CHANGETRAIL_INGEST_TOKEN}",
         "loadbalancing/changetrail must read the ingest token from the environment")
    hosts = ((exp.get("resolver") or {}).get("static") or {}).get("hostnames") or []
    instances = [n for n in services if n == "changetrail" or n.startswith("changetrail-") and n != "changetrail-init"]
    need(sorted(h.split(":")[0] for h in hosts) == sorted(instances),
         f"loadbalancing/changetrail must resolve every instance ({instances}), not {hosts}")
    for pname in ["traces/changetrail", "logs/changetrail"]:
        pipe = ((lb.get("service") or {}).get("pipelines") or {}).get(pname) or {}
        need(pipe.get("exporters") == ["loadbalancing/changetrail"],
             f"pipeline {pname} must export through loadbalancing/changetrail")
    cmd = " ".join(collector.get("command") or [])
    need("lb.yaml" in cmd, "otel-collector must read lb.yaml after its config")
    sources = set()
    for n in instances:
        for v in services[n].get("volumes") or []:
            if v.get("target") == "/var/lib/changetrail":
                sources.add(v.get("source"))
    need(len(sources) == len(instances), "every changetrail instance needs its own data volume (journal)")

if problems:
    for p in dict.fromkeys(problems):
        print(f"docker-compose.yml: {p}", file=sys.stderr)
    sys.exit(1)
print(
    f"docker-compose.yml: {len(services)} services; collector config parses; "
    "exporters otlp_grpc/changetrail (unsampled, retried, queued) and otlp_grpc/jaeger (tail-sampled); "
    f"OTLP receivers authenticated by a token file; {len(SECRET_KEYS)} secret attribute names deleted "
    "on every path but changetrail's"
)
