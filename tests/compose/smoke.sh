#!/usr/bin/env bash
# Runs docker-compose.yml for real, following the commands in docker-compose.yml's header:
# build, secrets into an env file, `up`, keys and tokens, telemetry in, evidence out, a graceful
# stop, a key rotation and a second `up`. Run by hand on a machine with a Docker daemon:
#
#   tests/compose/smoke.sh            # everything, when the collector and Jaeger images are there
#   SMOKE_SERVICES=changetrail tests/compose/smoke.sh   # changetrail, its init job and PostgreSQL
#
# It never touches a developer's own stack: its own project name (so its own volumes, removed at
# the end), its own env file instead of .env. The host ports of docker-compose.yml must be free.
set -euo pipefail
cd "$(dirname "$0")/../.."
export COMPOSE_PROJECT_NAME=changetrail-smoke
tmp=$(mktemp -d)
env_file="$tmp/env"
dc() { docker compose --env-file "$env_file" "$@"; }
step() { printf '\n== %s\n' "$*"; }
fail() { echo "smoke: FAILED: $*" >&2; exit 1; }
cleanup() {
    if [ "${SMOKE_KEEP:-}" != 1 ]; then
        dc down --volumes --remove-orphans >/dev/null 2>&1 || true
        rm -rf "$tmp"
    else
        echo "smoke: kept project $COMPOSE_PROJECT_NAME and $tmp"
    fi
}
trap cleanup EXIT
: > "$env_file"

# Without the collector and Jaeger images (no registry), `SMOKE_SERVICES=changetrail` starts the
# changetrail service and what it depends on; telemetry then goes to changetrail's own listener.
services=${SMOKE_SERVICES:-}

step "docker compose build changetrail (before any secret exists, as a first-time user does)"
dc build changetrail

step "secrets into the env file, with docker-compose.yml's commands"
(
    umask 077
    {
        echo "CHANGETRAIL_SIGNING_KEY=$(docker run --rm --entrypoint sh changetrail:local -c \
            'changetrail keys generate --origin changetrail.example/prod --out /tmp/k >&2 && cat /tmp/k')"
        echo "CHANGETRAIL_INGEST_TOKEN=$(docker run --rm changetrail:local tokens generate)"
        echo "COLLECTOR_TOKEN=$(docker run --rm changetrail:local tokens generate)"
        echo "POSTGRES_PASSWORD=$(docker run --rm changetrail:local tokens generate | cut -d_ -f3-)"
    } > "$env_file"
)
grep -q '^CHANGETRAIL_SIGNING_KEY=PRIVATE+KEY+' "$env_file" || fail "no signing key in the env file"
ingest=$(sed -n 's/^CHANGETRAIL_INGEST_TOKEN=//p' "$env_file")
collector=$(sed -n 's/^COLLECTOR_TOKEN=//p' "$env_file")

step "docker compose up --build -d --wait ${services:-(all services)}"
# shellcheck disable=SC2086  # an empty $services means every service
dc up --build -d --wait $services
[ "$(docker inspect -f '{{.State.ExitCode}}' "$(dc ps -aq changetrail-init)")" = 0 ] \
    || fail "changetrail-init did not exit 0"
dc logs changetrail-init | grep -q 'Registered ingest token' || fail "the init job registered no token"

step "the service runs as uid 10001; the key is root's 0440 file, read through root's group"
[ "$(dc exec -T changetrail id -u)" = 10001 ] || fail "changetrail does not run as uid 10001"
dc exec -T changetrail id -G | tr ' ' '\n' | grep -qx 0 || fail "changetrail is not in group 0"
perm=$(dc exec -T changetrail stat -c '%a %u:%g' /run/secrets/signing_key)
[ "$perm" = "440 0:0" ] || fail "signing key secret is '$perm', not '440 0:0'"
dc logs changetrail | grep -q 'readable by other users' && fail "the key file was warned about"
docker inspect "$(dc ps -q changetrail)" | grep -q 'PRIVATE+KEY' && fail "the key shows in docker inspect"

step "keys show, a reviewer and an auditor token"
vkey=$(dc exec -T changetrail changetrail keys show)
[[ "$vkey" == changetrail.example/prod+* ]] || fail "keys show printed '$vkey', not a vkey of origin changetrail.example/prod"
echo "vkey: $vkey"
dc exec -T changetrail changetrail tokens create --role reviewer --name "security team" >/dev/null
auditor=$(dc exec -T changetrail changetrail tokens create --role auditor --name smoke 2>/dev/null | grep -o 'ct_[A-Za-z0-9_-]*' | head -n 1)
[ -n "$auditor" ] || fail "no auditor token"

