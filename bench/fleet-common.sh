# shellcheck shell=bash
# Shared by the control-plane benches (fleet-scale.sh, fair-share.sh;
# sourced, not run): a scratch PostgreSQL database, servers on it, an
# operator and a project, and hollow hosts joined to the servers.
#
# The sourcing script sets $repo, $bin_dir (empty: target/release, built if
# missing) and $json (1: say nothing on stderr), and calls fleet_start first.
# Everything it starts is killed, and the database dropped, on exit.

say() { [[ ${json:-0} == 1 ]] || printf '%s\n' "$*" >&2; }
sql() { psql "$db_url" -qAtc "$1"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
hz=$(getconf CLK_TCK)

# fleet_start NAME: checks the tools, builds the binaries if needed, makes
# $work and the scratch database ($db, $db_url), and the join token.
fleet_start() {
    local name=$1 t
    for t in jq psql bc; do
        command -v "$t" >/dev/null || { echo "$name: $t is needed" >&2; exit 1; }
    done
    if [[ -z ${bin_dir:-} ]]; then
        bin_dir=$repo/target/release
        if [[ ! -x $bin_dir/berthd || ! -x $bin_dir/berth ]]; then
            say "==> building release binaries"
            (cd "$repo" && cargo build --release -q -p berth -p berthd)
        fi
    fi
    work=$(mktemp -d /tmp/bfs.XXXXXX)
    admin_url=$(bash "$repo/scripts/postgres.sh" 2>/dev/null)
    db=berth_bench_$$
    psql "$admin_url" -qAtc "CREATE DATABASE $db" >/dev/null
    db_url=${admin_url%/*}/$db
    pids=()
    server_pids=()
    hollow_pids=()
    trap fleet_cleanup EXIT
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/join.token"
}

fleet_cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    psql "$admin_url" -qAtc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$work"
}

# fleet_servers N: starts N servers on the database, one after the other
# (the first leads), and exports BERTH_URL listing them all.
fleet_servers() {
    local count=$1 i port urls=()
    for ((i = 1; i <= count; i++)); do
        port=$(free_port)
        "$bin_dir/berthd" --data-dir "$work/s$i" server --listen "127.0.0.1:$port" \
            --database "$db_url" --join-token-file "$work/join.token" --name "s$i" \
            </dev/null >"$work/s$i.log" 2>&1 &
        pids+=($!)
        server_pids+=($!)
        urls+=("http://127.0.0.1:$port")
        for _ in $(seq 100); do
            [[ $(sql "SELECT count(*) FROM servers" 2>/dev/null || echo 0) -ge $i ]] && break
            sleep 0.2
        done
    done
    BERTH_URL=$(IFS=,; echo "${urls[*]}")
    export BERTH_URL BERTH_CONFIG=/nonexistent/berth-config.json
}

# fleet_login: an operator token and a project "bench"; exports what the
# berth CLI reads.
fleet_login() {
    local project
    BERTH_OPERATOR_TOKEN=$("$bin_dir/berthd" --data-dir "$work/op" token create --operator \
        --database "$db_url" --json | jq -r .token)
    project=$("$bin_dir/berthd" --data-dir "$work/op" project create bench \
        --database "$db_url" --json)
    BERTH_PROJECT_ID=$(jq -r .id <<<"$project")
    BERTH_TOKEN=$(jq -r .token <<<"$project")
    export BERTH_OPERATOR_TOKEN BERTH_PROJECT_ID BERTH_TOKEN
}

# fleet_hollow HOSTS PROCS ALLOCATABLE: HOSTS hollow hosts in PROCS
# processes (process P's hosts labelled zone=zP), each offering
# ALLOCATABLE; waits until all have joined and sets $join_secs.
fleet_hollow() {
    local hosts=$1 procs=$2 allocatable=$3 per p n port started
    per=$((hosts / procs))
    for ((p = 1; p <= procs; p++)); do
        n=$per
        ((p == procs)) && n=$((hosts - per * (procs - 1)))
        port=$(free_port)
        "$bin_dir/berthd" --data-dir "$work/h$p" agent --hollow "$n" --listen "127.0.0.1:$port" \
            --join "$BERTH_URL" --join-token-file "$work/join.token" --name "z$p" \
            --labels "zone=z$p" --allocatable "$allocatable" --hollow-images busybox:latest \
            --max-connections 8192 </dev/null >"$work/h$p.log" 2>&1 &
        pids+=($!)
        hollow_pids+=($!)
    done
    started=$SECONDS
    until [[ $(sql "SELECT count(*) FROM nodes WHERE down = 0") -ge $hosts ]]; do
        ((SECONDS - started < 600)) || { echo "hosts did not all join in 600 s" >&2; exit 1; }
        sleep 1
    done
    join_secs=$((SECONDS - started))
}
