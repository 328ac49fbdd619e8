#!/usr/bin/env bash
# Fair-share under contention, measured: three pools with weights 1:2:1
# and a minimum each saturate a fleet of hollow hosts (berthd agent
# --hollow, a test tool that runs nothing) led by one server on
# PostgreSQL.
#
# Usage: bench/fair-share.sh [--hosts N] [--task-secs S] [--phase-secs P]
#                            [--bin-dir DIR] [--json]
#
#   --hosts N       hollow hosts (default 100), each offering 8 tasks'
#                   worth (memory=2g; a task reserves 256 MiB)
#   --task-secs S   how long each task "runs" (default 4)
#   --phase-secs P  length of each phase (default 60)
#   --bin-dir DIR   berth and berthd (default target/release, built if missing)
#   --json          one JSON line at the end instead of the table
#
# Pools "a" (weight 1), "b" (weight 2) and "c" (weight 1), each with a
# minimum of 15% of the fleet's memory. Phase 1: a and b have far more work
# queued than the fleet runs; c is idle, so its share is lent (fair shares
# 1/3 and 2/3). Phase 2: c's backlog arrives at once (fair shares 1/4, 1/2,
# 1/4).
#
# Reported, from the tasks' start and end times in the store: each pool's
# share of the running tasks every 0.5 s (all tasks reserve the same),
# averaged over each phase after a warm-up of two task durations, with its
# entitlement and the largest deviation over any window of one task
# duration; the fleet's
# utilisation; and how long c took, from its backlog's arrival, to run as
# many tasks as its minimum (goal: within one task duration).
#
# Needs root for nothing; needs PostgreSQL (scripts/postgres.sh), psql, jq, bc.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
hosts=100
task_secs=4
phase_secs=60
bin_dir=""
json=0
while (($#)); do
    case "$1" in
        --hosts) hosts=${2:?}; shift 2 ;;
        --task-secs) task_secs=${2:?}; shift 2 ;;
        --phase-secs) phase_secs=${2:?}; shift 2 ;;
        --bin-dir) bin_dir=${2:?}; shift 2 ;;
        --json) json=1; shift ;;
        -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
        *) echo "fair-share.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
# shellcheck source=bench/fleet-common.sh
source "$repo/bench/fleet-common.sh"
fleet_start fair-share.sh
fleet_servers 1
fleet_login

slots=$((hosts * 8))
min_gib=$((hosts * 2 * 15 / 100))
min_tasks=$((min_gib * 4))
"$bin_dir/berth" pool set a --weight 1 --min "memory=${min_gib}g" >/dev/null
"$bin_dir/berth" pool set b --weight 2 --min "memory=${min_gib}g" >/dev/null
"$bin_dir/berth" pool set c --weight 1 --min "memory=${min_gib}g" >/dev/null

say "==> $hosts hollow hosts ($slots task slots)"
fleet_hollow "$hosts" 1 cpus=64,memory=2g
"$bin_dir/berth" code push nap --image busybox:latest --command "sleep $task_secs" \
    --memory 256m >/dev/null

# What each pool can run over both phases, with a third to spare: the
# queues never run dry.
rate=$((slots / task_secs))
queued_a=$((rate * phase_secs * 2 * 4 / 9))
queued_b=$((queued_a * 2))
queued_c=$((rate * phase_secs * 4 / 9))
queue_secs_est=$(((queued_a + queued_b + queued_c) / 500 + 20))
t_zero=$(($(date +%s) + queue_secs_est))
t_one=$((t_zero + phase_secs))
queue() { # COUNT AT POOL
    local count=$1 at=$2 pool=$3 n delay
    while ((count > 0)); do
        n=$((count > 1000 ? 1000 : count))
        delay=$((at - $(date +%s)))
        ((delay > 0)) || { echo "fair-share.sh: queueing ran past its start; raise queue_secs_est" >&2; exit 1; }
        "$bin_dir/berth" task queue nap --count "$n" --delay "$delay" --pool "$pool" >/dev/null
        count=$((count - n))
    done
}
say "==> queueing: a $queued_a and b $queued_b at T0, c $queued_c at T0+${phase_secs}s"
queue "$queued_c" "$t_one" c
queue "$queued_a" "$t_zero" a
queue "$queued_b" "$t_zero" b
say "==> phase 1 (a, b busy; c idle), then phase 2 (all busy): $((2 * phase_secs)) s"
while (($(date +%s) < t_one + phase_secs)); do sleep 1; done

