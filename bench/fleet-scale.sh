#!/usr/bin/env bash
# The control plane at fleet scale: hollow hosts (berthd agent --hollow, a
# test tool that runs nothing), one leading server on PostgreSQL, a burst of
# tasks with constraints, anti-affinity and fair-share pools in the mix.
#
# Usage: bench/fleet-scale.sh [--hosts N] [--tasks N] [--task-secs S] [--procs P]
#                             [--rate R] [--kill-leader] [--bin-dir DIR] [--json]
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
#   --rate R        the tasks become eligible R a second from T0 (default:
#                   all at T0): queue-to-start at a sustained rate rather
#                   than the wait in a backlog
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
rate_per_s=0
bin_dir=""
json=0
while (($#)); do
    case "$1" in
        --hosts) hosts=${2:?}; shift 2 ;;
        --tasks) tasks=${2:?}; shift 2 ;;
        --task-secs) task_secs=${2:?}; shift 2 ;;
        --procs) procs=${2:?}; shift 2 ;;
        --kill-leader) kill_leader=1; shift ;;
        --rate) rate_per_s=${2:?}; shift 2 ;;
        --bin-dir) bin_dir=${2:?}; shift 2 ;;
        --json) json=1; shift ;;
        -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
        *) echo "fleet-scale.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done
# shellcheck source=bench/fleet-common.sh
source "$repo/bench/fleet-common.sh"
fleet_start fleet-scale.sh
servers=1
((kill_leader)) && servers=2
fleet_servers "$servers"
fleet_login
"$bin_dir/berth" pool set bulk --weight 1 >/dev/null
"$bin_dir/berth" pool set web --weight 2 >/dev/null
"$bin_dir/berth" pool set batch --weight 1 >/dev/null

say "==> $hosts hollow hosts in $procs processes"
fleet_hollow "$hosts" "$procs" cpus=4,memory=16g
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

if ((rate_per_s > 0)); then
    say "==> queueing $tasks tasks ($rate_per_s a second from T0)"
else
    say "==> queueing $tasks tasks (eligible together at T0)"
fi
"$bin_dir/berth" code push nap --image busybox:latest --command "sleep $task_secs" \
    --memory 256m >/dev/null
queue_secs_est=$((tasks / 1000 + 30))
((rate_per_s > 0)) && queue_secs_est=$((tasks / 600 + 30))
t_zero=$(($(date +%s) + queue_secs_est))
queue() { # AT COUNT ARGS…: COUNT tasks eligible at AT (epoch seconds)
    local at=$1 count=$2 n delay
    shift 2
    while ((count > 0)); do
        n=$((count > 1000 ? 1000 : count))
        delay=$((at - $(date +%s)))
        ((delay > 0)) || delay=0
        "$bin_dir/berth" task queue nap --count "$n" --delay "$delay" "$@" >/dev/null
        count=$((count - n))
    done
}
queue_mix() { # AT COUNT TAG: the mix of COUNT tasks, hard groups named by TAG
    local at=$1 count=$2 tag=$3 plain zoned hard soft g=0 left n
    plain=$((count / 2))
    zoned=$((count / 4))
    hard=$((count * 15 / 100))
    soft=$((count - plain - zoned - hard))
    queue "$at" "$plain" --pool bulk
    queue "$at" "$zoned" --pool web --constraint zone==z1
    left=$hard
    while ((left > 0)); do
        n=$((left > 1000 ? 1000 : left))
        queue "$at" "$n" --pool batch --anti-affinity "spread-$tag-$g"
        left=$((left - n))
        g=$((g + 1))
    done
    queue "$at" "$soft" --pool batch --anti-affinity "loose:soft"
}
if ((rate_per_s > 0)); then
    for ((k = 0; k * rate_per_s < tasks; k++)); do
        n=$((tasks - k * rate_per_s))
        ((n > rate_per_s)) && n=$rate_per_s
        queue_mix $((t_zero + k)) "$n" "$k"
    done
else
    queue_mix "$t_zero" "$tasks" all
fi
late=$(($(date +%s) - t_zero))
((late <= 0)) || say "    queueing ran ${late}s past T0: raise queue_secs_est"

say "==> placing"
while (($(date +%s) < t_zero)); do sleep 0.5; done
cpu_place0=$(cpu_ticks "$leader_pid")
cpu_earlier=0 # what a killed leader used while placing
place_t0=$(date +%s.%N)
max_rss=0
killed_at=""
until [[ $(sql "SELECT count(*) FROM tasks WHERE start_time IS NOT NULL") -ge $tasks ]]; do
    rss=$(rss_kib "$leader_pid")
    ((rss > max_rss)) && max_rss=$rss
    if ((kill_leader)) && [[ -z $killed_at ]] &&
        [[ $(sql "SELECT count(*) FROM tasks WHERE start_time IS NOT NULL") -ge $((tasks / 2)) ]]; then
        killed_at=$(date +%s%3N)
        cpu_earlier=$(($(cpu_ticks "$leader_pid") - cpu_place0))
        kill -9 "$leader_pid"
        wait "$leader_pid" 2>/dev/null || true # no "Killed" from bash
        leader_pid=${server_pids[1]}
        cpu_place0=$(cpu_ticks "$leader_pid")
        say "    killed the leader at $(sql "SELECT count(*) FROM tasks WHERE start_time IS NOT NULL") starts"
    fi
    (($(date +%s) - t_zero < 1200)) || { echo "fleet-scale.sh: not all started in 1200 s" >&2; break; }
    sleep 1
done
place_t1=$(date +%s.%N)
cpu_place1=$(cpu_ticks "$leader_pid")
place_window=$(echo "$place_t1 - $place_t0" | bc -l)
place_cpu=$(echo "($cpu_earlier + $cpu_place1 - $cpu_place0) / $hz / $place_window * 100" | bc -l)

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
if ((twice > 0)); then
    say "    why tasks ran again (the servers' warnings, first 10):"
    grep -h -E "WARN|ERROR" "$work"/s*.log | head -10 >&2 || true
fi
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
