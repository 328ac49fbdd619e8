#!/usr/bin/env bash
# The host agent's costs: create+start overhead over the engine alone, the
# recovery time of a restarted agent, and the memory of the shims.
#
# Usage: bench/agent.sh [-n RUNS] [-k COUNT] [-m RESTARTS] [--berth PATH]
#                       [--shim PATH] [--save DIR]
#
#   -n RUNS        lifecycles per side in part 1 (default 200)
#   -k COUNT       containers running at once in parts 2 and 3 (default 1000)
#   -m RESTARTS    agent restarts timed in part 2 (default 3)
#   --berth PATH   berth binary (default target/dist/berth)
#   --shim PATH    berth-shim binary (default target/dist/berth-shim)
#   --save DIR     keep the raw per-run times of part 1 and the JSON results
#
# The default binaries are built with scripts/build.sh (static, non-PIE)
# when missing or too old to have `berth agent`.
#
# Everything runs in a private data dir under /var/tmp and a private cgroup
# parent (berth-agentbench-PID), with the busybox image of
# scripts/make-busybox-rootfs.sh. The agent is
#   berth --data-dir D --cgroup-parent P agent --shim SHIM
# and every request goes through bench/agent_client.py (python3 standard
# library, http.client on the unix socket, one keep-alive connection).
#
# 1. Overhead: RUNS lifecycles of busybox `true` through the agent (POST
#    /v1/containers, which answers once it runs; GET .../wait; DELETE), each
#    timed from the first request to the end of the DELETE, interleaved run
#    by run (ABBA order) with RUNS of `berth run busybox true` timed from
#    spawn to exit, both timed in python with time.perf_counter. 5 untimed
#    runs of each first. Reported: medians, the difference of the medians,
#    the median of the paired differences, and the POST alone.
# 2. Recovery: COUNT containers of busybox `sleep 100000` are created one
#    after another; the agent is killed with SIGKILL (its containers keep
#    running under their shims) and a new one started, RESTARTS times. Each
#    is timed from just before its spawn until GET /v1/ping answers (the
#    agent rediscovers every container before it serves), and until GET
#    /v1/containers lists all COUNT as "running".
# 3. Shim memory, while the COUNT containers run (after a 2 s settle): VmRSS
#    (/proc/PID/status) and Pss (/proc/PID/smaps_rollup) of every shim,
#    median and max in KiB; also the agent's own RSS and its CPU use over
#    5 idle seconds.
# Then every container is deleted through the agent (DELETE ?force=true,
# 4 at a time, timed), the agent stopped, `berth gc` run, the cgroup parents
# removed, anything mounted under the scratch dir unmounted and the scratch
# dir removed; the same happens on any exit. The script then checks that
# nothing is left: no process naming the scratch dir, none of the shims
# alive, no cgroup under the parent, no mount under the scratch dir.
set -euo pipefail
export LC_ALL=C
# cargo and rustup find their toolchain through $HOME (~/.cargo, ~/.rustup);
# a bare environment (env -i, some CI runners) may not set it.
export HOME=${HOME:-/root}

runs=200
count=1000
restarts=3
berth_bin=""
shim_bin=""
save_dir=""
while (($#)); do
    case "$1" in
        -n | --runs) runs=${2:?}; shift 2 ;;
        -k | --count) count=${2:?}; shift 2 ;;
        -m | --restarts) restarts=${2:?}; shift 2 ;;
        --berth) berth_bin=${2:?}; shift 2 ;;
        --shim) shim_bin=${2:?}; shift 2 ;;
        --save) save_dir=${2:?}; shift 2 ;;
        -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
        *) echo "agent.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done
