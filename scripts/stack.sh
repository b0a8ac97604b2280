#!/usr/bin/env bash
# The local stack: Postgres, Redis and dockerd from Debian's packages. Installs what is missing,
# starts what is not running, reuses what already runs, and makes sure the app's role and databases
# exist. Also used by the fault tests to stop, start and restart one service, so every wait is
# bounded and `start`/`stop` return only once the service answers / is gone.
#
#   stack.sh up                 install + start what is missing, create role and databases
#   stack.sh env                export lines: DATABASE_URL, TEST_DATABASE_URL, REDIS_URL
#   stack.sh status             one line per service: up or down
#   stack.sh down               stop all three
#   stack.sh start|stop|restart postgres|redis|dockerd
#
# Settings (environment): PGHOST (127.0.0.1), PGPORT (5432), PTIM_DB_USER (ptim),
# PTIM_DB_PASSWORD (ptim), PTIM_DB_NAME (ptim; the tests use <name>_test), REDIS_PORT (6379),
# DOCKER_HOST (the local socket).
set -euo pipefail

PGHOST="${PGHOST:-127.0.0.1}"
PGPORT="${PGPORT:-5432}"
DB_USER="${PTIM_DB_USER:-ptim}"
DB_PASSWORD="${PTIM_DB_PASSWORD:-ptim}"
DB_NAME="${PTIM_DB_NAME:-ptim}"
DB_TEST_NAME="${DB_NAME}_test"
REDIS_PORT="${REDIS_PORT:-6379}"

RUN_DIR=/run/ptim
LOCK_FILE="$RUN_DIR/stack.lock"
REDIS_PIDFILE="$RUN_DIR/redis.pid"
[ "$REDIS_PORT" = 6379 ] || REDIS_PIDFILE="$RUN_DIR/redis-$REDIS_PORT.pid"
REDIS_LOG=/var/log/ptim-redis.log
DOCKERD_PIDFILE=/var/run/docker.pid
DOCKERD_LOG=/var/log/ptim-dockerd.log
# No bridge and no iptables: workloads run with host networking locally. live-restore keeps the
# containers (and the sessions in them) running while dockerd itself restarts.
DOCKERD_ARGS=(--bridge=none --iptables=false --ip6tables=false --live-restore)

# dockerd, pg_* helpers and runuser live in sbin directories a non-login PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

say() { echo "stack: $*"; }
fail() { echo "stack: $*" >&2; exit 1; }

# The Debian client matches the Debian daemon; another client may come first on PATH.
docker_bin() {
  if [ -x /usr/bin/docker ]; then echo /usr/bin/docker; else echo docker; fi
}

# Runs a command that may leave daemons behind without handing them the lock descriptor.
detached() { "$@" 9>&-; }

