#!/usr/bin/env bash
# A private PostgreSQL cluster for the tests. Idempotent: installs the `postgresql` package when
# missing (sudo when not root), creates the cluster once, starts it when it is not running, creates
# the database `rempart_test`, then prints its connection string — the only thing on stdout.
#   scripts/postgres.sh          start (or find running) and print the connection string
#   scripts/postgres.sh stop     stop it
# The cluster lives in artifacts/postgres (REMPART_PG_DIR), listens on 127.0.0.1:55432 only
# (REMPART_PG_PORT) with its unix socket beside it, trusts local connections, and runs with
# fsync off: throwaway test data, never a production setup. initdb and postgres refuse to run as
# root, so as root the cluster belongs to the `postgres` system user (runuser).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
port="${REMPART_PG_PORT:-55432}"
db=rempart_test

say() { echo "postgres.sh: $*" >&2; }
die() { say "$*"; exit 1; }
root() { [[ $(id -u) -eq 0 ]]; }
# Runs a command as the cluster's owner.
as_owner() { if root; then runuser -u postgres -- "$@"; else "$@"; fi; }
bindir() { find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1; }

if [[ ! -x "$(bindir)/initdb" ]]; then
  sudo=""
  root || sudo="sudo"
  say "installing postgresql"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >/dev/null
  $sudo apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  [[ -x "$(bindir)/initdb" ]] || die "postgresql was installed but no initdb was found under /usr/lib/postgresql"
fi
bin="$(bindir)"

# The cluster's folder; as root it must be reachable by the postgres user (fall back to /tmp).
base="${REMPART_PG_DIR:-$here/artifacts/postgres}"
if root; then
  getent passwd postgres >/dev/null || die "no 'postgres' system user (the postgresql package creates it)"
  mkdir -p "$base"
  chown postgres:postgres "$base"
  if ! runuser -u postgres -- test -w "$base"; then
    say "the postgres user cannot reach $base; using /tmp/rempart-postgres-$port"
    base="/tmp/rempart-postgres-$port"
    mkdir -p "$base"
    chown postgres:postgres "$base"
  fi
else
  mkdir -p "$base"
fi
data="$base/data"
run="$base/run"

# One caller at a time (parallel test runs start the same cluster).
exec 9>"$base/.lock"
flock -w 120 9 || die "timed out waiting for $base/.lock"

running() { as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; }

if [[ "${1:-}" == stop ]]; then
  if [[ -f "$data/PG_VERSION" ]] && running; then
    as_owner "$bin/pg_ctl" -D "$data" -m fast -w stop >&2
  fi
  exit 0
fi
[[ $# -eq 0 ]] || die "usage: $0 [stop]"

if [[ ! -f "$data/PG_VERSION" ]]; then
  say "creating a test cluster in $data"
  rm -rf "$data"
  as_owner mkdir -p "$data" "$run"
  chmod 700 "$data"
  as_owner "$bin/initdb" -D "$data" -U postgres -A trust -E UTF8 --no-locale >"$base/initdb.log" 2>&1 \
    || { cat "$base/initdb.log" >&2; die "initdb failed"; }
  echo "include_if_exists = 'rempart.conf'" | as_owner tee -a "$data/postgresql.conf" >/dev/null
fi
as_owner mkdir -p "$run"

if running; then
  # Already up (a previous run): use the port it was started with.
  port="$(sed -n 's/^port = //p' "$data/rempart.conf" 2>/dev/null)"
  [[ -n "$port" ]] || die "a cluster runs in $data but its port is unknown: scripts/postgres.sh stop, then retry"
else
  # Another server (say a cluster of another checkout) may hold the port: take the next free one.
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break
    say "127.0.0.1:$port is taken by another server; trying $((port + 1))"
    port=$((port + 1))
  done
  # Regenerated at every start, so a changed port takes effect.
  as_owner tee "$data/rempart.conf" >/dev/null <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$run'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
  say "starting PostgreSQL on 127.0.0.1:$port"
  # 9>&-: the server must not inherit (and hold forever) the lock.
  as_owner "$bin/pg_ctl" -D "$data" -l "$base/postgres.log" -w -t 60 start >/dev/null 9>&- \
    || { tail -n 30 "$base/postgres.log" >&2; die "PostgreSQL did not start (log: $base/postgres.log)"; }
fi
"$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -t 15 \
  || { tail -n 30 "$base/postgres.log" >&2 || true; die "PostgreSQL is not accepting connections on 127.0.0.1:$port"; }

psql=("$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -tAq)
if [[ "$("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" != 1 ]]; then
  "${psql[@]}" -c "CREATE DATABASE $db" >&2
fi

echo "Host=127.0.0.1;Port=$port;Username=postgres;Database=$db"
