#!/usr/bin/env bash
# Resident memory of berth-shim: K shims at once, each supervising a busybox
# `sleep 1000` container, measured once every one of them runs.
#
# Usage: bench/shim_rss.sh [-k COUNT] [--shim PATH] [--settle SECONDS] [--detail]
#
#   -k COUNT          shims (and containers) at once (default 20)
#   --shim PATH       measure this berth-shim binary instead of building one
#   --settle SECONDS  pause between the last "running" line and the
#                     measurement (default 1)
#   --detail          also print the first shim's mappings (from smaps)
#
# Without --shim, scripts/build.sh builds the binary that ships
# (target/dist/berth-shim: static, non-PIE, against musl when available).
#
# Each shim is started as the agent starts it: a state dir holding
# spec.json, its own containers dir and cgroup parent for this run, and
# `--ready-fd 1`; the script waits for every {"status":"running"} line.
# Then, per shim: VmRSS, RssAnon and RssFile from /proc/PID/status, Pss from
# /proc/PID/smaps_rollup, printed as median and max (kB). RSS counts every
# page a shim maps, including the binary's code, which is page cache shared
# by all shims; Pss splits each shared page among those that map it, so the
# sum of Pss is what the K shims cost together.
#
# Stopping: SIGTERM to every shim, which stops its container (SIGTERM, then
# SIGKILL after the shim's 10 s grace period: `sleep` as the first process
# of its pid namespace ignores SIGTERM) and records its exit. Every shim must
# exit 0 with a result in exit.json; then scripts/check-leaks.sh must find
# nothing left (mounts, cgroups, container dirs, processes).
set -euo pipefail
export LC_ALL=C
# cargo and rustup find their toolchain through $HOME (~/.cargo, ~/.rustup);
# a bare environment (env -i, some CI runners) may not set it.
export HOME=${HOME:-/root}

count=20
shim_bin=""
settle=1
detail=0
while (($#)); do
    case "$1" in
        -k | --count) count=${2:?}; shift 2 ;;
        --shim) shim_bin=${2:?}; shift 2 ;;
        --settle) settle=${2:?}; shift 2 ;;
        --detail) detail=1; shift ;;
        -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
        *) echo "shim_rss.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done
