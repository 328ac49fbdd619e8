#!/usr/bin/env bash
# Interleaved A/B of `berth run` start-to-exit time between builds of berth.
#
# Usage: bench/ab.sh [-n ROUNDS] [-w WARMUP] [--idle-ms MS] [--chrt]
#                    [--save DIR] LABEL=BINARY LABEL=BINARY [...]
#
#   -n ROUNDS     timed rounds per mode (default 200); each round runs every
#                 binary once
#   -w WARMUP     untimed rounds first (default 5)
#   --idle-ms MS  idle time before each run of the after-idle mode (default
#                 300; 0 skips that mode)
#   --chrt        run the measuring loop, and so every measured command,
#                 under `chrt -f 1` (SCHED_FIFO): other sessions' compile
#                 jobs then cannot preempt the starts
#   --save DIR    keep the raw per-run times (microseconds), one file per
#                 mode and label
#
# What is timed, for each binary, as one whole command from fork to exit:
#   BINARY --data-dir DATA run --memory 64m --pids-limit 64 busybox true
# on one shared data dir holding the busybox image of
# scripts/make-busybox-rootfs.sh. Each binary runs from a fresh copy (see
# bench/startup.sh on how a binary sits in the page cache), output goes to
# a private tmpfs.
#
# Method: run by run interleaved. Each round runs every binary once, the
# order rotated from round to round, so that drift of the machine (other
# sessions' compiles come and go) hits every binary alike. Two modes, as in
# bench/startup.sh: back-to-back, and after idle (a read timing out on a
# FIFO before each run, without forking). Reported per mode and binary:
# median, p25 and p75 (the spread), p90; and for every binary after the
# first, the median of its per-round differences from the first binary
# (negative: faster than the first) with that as a share of the first's
# median. A failing run aborts: timing a failure would measure the wrong
# thing.
set -euo pipefail
export LC_ALL=C # $EPOCHREALTIME must use "." as its decimal point
export HOME=${HOME:-/root}

