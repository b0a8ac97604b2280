#!/usr/bin/env bash
# Builds the demo workload image (FROM scratch, one static binary) unless an image built from the
# same sources already exists. Needs gcc and glibc's static library; installs them if missing.
# Pulls nothing: works without network access to any registry. Honours WORKLOAD_IMAGE and DOCKER_HOST.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE="${WORKLOAD_IMAGE:-pt-instance-manager/ptdemo:latest}"
SRC=workload/ptdemo
HASH_LABEL=pt-instance-manager.source-hash
DOCKER=docker
[ -x /usr/bin/docker ] && DOCKER=/usr/bin/docker

if ! "$DOCKER" version --format '{{.Server.Version}}' >/dev/null 2>&1; then
  echo "build-workload-image: cannot reach the Docker engine (${DOCKER_HOST:-default socket}); is dockerd running?" >&2
  exit 1
fi

hash=$(cat "$SRC/ptdemo.c" "$SRC/Dockerfile" | sha256sum | cut -d' ' -f1)
current=$("$DOCKER" image inspect --format "{{ index .Config.Labels \"$HASH_LABEL\" }}" "$IMAGE" 2>/dev/null || true)
if [ "$current" = "$hash" ]; then
  echo "workload image up to date ($IMAGE)"
  exit 0
fi

libc_a() { [ -f /usr/lib/x86_64-linux-gnu/libc.a ] || [ -f "$(gcc -print-file-name=libc.a)" ]; }
if ! command -v gcc >/dev/null || ! libc_a; then
  echo "installing gcc and libc6-dev to build the workload"
  export DEBIAN_FRONTEND=noninteractive
  log=$(mktemp)
  if ! apt-get install -y --no-install-recommends gcc libc6-dev >"$log" 2>&1; then
    # The package lists may be missing or stale: refresh them once and retry.
    if ! { apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev; } >"$log" 2>&1; then
      cat "$log" >&2
      rm -f "$log"
      echo "build-workload-image: could not install gcc and libc6-dev" >&2
      exit 1
    fi
  fi
  rm -f "$log"
fi

build=$(mktemp -d "${TMPDIR:-/tmp}/ptdemo-build.XXXXXX")
trap 'rm -rf "$build"' EXIT
gcc -O2 -static -pthread -Wall -Wextra -o "$build/ptdemo" "$SRC/ptdemo.c"
strip "$build/ptdemo" 2>/dev/null || true
cp "$SRC/Dockerfile" "$build/"
# FROM scratch needs no pull; the legacy builder and BuildKit both build this offline.
if ! out=$("$DOCKER" build -q --label "$HASH_LABEL=$hash" -t "$IMAGE" "$build" 2>&1); then
  echo "$out" >&2
  echo "build-workload-image: docker build failed" >&2
  exit 1
fi
echo "workload image $IMAGE built ($(du -h "$build/ptdemo" | cut -f1) binary, source $HASH_LABEL=${hash:0:12})"
