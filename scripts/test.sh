#!/usr/bin/env bash
# npm test: brings up the local stack (installing what is missing), then lint, type check,
# unit specs, tests against the real Postgres/Redis/dockerd, and a short benchmark smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/prepare.sh

prepare_stack
export DATABASE_URL="$TEST_DATABASE_URL"

step "lint (type-aware, zero warnings)"; npx --no-install eslint --max-warnings 0 .
step "type check"; npx --no-install tsc --noEmit -p tsconfig.json
mkdir -p .stack
status=0
step "unit specs"
npx --no-install jest --config jest.config.js --json --outputFile=.stack/unit.json || status=1
step "tests against Postgres, Redis and dockerd"
npx --no-install jest --config test/jest-e2e.config.js --runInBand --json --outputFile=.stack/e2e.json || status=1
step "benchmark smoke run (a few iterations of npm run bench; nothing is timed)"
if npx --no-install tsc -p tsconfig.build.json; then
  BENCH_SMOKE=1 npx --no-install ts-node --transpile-only bench/run.ts || status=1
else
  status=1
fi
node -e '
  let passed = 0, failed = 0, skipped = 0;
  for (const file of [".stack/unit.json", ".stack/e2e.json"]) {
    try {
      const r = require("./" + file);
      passed += r.numPassedTests; failed += r.numFailedTests; skipped += r.numPendingTests + (r.numTodoTests || 0);
      failed += r.numRuntimeErrorTestSuites || 0;
    } catch { failed += 1; }
  }
  console.log(`${passed} passed, ${failed} failed` + (skipped ? `, ${skipped} skipped` : ""));
'
exit $status
