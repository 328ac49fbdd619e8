#!/usr/bin/env bash
# Task throughput and queue-to-start latency of `berth up` (task API, local
# agent, SQLite, default busybox stack), end to end through the HTTP API.
#
# Usage: bench/tasks.sh [-n TASKS] [-r RUNS] [-m SINGLES] [-t THREADS]
#                       [--batch B] [--poll-ms P] [--berth PATH]
#                       [--berth-log FILTER] [--state-on-disk] [--wait-quiet S]
#                       [--max-concurrency K] [--save DIR]
#
#   -n TASKS        tasks per throughput run (default 2000)
#   -r RUNS         throughput runs on the same server (default 3; 0 skips
#                   part 1)
#   -m SINGLES      single tasks per polling mode in part 2 (default 200; 0
#                   skips part 2)
#   -t THREADS      client threads queueing in part 1 (default 4)
#   --batch B       tasks per POST /tasks in part 1 (default 100)
#   --poll-ms P     GET /tasks/{id} interval of the client-side figure in
#                   part 2 (default 1)
#   --berth PATH    berth binary, with berth-shim beside it (default:
#                   target/dist/berth, built by scripts/build.sh)
#   --berth-log F   BERTH_LOG for berth up (e.g. berth_server=debug,
#                   berth_agent=debug; default: berth's own, warn)
#   --state-on-disk pass --state-on-disk to berth up: the agent's
#                   per-container state dirs stay on the data dir's file
#                   system instead of the tmpfs berth up mounts by default
#                   (for comparison)
#   --wait-quiet S  on a shared machine: before each throughput run and
#                   before part 2, wait (at most S seconds) until the CPUs
#                   were less than 25% busy over 3 consecutive seconds; the
#                   summary says whether that happened (default 0: no wait)
#   --max-concurrency K
#                   diagnostic: push `noop` with max_concurrency K (at most K
#                   of its tasks preparing or running; default: unlimited,
#                   i.e. the agent's 256 task slots)
#   --save DIR      keep the JSON results, the stats samples of each run,
#                   the per-task figures of part 2 and berth up's log
#
# Everything runs in a private scratch dir under /var/tmp (data dir D and
# HOME, so the client config berth up writes is a private one) and a
# private cgroup parent P (berth-tasksbench-PID-RANDOM):
#   HOME=SCRATCH/home berth --data-dir D --cgroup-parent P up --listen 127.0.0.1:PORT
# on a free port. One code `noop` (image berth/stack-busybox, command
# `true`) is pushed; every request goes through bench/tasks_client.py
# (python3 standard library, http.client, keep-alive connections with
# TCP_NODELAY; times from time.perf_counter on the client).
#
# 1. Throughput, RUNS times on the same server: TASKS tasks of `noop`
#    queued as fast as possible in POSTs of B tasks from THREADS threads
#    (each with its own connection, opened before the clock starts), while
#    the main thread polls GET /codes/{id}/stats every 20 ms (on a fixed
#    schedule from the start). Timed from the release of the first POST
#    until the first stats answer showing all TASKS ended (counted against
#    the stats before the run; each must be `complete`). Reported: tasks/s
#    = TASKS / that time, each run and the median (goal >= 200 tasks/s);
#    the queueing rate = TASKS / (end of the last POST - start); the steady
#    rate between 10% and 90% complete; from the task records (server
#    clocks) the span from the first created_at to the last end_time and
#    the queue waits (start_time - created_at) under load; CPU time during
#    the run: of the berth up process (its threads; utime+stime), of its
#    shims and their containers (cutime+cstime of berth up: the children it
#    has reaped), of this client, and the rest of the machine's busy time
#    (/proc/stat: kernel workers, other work on the machine), with the
#    machine's busy and steal shares. Before each run the server must show
#    nothing queued or under way and the agent list no container; after
#    it, the time until the agent lists no container (containers are
#    removed after their end is recorded) is reported too.
# 2. Queue-to-start latency on an idle system: 2 x SINGLES single tasks,
#    one at a time, after 5 untimed ones. Before each POST the agent must
#    list no container (then 20 ms settle). Even ones are polled with
#    GET /tasks/{id} every P ms (1 ms: this polling loads the 2-CPU machine
#    itself) until running or later, then every 5 ms until ended; odd ones
#    every 20 ms. Server-side figure: start_time - created_at from the
#    task's record (whole ms; created_at is taken by the API as the POST
#    arrives, before its durable commit; start_time by the shim right after
#    the runtime started the container's process), for each mode and
#    together. Client-side
#    figure (fast-polled ones): from sending the POST until a GET answer
#    shows running or later (the time that answer arrived). Reported: p50,
#    p90, p99 (nearest rank), max (goal: p50 <= 10 ms, p99 <= 50 ms); also
#    the POST alone, the whole queue-to-end time, and the CPU used meanwhile
#    (as in part 1).
# /proc/loadavg is recorded before each part (and per throughput run); on
# this shared machine the CPU figures above show better how much of it the
# benchmark had.
#
# At the end (and on any exit): wait until the agent lists no container,
# stop berth up with SIGTERM, run `berth --data-dir D --cgroup-parent P gc`,
# remove the cgroup parents (/sys/fs/cgroup/*/P), unmount anything under the
# scratch dir and remove it; then check that nothing is left: no process
# naming the scratch dir (berth up, shims), none of the berth up processes,
# no cgroup under P, no mount under the scratch dir.
set -euo pipefail
export LC_ALL=C
export HOME=${HOME:-/root}