rounds=200
warmup=5
idle_ms=300
use_chrt=0
save_dir=""
labels=()
bins=()
args=("$@")
while (($#)); do
    case "$1" in
        -n | --rounds) rounds=${2:?}; shift 2 ;;
        -w | --warmup) warmup=${2:?}; shift 2 ;;
        --idle-ms) idle_ms=${2:?}; shift 2 ;;
        --chrt) use_chrt=1; shift ;;
        --save) save_dir=${2:?}; shift 2 ;;
        -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
        *=*)
            labels+=("${1%%=*}")
            bins+=("$(realpath "${1#*=}")")
            shift
            ;;
        *) echo "ab.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done
[[ $rounds =~ ^[1-9][0-9]*$ && $warmup =~ ^[0-9]+$ && $idle_ms =~ ^[0-9]+$ ]] || {
    echo "ab.sh: -n, -w and --idle-ms take whole numbers (-n at least 1)" >&2
    exit 2
}
((${#bins[@]} >= 2)) || { echo "ab.sh: give at least two LABEL=BINARY" >&2; exit 2; }
((EUID == 0)) || { echo "ab.sh: must run as root (real containers)" >&2; exit 2; }
for b in "${bins[@]}"; do
    [[ -x $b ]] || { echo "ab.sh: not an executable: $b" >&2; exit 2; }
done
if ((use_chrt)) && [[ ${BERTH_AB_UNDER_CHRT:-} != 1 ]]; then
    BERTH_AB_UNDER_CHRT=1 exec chrt -f 1 bash "$0" "${args[@]}"
fi

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
# shellcheck source=bench/common.sh
source bench/common.sh

work=""
runroot=""
cgroup_parent="berth-ab-$$"
berth_base=()
cleanup() {
    local rc=$?
    set +e
    remove_berth_work
    local d
    for d in /sys/fs/cgroup/*/"$cgroup_parent" /sys/fs/cgroup/"$cgroup_parent"; do
        [[ -d $d ]] && rmdir "$d" 2>/dev/null
    done
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

work=$(mktemp -d /var/tmp/berth-ab.XXXXXX)
runroot=$(make_runroot berth-ab)
k=${#bins[@]}
for ((j = 0; j < k; j++)); do
    mkdir -p "$work/bin/$j"
    install -m 0755 "${bins[$j]}" "$work/bin/$j/berth"
done
tarball=$work/busybox.tar.gz
bash scripts/make-busybox-rootfs.sh "$tarball" >/dev/null
berth_base=("$work/bin/0/berth" --data-dir "$work/data" --cgroup-parent "$cgroup_parent")
"${berth_base[@]}" image import busybox "$tarball" >/dev/null
io=$runroot

elapsed_us=0
run_one() { # INDEX
    local t0 t1 rc=0
    t0=$EPOCHREALTIME
    "$work/bin/$1/berth" --data-dir "$work/data" --cgroup-parent "$cgroup_parent" \
        run --memory 64m --pids-limit 64 busybox true >"$io/out" 2>"$io/err" </dev/null || rc=$?
    t1=$EPOCHREALTIME
    if ((rc != 0)); then
        echo "${labels[$1]}: berth run failed with exit code $rc:" >&2
        cat "$io/out" "$io/err" >&2
        exit 1
    fi
    elapsed_us=$((10#${t1/./} - 10#${t0/./}))
}

for ((i = 0; i < warmup; i++)); do
    for ((j = 0; j < k; j++)); do run_one "$j"; done
done

modes=(b2b)
((idle_ms > 0)) && modes+=(idle)
idle_s=$(printf '%d.%03d' $((idle_ms / 1000)) $((idle_ms % 1000)))
mkfifo "$runroot/idle"
exec {idle_fd}<>"$runroot/idle"
idle_wait() { read -r -t "$idle_s" -u "$idle_fd" _ || true; }

load_before=$(cut -d' ' -f1 /proc/loadavg)
for mode in "${modes[@]}"; do
    for ((j = 0; j < k; j++)); do : >"$work/times.$mode.$j"; done
    for ((r = 0; r < rounds; r++)); do
        for ((o = 0; o < k; o++)); do
            j=$(((r + o) % k))
            [[ $mode == idle ]] && idle_wait
            run_one "$j"
            echo "$elapsed_us" >>"$work/times.$mode.$j"
        done
    done
done
load_after=$(cut -d' ' -f1 /proc/loadavg)

# quantiles FILE -> "p25 median p75 p90" in ms (nearest rank)
quantiles() {
    sort -n "$1" | awk '
        function q(p,   r) { r = int(p * NR); if (r < p * NR) r++; if (r < 1) r = 1; return v[r] }
        { v[NR] = $1 }
        END {
            med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf "%.2f %.2f %.2f %.2f\n", q(0.25) / 1000, med / 1000, q(0.75) / 1000, q(0.9) / 1000
        }'
}
sched="default scheduling"
((use_chrt)) && sched="chrt -f 1"
echo "== bench/ab.sh: $rounds rounds per mode, interleaved, $sched; load average $load_before -> $load_after"
for mode in "${modes[@]}"; do
    title="back-to-back"
    [[ $mode == idle ]] && title="after ${idle_ms} ms idle"
    echo "-- $title (ms)"
    printf '%-16s %8s %8s %8s %8s %14s\n' build median p25 p75 p90 "diff vs ${labels[0]}"
    read -r _ base_med _ < <(quantiles "$work/times.$mode.0")
    for ((j = 0; j < k; j++)); do
        read -r p25 med p75 p90 < <(quantiles "$work/times.$mode.$j")
        diff=""
        if ((j > 0)); then
            diff=$(paste "$work/times.$mode.$j" "$work/times.$mode.0" | awk '{ print $1 - $2 }' |
                sort -n | awk -v base="$base_med" '
                    { d[NR] = $1 }
                    END {
                        med = (NR % 2) ? d[(NR + 1) / 2] : (d[NR / 2] + d[NR / 2 + 1]) / 2
                        printf "%+.2f (%+.1f%%)", med / 1000, 100 * med / 1000 / base
                    }')
        fi
        printf '%-16s %8s %8s %8s %8s %14s\n' "${labels[$j]}" "$med" "$p25" "$p75" "$p90" "$diff"
    done
done
if [[ -n $save_dir ]]; then
    mkdir -p "$save_dir"
    for mode in "${modes[@]}"; do
        for ((j = 0; j < k; j++)); do cp "$work/times.$mode.$j" "$save_dir/$mode-${labels[$j]}.us"; done
    done
fi
