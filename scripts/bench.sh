#!/usr/bin/env bash
# npm run bench: brings up the local stack (installing what is missing), builds the service, then
# measures it against the bare engine (bench/run.ts). BENCH_SMOKE=1 for a short run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/prepare.sh

prepare_stack
step "build"; npx --no-install tsc -p tsconfig.build.json
step "benchmark${BENCH_SMOKE:+ (smoke run)}"
exec npx --no-install ts-node --transpile-only bench/run.ts
