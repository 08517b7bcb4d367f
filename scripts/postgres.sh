#!/usr/bin/env bash
# Runs a command beside a throwaway PostgreSQL server, for the tests of finerank's PostgreSQL
# store: Debian's `postgresql` (installed with apt-get if missing), a cluster in a temporary
# directory that listens on a Unix socket there (no port to collide on), without fsync. The
# command finds the database's URL in FINERANK_TEST_DATABASE_URL; the server and its directory go
# when the command ends. initdb refuses to run as root, so as root the cluster belongs to the
# `postgres` system user that the package creates.
#   scripts/postgres.sh tests/acceptance/run.sh
#   scripts/postgres.sh cargo test -p finerank-server store::
set -euo pipefail

if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  if [ "$(id -u)" != 0 ]; then
    echo "scripts/postgres.sh: PostgreSQL is not installed; run: sudo apt-get install postgresql" >&2
    exit 1
  fi
  echo "scripts/postgres.sh: installing Debian's postgresql..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
bin=$(compgen -G '/usr/lib/postgresql/*/bin' | sort -V | tail -n 1)

dir=$(mktemp -d)
as_owner=()
if [ "$(id -u)" = 0 ]; then
  chown postgres: "$dir"
  as_owner=(runuser -u postgres --)
fi
stop() {
  "${as_owner[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap stop EXIT

"${as_owner[@]}" "$bin/initdb" -D "$dir/data" -U finerank --auth=trust -E UTF8 --locale=C.UTF-8 \
  >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
"${as_owner[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start \
  -o "-c listen_addresses='' -c unix_socket_directories='$dir' -c fsync=off \
      -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" >/dev/null \
  || { cat "$dir/server.log" >&2; exit 1; }
"$bin/createdb" -h "$dir" -U finerank finerank

# The socket's directory is the URL's host, percent-encoded as libpq takes it.
export FINERANK_TEST_DATABASE_URL="postgresql://finerank@${dir//\//%2F}/finerank"
echo "scripts/postgres.sh: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') at $FINERANK_TEST_DATABASE_URL" >&2
status=0
"$@" || status=$?
exit "$status"
