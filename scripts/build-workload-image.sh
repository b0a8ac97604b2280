#!/usr/bin/env bash
# Builds the demo workload image (FROM scratch, one static binary) unless an image built from the
# same sources already exists. Needs gcc and glibc's static library; installs them if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE="${WORKLOAD_IMAGE:-pt-instance-manager/ptdemo:latest}"
SRC=workload/ptdemo
DOCKER=docker
[ -x /usr/bin/docker ] && DOCKER=/usr/bin/docker

hash=$(cat "$SRC/ptdemo.c" "$SRC/Dockerfile" | sha256sum | cut -c1-16)
current=$($DOCKER image inspect --format '{{ index .Config.Labels "pt-instance-manager.source-hash" }}' "$IMAGE" 2>/dev/null || true)
if [ "$current" = "$hash" ]; then
  echo "workload image $IMAGE up to date"
  exit 0
fi

if ! command -v gcc >/dev/null || [ ! -f "$(gcc -print-file-name=libc.a)" ]; then
  echo "installing gcc and libc6-dev to build the workload"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends gcc libc6-dev >/dev/null 2>&1 || {
    apt-get update >/dev/null && apt-get install -y --no-install-recommends gcc libc6-dev >/dev/null
  }
fi

build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
gcc -O2 -static -pthread -Wall -Wextra -o "$build/ptdemo" "$SRC/ptdemo.c"
strip "$build/ptdemo" 2>/dev/null || true
cp "$SRC/Dockerfile" "$build/"
$DOCKER build -q --label "pt-instance-manager.source-hash=$hash" -t "$IMAGE" "$build" >/dev/null
echo "workload image $IMAGE built ($(du -h "$build/ptdemo" | cut -f1) binary)"