[[ $count =~ ^[1-9][0-9]*$ ]] || { echo "shim_rss.sh: -k takes a positive number" >&2; exit 2; }
[[ $settle =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "shim_rss.sh: --settle takes seconds" >&2; exit 2; }
((EUID == 0)) || { echo "shim_rss.sh: must run as root (real containers)" >&2; exit 2; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
# shellcheck source=bench/common.sh disable=SC1091 # followed with shellcheck -x
source bench/common.sh

work=""
cgroup_parent="berth-shimrss-$$"
declare -a pids=()

# stop_shims: SIGTERM every shim still running, wait for each (a stuck one
# gets SIGKILL after 30 s, so that the script itself always ends). Sets
# $stop_failures to the number of shims that did not end cleanly.
stop_failures=0
stop_shims() {
    local pid
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    local i alive
    for ((i = 0; i < 300; i++)); do
        alive=0
        for pid in "${pids[@]}"; do
            if kill -0 "$pid" 2>/dev/null; then alive=1; break; fi
        done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            echo "shim $pid did not stop within 30 s; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        # Our own children: wait returns each one's exit status.
        if ! wait "$pid" 2>/dev/null; then
            stop_failures=$((stop_failures + 1))
        fi
    done
    pids=()
}

# remove_cgroup_parents: the runtime keeps the (empty) parent cgroup in
# every hierarchy; this run's parent is private, so it goes too. rmdir
# removes only empty cgroups, never a container's.
remove_cgroup_parents() {
    local dir
    while IFS= read -r dir; do
        rmdir "$dir" 2>/dev/null || true
    done < <(find /sys/fs/cgroup -maxdepth 2 -type d -name "$cgroup_parent" 2>/dev/null)
}

cleanup() {
    local rc=$?
    set +e
    ((${#pids[@]} == 0)) || stop_shims
    remove_cgroup_parents
    remove_tree "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "==> dependencies and build"
bash scripts/ensure-deps.sh
if [[ -n $shim_bin ]]; then
    shim=$(realpath "$shim_bin")
else
    # What ships: scripts/build.sh's static build (musl when available).
    bash scripts/build.sh
    shim=$repo/target/dist/berth-shim
fi
[[ -x $shim ]] || { echo "no berth-shim binary at $shim" >&2; exit 1; }

work=$(mktemp -d /var/tmp/berth-shimrss.XXXXXX)
mkdir -p "$work/containers" "$work/state"

echo "==> busybox layer"
bash scripts/make-busybox-rootfs.sh --dir "$work/layer"

# What was there before (another run's leftovers) is not ours. The data
# dir is $work, so that check-leaks looks at $work/containers.
bash scripts/check-leaks.sh --quiet --data-dir "$work" --state-dir "$work/state" \
    --save-baseline "$work/leaks-before.txt"

echo "==> starting $count shims"
start=$EPOCHREALTIME
for ((i = 0; i < count; i++)); do
    id="rss-$$-$i"
    dir=$work/state/$id
    mkdir "$dir"
    printf '{"container":{"id":"%s","rootfs":{"layers":["%s"]},"process":{"args":["sleep","1000"],"env":["PATH=/bin"]}}}\n' \
        "$id" "$work/layer" >"$dir/spec.json"
    # The ready line goes to a file: a reader that never goes away.
    "$shim" --dir "$dir" --containers-dir "$work/containers" \
        --cgroup-parent "$cgroup_parent" --ready-fd 1 \
        </dev/null >"$dir/ready" 2>"$dir/shim.err" &
    pids+=("$!")
done

# wait_ready INDEX: until shim INDEX has written its line (or died).
wait_ready() {
    local i=$1 dir=$work/state/rss-$$-$1 line="" t
    for ((t = 0; t < 300; t++)); do
        # read succeeds only on a whole line (a partial one ends at EOF).
        if IFS= read -r line <"$dir/ready"; then
            break
        fi
        kill -0 "${pids[$i]}" 2>/dev/null || break
        sleep 0.1
    done
    if [[ $line != '{"status":"running","pid":'* ]]; then
        echo "shim $i (pid ${pids[$i]}) did not report running; its line: ${line:-none}" >&2
        cat "$dir/shim.err" >&2
        [[ -f $dir/exit.json ]] && cat "$dir/exit.json" >&2
        exit 1
    fi
}
for ((i = 0; i < count; i++)); do
    wait_ready "$i"
done
ready_ms=$(((10#${EPOCHREALTIME/./} - 10#${start/./}) / 1000))
echo "all $count running after $ready_ms ms; settling ${settle}s"
sleep "$settle"

# ---------------------------------------------------------------------------
# Per shim, one line: "VmRSS RssAnon RssFile Pss" in kB.
samples=$work/samples
: >"$samples"
for pid in "${pids[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "shim $pid exited before it was measured" >&2
        exit 1
    fi
    read -r rss anon file < <(awk '
        /^VmRSS:/ { r = $2 } /^RssAnon:/ { a = $2 } /^RssFile:/ { f = $2 }
        END { print r, a, f }' "/proc/$pid/status")
    pss=$(awk '/^Pss:/ { print $2; exit }' "/proc/$pid/smaps_rollup")
    echo "$rss $anon $file $pss" >>"$samples"
done

# column_stats N: median and max of column N of the samples.
column_stats() {
    cut -d ' ' -f "$1" "$samples" | sort -n | awk '
        { v[NR] = $1 }
        END {
            med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf "%9g %9g\n", med, v[NR]
        }'
}

echo
echo "== machine"
echo "kernel:   $(uname -r) ($(uname -m)), $(nproc) cpus"
echo "shim:     $shim ($(stat -c %s "$shim") bytes)"
echo
echo "== berth-shim memory, $count shims each supervising sleep 1000 (kB)"
printf '%-8s %9s %9s\n' metric median max
col=1
for metric in VmRSS RssAnon RssFile Pss; do
    read -r med max < <(column_stats "$col")
    printf '%-8s %9s %9s\n' "$metric" "$med" "$max"
    col=$((col + 1))
done
total_pss=$(awk '{ s += $4 } END { print s }' "$samples")
echo "total Pss of the $count shims: $total_pss kB"

if ((detail)); then
    echo
    echo "== mappings of shim ${pids[0]} with pages resident (kB)"
    awk '
        /^[0-9a-f]+-[0-9a-f]+ / { name = ($6 == "") ? "[anon]" : $6; perm = $2; next }
        /^Rss:/ { rss = $2; next }
        /^Anonymous:/ {
            if (rss > 0) printf "  %-5s %6d rss %6d anon  %s\n", perm, rss, $2, name
        }' "/proc/${pids[0]}/smaps"
fi

# ---------------------------------------------------------------------------
echo
echo "==> stopping the shims (their containers get SIGKILL after the 10 s grace)"
stop_shims
bad=$stop_failures
for ((i = 0; i < count; i++)); do
    dir=$work/state/rss-$$-$i
    if ! grep -q '"result"' "$dir/exit.json" 2>/dev/null; then
        echo "shim $i recorded no result:" >&2
        cat "$dir/exit.json" "$dir/shim.err" >&2 2>/dev/null || true
        bad=$((bad + 1))
    fi
done
remove_cgroup_parents

leaks=0
bash scripts/check-leaks.sh --data-dir "$work" --state-dir "$work/state" \
    --baseline "$work/leaks-before.txt" || leaks=1
if ((bad > 0 || leaks)); then
    echo "shim_rss: FAILED (shims that did not end cleanly: $bad, leftovers: $leaks)" >&2
    exit 1
fi
echo "shim_rss: OK"
