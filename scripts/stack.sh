#!/usr/bin/env bash
# The local stack: Postgres, Redis and dockerd from Debian's packages. Installs what is missing,
# starts what is not running, reuses what already runs. Also used by fault tests to stop, start and
# restart one service.
#
#   stack.sh up | env | status | down
#   stack.sh start|stop|restart postgres|redis|dockerd
set -euo pipefail

PGHOST="${PGHOST:-127.0.0.1}"
PGPORT="${PGPORT:-5432}"
DB_USER="${PTIM_DB_USER:-ptim}"
DB_PASSWORD="${PTIM_DB_PASSWORD:-ptim}"
DB_NAME="${PTIM_DB_NAME:-ptim}"
REDIS_PORT="${REDIS_PORT:-6379}"
RUN_DIR=/run/ptim
DOCKER=docker
[ -x /usr/bin/docker ] && DOCKER=/usr/bin/docker

say() { echo "stack: $*"; }

wait_for() { # seconds, description, command...
  local seconds=$1 what=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      say "$what did not come up within ${seconds}s"
      return 1
    fi
    sleep 0.2
  done
}

wait_gone() { # seconds, description, command... (waits until the command fails)
  local seconds=$1 what=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  while "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      say "$what did not stop within ${seconds}s"
      return 1
    fi
    sleep 0.2
  done
}

apt_updated=0
install_packages() {
  export DEBIAN_FRONTEND=noninteractive
  if [ $apt_updated = 0 ]; then
    apt-get update -qq >/dev/null
    apt_updated=1
  fi
  say "installing $*"
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

pg_version() { ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1; }

ensure_installed() {
  local missing=()
  [ -n "$(pg_version)" ] && [ -x "/usr/lib/postgresql/$(pg_version)/bin/postgres" ] || missing+=(postgresql)
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v pg_isready >/dev/null || missing+=(postgresql-client)
  if [ ${#missing[@]} -gt 0 ]; then install_packages "${missing[@]}"; fi
}

# --- Postgres -------------------------------------------------------------------------------
pg_up() { pg_isready -q -h "$PGHOST" -p "$PGPORT"; }

pg_start() {
  if pg_up; then say "postgres already running on $PGHOST:$PGPORT"; return; fi
  local version
  version=$(pg_version)
  if ! pg_lsclusters -h 2>/dev/null | awk '{print $1" "$2}' | grep -q "^$version main$"; then
    say "creating postgres cluster $version/main"
    pg_createcluster "$version" main -p "$PGPORT" >/dev/null
  fi
  say "starting postgres $version/main"
  pg_ctlcluster "$version" main start
  wait_for 30 postgres pg_up
}

pg_stop() {
  local version
  version=$(pg_version)
  if ! pg_up; then say "postgres already stopped"; return; fi
  pg_ctlcluster "$version" main stop -m fast
  wait_gone 30 postgres pg_up
}

pg_databases() {
  local psql=(runuser -u postgres -- psql -v ON_ERROR_STOP=1 -qAt -h /var/run/postgresql -p "$PGPORT")
  "${psql[@]}" -c "DO \$\$ BEGIN
      IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER') THEN
        CREATE ROLE \"$DB_USER\" LOGIN CREATEDB PASSWORD '$DB_PASSWORD';
      END IF;
    END \$\$;" >/dev/null
  for db in "$DB_NAME" "${DB_NAME}_test"; do
    if [ "$("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" != 1 ]; then
      say "creating database $db"
      runuser -u postgres -- createdb -h /var/run/postgresql -p "$PGPORT" -O "$DB_USER" "$db"
    fi
  done
}

# --- Redis ----------------------------------------------------------------------------------
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; }

redis_start() {
  if redis_up; then say "redis already running on 127.0.0.1:$REDIS_PORT"; return; fi
  mkdir -p "$RUN_DIR"
  say "starting redis on 127.0.0.1:$REDIS_PORT"
  # Redis holds only queues: no persistence.
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
    --pidfile "$RUN_DIR/redis.pid" --logfile /var/log/ptim-redis.log --dir "$RUN_DIR"
  wait_for 10 redis redis_up
}

redis_stop() {
  if ! redis_up; then say "redis already stopped"; return; fi
  redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  wait_gone 10 redis redis_up
}

# --- dockerd --------------------------------------------------------------------------------
docker_up() { $DOCKER info >/dev/null 2>&1; }

docker_start() {
  if docker_up; then say "dockerd already running"; return; fi
  if [ -n "${DOCKER_HOST:-}" ] && [[ "$DOCKER_HOST" != unix://* ]]; then
    say "DOCKER_HOST=$DOCKER_HOST does not answer and is not local; start it there"
    return 1
  fi
  say "starting dockerd (--bridge=none --iptables=false --live-restore)"
  rm -f /var/run/docker.pid
  # live-restore keeps containers (and the sessions in them) running while dockerd restarts.
  nohup dockerd --bridge=none --iptables=false --ip6tables=false --live-restore >>/var/log/ptim-dockerd.log 2>&1 &
  if ! wait_for 60 dockerd docker_up; then
    tail -20 /var/log/ptim-dockerd.log
    return 1
  fi
}

docker_stop() {
  if ! docker_up; then say "dockerd already stopped"; return; fi
  local pid
  pid=$(cat /var/run/docker.pid 2>/dev/null || pgrep -x dockerd || true)
  if [ -z "$pid" ]; then say "dockerd pid not found"; return 1; fi
  kill -TERM "$pid"
  wait_gone 30 dockerd kill -0 "$pid"
}

# --- commands -------------------------------------------------------------------------------
service_call() { # action service
  case "$2" in
    postgres) "pg_$1" ;;
    redis) "redis_$1" ;;
    dockerd | docker) "docker_$1" ;;
    *) echo "unknown service: $2 (postgres, redis or dockerd)" >&2; exit 2 ;;
  esac
}

case "${1:-}" in
  up)
    ensure_installed
    pg_start
    pg_databases
    redis_start
    docker_start
    ;;
  env)
    echo "export DATABASE_URL=postgres://$DB_USER:$DB_PASSWORD@$PGHOST:$PGPORT/$DB_NAME"
    echo "export TEST_DATABASE_URL=postgres://$DB_USER:$DB_PASSWORD@$PGHOST:$PGPORT/${DB_NAME}_test"
    echo "export REDIS_URL=redis://127.0.0.1:$REDIS_PORT"
    ;;
  status)
    pg_up && echo "postgres up" || echo "postgres down"
    redis_up && echo "redis up" || echo "redis down"
    docker_up && echo "dockerd up" || echo "dockerd down"
    ;;
  start) service_call start "${2:-}" ;;
  stop) service_call stop "${2:-}" ;;
  restart)
    service_call stop "${2:-}"
    service_call start "${2:-}"
    ;;
  down)
    docker_stop || true
    redis_stop || true
    pg_stop || true
    ;;
  *)
    echo "usage: stack.sh up|env|status|down|start SERVICE|stop SERVICE|restart SERVICE" >&2
    exit 2
    ;;
esac
