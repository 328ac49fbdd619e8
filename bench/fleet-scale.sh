#!/usr/bin/env bash
# The control plane at fleet scale: hollow hosts (berthd agent --hollow, a
# test tool that runs nothing), one leading server on PostgreSQL, a burst of
# tasks with constraints, anti-affinity and fair-share pools in the mix.
#
# Usage: bench/fleet-scale.sh [--hosts N] [--tasks N] [--task-secs S]
#                             [--procs P] [--kill-leader] [--bin-dir DIR] [--json]
#
#   --hosts N       hollow hosts (default 10000), in P processes (--procs,
#                   default 4), each host offering cpus=4,memory=16g and
#                   labelled zone=z1…zP by process
#   --tasks N       tasks queued (default 100000), each "running" S seconds
#                   (--task-secs, default 3) and reserving 256 MiB:
#                   50 % plain (pool bulk), 25 % constrained to zone==z1
#                   (pool web), 15 % hard anti-affinity in groups of 1000
#                   (pool batch), 10 % soft anti-affinity (pool batch);
#                   pools weighted bulk 1, web 2, batch 1
#   --kill-leader   two servers; the leader is killed (kill -9) once half the
#                   tasks have started
#   --bin-dir DIR   berth and berthd (default target/release, built if missing)
#   --json          one JSON line at the end instead of the table
#
# Method. The tasks are queued with a delay so that all become eligible at
# one moment T0, after every host has joined; the heartbeat load is
# measured over 30 s before T0 with no task running. "Placements per
# second" is end to end: tasks whose start was acknowledged by their host
# and recorded in the store (start_time), divided by the time from T0 to the
# last start. Queue-to-start is start_time - eligible_at per task. The
# server's CPU comes from /proc/PID/stat, its memory is the largest RSS
# sampled each second, PostgreSQL's rows written from pg_stat_database.
# Everything runs on this machine: servers, PostgreSQL and the hollow hosts
# share its cores.
#
# Needs root for nothing; needs PostgreSQL (scripts/postgres.sh), psql, jq.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
hosts=10000
tasks=100000
task_secs=3
procs=4
kill_leader=0
bin_dir=""
json=0
while (($#)); do
    case "$1" in
        --hosts) hosts=${2:?}; shift 2 ;;
        --tasks) tasks=${2:?}; shift 2 ;;
        --task-secs) task_secs=${2:?}; shift 2 ;;
        --procs) procs=${2:?}; shift 2 ;;
        --kill-leader) kill_leader=1; shift ;;
        --bin-dir) bin_dir=${2:?}; shift 2 ;;
        --json) json=1; shift ;;
        -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
        *) echo "fleet-scale.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done
for t in jq psql; do
    command -v "$t" >/dev/null || { echo "fleet-scale.sh: $t is needed" >&2; exit 1; }
done
say() { [[ $json == 1 ]] || printf '%s\n' "$*" >&2; }
if [[ -z $bin_dir ]]; then
    bin_dir=$repo/target/release
    if [[ ! -x $bin_dir/berthd || ! -x $bin_dir/berth ]]; then
        say "==> building release binaries"
        (cd "$repo" && cargo build --release -q -p berth -p berthd)
    fi
fi