[[ $runs =~ ^[1-9][0-9]*$ && $count =~ ^[1-9][0-9]*$ && $restarts =~ ^[1-9][0-9]*$ ]] || {
    echo "agent.sh: -n, -k and -m take positive whole numbers" >&2
    exit 2
}
((EUID == 0)) || { echo "agent.sh: must run as root (real containers)" >&2; exit 2; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
# shellcheck source=bench/common.sh disable=SC1091 # followed with shellcheck -x
source bench/common.sh
client=("python3" "$repo/bench/agent_client.py")

# ---------------------------------------------------------------------------
# State shared with cleanup.
work=""
data=""
sock=""
cgroup_parent="berth-agentbench-$$-$RANDOM"
agent_pid=""
declare -a agent_pids=() # every agent started, for the final check
declare -a shim_pids=()  # every shim of part 2, for the final check
berth=""
cleaned=0
leftovers=""

stop_agent() {
    [[ -n $agent_pid ]] || return 0
    stop_gracefully "$agent_pid" 10 "the agent"
    agent_pid=""
}

# cleanup_all: stop every container and the agent, gc, and remove the
# cgroup parents, mounts and scratch dirs. Idempotent; never fails.
cleanup_all() {
    ((cleaned)) && return 0
    cleaned=1
    # 1. Through the agent while it serves: it stops each container
    #    (SIGKILL) and removes its state.
    if [[ -n $agent_pid ]] && alive "$agent_pid" &&
        "${client[@]}" --socket "$sock" ping >/dev/null 2>&1; then
        "${client[@]}" --socket "$sock" delete-all --jobs 4 >/dev/null 2>&1 || true
    fi
    stop_agent
    # 2. Shims still running (the agent was dead or failed): SIGTERM stops
    #    each container (SIGKILL after the shim's 10 s grace) and records it.
    stop_leftover_processes
    # 3. What the runtime may have left (container dirs, cgroups of killed
    #    containers), then our own cgroup parents (rmdir: empty ones only).
    gc_leftovers
    # 4. Mounts and files.
    remove_tree "$work"
}

on_exit() {
    local rc=$?
    set +e
    if ((!cleaned)); then
        if ((rc != 0)) && [[ -n $work ]]; then
            local f
            for f in "$work"/agent-*.log; do
                [[ -s $f ]] || continue
                echo "--- tail of $f" >&2
                tail -n 20 "$f" >&2
            done
        fi
        echo "==> cleanup" >&2
        cleanup_all
        verify_clean "of the shims/agents" "${shim_pids[@]}" "${agent_pids[@]}"
        if [[ -n $leftovers ]]; then
            echo "cleanup: LEFT BEHIND: $leftovers" >&2
            ((rc != 0)) || rc=1
        else
            echo "cleanup: nothing left (no shim or agent process, no cgroup under $cgroup_parent, no mount)" >&2
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
has_agent() { "$1" agent --help >/dev/null 2>&1; }
if [[ -z $berth_bin || -z $shim_bin ]]; then
    if [[ ! -x target/dist/berth || ! -x target/dist/berth-shim ]] || ! has_agent target/dist/berth; then
        echo "target/dist is missing or predates the agent: scripts/build.sh"
        bash scripts/build.sh
    fi
fi
berth=$(realpath "${berth_bin:-target/dist/berth}")
shim=$(realpath "${shim_bin:-target/dist/berth-shim}")
[[ -x $berth ]] || { echo "no berth binary at $berth" >&2; exit 1; }
[[ -x $shim ]] || { echo "no berth-shim binary at $shim" >&2; exit 1; }
has_agent "$berth" || { echo "$berth has no 'agent' command (too old?)" >&2; exit 1; }

# ---------------------------------------------------------------------------
# System limits for COUNT containers: each is a shim plus its `sleep`, and
# the agent holds a socket to every shim (two while it rediscovers them).
echo "==> limits"
hard_nofile=$(ulimit -Hn)
[[ $hard_nofile != unlimited ]] || hard_nofile=$(</proc/sys/fs/nr_open)
ulimit -n "$hard_nofile" # the agent raises its own soft limit too
nofile=$(ulimit -n)
pid_max=$(</proc/sys/kernel/pid_max)
threads_max=$(</proc/sys/kernel/threads-max)
tasks_now=$(awk '{ split($4, a, "/"); print a[2] }' /proc/loadavg) # all threads now
need_tasks=$((2 * count + 200))
need_fds=$((2 * count + 100))
echo "open files: $nofile (need ~$need_fds); pid_max $pid_max, threads-max $threads_max, tasks now $tasks_now (need ~$need_tasks more)"
if ((nofile < need_fds)); then
    echo "agent.sh: the open-files hard limit ($nofile) is below what $count containers need ($need_fds): raise it (ulimit -Hn, /etc/security/limits.conf) or lower -k" >&2
    exit 1
fi
if ((tasks_now + need_tasks > pid_max || tasks_now + need_tasks > threads_max)); then
    echo "agent.sh: $count containers need ~$need_tasks more tasks: kernel.pid_max=$pid_max / kernel.threads-max=$threads_max is too low" >&2
    exit 1
fi
pids_cg=$(awk -F: '$2 == "pids" { print $3 }' /proc/self/cgroup)
if [[ -n $pids_cg && -r /sys/fs/cgroup/pids$pids_cg/pids.max ]]; then
    # The shims and their containers are counted in our pids cgroup (the
    # containers' own cgroups are under the parent, outside it).
    pids_limit=$(</sys/fs/cgroup/pids"$pids_cg"/pids.max)
    echo "our pids cgroup ($pids_cg): pids.max $pids_limit"
    if [[ $pids_limit =~ ^[0-9]+$ ]] && ((pids_limit < need_tasks)); then
        echo "agent.sh: our pids cgroup allows $pids_limit tasks, $count containers need ~$need_tasks" >&2
        exit 1
    fi
fi

# ---------------------------------------------------------------------------
work=$(mktemp -d /var/tmp/berth-agentbench.XXXXXX)
data=$work/data
sock=$data/agent.sock
mkdir -p "$data"
echo "scratch: $work, cgroup parent: $cgroup_parent"

echo "==> busybox image"
bash scripts/make-busybox-rootfs.sh "$work/busybox.tar.gz"
"$berth" --data-dir "$data" image import busybox "$work/busybox.tar.gz"

agent_cmd=("$berth" --data-dir "$data" --cgroup-parent "$cgroup_parent" agent --shim "$shim")
starts=0
# start_agent EXPECTED: start an agent, wait until it serves and lists
# EXPECTED running containers; sets $agent_pid and $start_json.
start_json=""
start_agent() {
    local expect=$1 log
    starts=$((starts + 1))
    log=$work/agent-$starts.log
    if ! start_json=$("${client[@]}" --socket "$sock" start-agent --expect "$expect" \
        --log "$log" -- "${agent_cmd[@]}"); then
        # The agent may run even though it failed the check.
        agent_pid=$(jq -r '.pid // empty' <<<"$start_json" 2>/dev/null || true)
        [[ -n $agent_pid ]] && agent_pids+=("$agent_pid")
        echo "agent start $starts failed" >&2
        exit 1
    fi
    agent_pid=$(jq -r .pid <<<"$start_json")
    agent_pids+=("$agent_pid")
    if ! grep -q '^berth agent: serving unix:' "$log"; then
        echo "agent start $starts: no 'serving' line in $log" >&2
        exit 1
    fi
}

jf() { jq -r "$2" <<<"$1"; }            # jf JSON FILTER
fmt() { awk -v v="$1" 'BEGIN { printf "%.2f", v }'; } # 2 decimals

load_start=$(cut -d ' ' -f 1-3 /proc/loadavg)
echo "==> agent (empty)"
start_agent 0
empty_start_ms=$(fmt "$(jf "$start_json" .ping_ms)")
echo "agent $agent_pid serving after $empty_start_ms ms"

# ---------------------------------------------------------------------------
echo "==> part 1: $runs lifecycles of busybox true, agent and engine interleaved"
times_file=$work/lifecycle-times.txt
lc=$("${client[@]}" --socket "$sock" lifecycle -n "$runs" --warmup 5 --times "$times_file" -- \
    "$berth" --data-dir "$data" --cgroup-parent "$cgroup_parent" run --json busybox true)
left=$("${client[@]}" --socket "$sock" states)
if [[ $(jf "$left" .total) != 0 ]]; then
    echo "after part 1 the agent still lists containers: $left" >&2
    exit 1
fi

# ---------------------------------------------------------------------------
echo "==> part 2: $count containers of busybox sleep 100000"
cm=$("${client[@]}" --socket "$sock" create-many -k "$count" --prefix "sl$$")
mapfile -t shim_pids < <("${client[@]}" --socket "$sock" shims)
echo "${#shim_pids[@]} shims"
((${#shim_pids[@]} == count)) || { echo "expected $count shims" >&2; exit 1; }

echo "==> part 3: memory (2 s settle, then 5 s of agent CPU)"
sleep 2
mem=$("${client[@]}" --socket "$sock" shim-memory --expect "$count" \
    --agent-pid "$agent_pid" --cpu-window 5)
echo "$mem"

echo "==> part 2: $restarts restarts of the agent (SIGKILL, then a new one)"
declare -a restart_ping=() restart_all=()
for ((r = 1; r <= restarts; r++)); do
    kill -KILL "$agent_pid"
    wait_gone 10 "$agent_pid" || { echo "the agent survived SIGKILL?" >&2; exit 1; }
    # The containers must not notice.
    n=0
    for p in "${shim_pids[@]}"; do alive "$p" && n=$((n + 1)); done
    ((n == count)) || { echo "only $n of $count shims survived the agent's death" >&2; exit 1; }
    start_agent "$count"
    restart_ping+=("$(fmt "$(jf "$start_json" .ping_ms)")")
    restart_all+=("$(fmt "$(jf "$start_json" .all_running_ms)")")
    echo "restart $r: agent $agent_pid serving after ${restart_ping[-1]} ms," \
        "all $count running listed after ${restart_all[-1]} ms" \
        "($(jf "$start_json" .list_polls) list calls)"
done

# ---------------------------------------------------------------------------
echo "==> stopping the $count containers through the agent (DELETE ?force=true, 4 at a time)"
t0=$EPOCHREALTIME
del=$("${client[@]}" --socket "$sock" delete-all --jobs 4) || {
    echo "delete-all failed: $del" >&2
    exit 1
}
delete_s=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
echo "deleted $(jf "$del" .deleted) in $delete_s s"

if [[ -n $save_dir ]]; then
    mkdir -p "$save_dir"
    cp "$times_file" "$save_dir/lifecycle-times.txt"
    printf '%s\n' "$lc" "$cm" "$mem" >"$save_dir/results.jsonl"
fi

load_end=$(cut -d ' ' -f 1-3 /proc/loadavg)
echo "==> cleanup"
cleanup_all
verify_clean "of the shims/agents" "${shim_pids[@]}" "${agent_pids[@]}"
if [[ -n $leftovers ]]; then
    clean_line="LEFT BEHIND: $leftovers"
else
    clean_line="nothing left: no agent or shim process, no cgroup under $cgroup_parent, no mount, scratch dir removed"
fi

# ---------------------------------------------------------------------------
m() { fmt "$(jf "$1" "$2")"; }
cgmode="v1"
if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
    cgmode="v2"
elif [[ -f /sys/fs/cgroup/unified/cgroup.controllers ]]; then
    cgmode="v1+v2 hybrid"
fi
echo
echo "===== bench/agent.sh summary ====="
echo "machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r), cgroup $cgmode"
echo "load average (1/5/15 min): $load_start at the start, $load_end at the end (other work on the machine shows here)"
echo "command: bash bench/agent.sh -n $runs -k $count -m $restarts --berth $berth --shim $shim"
echo
echo "1. create+start overhead, $runs lifecycles of busybox true each, interleaved (ms):"
printf '   %-44s %8s %8s\n' "" median p90
printf '   %-44s %8s %8s\n' "agent: POST + wait + DELETE" "$(m "$lc" .agent_total.median)" "$(m "$lc" .agent_total.p90)"
printf '   %-44s %8s %8s\n' "  POST /v1/containers alone (until running)" "$(m "$lc" .agent_create.median)" "$(m "$lc" .agent_create.p90)"
printf '   %-44s %8s %8s\n' "  GET wait (until exited)" "$(m "$lc" .agent_wait.median)" "$(m "$lc" .agent_wait.p90)"
printf '   %-44s %8s %8s\n' "  DELETE" "$(m "$lc" .agent_delete.median)" "$(m "$lc" .agent_delete.p90)"
printf '   %-44s %8s %8s\n' "engine: berth run busybox true" "$(m "$lc" .engine.median)" "$(m "$lc" .engine.p90)"
echo "   agent - engine: $(fmt "$(jq -r '.agent_total.median - .engine.median' <<<"$lc")" ) ms (difference of medians), $(m "$lc" .paired_diff.median) ms (median of paired differences)"
printf '   %-44s %8s %8s\n' "engine until running (total - wall - teardown)" "$(m "$lc" .engine_until_running.median)" "$(m "$lc" .engine_until_running.p90)"
echo "   create+start, POST - engine until running: $(m "$lc" .create_start_paired_diff.median) ms (median of paired differences)"
echo
echo "2. recovery with $count running containers (SIGKILL, new agent; ms from its spawn):"
for ((r = 0; r < restarts; r++)); do
    echo "   restart $((r + 1)): answers /v1/ping after ${restart_ping[$r]} ms; lists $count running after ${restart_all[$r]} ms"
done
echo "   (an agent with no containers answers after $empty_start_ms ms)"
echo "   creating the $count containers one after another: $(fmt "$(jf "$cm" .elapsed_s)") s, POST median $(m "$cm" .create.median) ms (first 100: $(m "$cm" .create_first100_median), last 100: $(m "$cm" .create_last100_median)), p90 $(m "$cm" .create.p90) ms"
echo "   stopping them (DELETE ?force=true, 4 at a time): $delete_s s"
echo
echo "3. berth-shim memory, $count shims each supervising sleep (KiB):"
echo "   VmRSS median $(jf "$mem" .rss_median_kib), max $(jf "$mem" .rss_max_kib)"
echo "   Pss   median $(jf "$mem" .pss_median_kib), max $(jf "$mem" .pss_max_kib); all $count together $(jf "$mem" .pss_total_kib) KiB"
echo "   the agent meanwhile: VmRSS $(jf "$mem" .agent_rss_kib) KiB, $(jf "$mem" .agent_threads) threads, $(jf "$mem" .agent_fds) fds, $(m "$mem" .agent_idle_cpu_percent)% of a CPU while idle"
echo
echo "cleanup: $clean_line"
echo "=================================="
[[ -z $leftovers ]]