tasks=2000
runs=3
singles=200
threads=4
batch=100
poll_ms=1
berth_bin=""
berth_log=""
state_on_disk=0
wait_quiet=0
max_concurrency=""
save_dir=""
while (($#)); do
    case "$1" in
        -n | --tasks) tasks=${2:?}; shift 2 ;;
        -r | --runs) runs=${2:?}; shift 2 ;;
        -m | --singles) singles=${2:?}; shift 2 ;;
        -t | --threads) threads=${2:?}; shift 2 ;;
        --batch) batch=${2:?}; shift 2 ;;
        --poll-ms) poll_ms=${2:?}; shift 2 ;;
        --berth) berth_bin=${2:?}; shift 2 ;;
        --berth-log) berth_log=${2:?}; shift 2 ;;
        --state-on-disk) state_on_disk=1; shift ;;
        --wait-quiet) wait_quiet=${2:?}; shift 2 ;;
        --max-concurrency) max_concurrency=${2:?}; shift 2 ;;
        --save) save_dir=${2:?}; shift 2 ;;
        -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
        *) echo "tasks.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done
for v in "$tasks" "$threads" "$batch"; do
    [[ $v =~ ^[1-9][0-9]*$ ]] || {
        echo "tasks.sh: -n, -t and --batch take positive whole numbers" >&2
        exit 2
    }
done
for v in "$runs" "$singles" "$wait_quiet"; do
    [[ $v =~ ^[0-9]+$ ]] || { echo "tasks.sh: -r, -m and --wait-quiet take whole numbers (0 skips the part / the wait)" >&2; exit 2; }
