#!/usr/bin/env bash
# Start the local PostgreSQL cluster (Debian's postgresql package) and make
# sure the role berth's tests use exists. Prints the URL tests connect with.
#
# Usage: scripts/postgres.sh        (prints e.g. postgres://berth_test:…@127.0.0.1:5432/postgres)
#
# Idempotent. The role may create databases: each test makes its own
# uniquely named database and drops it (berth_testkit::postgres).
set -euo pipefail
# Only the URL goes to stdout (callers capture it): the cluster tools print
# chatter such as "Removed stale pid file." that must not end up in it, so
# their output goes to stderr. (Not `exec 1>&2` with the URL on a saved fd:
# the server daemon would inherit that fd and the caller's $(…) would wait
# on it forever.)

role=berth_test
password=berth_test

version=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1)
if [[ -z $version ]]; then
    echo "postgres.sh: PostgreSQL is not installed (scripts/ensure-deps.sh installs it)" >&2
    exit 1
fi
cluster=main
if ! pg_lsclusters -h 2>/dev/null | awk -v v="$version" -v c="$cluster" '$1 == v && $2 == c { found = 1 } END { exit !found }'; then
    pg_createcluster "$version" "$cluster" >&2
fi
port=$(pg_lsclusters -h | awk -v v="$version" -v c="$cluster" '$1 == v && $2 == c { print $3 }')
if ! pg_lsclusters -h | awk -v v="$version" -v c="$cluster" '$1 == v && $2 == c && $4 == "online" { found = 1 } END { exit !found }'; then
    pg_ctlcluster "$version" "$cluster" start >&2
fi
wait_ready() {
    for _ in $(seq 100); do
        su postgres -c "psql -p $port -Atqc 'SELECT 1'" </dev/null >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    echo "postgres.sh: the cluster $version/$cluster did not accept connections within 20 s" >&2
    exit 1
}
wait_ready
# Many tests run at once, each with its own pool.
current=$(su postgres -c "psql -p $port -Atqc 'SHOW max_connections'" </dev/null)
if ((current < 500)); then
    su postgres -c "psql -p $port -qc 'ALTER SYSTEM SET max_connections = 500'" </dev/null >/dev/null
    pg_ctlcluster "$version" "$cluster" restart >&2
fi
wait_ready
su postgres -c "psql -p $port -v ON_ERROR_STOP=1 -q" </dev/null >/dev/null <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$role') THEN
    CREATE ROLE $role LOGIN CREATEDB PASSWORD '$password';
  END IF;
END \$\$;
-- Tests drop their databases WITH (FORCE), which must also end sessions
-- of other roles, such as an autovacuum worker that has just connected.
GRANT pg_signal_backend TO $role;
SQL
echo "postgres://$role:$password@127.0.0.1:$port/postgres"
