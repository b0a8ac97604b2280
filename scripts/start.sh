#!/usr/bin/env bash
# npm start: brings up the local stack (installing what is missing), builds, migrates and serves
# the API and the worker in one process (ROLE=all) on http://127.0.0.1:${HTTP_PORT:-8080}.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/prepare.sh

prepare_stack
step "build"; npx --no-install tsc -p tsconfig.build.json
export NETWORK_MODE="${NETWORK_MODE:-host}" HTTP_HOST="${HTTP_HOST:-127.0.0.1}" WORKLOAD_ENV="${WORKLOAD_ENV:-PT_BIND=127.0.0.1}"
export FILES_CACHE_DIR="${FILES_CACHE_DIR:-/var/cache/pt-instance-manager/files}" POOL_MIN_IDLE="${POOL_MIN_IDLE:-2}"
mkdir -p "$FILES_CACHE_DIR"
step "serving on http://${HTTP_HOST}:${HTTP_PORT:-8080} (Swagger UI at /apidocs)"
exec node dist/src/main.js
