#!/usr/bin/env bash
# Install (if missing) and start/stop the system services the test-suite talks to:
# headless chromium (browser tests), redis-server and PostgreSQL (scale-out tests).
# Usage: services.sh up|down
#
# `up` starts throwaway servers on loopback only (data under $TLTEST_SERVICES_DIR,
# default /tmp/tracklayer-services) and writes .ci/services.env, which tests/scaleout reads:
#   TLTEST_REDIS_URL, TLTEST_POSTGRES_DSN (+ PG* pieces).
# It is idempotent: servers already answering on the ports are reused. `down` stops what `up`
# started and deletes its data.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
env_file="$here/services.env"
state="${TLTEST_SERVICES_DIR:-/tmp/tracklayer-services}"
redis_port="${TLTEST_REDIS_PORT:-6390}"
pg_port="${TLTEST_PG_PORT:-5439}"
pg_user=tracklayer
pg_db=tracklayer

# The server's bin folder (initdb is only in the server package, psql in the client one too).
pg_bin() {
  local initdb
  initdb="$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1)"
  [ -n "$initdb" ] && dirname "$initdb"
  return 0
}

install_missing() {
  local need=()
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  [ -n "$(pg_bin)" ] || need+=(postgresql)
  if [ "${#need[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    # Another apt may hold the dpkg lock (e.g. unattended upgrades): wait for it, bounded.
    apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${need[@]}" >/dev/null
  fi
}

# PostgreSQL refuses to run as root: run its tools as the `postgres` system user then.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

wait_for() {  # wait_for <what> <command...>: up to ~20 s
  local what="$1"; shift
  for _ in $(seq 1 100); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "services.sh: $what did not come up" >&2
  return 1
}

redis_up() {
  if redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null | grep -q PONG; then
    echo "services.sh: reusing redis on 127.0.0.1:$redis_port"
    return
  fi
  mkdir -p "$state/redis"
  redis-server --port "$redis_port" --bind 127.0.0.1 --daemonize yes \
    --dir "$state/redis" --pidfile "$state/redis.pid" --logfile "$state/redis.log" \
    --save "" --appendonly no
  wait_for "redis on port $redis_port" redis-cli -h 127.0.0.1 -p "$redis_port" ping
  echo "services.sh: redis up on 127.0.0.1:$redis_port"
}

pg_up() {
  local bin; bin="$(pg_bin)"
  if ! "$bin/pg_isready" -q -h 127.0.0.1 -p "$pg_port"; then
    rm -rf "$state/pg"
    mkdir -p "$state/pg" "$state/pgsock"
    chmod 755 "$state"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$state/pg" "$state/pgsock"; fi
    as_pg "$bin/initdb" -D "$state/pg" -A trust -U postgres -E UTF8 --no-sync >"$state/initdb.log"
    as_pg "$bin/pg_ctl" -D "$state/pg" -l "$state/pg/server.log" -w -t 30 start \
      -o "-p $pg_port -k $state/pgsock -c listen_addresses=127.0.0.1 -c fsync=off \
          -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" >/dev/null
    wait_for "postgres on port $pg_port" "$bin/pg_isready" -q -h 127.0.0.1 -p "$pg_port"
    echo "services.sh: postgres up on 127.0.0.1:$pg_port"
  else
    echo "services.sh: reusing postgres on 127.0.0.1:$pg_port"
  fi
  local psql=("$bin/psql" -X -q -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -v ON_ERROR_STOP=1)
  if [ -z "$("${psql[@]}" -tAc "SELECT 1 FROM pg_roles WHERE rolname='$pg_user'")" ]; then
    "${psql[@]}" -c "CREATE ROLE $pg_user LOGIN PASSWORD '$pg_user' CREATEDB"
  fi
  if [ -z "$("${psql[@]}" -tAc "SELECT 1 FROM pg_database WHERE datname='$pg_db'")" ]; then
    "${psql[@]}" -c "CREATE DATABASE $pg_db OWNER $pg_user"
  fi
}

write_env() {
  cat >"$env_file" <<EOF
TLTEST_REDIS_URL=redis://127.0.0.1:$redis_port/0
TLTEST_POSTGRES_DSN=postgresql://$pg_user:$pg_user@127.0.0.1:$pg_port/$pg_db
PGHOST=127.0.0.1
PGPORT=$pg_port
PGUSER=$pg_user
PGPASSWORD=$pg_user
PGDATABASE=$pg_db
EOF
}

down() {
  if [ -f "$state/redis.pid" ]; then
    redis-cli -h 127.0.0.1 -p "$redis_port" shutdown nosave >/dev/null 2>&1 \
      || kill "$(cat "$state/redis.pid")" 2>/dev/null || true
  fi
  if [ -f "$state/pg/postmaster.pid" ]; then
    as_pg "$(pg_bin)/pg_ctl" -D "$state/pg" -m fast -w -t 30 stop >/dev/null || true
  fi
  rm -rf "$state" "$env_file"
}

case "${1:-up}" in
  up)
    install_missing
    mkdir -p "$state"
    redis_up
    pg_up
    write_env
    ;;
  down) down ;;
  *) echo "usage: services.sh up|down" >&2; exit 2 ;;
esac
