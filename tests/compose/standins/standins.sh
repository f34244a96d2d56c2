#!/usr/bin/env bash
# Builds local stand-ins for the base images docker-compose.yml names, for machines that have a
# Docker daemon but no registry (this project's sandboxes reach Debian's mirror, crates.io and
# PyPI, not Docker Hub), so `tests/compose/smoke.sh` can still build and run changetrail:
#
#   rust:1.95.0-bookworm    Debian bookworm (debootstrap), build-essential, this machine's Rust
#                           toolchain at the official image's paths (CARGO_HOME=/usr/local/cargo)
#   debian:12.12-slim       Debian bookworm minbase (debootstrap)
#   postgres:17.6-bookworm  Debian bookworm's PostgreSQL 15, with an entrypoint doing the part of
#                           the official one the compose file relies on (postgres-entrypoint.sh)
#
# They are tagged with the official names, so they SHADOW the real images on this daemon until
# removed: `docker rmi rust:1.95.0-bookworm debian:12.12-slim postgres:17.6-bookworm`. Not for a
# machine that can pull the real ones. The collector and Jaeger have no stand-in: run the smoke
# with SMOKE_SERVICES=changetrail.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
command -v debootstrap >/dev/null || apt-get install -y --no-install-recommends debootstrap

echo "== debian:12.12-slim (debootstrap bookworm minbase)"
debootstrap --variant=minbase bookworm "$work/rootfs" http://deb.debian.org/debian >/dev/null
tar -C "$work/rootfs" -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' -c 'CMD ["bash"]' \
    - standin/debian:bookworm >/dev/null
rm -rf "$work/rootfs"

echo "== rust:1.95.0-bookworm (this machine's toolchain)"
mkdir -p "$work/rust/ca"
cp -a "$(dirname "$(dirname "$(readlink -f "$(rustup which rustc)")")")" "$work/rust/toolchain"
# A TLS-inspecting egress proxy (as in this project's sandboxes) needs its CA inside the build.
cp /usr/local/share/ca-certificates/*.crt "$work/rust/ca/" 2>/dev/null || true
cat > "$work/rust/Dockerfile" <<'DOCKERFILE'
FROM standin/debian:bookworm
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential pkg-config ca-certificates git \
    && rm -rf /var/lib/apt/lists/*
COPY ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
COPY toolchain /usr/local/rust
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN mkdir -p /usr/local/cargo/bin \
    && for b in /usr/local/rust/bin/*; do ln -s "$b" /usr/local/cargo/bin/; done \
    && cargo --version && rustc --version
DOCKERFILE
DOCKER_BUILDKIT=0 docker build -q -t standin/rust:1.95.0 "$work/rust" >/dev/null

echo "== postgres:17.6-bookworm (Debian's PostgreSQL 15)"
mkdir -p "$work/pg"
cp "$here/postgres-entrypoint.sh" "$work/pg/"
cat > "$work/pg/Dockerfile" <<'DOCKERFILE'
FROM standin/debian:bookworm
RUN groupadd --gid 999 postgres \
    && useradd --uid 999 --gid 999 --home-dir /var/lib/postgresql --shell /bin/bash postgres \
    && apt-get update && apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/*
ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
DOCKERFILE
DOCKER_BUILDKIT=0 docker build -q -t standin/postgres:15 "$work/pg" >/dev/null

docker tag standin/rust:1.95.0 rust:1.95.0-bookworm
docker tag standin/debian:bookworm debian:12.12-slim
docker tag standin/postgres:15 postgres:17.6-bookworm
echo "Stand-ins tagged; they shadow the official images until: docker rmi rust:1.95.0-bookworm debian:12.12-slim postgres:17.6-bookworm"