alive() { # pid: running and not a zombie
  local state
  [ -n "${1:-}" ] && [ -r "/proc/$1/stat" ] || return 1
  state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

pid_of() { # pidfile, process name: the pid when the file names a live process of that name
  local pid
  pid=$(cat "$1" 2>/dev/null || true)
  [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] && echo "$pid"
  return 0
}

wait_until() { # seconds, command...: true once the command succeeds, false after the deadline
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

wait_while() { # seconds, command...: true once the command fails, false after the deadline
  local deadline=$((SECONDS + $1))
  shift
  while "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

show_log() { # file
  if [ -r "$1" ]; then
    echo "--- last lines of $1" >&2
    tail -n 25 "$1" >&2
  fi
}

lock() {
  # One stack.sh at a time changes the stack (CI jobs and fault tests may overlap).
  mkdir -p "$RUN_DIR" 2>/dev/null || return 0
  exec 9>>"$LOCK_FILE" || return 0
  flock -n 9 && return 0
  say "waiting for another stack.sh to finish ($LOCK_FILE)"
  flock -w 300 9 || fail "another stack.sh held $LOCK_FILE for 300 s"
}

# --- packages -------------------------------------------------------------------------------
apt_run() {
  local log
  log=$(mktemp)
  export DEBIAN_FRONTEND=noninteractive
  if ! detached apt-get -q -o DPkg::Lock::Timeout=300 "$@" </dev/null >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    rm -f "$log"
    fail "apt-get $1 failed"
  fi
  rm -f "$log"
}

pg_version() { # highest installed server version
  local bin
  for bin in /usr/lib/postgresql/*/bin/postgres; do
    if [ -x "$bin" ]; then basename "$(dirname "$(dirname "$bin")")"; fi
  done | sort -V | tail -n 1
}

ensure_installed() {
  local missing=() pkg
  [ -n "$(pg_version)" ] || missing+=(postgresql)
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v dockerd >/dev/null || missing+=(docker.io)
  # Clients, in case only a server is there (the server packages pull them in otherwise).
  if [ -n "$(pg_version)" ] && ! command -v pg_isready >/dev/null; then missing+=(postgresql-client); fi
  if command -v redis-server >/dev/null && ! command -v redis-cli >/dev/null; then missing+=(redis-tools); fi
  [ ${#missing[@]} -gt 0 ] || return 0
  [ "$(id -u)" = 0 ] || fail "missing ${missing[*]}; run as root to install"
  say "apt-get update"
  apt_run update
  for pkg in "${missing[@]}"; do say "installing $pkg"; done
  apt_run install -y --no-install-recommends "${missing[@]}"
}

# --- Postgres -------------------------------------------------------------------------------
pg_up() { pg_isready -q -t 2 -h "$PGHOST" -p "$PGPORT" >/dev/null 2>&1; }

pg_local() { case "$PGHOST" in 127.0.0.1 | localhost | ::1 | /*) return 0 ;; *) return 1 ;; esac; }

pg_cluster() { # "version name status" of the Debian cluster on PGPORT, if any
  pg_local || return 0
  command -v pg_lsclusters >/dev/null || return 0
  pg_lsclusters -h 2>/dev/null | awk -v port="$PGPORT" '$3 == port { print $1, $2, $4; exit }'
}

pg_prepare_dirs() {
  # /run is a tmpfs; without systemd nothing recreates the socket directory after a reboot.
  if [ ! -d /var/run/postgresql ]; then
    install -d -o postgres -g postgres -m 2775 /var/run/postgresql
  fi
}

pg_clear_stale_lock() {
  # A postmaster that was killed leaves its socket lock behind, and postgres refuses to start
  # while the pid in it exists, which includes a zombie nobody has reaped yet (no real init here).
  local lock="/var/run/postgresql/.s.PGSQL.$PGPORT.lock" pid
  [ -f "$lock" ] || return 0
  pid=$(head -n 1 "$lock" 2>/dev/null || true)
  if [[ "$pid" =~ ^[0-9]+$ ]] && ! alive "$pid"; then
    say "removing stale postgres socket lock (pid $pid is gone)"
    rm -f "$lock" "/var/run/postgresql/.s.PGSQL.$PGPORT"
  fi
}

pg_start() {
  if pg_up; then say "postgres already running on $PGHOST:$PGPORT"; return 0; fi
  pg_local || fail "postgres on $PGHOST:$PGPORT does not answer and is not local; start it there"
  local cluster version name status
  cluster=$(pg_cluster)
  if [ -z "$cluster" ]; then
    version=$(pg_version)
    [ -n "$version" ] || fail "no postgres server installed (run stack.sh up)"
    name=main
    if pg_lsclusters -h 2>/dev/null | awk -v v="$version" '$1 == v && $2 == "main" { found = 1 } END { exit !found }'; then
      name=ptim # main exists on another port; keep it as it is
    fi
    say "creating postgres cluster $version/$name on port $PGPORT"
    detached pg_createcluster "$version" "$name" -p "$PGPORT" >/dev/null
    cluster="$version $name down"
  fi
  read -r version name status <<<"$cluster"
  # Debian's default listen_addresses is 'localhost'; make sure 127.0.0.1 is in whatever is set.
  local listen
  listen=$(pg_conftool -s "$version" "$name" show listen_addresses 2>/dev/null || true)
  case "$listen" in
    "" | *localhost* | *127.0.0.1* | *'*'* | *0.0.0.0*) ;;
    *)
      say "postgres $version/$name: adding 127.0.0.1 to listen_addresses"
      pg_conftool "$version" "$name" set listen_addresses "127.0.0.1,$listen"
      ;;
  esac
  pg_prepare_dirs
  if [[ "$status" == online* ]]; then
    say "postgres $version/$name is starting; waiting"
  else
    say "starting postgres $version/$name on port $PGPORT"
    local attempt=1
    # Extra pg_ctl options (-t) bound the wait and keep pg_ctlcluster from redirecting to systemctl.
    until pg_clear_stale_lock && detached timeout 60 pg_ctlcluster "$version" "$name" start -- -t 30 </dev/null; do
      # Right after a crash the old postmaster's lock or shared memory can linger for a moment.
      if [ $attempt -ge 3 ]; then
        show_log "/var/log/postgresql/postgresql-$version-$name.log"
        fail "postgres $version/$name did not start"
      fi
      attempt=$((attempt + 1))
      sleep 2
    done
  fi
  if ! wait_until 30 pg_up; then
    show_log "/var/log/postgresql/postgresql-$version-$name.log"
    fail "postgres on $PGHOST:$PGPORT did not answer within 30 s"
  fi
}

pg_stop() {
  local cluster version name status
  cluster=$(pg_cluster)
  read -r version name status <<<"${cluster:-- - down}"
  if [[ "$status" != online* ]]; then
    if pg_up; then
      fail "postgres on $PGHOST:$PGPORT is not a local Debian cluster; stop it where it was started"
    fi
    say "postgres already stopped"
    return 0
  fi
  say "stopping postgres $version/$name"
  # --force: fast shutdown, then immediate if that does not finish within -t, then kill.
  detached timeout 90 pg_ctlcluster --force "$version" "$name" stop -- -t 20 </dev/null >/dev/null ||
    true
  if ! wait_while 10 pg_up; then fail "postgres on $PGHOST:$PGPORT still answers"; fi
  if pg_lsclusters -h 2>/dev/null | awk -v v="$version" -v n="$name" '$1 == v && $2 == n && $4 ~ /^online/ { f = 1 } END { exit !f }'; then
    fail "postgres $version/$name did not stop"
  fi
}

pg_app_ready() { # the app role logs in with its password and owns both databases; one round trip
  local out
  out=$(PGPASSWORD="$DB_PASSWORD" PGCONNECT_TIMEOUT=3 psql -X -qAt -h "$PGHOST" -p "$PGPORT" \
    -U "$DB_USER" -d "$DB_NAME" -v ON_ERROR_STOP=1 -v test_db="$DB_TEST_NAME" 2>/dev/null <<'SQL'
SELECT count(*) FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba
 WHERE d.datname IN (current_database(), :'test_db') AND r.rolname = current_user
   AND (SELECT rolcreatedb FROM pg_roles WHERE rolname = current_user);
SQL
  ) || return 1
  [ "$out" = 2 ]
}

PG_SOCKET_DIR=/var/run/postgresql

pg_socket_login() { # the app role logs in with its password over the local socket
  [ -S "$PG_SOCKET_DIR/.s.PGSQL.$PGPORT" ] || return 1
  PGPASSWORD="$DB_PASSWORD" PGCONNECT_TIMEOUT=3 psql -X -qAt -h "$PG_SOCKET_DIR" -p "$PGPORT" -U "$DB_USER" -d "$DB_NAME" \
    -c 'SELECT 1' >/dev/null 2>&1
}

# The app reaches a local Postgres over its unix socket: cheaper than TCP on loopback for every
# statement. Password logins over the socket are allowed for the app role only.
pg_socket_access() {
  pg_local || return 0
  [ -S "$PG_SOCKET_DIR/.s.PGSQL.$PGPORT" ] || return 0
  if pg_socket_login; then return 0; fi
  local hba
  hba=$(pg_superuser_psql -c 'SHOW hba_file' 2>/dev/null) || return 0
  say "postgres: allowing password logins of $DB_USER over the local socket in $hba"
  sed -i "1i local all $DB_USER scram-sha-256 # added by pt-instance-manager scripts/stack.sh" "$hba"
  pg_superuser_psql -c 'SELECT pg_reload_conf()' >/dev/null
  sleep 0.3
}

pg_superuser_psql() {
  (cd / && runuser -u postgres -- psql -X -qAt -v ON_ERROR_STOP=1 -h /var/run/postgresql -p "$PGPORT" -d postgres "$@")
}

pg_databases() {
  if pg_app_ready; then
    say "postgres role $DB_USER and databases $DB_NAME, $DB_TEST_NAME ready"
    return 0
  fi
  if ! pg_local || ! id postgres >/dev/null 2>&1 || [ ! -S "/var/run/postgresql/.s.PGSQL.$PGPORT" ]; then
    fail "cannot reach postgres on $PGHOST:$PGPORT as superuser to create role $DB_USER and databases $DB_NAME, $DB_TEST_NAME; create them there"
  fi
  pg_superuser_psql -v user="$DB_USER" -v password="$DB_PASSWORD" -v db="$DB_NAME" -v test_db="$DB_TEST_NAME" <<'SQL'
SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'user') AS need_role \gset
\if :need_role
\echo stack: creating postgres role :user
SELECT format('CREATE ROLE %I', :'user') \gexec
\endif
ALTER ROLE :"user" WITH LOGIN CREATEDB PASSWORD :'password';
SELECT NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') AS need_db \gset
\if :need_db
\echo stack: creating database :db
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'user') \gexec
\endif
ALTER DATABASE :"db" OWNER TO :"user";
SELECT NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'test_db') AS need_db \gset
\if :need_db
\echo stack: creating database :test_db
SELECT format('CREATE DATABASE %I OWNER %I', :'test_db', :'user') \gexec
\endif
ALTER DATABASE :"test_db" OWNER TO :"user";
SQL
  if pg_app_ready; then return 0; fi
  # Role and databases exist, so the login itself is refused: allow password logins from 127.0.0.1.
  local cluster version name status hba
  cluster=$(pg_cluster)
  [ -n "$cluster" ] || fail "$DB_USER cannot log in to $PGHOST:$PGPORT with its password"
  read -r version name status <<<"$cluster"
  hba=$(pg_superuser_psql -c 'SHOW hba_file')
  say "postgres $version/$name: allowing password logins from 127.0.0.1 in $hba"
  sed -i "1i host all all 127.0.0.1/32 scram-sha-256 # added by pt-instance-manager scripts/stack.sh" "$hba"
  pg_superuser_psql -c 'SELECT pg_reload_conf()' >/dev/null
  sleep 0.5
  pg_app_ready || fail "$DB_USER still cannot log in to $PGHOST:$PGPORT with its password"
}

# --- Redis ----------------------------------------------------------------------------------
redis_up() { [ "$(timeout 5 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; }

redis_pid() { # our redis-server on REDIS_PORT, from its pidfile
  local pid
  pid=$(pid_of "$REDIS_PIDFILE" redis-server)
  if [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q ":$REDIS_PORT\b"; then echo "$pid"; fi
  return 0
}

redis_start() {
  if redis_up; then say "redis already running on 127.0.0.1:$REDIS_PORT"; return 0; fi
  local pid
  pid=$(redis_pid)
  if [ -n "$pid" ]; then
    say "redis (pid $pid) is running but does not answer; waiting"
  else
    command -v redis-server >/dev/null || fail "redis-server is not installed (run stack.sh up)"
    mkdir -p "$RUN_DIR"
    rm -f "$REDIS_PIDFILE"
    say "starting redis on 127.0.0.1:$REDIS_PORT"
    # Redis holds only queues: no persistence.
    detached redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save '' \
      --appendonly no --pidfile "$REDIS_PIDFILE" --logfile "$REDIS_LOG" --dir "$RUN_DIR" </dev/null ||
      { show_log "$REDIS_LOG"; fail "redis-server did not start"; }
  fi
  if ! wait_until 10 redis_up; then
    show_log "$REDIS_LOG"
    fail "redis on 127.0.0.1:$REDIS_PORT did not answer within 10 s"
  fi
}

redis_stop() {
  local pid
  pid=$(redis_pid)
  if ! redis_up && [ -z "$pid" ]; then say "redis already stopped"; return 0; fi
  say "stopping redis on 127.0.0.1:$REDIS_PORT"
  timeout 5 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  if ! wait_while 10 redis_up || { [ -n "$pid" ] && ! wait_while 5 alive "$pid"; }; then
    if [ -n "$pid" ]; then
      say "redis (pid $pid) did not shut down; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      wait_while 5 alive "$pid" || true
    fi
  fi
  if redis_up; then fail "redis on 127.0.0.1:$REDIS_PORT still answers"; fi
  if [ -n "$pid" ] && alive "$pid"; then fail "redis (pid $pid) did not exit"; fi
  rm -f "$REDIS_PIDFILE"
}

# --- dockerd --------------------------------------------------------------------------------
docker_up() { [ -n "$(timeout 10 "$(docker_bin)" info --format '{{.ServerVersion}}' 2>/dev/null)" ]; }

docker_remote() { [ -n "${DOCKER_HOST:-}" ] && [[ "$DOCKER_HOST" != unix://* ]]; }

dockerd_pid() {
  local pid
  pid=$(pid_of "$DOCKERD_PIDFILE" dockerd)
  if [ -z "$pid" ]; then
    # Started with another pidfile: take a live one of this machine's root (not one inside a
    # container), skipping exited ones nobody has reaped yet.
    for pid in $(pgrep -x dockerd 2>/dev/null || true) ''; do
      alive "$pid" && [ "$(readlink "/proc/$pid/root" 2>/dev/null)" = / ] && break
    done
  fi
  echo "$pid"
}

docker_start() {
  if docker_up; then say "dockerd already running"; return 0; fi
  docker_remote && fail "docker at DOCKER_HOST=$DOCKER_HOST does not answer and is not local; start it there"
  local pid
  pid=$(dockerd_pid)
  if [ -n "$pid" ]; then
    say "dockerd (pid $pid) is running but does not answer yet; waiting"
  else
    command -v dockerd >/dev/null || fail "dockerd is not installed (run stack.sh up)"
    say "starting dockerd (${DOCKERD_ARGS[*]})"
    rm -f "$DOCKERD_PIDFILE"
    echo "--- $(date -Is) stack.sh: dockerd ${DOCKERD_ARGS[*]}" >>"$DOCKERD_LOG"
    # Own session: a Ctrl-C or a process-group kill aimed at the caller leaves dockerd alone.
    # (Not through detached(): a backgrounded function would be a subshell holding the lock.)
    setsid nohup dockerd "${DOCKERD_ARGS[@]}" </dev/null >>"$DOCKERD_LOG" 2>&1 9>&- &
    pid=$!
  fi
  local deadline=$((SECONDS + 60))
  until docker_up; do
    if ! alive "$pid" && [ -z "$(dockerd_pid)" ]; then
      show_log "$DOCKERD_LOG"
      fail "dockerd exited"
    fi
    if [ $SECONDS -ge $deadline ]; then
      show_log "$DOCKERD_LOG"
      fail "dockerd did not answer within 60 s"
    fi
    sleep 0.2
  done
}

docker_stop() {
  local pid
  pid=$(dockerd_pid)
  if [ -z "$pid" ]; then
    docker_up && fail "docker answers but no local dockerd process was found (DOCKER_HOST?); stop it where it was started"
    say "dockerd already stopped"
    return 0
  fi
  say "stopping dockerd (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_while 30 alive "$pid"; then
    say "dockerd (pid $pid) did not exit within 30 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    wait_while 5 alive "$pid" || fail "dockerd (pid $pid) did not exit"
  fi
  if [ "$(cat "$DOCKERD_PIDFILE" 2>/dev/null || true)" = "$pid" ]; then rm -f "$DOCKERD_PIDFILE"; fi
}

# The app ports of the local profile and the tests (40000-49999) lie inside the kernel's ephemeral
# range: reserve them, so that no outgoing connection's source port stops an app from binding its own.
reserve_app_ports() {
  local file=/proc/sys/net/ipv4/ip_local_reserved_ports current
  [ -w "$file" ] || return 0
  current=$(cat "$file")
  case ",$current," in *",40000-49999,"*) return 0 ;; esac
  if echo "${current:+$current,}40000-49999" >"$file" 2>/dev/null; then
    say "reserved ports 40000-49999 for the apps (net.ipv4.ip_local_reserved_ports)"
  fi
}

# --- commands -------------------------------------------------------------------------------
urlencode() {
  local LC_ALL=C s=$1 out='' c i
  for ((i = 0; i < ${#s}; i++)); do
    c=${s:i:1}
    case "$c" in
      [a-zA-Z0-9._~-]) out+=$c ;;
      *) printf -v c '%%%02X' "'$c"; out+=$c ;;
    esac
  done
  printf '%s' "$out"
}

on_service() { # action service
  case "${2:-}" in
    postgres | postgresql | pg) "pg_$1" ;;
    redis) "redis_$1" ;;
    dockerd | docker) "docker_$1" ;;
    *) echo "usage: stack.sh $1 postgres|redis|dockerd" >&2; exit 2 ;;
  esac
}

case "${1:-}" in
  up)
    lock
    started=${EPOCHREALTIME/,/.}
    ensure_installed
    pg_start
    pg_databases
    pg_socket_access
    redis_start
    docker_start
    reserve_app_ports
    say "up in $(awk -v a="$started" -v b="${EPOCHREALTIME/,/.}" 'BEGIN { printf "%.1f", b - a }') s"
    ;;
  env)
    creds="$(urlencode "$DB_USER"):$(urlencode "$DB_PASSWORD")"
    # Over the local socket when the app role can log in there (stack.sh up allows it), else TCP.
    query=""
    if pg_local && pg_socket_login; then query="?host=$PG_SOCKET_DIR"; fi
    echo "export DATABASE_URL=postgres://$creds@$PGHOST:$PGPORT/$(urlencode "$DB_NAME")$query"
    echo "export TEST_DATABASE_URL=postgres://$creds@$PGHOST:$PGPORT/$(urlencode "$DB_TEST_NAME")$query"
    echo "export REDIS_URL=redis://127.0.0.1:$REDIS_PORT"
    ;;
  status)
    if pg_up; then echo "postgres up ($PGHOST:$PGPORT)"; else echo "postgres down ($PGHOST:$PGPORT)"; fi
    if redis_up; then echo "redis up (127.0.0.1:$REDIS_PORT)"; else echo "redis down (127.0.0.1:$REDIS_PORT)"; fi
    if docker_up; then echo "dockerd up (${DOCKER_HOST:-unix:///var/run/docker.sock})"; else echo "dockerd down (${DOCKER_HOST:-unix:///var/run/docker.sock})"; fi
    ;;
  start | stop)
    lock
    on_service "$1" "${2:-}"
    ;;
  restart)
    lock
    on_service stop "${2:-}"
    on_service start "${2:-}"
    ;;
  down)
    lock
    rc=0
    (docker_stop) || rc=1
    (redis_stop) || rc=1
    (pg_stop) || rc=1
    exit $rc
    ;;
  *)
    echo "usage: stack.sh up|env|status|down|start SERVICE|stop SERVICE|restart SERVICE (postgres, redis, dockerd)" >&2
    exit 2
    ;;
esac
