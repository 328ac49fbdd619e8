#!/usr/bin/env bash
# Host loss, measured: how long after `kill-host` the server marks the host
# down, and how long until every task it was running runs again on another
# host.
#
# Usage: bench/fleet-loss.sh [--kills K] [--hosts N] [--bin-dir DIR] [--json]
#
#   --kills K     how many times a host is killed (default 10); one fleet,
#                 each round kills the host running the most tasks, waits,
#                 then revives it
#   --hosts N     hosts of the fleet (default 3)
#   --bin-dir DIR berth, berthd and berth-shim (default: target/dist if it
#                 has berthd, else target/debug)
#   --json        one JSON line at the end instead of the table
#
# Each round: queue 2 tasks per host of a code that sleeps 120 s (so none
# ends by itself), wait until all run, note which host runs the most, take
# the time, `scripts/fleet.sh kill-host` it (agent, shims and containers
# killed at once, its link down), then poll the server every 100 ms
# through `berth node ls` and `berth task ls` (the times therefore carry up
# to ~0.1 s of polling and the CLI's own start). "down" is the first poll
# that shows the host down; "restarted" the first poll in which every task
# of the killed host is running on another host. Then the tasks are
# cancelled and the host revived. The server's defaults: heartbeats every
# 2 s, a host down after 8 s without one.
#
# Needs root (network namespaces), jq, and the busybox image
# ($BERTH_TEST_BUSYBOX_TAR, else made by scripts/make-busybox-rootfs.sh).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
kills=10
hosts=3
bin_dir=""
json=0
while (($#)); do
    case "$1" in
        --kills) kills=${2:?}; shift 2 ;;
        --hosts) hosts=${2:?}; shift 2 ;;
        --bin-dir) bin_dir=${2:?}; shift 2 ;;
        --json) json=1; shift ;;
        -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
        *) echo "fleet-loss.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done
command -v jq >/dev/null || { echo "fleet-loss.sh: jq is needed" >&2; exit 1; }
if [[ -z $bin_dir ]]; then
    if [[ -x $repo/target/dist/berthd ]]; then bin_dir=$repo/target/dist; else bin_dir=$repo/target/debug; fi
fi

work=$(mktemp -d /tmp/bfl.XXXXXX)
dir=$work/f
cleanup() { bash "$repo/scripts/fleet.sh" down --dir "$dir" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
say() { [[ $json == 1 ]] || printf '%s\n' "$*" >&2; }

say "==> a fleet of $hosts hosts"
bash "$repo/scripts/fleet.sh" up --hosts "$hosts" --dir "$dir" --bin-dir "$bin_dir" >/dev/null
set -a
# shellcheck disable=SC1091
. "$dir/env"
set +a
export HOME=$work
berth() { "$bin_dir/berth" "$@"; }
mkdir -p "$work/pkg"
printf 'sleep 120\n' >"$work/pkg/run.sh"
berth code push sleeper --runtime sh --file run.sh --dir "$work/pkg" --memory 16m >/dev/null

now() { date +%s.%N; }
tasks_json() { berth task ls --json --per-page 100 --status queued --status preparing --status running; }

downs=()
restarts=()
for ((round = 1; round <= kills; round++)); do
    mapfile -t ids < <(berth task queue sleeper --count $((hosts * 2)) --json | jq -r '.tasks[].id')
    # All running?
    for _ in $(seq 1 600); do
        running=$(tasks_json | jq --argjson n "${#ids[@]}" '[.tasks[] | select(.status == "running")] | length')
        ((running >= ${#ids[@]})) && break
        sleep 0.1
    done
    victim=$(tasks_json | jq -r '[.tasks[] | select(.status == "running") | .node] | group_by(.) | max_by(length) | .[0]')
    mapfile -t moved < <(tasks_json | jq -r --arg v "$victim" '.tasks[] | select(.node == $v) | .id')
    t0=$(now)
    bash "$repo/scripts/fleet.sh" kill-host "$victim" --dir "$dir" >/dev/null 2>&1
    t_down=""
    t_restart=""
    for _ in $(seq 1 1200); do
        if [[ -z $t_down ]] &&
            [[ $(berth node ls --json | jq -r --arg v "$victim" '.[] | select(.name == $v) | .state') == down ]]; then
            t_down=$(now)
        fi
        if [[ -z $t_restart ]]; then
            elsewhere=$(tasks_json | jq --arg v "$victim" --argjson ids "$(printf '%s\n' "${moved[@]}" | jq -R . | jq -s .)" \
                '[.tasks[] | select((.id as $i | $ids | index($i)) and .status == "running" and .node != $v)] | length')
            ((elsewhere == ${#moved[@]})) && t_restart=$(now)
        fi
        [[ -n $t_down && -n $t_restart ]] && break
        sleep 0.1
    done
    [[ -n $t_down && -n $t_restart ]] || { echo "round $round: host $victim not down or tasks not moved within 120 s" >&2; exit 1; }
    down_s=$(echo "$t_down - $t0" | bc)
    restart_s=$(echo "$t_restart - $t0" | bc)
    downs+=("$down_s")
    restarts+=("$restart_s")
    say "round $round: killed $victim (${#moved[@]} tasks): down after ${down_s}s, all running elsewhere after ${restart_s}s"
    for id in "${ids[@]}"; do berth task cancel "$id" >/dev/null 2>&1 || true; done
    bash "$repo/scripts/fleet.sh" revive-host "$victim" --dir "$dir" >/dev/null 2>&1
    for _ in $(seq 1 300); do
        [[ $(berth node ls --json | jq -r --arg v "$victim" '.[] | select(.name == $v) | .state') == ready ]] && break
        sleep 0.1
    done
    for _ in $(seq 1 300); do
        [[ $(tasks_json | jq '.tasks | length') == 0 ]] && break
        sleep 0.1
    done
done

# p50 and p99 (nearest rank) of a list of seconds.
pct() { # P VALUES...
    local p=$1
    shift
    printf '%s\n' "$@" | sort -g | awk -v p="$p" '{ v[NR] = $1 } END { r = int((p / 100) * NR + 0.999999); if (r < 1) r = 1; printf "%.2f", v[r] }'
}
d50=$(pct 50 "${downs[@]}")
d99=$(pct 99 "${downs[@]}")
r50=$(pct 50 "${restarts[@]}")
r99=$(pct 99 "${restarts[@]}")
if [[ $json == 1 ]]; then
    printf '{"kills":%d,"hosts":%d,"down_p50_s":%s,"down_p99_s":%s,"restarted_p50_s":%s,"restarted_p99_s":%s}\n' \
        "$kills" "$hosts" "$d50" "$d99" "$r50" "$r99"
else
    printf '\n%-34s %8s %8s   (goal p99)\n' "after kill-host ($kills kills)" p50 p99
    printf '%-34s %7ss %7ss   (10 s)\n' "host marked down" "$d50" "$d99"
    printf '%-34s %7ss %7ss   (20 s)\n' "its tasks running elsewhere" "$r50" "$r99"
fi