step "telemetry in: the demo's changes over OTLP/gRPC"
if [ -z "$services" ]; then
    # Through the collector, as applications send: they present the collector's token, and it
    # forwards with the ingest token. Without the right token it refuses (UNAUTHENTICATED).
    dc exec -T changetrail changetrail demo --weeks 1 --endpoint http://otel-collector:4317 \
        --token "$ingest" >/dev/null 2>&1 && fail "the collector accepted the ingest token from a sender"
    target=(--endpoint http://otel-collector:4317 --token "$collector")
else
    target=(--endpoint http://127.0.0.1:4317 --token "$ingest")
fi
dc exec -T changetrail changetrail demo --weeks 1 "${target[@]}"

step "evidence out: the change list over REST on localhost:8080"
count() {
    curl -fsS -H "Authorization: Bearer $auditor" \
        'http://127.0.0.1:8080/v1/changes?from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z&limit=1' \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])'
}
# Through the collector delivery is asynchronous: wait for its queue to drain.
for _ in $(seq 1 60); do n=$(count); [ "$n" -ge 10 ] && break; sleep 1; done
echo "changes listed: $n"
[ "$n" -ge 10 ] || fail "expected the demo's changes in the list, found $n"
code=$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/v1/changes)
[ "$code" = 401 ] || fail "without a token the list answered $code, not 401"

if [ -z "$services" ]; then
    step "Jaeger shows the demo's deploy workflows, without their token attributes"
    # Tail sampling keeps deploy workflows (cicd.pipeline.run.id) after its 10 s decision wait.
    # The demo's spans are dated up to weeks back, hence the wide window.
    day_us=$(( 86400 * 1000000 ))
    now_us=$(( $(date +%s) * 1000000 ))
    jaeger_url="http://127.0.0.1:16686/api/traces?service=conductor&limit=50"
    jaeger_url+="&start=$(( now_us - 400 * day_us ))&end=$(( now_us + day_us ))"
    count_spans='import json, sys; print(sum(len(t["spans"]) for t in json.load(sys.stdin)["data"] or []))'
    for _ in $(seq 1 60); do
        spans=$(curl -fsS "$jaeger_url" | python3 -c "$count_spans" || echo 0)
        [ "$spans" -gt 0 ] && break
        sleep 1
    done
    [ "$spans" -gt 0 ] || fail "no demo spans reached Jaeger"
    curl -fsS "$jaeger_url" | python3 -c '
import json, re, sys
keys = set()
for t in json.load(sys.stdin)["data"]:
    for s in t["spans"]:
        keys |= {x["key"] for x in s.get("tags", [])}
        keys |= {f["key"] for l in s.get("logs", []) for f in l.get("fields", [])}
    keys |= {x["key"] for p in t.get("processes", {}).values() for x in p.get("tags", [])}
assert "cicd.pipeline.run.id" in keys, "no deploy workflow span in Jaeger"
leaked = sorted(k for k in keys if re.search("(?i)(authorization|cookie|password|secret|token)", k))
assert not leaked, f"secret attributes reached Jaeger: {leaked}"
' || fail "Jaeger: see above"
    echo "Jaeger: $spans spans, no token attributes"
fi

step "a report, and the ledger verified against the pinned key"
dc exec -T changetrail changetrail report soc2 --from 2000-01-01 --to 2100-01-01 \
    --out /var/lib/changetrail/report
# Against the ledger too (the database URL the container already has, not one on this command line).
dc exec -T -e VKEY="$vkey" changetrail sh -c 'changetrail verify-report /var/lib/changetrail/report \
    --trusted-key "$VKEY" --database-url "$CHANGETRAIL_DATABASE_URL"'
dc exec -T changetrail changetrail verify --trusted-key "$vkey"

step "graceful stop (SIGTERM drains and signs a final checkpoint), key rotation, second up"
dc stop changetrail
[ "$(docker inspect -f '{{.State.ExitCode}}' "$(dc ps -aq changetrail)")" = 0 ] \
    || fail "changetrail did not exit 0 on SIGTERM"
dc run --rm changetrail keys rotate --out /var/lib/changetrail/next.key
next=$(dc run --rm --entrypoint cat changetrail /var/lib/changetrail/next.key)
grep -q '^PRIVATE+KEY+' <<<"$next" || fail "the rotated key file holds no key"
python3 - "$env_file" "$next" <<'PY'
import sys
path, key = sys.argv[1], sys.argv[2].strip()
lines = [l for l in open(path).read().splitlines() if not l.startswith("CHANGETRAIL_SIGNING_KEY=")]
open(path, "w").write("\n".join(["CHANGETRAIL_SIGNING_KEY=" + key] + lines) + "\n")
PY
# shellcheck disable=SC2086
dc up -d --wait $services
now=$(dc exec -T changetrail changetrail keys show)
echo "vkey now: $now"
[[ "$now" == changetrail.example/prod+* && "$now" != "$vkey" ]] || fail "the service does not sign with the rotated key"
# A reviewer who pinned the first key follows the rotation.
dc exec -T changetrail changetrail verify --trusted-key "$vkey"
echo
echo "smoke: OK"
