#!/usr/bin/env bash
# Runs docker-compose.yml for real, following the README's "Run with docker compose" commands:
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

step "secrets into the env file, with the README's commands"
(
    umask 077
    {
        echo "CHANGETRAIL_SIGNING_KEY=$(docker run --rm --entrypoint sh changetrail:local -c \
            'changetrail keys generate --origin changetrail.example/prod --out /tmp/k >&2 && cat /tmp/k')"
        echo "CHANGETRAIL_INGEST_TOKEN=$(docker run --rm changetrail:local tokens generate)"
        echo "POSTGRES_PASSWORD=$(docker run --rm changetrail:local tokens generate | cut -d_ -f3-)"
    } > "$env_file"
)
grep -q '^CHANGETRAIL_SIGNING_KEY=PRIVATE+KEY+' "$env_file" || fail "no signing key in the env file"
ingest=$(sed -n 's/^CHANGETRAIL_INGEST_TOKEN=//p' "$env_file")

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
    # Through the collector, as applications send: it adds the ingest token itself.
    target=(--endpoint http://otel-collector:4317 --token unused-the-collector-adds-its-own)
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
