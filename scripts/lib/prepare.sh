# Shared by start.sh, test.sh and bench.sh: everything up to a migrated database and a built workload image.
step() { printf '\n== %s\n' "$*"; }

ensure_node_modules() {
  # Reinstall only when package-lock.json changed since the last install.
  local stamp=node_modules/.package-lock.json
  if [ ! -d node_modules ] || [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ]; then
    step "installing npm dependencies"
    # npm ci refuses a lock whose optional platform packages (other OSes) the registry does not
    # serve; install from the lock without rewriting it instead.
    npm install --no-audit --no-fund --no-save
  fi
}

prepare_stack() {
  step "local stack: Postgres, Redis, dockerd"
  bash scripts/stack.sh up
  eval "$(bash scripts/stack.sh env)"
  export DATABASE_URL TEST_DATABASE_URL REDIS_URL
  ensure_node_modules
  step "migrations"
  npx --no-install typeorm-ts-node-commonjs -d src/database/data-source.ts migration:run >/dev/null
  echo "database migrated: ${DATABASE_URL%%\?*}" | sed -E 's#//[^@]*@#//#'
  step "workload image"
  bash scripts/build-workload-image.sh
}