work=$(mktemp -d /tmp/bfs.XXXXXX)
admin_url=$(bash "$repo/scripts/postgres.sh")
db=berth_scale_$$
psql "$admin_url" -qAtc "CREATE DATABASE $db" >/dev/null
db_url=${admin_url%/*}/$db
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    psql "$admin_url" -qAtc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
sql() { psql "$db_url" -qAtc "$1"; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
hz=$(getconf CLK_TCK)

head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/join.token"
servers=1
((kill_leader)) && servers=2
server_pids=()
urls=()
for ((i = 1; i <= servers; i++)); do
    port=$(free_port)
    "$bin_dir/berthd" --data-dir "$work/s$i" server --listen "127.0.0.1:$port" \
        --database "$db_url" --join-token-file "$work/join.token" --name "s$i" \
        </dev/null >"$work/s$i.log" 2>&1 &
    pids+=($!)
    server_pids+=($!)
    urls+=("http://127.0.0.1:$port")
    # The first leads: start the second once the first has the lease.
    for _ in $(seq 100); do
        [[ $(sql "SELECT count(*) FROM servers" 2>/dev/null || echo 0) -ge $i ]] && break
        sleep 0.2
    done
done
BERTH_URL=$(IFS=,; echo "${urls[*]}")
export BERTH_URL BERTH_CONFIG=/nonexistent/berth-config.json
BERTH_OPERATOR_TOKEN=$("$bin_dir/berthd" --data-dir "$work/op" token create --operator --database "$db_url" --json | jq -r .token)
project=$("$bin_dir/berthd" --data-dir "$work/op" project create scale --database "$db_url" --json)
BERTH_PROJECT_ID=$(jq -r .id <<<"$project")
BERTH_TOKEN=$(jq -r .token <<<"$project")
export BERTH_OPERATOR_TOKEN BERTH_PROJECT_ID BERTH_TOKEN
"$bin_dir/berth" pool set bulk --weight 1 >/dev/null
"$bin_dir/berth" pool set web --weight 2 >/dev/null
"$bin_dir/berth" pool set batch --weight 1 >/dev/null

say "==> $hosts hollow hosts in $procs processes"
hollow_pids=()
per=$((hosts / procs))
for ((p = 1; p <= procs; p++)); do
    n=$per
    ((p == procs)) && n=$((hosts - per * (procs - 1)))
    port=$(free_port)
    "$bin_dir/berthd" --data-dir "$work/h$p" agent --hollow "$n" --listen "127.0.0.1:$port" \
        --join "$BERTH_URL" --join-token-file "$work/join.token" --name "z$p" \
        --labels "zone=z$p" --allocatable cpus=4,memory=16g --hollow-images busybox:latest \
        --max-connections 8192 </dev/null >"$work/h$p.log" 2>&1 &
    pids+=($!)
    hollow_pids+=($!)
done
started=$SECONDS
until [[ $(sql "SELECT count(*) FROM nodes WHERE down = 0") -ge $hosts ]]; do
    ((SECONDS - started < 600)) || { echo "fleet-scale.sh: hosts did not all join in 600 s" >&2; exit 1; }
    sleep 2
done
join_secs=$((SECONDS - started))
say "    all joined in ${join_secs}s"

leader_pid=${server_pids[0]}
say "==> heartbeat load, 30 s, no tasks"
sleep 5
rows0=$(sql "SELECT tup_inserted + tup_updated + tup_deleted FROM pg_stat_database WHERE datname = '$db'")
beats0=$(sql "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'nodes'")
cpu0=$(cpu_ticks "$leader_pid")
hollow_cpu0=0
for pid in "${hollow_pids[@]}"; do hollow_cpu0=$((hollow_cpu0 + $(cpu_ticks "$pid"))); done
t0=$(date +%s.%N)
sleep 30
t1=$(date +%s.%N)
cpu1=$(cpu_ticks "$leader_pid")
hollow_cpu1=0
for pid in "${hollow_pids[@]}"; do hollow_cpu1=$((hollow_cpu1 + $(cpu_ticks "$pid"))); done
rows1=$(sql "SELECT tup_inserted + tup_updated + tup_deleted FROM pg_stat_database WHERE datname = '$db'")
beats1=$(sql "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'nodes'")
window=$(echo "$t1 - $t0" | bc -l)
hb_cpu=$(echo "($cpu1 - $cpu0) / $hz / $window * 100" | bc -l)
hb_hollow_cpu=$(echo "($hollow_cpu1 - $hollow_cpu0) / $hz / $window * 100" | bc -l)
hb_rate=$(echo "($beats1 - $beats0) / $window" | bc -l)
hb_rows=$(echo "($rows1 - $rows0) / $window" | bc -l)
hb_rss=$(rss_kib "$leader_pid")

say "==> queueing $tasks tasks (eligible together at T0)"
"$bin_dir/berth" code push nap --image busybox:latest --command "sleep $task_secs" \
    --memory 256m >/dev/null
queue_secs_est=$((tasks / 1000 + 30))
t_zero=$(($(date +%s) + queue_secs_est))
queue() { # COUNT ARGS…
    local count=$1 n delay
    shift
    while ((count > 0)); do
        n=$((count > 1000 ? 1000 : count))
        delay=$((t_zero - $(date +%s)))
        ((delay > 0)) || delay=0
        "$bin_dir/berth" task queue nap --count "$n" --delay "$delay" "$@" >/dev/null
        count=$((count - n))
    done
}
plain=$((tasks / 2))
zoned=$((tasks / 4))
hard=$((tasks * 15 / 100))
soft=$((tasks - plain - zoned - hard))
queue "$plain" --pool bulk
queue "$zoned" --pool web --constraint zone==z1
g=0
left=$hard
while ((left > 0)); do
    n=$((left > 1000 ? 1000 : left))
    queue "$n" --pool batch --anti-affinity "spread-$g"
    left=$((left - n))
    g=$((g + 1))
done
queue "$soft" --pool batch --anti-affinity "loose:soft"
late=$(($(date +%s) - t_zero))
((late <= 0)) || say "    queueing ran ${late}s past T0: raise queue_secs_est"

say "==> placing"
while (($(date +%s) < t_zero)); do sleep 0.5; done
cpu_place0=$(cpu_ticks "$leader_pid")
place_t0=$(date +%s.%N)
max_rss=0
killed_at=""
until [[ $(sql "SELECT count(*) FROM tasks WHERE start_time IS NOT NULL") -ge $tasks ]]; do
    rss=$(rss_kib "$leader_pid")
    ((rss > max_rss)) && max_rss=$rss
    if ((kill_leader)) && [[ -z $killed_at ]] &&
        [[ $(sql "SELECT count(*) FROM tasks WHERE start_time IS NOT NULL") -ge $((tasks / 2)) ]]; then
        killed_at=$(date +%s%3N)
        kill -9 "$leader_pid"
        leader_pid=${server_pids[1]}
        say "    killed the leader at $(sql "SELECT count(*) FROM tasks WHERE start_time IS NOT NULL") starts"
    fi
    (($(date +%s) - t_zero < 1200)) || { echo "fleet-scale.sh: not all started in 1200 s" >&2; break; }
    sleep 1
done
place_t1=$(date +%s.%N)
cpu_place1=$(cpu_ticks "$leader_pid")
place_window=$(echo "$place_t1 - $place_t0" | bc -l)
place_cpu=$(echo "($cpu_place1 - $cpu_place0) / $hz / $place_window * 100" | bc -l)

read -r started_n rate p50 p99 < <(sql "
    SELECT count(*),
           round(count(*) / GREATEST((max(start_time) - min(eligible_at)) / 1000.0, 0.001), 1),
           percentile_cont(0.5) WITHIN GROUP (ORDER BY start_time - eligible_at),
           percentile_cont(0.99) WITHIN GROUP (ORDER BY start_time - eligible_at)
    FROM tasks WHERE start_time IS NOT NULL" | tr '|' ' ')
gap=""
if [[ -n $killed_at ]]; then
    gap=$(sql "SELECT max(d) FROM (SELECT start_time - lag(start_time) OVER (ORDER BY start_time) AS d
               FROM tasks WHERE start_time IS NOT NULL) g")
fi
# Let the last tasks end, then check each ended once.
for _ in $(seq 120); do
    [[ $(sql "SELECT count(*) FROM tasks WHERE status IN ('queued','preparing','running')") == 0 ]] && break
    sleep 1
done
twice=$(sql "SELECT count(*) FROM tasks WHERE attempt <> 1")
by_status=$(sql "SELECT string_agg(status || '=' || n, ' ') FROM (SELECT status, count(*) n FROM tasks GROUP BY status ORDER BY status) s")

if ((json)); then
    jq -cn --argjson hosts "$hosts" --argjson tasks "$tasks" --argjson started "$started_n" \
        --argjson rate "$rate" --argjson p50 "${p50:-null}" --argjson p99 "${p99:-null}" \
        --arg hb_rate "$hb_rate" --arg hb_cpu "$hb_cpu" --arg hb_rows "$hb_rows" \
        --arg hb_hollow_cpu "$hb_hollow_cpu" --argjson rss_kib "$max_rss" --argjson hb_rss_kib "$hb_rss" \
        --arg place_cpu "$place_cpu" --arg gap "${gap:-}" --argjson twice "$twice" --arg statuses "$by_status" \
        --argjson join_secs "$join_secs" \
        '{hosts:$hosts, tasks:$tasks, started:$started, placements_per_second:$rate,
          queue_to_start_p50_ms:$p50, queue_to_start_p99_ms:$p99,
          heartbeats_per_second:($hb_rate|tonumber), heartbeat_server_cpu_percent:($hb_cpu|tonumber),
          heartbeat_pg_rows_per_second:($hb_rows|tonumber), hollow_cpu_percent:($hb_hollow_cpu|tonumber),
          server_rss_mib:($rss_kib/1024), idle_server_rss_mib:($hb_rss_kib/1024),
          placing_server_cpu_percent:($place_cpu|tonumber),
          leader_kill_gap_ms:(if $gap == "" then null else ($gap|tonumber) end),
          tasks_not_on_first_attempt:$twice, statuses:$statuses, join_secs:$join_secs}'
else
    printf '%-44s %s\n' "hosts (hollow) / all joined in" "$hosts / ${join_secs} s"
    printf '%-44s %.0f/s, server CPU %.1f%% of a core, hollow CPU %.1f%%\n' "heartbeats" "$hb_rate" "$hb_cpu" "$hb_hollow_cpu"
    printf '%-44s %.0f/s\n' "PostgreSQL rows written (heartbeats only)" "$hb_rows"
    printf '%-44s %s of %s\n' "tasks started" "$started_n" "$tasks"
    printf '%-44s %s/s\n' "placements end to end" "$rate"
    printf '%-44s %s / %s ms\n' "queue to start p50 / p99" "$p50" "$p99"
    printf '%-44s %.1f%% of a core\n' "server CPU while placing" "$place_cpu"
    printf '%-44s %d MiB (idle with the fleet: %d MiB)\n' "server RSS, largest" $((max_rss / 1024)) $((hb_rss / 1024))
    [[ -z $gap ]] || printf '%-44s %s ms\n' "longest gap between starts (leader killed)" "$gap"
    printf '%-44s %s (%s)\n' "tasks not on their first attempt" "$twice" "$by_status"
fi