warm=$((2 * task_secs * 1000))
# Per 0.5 s sample: tasks running per pool (start <= t < end; still
# running: no end yet).
shares() { # FROM_MS TO_MS → pool share_avg share_min share_max (over windows of a task's duration) utilisation
    sql "
    WITH grid AS (SELECT generate_series($1::bigint, $2::bigint, 500) AS t),
    running AS (
        SELECT g.t, p.pool, count(x.id) AS n
        FROM grid g
        CROSS JOIN (VALUES ('a'), ('b'), ('c')) AS p(pool)
        LEFT JOIN tasks x ON x.reserved::json->>'pool' = p.pool
            AND x.start_time <= g.t AND COALESCE(x.end_time, 9e18) > g.t
        GROUP BY g.t, p.pool),
    shared AS (
        SELECT t, pool, n, n::float / NULLIF(sum(n) OVER (PARTITION BY t), 0) AS share,
               sum(n) OVER (PARTITION BY t) AS total
        FROM running),
    windows AS (
        SELECT pool, (t - $1::bigint) / $((task_secs * 1000)) AS w, avg(share) AS share
        FROM shared GROUP BY pool, w)
    SELECT s.pool, round(avg(s.share)::numeric, 4),
           round((SELECT min(share) FROM windows w WHERE w.pool = s.pool)::numeric, 4),
           round((SELECT max(share) FROM windows w WHERE w.pool = s.pool)::numeric, 4),
           round((avg(s.total) / $slots)::numeric, 3)
    FROM shared s GROUP BY s.pool ORDER BY s.pool" | tr '|' ' '
}
p1_from=$((t_zero * 1000 + warm)); p1_to=$((t_one * 1000 - 500))
p2_from=$((t_one * 1000 + warm)); p2_to=$(((t_one + phase_secs) * 1000 - 500))
mapfile -t phase1 < <(shares "$p1_from" "$p1_to")
mapfile -t phase2 < <(shares "$p2_from" "$p2_to")
# c's minimum: the start of its min_tasks-th task, from its arrival (no c
# task ends before: they last task_secs).
c_min_ms=$(sql "SELECT start_time - $((t_one * 1000)) FROM tasks
    WHERE reserved::json->>'pool' = 'c' AND start_time IS NOT NULL
    ORDER BY start_time OFFSET $((min_tasks - 1)) LIMIT 1")
c_first_end=$(sql "SELECT min(end_time) - $((t_one * 1000)) FROM tasks WHERE reserved::json->>'pool' = 'c'")

# entitled POOL PHASE → the fair share
entitled() {
    case "$2:$1" in
        1:a) echo 0.3333 ;; 1:b) echo 0.6667 ;; 1:c) echo 0 ;;
        2:a) echo 0.25 ;; 2:b) echo 0.5 ;; 2:c) echo 0.25 ;;
    esac
}
rows=()
for phase in 1 2; do
    declare -n lines="phase$phase"
    for line in "${lines[@]}"; do
        read -r pool avg lo hi util <<<"$line"
        want=$(entitled "$pool" "$phase")
        [[ $want == 0 ]] && continue
        dev=$(echo "($avg - $want) / $want * 100" | bc -l)
        worst=$(echo "d1 = ($lo - $want) / $want * 100; d2 = ($hi - $want) / $want * 100;
                      if (-d1 > d2) -d1 else d2" | bc -l)
        rows+=("$phase $pool $want $avg $dev $worst $util")
    done
done

if ((json)); then
    printf '%s\n' "${rows[@]}" | jq -Rcs --argjson hosts "$hosts" --argjson slots "$slots" \
        --argjson task_secs "$task_secs" --argjson phase_secs "$phase_secs" \
        --argjson min_tasks "$min_tasks" --argjson c_min_ms "${c_min_ms:-null}" \
        --argjson c_first_end_ms "${c_first_end:-null}" '
        { hosts: $hosts, slots: $slots, task_secs: $task_secs, phase_secs: $phase_secs,
          c_min_tasks: $min_tasks, c_reached_min_ms: $c_min_ms, c_first_end_ms: $c_first_end_ms,
          shares: [split("\n")[] | select(length > 0) | split(" ") |
            { phase: (.[0]|tonumber), pool: .[1], entitled: (.[2]|tonumber), share: (.[3]|tonumber),
              deviation_percent: (.[4]|tonumber), worst_window_percent: (.[5]|tonumber),
              utilisation: (.[6]|tonumber) }] }'
else
    printf '%-6s %-5s %9s %9s %14s %18s %12s\n' phase pool entitled share "off by" "worst ${task_secs} s window" utilisation
    for row in "${rows[@]}"; do
        read -r phase pool want avg dev worst util <<<"$row"
        printf '%-6s %-5s %8.1f%% %8.1f%% %+13.1f%% %+17.1f%% %11.0f%%\n' "$phase" "$pool" \
            "$(echo "$want * 100" | bc -l)" "$(echo "$avg * 100" | bc -l)" "$dev" "$worst" \
            "$(echo "$util * 100" | bc -l)"
    done
    printf 'c back to its minimum (%d tasks): %s ms after its work arrived (a task lasts %d ms)\n' \
        "$min_tasks" "${c_min_ms:-never}" $((task_secs * 1000))
fi