done
[[ -z $max_concurrency || $max_concurrency =~ ^[1-9][0-9]*$ ]] || {
    echo "tasks.sh: --max-concurrency takes a positive whole number" >&2
    exit 2
}
((batch <= 100)) || { echo "tasks.sh: --batch is at most 100" >&2; exit 2; }
[[ $poll_ms =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "tasks.sh: --poll-ms takes a number" >&2; exit 2; }
((EUID == 0)) || { echo "tasks.sh: must run as root (real containers)" >&2; exit 2; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
# shellcheck source=bench/common.sh disable=SC1091
source bench/common.sh
client=("python3" "$repo/bench/tasks_client.py")

# ---------------------------------------------------------------------------
# State shared with cleanup.
work=""
data=""
sock=""
home_dir=""
up_log=""
cgroup_parent="berth-tasksbench-$$-$RANDOM"
up_pid=""
declare -a up_pids=()
berth=""
cleaned=0
leftovers=""
containers_at_stop=""

stop_up() {
    [[ -n $up_pid ]] || return 0
    stop_gracefully "$up_pid" 20 "berth up"
    up_pid=""
}

# cleanup_all: idempotent, never fails.
cleanup_all() {
    ((cleaned)) && return 0
    cleaned=1
    # 1. The dispatcher removes each task's container after recording its
    #    end: wait for that while berth up still serves.
    if [[ -n $up_pid ]] && alive "$up_pid" && [[ -S $sock ]]; then
        if ! containers_at_stop=$("${client[@]}" wait-no-containers --socket "$sock" --timeout 60 2>/dev/null); then
            echo "cleanup: the agent still lists containers: $containers_at_stop" >&2
        fi
    fi
    stop_up
    # 2. Shims still running (berth up died with tasks under way): SIGTERM
    #    stops each container and records it; SIGKILL what stays.
    stop_leftover_processes
    # 3. What the runtime may have left, then our cgroup parents.
    gc_leftovers
    # 4. Mounts and files (berth up's log is kept with --save).
    if [[ -n $save_dir && -n $up_log && -f $up_log ]]; then
        mkdir -p "$save_dir" && cp "$up_log" "$save_dir/up.log"
    fi
    remove_tree "$work"
}

on_exit() {
    local rc=$?
    set +e
    if ((!cleaned)); then
        if ((rc != 0)) && [[ -n $up_log && -s $up_log ]]; then
            echo "--- tail of $up_log" >&2
            tail -n 30 "$up_log" >&2
        fi
        echo "==> cleanup" >&2
        cleanup_all
        verify_clean "berth up processes" "${up_pids[@]}"
        if [[ -n $leftovers ]]; then
            echo "cleanup: LEFT BEHIND: $leftovers" >&2
            ((rc != 0)) || rc=1
        else
            echo "cleanup: nothing left (no berth up or shim process, no cgroup under $cgroup_parent, no mount)" >&2
        fi
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------
echo "==> dependencies and binaries"
bash scripts/ensure-deps.sh
if [[ -z $berth_bin ]]; then
    bash scripts/build.sh # what ships: static, the shim against musl
    berth_bin=$repo/target/dist/berth
fi
berth=$(realpath "$berth_bin")
[[ -x $berth ]] || { echo "no berth binary at $berth" >&2; exit 1; }
for beside in berthd berth-shim; do
    [[ -x $(dirname "$berth")/$beside ]] || {
        echo "no $beside beside $berth (berth up runs berthd next to it, and berthd the shim next to itself)" >&2
        exit 1
    }
done
"$berth" up --help >/dev/null 2>&1 || { echo "$berth has no 'up' command (too old?)" >&2; exit 1; }

work=$(mktemp -d /var/tmp/berth-tasksbench.XXXXXX)
data=$work/data
sock=$data/agent.sock
home_dir=$work/home
up_log=$work/up.log
config=$home_dir/.config/berth/config.json
mkdir -p "$data" "$home_dir"
echo "scratch: $work, cgroup parent: $cgroup_parent"
state_fs=$(df -T "$data" | awk 'NR == 2 { print $2 }')
if ((state_on_disk)); then
    state_fs="$state_fs, the agent's per-container state too (--state-on-disk)"
else
    state_fs="$state_fs; the agent's per-container state on berth up's tmpfs"
fi

jf() { jq -r "$2" <<<"$1"; }
fmt() { awk -v v="$1" 'BEGIN { if (v == "" || v == "null") print "-"; else printf "%.1f", v }'; }

load_start=$(cut -d ' ' -f 1-3 /proc/loadavg)
echo "==> berth up"
up_env=()
[[ -z $berth_log ]] || up_env=(--env "BERTH_LOG=$berth_log")
up_cmd=("$berth" --data-dir "$data" --cgroup-parent "$cgroup_parent" up --listen @LISTEN@)
((state_on_disk)) && up_cmd+=(--state-on-disk)
if ! up_json=$("${client[@]}" start-up --home "$home_dir" --config "$config" --log "$up_log" \
    "${up_env[@]}" -- "${up_cmd[@]}"); then
    up_pid=$(jq -r '.pid // empty' <<<"$up_json" 2>/dev/null || true)
    [[ -n $up_pid ]] && up_pids+=("$up_pid")
    echo "berth up did not come up" >&2
    exit 1
fi
up_pid=$(jf "$up_json" .pid)
up_pids+=("$up_pid")
up_url=$(jf "$up_json" .url)
echo "berth up $up_pid serving $up_url after $(fmt "$(jf "$up_json" .ready_ms)") ms"
mc_arg=()
[[ -z $max_concurrency ]] || mc_arg=(--max-concurrency "$max_concurrency")
code_json=$("${client[@]}" push-code --config "$config" --name noop --command true "${mc_arg[@]}")
echo "code noop: $(jf "$code_json" .id)${max_concurrency:+, max_concurrency $max_concurrency}"

# ---------------------------------------------------------------------------
[[ -z $save_dir ]] || mkdir -p "$save_dir"
tp=""
load_part1="-"
if ((runs > 0)); then
    load_part1=$(cut -d ' ' -f 1-3 /proc/loadavg)
    echo "==> part 1: $runs runs of $tasks tasks (batches of $batch from $threads threads), load $load_part1"
    samples_arg=()
    [[ -z $save_dir ]] || samples_arg=(--samples "$save_dir/stats")
    tp=$("${client[@]}" throughput --config "$config" --socket "$sock" --code-name noop \
        -n "$tasks" --runs "$runs" --threads "$threads" --batch "$batch" \
        --stats-poll-ms 20 --pid "$up_pid" --wait-quiet "$wait_quiet" "${samples_arg[@]}")
    [[ -z $save_dir ]] || printf '%s\n' "$tp" >"$save_dir/throughput.json"
fi

# ---------------------------------------------------------------------------
lat=""
load_part2="-"
if ((singles > 0)); then
    load_part2=$(cut -d ' ' -f 1-3 /proc/loadavg)
    echo "==> part 2: 2 x $singles single tasks (polled every $poll_ms ms / every 20 ms), load $load_part2"
    rows_arg=()
    [[ -z $save_dir ]] || rows_arg=(--rows)
    lat=$("${client[@]}" latency --config "$config" --socket "$sock" --code-name noop \
        -m "$singles" --poll-ms "$poll_ms" --slow-poll-ms 20 --warmup 5 --pid "$up_pid" --wait-quiet "$wait_quiet" "${rows_arg[@]}")
    [[ -z $save_dir ]] || printf '%s\n' "$lat" >"$save_dir/latency.json"
fi

load_end=$(cut -d ' ' -f 1-3 /proc/loadavg)
echo "==> cleanup"
cleanup_all
verify_clean "berth up processes" "${up_pids[@]}"
if [[ -n $leftovers ]]; then
    clean_line="LEFT BEHIND: $leftovers"
else
    clean_line="nothing left: the agent listed no container before the stop, no berth up or shim process, no cgroup under $cgroup_parent, no mount, scratch dir removed"
fi

# ---------------------------------------------------------------------------
p4() { # p4 JSON PATH: "p50 p90 p99 max" of a percentiles object
    printf '%8s %8s %8s %8s' "$(fmt "$(jf "$1" "$2.p50")")" "$(fmt "$(jf "$1" "$2.p90")")" \
        "$(fmt "$(jf "$1" "$2.p99")")" "$(fmt "$(jf "$1" "$2.max")")"
}
quiet_info() { # quiet_info JSON: what --wait-quiet found before a part
    local q
    q=$(jq -c '.quiet_before // empty' <<<"$1")
    [[ -n $q ]] || return 0
    if [[ $(jf "$q" .quiet) == true ]]; then
        printf '; quiet after %s s of waiting' "$(fmt "$(jf "$q" .waited_s)")"
    else
        printf '; NOT quiet after %s s of waiting (%s%% busy)' "$(fmt "$(jf "$q" .waited_s)")" "$(fmt "$(jf "$q" .busy_pct)")"
    fi
}
verdict() { # verdict VALUE OP GOAL
    awk -v v="$1" -v g="$3" -v op="$2" 'BEGIN {
        ok = (op == ">=") ? (v >= g) : (v <= g); print ok ? "met" : "MISSED" }'
}
echo
echo "===== bench/tasks.sh summary ====="
echo "machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r); data dir (SQLite store) on $state_fs"
echo "load average (1/5/15 min): $load_start at the start, $load_part1 before part 1, $load_part2 before part 2, $load_end at the end (decaying averages: after part 1 they include its own load)"
disk_flag=""
((state_on_disk)) && disk_flag=" --state-on-disk"
echo "command: bash bench/tasks.sh -n $tasks -r $runs -m $singles -t $threads --batch $batch --poll-ms $poll_ms --berth $berth${berth_log:+ --berth-log $berth_log}$disk_flag${max_concurrency:+ --max-concurrency $max_concurrency}$( ((wait_quiet)) && echo " --wait-quiet $wait_quiet")"
echo "berth up: HOME=<scratch>/home $berth --data-dir <scratch>/data --cgroup-parent $cgroup_parent up --listen ${up_url#http://}$disk_flag"
echo
if [[ -n $tp ]]; then
    echo "1. throughput, $tasks tasks of 'true' per run, queue to recorded completion:"
    nr=$(jf "$tp" '.runs | length')
    for ((i = 0; i < nr; i++)); do
        r=$(jq -c ".runs[$i]" <<<"$tp")
        printf '   run %d: %7s tasks/s (%s s); queueing %7s tasks/s (%s s, POST p50 %s ms); steady (10-90%%) %s/s\n' \
            "$(jf "$r" .run)" "$(fmt "$(jf "$r" .tasks_per_s)")" "$(fmt "$(jf "$r" .elapsed_s)")" \
            "$(fmt "$(jf "$r" .queue_tasks_per_s)")" "$(fmt "$(jf "$r" .queue_s)")" \
            "$(fmt "$(jf "$r" .post_ms.p50)")" "$(fmt "$(jf "$r" .steady_tasks_per_s)")"
        printf '          load before %s%s; server span first created..last end %s s (%s tasks/s); queue wait p50 %s ms, max %s ms; run time p50 %s ms\n' \
            "$(jf "$r" .load_before)" "$(quiet_info "$r")" "$(fmt "$(jf "$r" .server_span_s)")" "$(fmt "$(jf "$r" .server_tasks_per_s)")" \
            "$(fmt "$(jf "$r" .server_queue_wait_ms.p50)")" "$(fmt "$(jf "$r" .server_queue_wait_ms.max)")" \
            "$(fmt "$(jf "$r" .server_run_ms.p50)")"
        printf '          at most %s preparing+running; containers all gone %s s after the last end\n' \
            "$(jf "$r" .max_active)" "$(fmt "$(jf "$r" .drain_s)")"
        printf '          CPU: berth up %s s (%s ms/task), its shims+containers %s s (%s ms/task), this client %s s, the rest %s s; machine %s%% busy, %s%% steal\n' \
            "$(fmt "$(jf "$r" .cpu.up_cpu_s)")" "$(fmt "$(jq -r ".cpu.up_cpu_s * 1000 / $tasks" <<<"$r")")" \
            "$(fmt "$(jf "$r" .cpu.shims_cpu_s)")" "$(fmt "$(jq -r ".cpu.shims_cpu_s * 1000 / $tasks" <<<"$r")")" \
            "$(fmt "$(jf "$r" .cpu.client_cpu_s)")" "$(fmt "$(jf "$r" .cpu.other_cpu_s)")" \
            "$(fmt "$(jq -r '100 * (.cpu.machine_busy // 0)' <<<"$r")")" \
            "$(fmt "$(jq -r '100 * (.cpu.machine_steal // 0)' <<<"$r")")"
    done
    med=$(jf "$tp" .median_tasks_per_s)
    echo "   median: $(fmt "$med") tasks/s (goal >= 200: $(verdict "$med" ">=" 200)); queueing alone: median $(fmt "$(jf "$tp" .median_queue_tasks_per_s)") tasks/s"
    [[ $(jf "$tp" .all_complete) == true ]] || echo "   NOT ALL COMPLETE: $(jq -c '[.runs[].not_complete]' <<<"$tp")"
    echo
fi
if [[ -n $lat ]]; then
    echo "2. queue-to-start latency, one task at a time on an idle system ($singles per mode; ms):"
    printf '   %-50s %8s %8s %8s %8s\n' "" p50 p90 p99 max
    printf '   %-50s %s\n' "server start_time - created_at, all $((2 * singles))" "$(p4 "$lat" .all.server_ms)"
    printf '   %-50s %s\n' "  of those polled every $poll_ms ms" "$(p4 "$lat" .fast.server_ms)"
    printf '   %-50s %s\n' "  of those polled every 20 ms" "$(p4 "$lat" .slow.server_ms)"
    printf '   %-50s %s\n' "client POST sent -> GET shows running or later" "$(p4 "$lat" .fast.client_running_ms)"
    printf '   %-50s %s\n' "client POST alone (durable queueing)" "$(p4 "$lat" .fast.post_ms)"
    printf '   %-50s %s\n' "server end_time - created_at (polled every 20 ms)" "$(p4 "$lat" .slow.server_end_ms)"
    printf '   %-50s %s\n' "server end_time - start_time (container ran)" "$(p4 "$lat" .slow.run_ms)"
    echo "   load before part 2: $(jf "$lat" .load_before)$(quiet_info "$lat"); $(jf "$lat" .fast.saw_running) of $singles fast-polled tasks were seen 'running' (the rest went straight to complete); GETs per fast-polled task p50 $(fmt "$(jf "$lat" .fast.polls.p50)")"
    echo "   CPU during part 2 ($(fmt "$(jf "$lat" .cpu.wall_s)") s): berth up $(fmt "$(jf "$lat" .cpu.up_cpu_s)") s, its shims+containers $(fmt "$(jf "$lat" .cpu.shims_cpu_s)") s, this client (polling) $(fmt "$(jf "$lat" .cpu.client_cpu_s)") s, the rest $(fmt "$(jf "$lat" .cpu.other_cpu_s)") s; machine $(fmt "$(jq -r '100 * (.cpu.machine_busy // 0)' <<<"$lat")")% busy, $(fmt "$(jq -r '100 * (.cpu.machine_steal // 0)' <<<"$lat")")% steal"
    sp50=$(jf "$lat" .all.server_ms.p50)
    sp99=$(jf "$lat" .all.server_ms.p99)
    cp50=$(jf "$lat" .fast.client_running_ms.p50)
    cp99=$(jf "$lat" .fast.client_running_ms.p99)
    echo "   goal p50 <= 10 ms: $(verdict "$sp50" "<=" 10) server-side, $(verdict "$cp50" "<=" 10) client-side; p99 <= 50 ms: $(verdict "$sp99" "<=" 50) server-side, $(verdict "$cp99" "<=" 50) client-side"
    echo
fi
echo "cleanup: $clean_line"
echo "=================================="
[[ -z $leftovers ]]
