#!/usr/bin/env bash
# Run many containers one after another and check that none left anything.
#
# Usage: bench/churn.sh [-n RUNS] [--berth PATH] [--keep-going]
#
#   -n RUNS        number of sequential `berth run`s (default 10000)
#   --berth PATH   use this binary instead of building target/release/berth
#   --keep-going   do not stop at the first run whose outcome is wrong
#
# The mix, by run number modulo 20 (so every kind of ending is exercised
# all along, and a failure can be reproduced from its run number):
#   0      --timeout 100ms sleep 5                     -> timed_out
#   1      --memory 8m sh -c 'x=a; while true; do x=$x$x; done'
#                                                      -> oom_killed
#   2      sh -c 'exit 3'                              -> exit code 3
#   3      false                                       -> exit code 1
#   other  true                                        -> exit code 0
# Every run uses --json; its last stdout line is checked against the
# expectation. The sad paths (timeout kill, OOM kill) are where teardown
# bugs hide, which is why they are in the mix.
#
# At the end, scripts/check-leaks.sh counts mounts, cgroups, state/data
# entries, processes and netns left over, BEFORE any `berth gc` could hide
# them. Exit 1 if anything is left or any run ended wrongly.
set -euo pipefail
export LC_ALL=C
# cargo and rustup find their toolchain through $HOME (~/.cargo, ~/.rustup);
# a bare environment (env -i, some CI runners) may not set it.
export HOME=${HOME:-/root}

runs=10000
berth_bin=""
keep_going=0
while (($#)); do
    case "$1" in
        -n | --runs) runs=${2:?}; shift 2 ;;
        --berth) berth_bin=${2:?}; shift 2 ;;
        --keep-going) keep_going=1; shift ;;
        -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
        *) echo "churn.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || { echo "churn.sh: -n takes a positive number" >&2; exit 2; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
# shellcheck source=bench/common.sh
source bench/common.sh

work=""
runroot=""
berth_base=()
cleanup() {
    local rc=$?
    set +e
    remove_berth_work
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

prepare_berth "$berth_bin"

work=$(mktemp -d /var/tmp/berth-churn.XXXXXX)
runroot=$(make_runroot berth-churn)
data=$work/data
state=$runroot/state
mkdir -p "$data" "$state"
io=$runroot # per-run stdout/stderr on tmpfs
berth_base=("$berth" --data-dir "$data")
# --state-dir is for the host agent (issue 3); `berth run` keeps its
# per-container files under the data dir and has no such flag yet.
if "$berth" --help 2>/dev/null | grep -q -e '--state-dir'; then
    berth_base+=(--state-dir "$state")
fi

echo "==> image"
bash scripts/make-busybox-rootfs.sh "$work/busybox.tar.gz"
"${berth_base[@]}" image import busybox "$work/busybox.tar.gz"

# JSON fields are matched with bash regexes rather than jq: one fork less
# per run, which matters at 10000 runs. Whitespace around ":" is tolerated.
json_has() { # LINE FIELD VALUE
    [[ $1 =~ \"$2\"[[:space:]]*:[[:space:]]*$3([,}[:space:]]) ]]
}

declare -A count=()
bad=0
bad_log=$work/bad-runs.log
: >"$bad_log"
start=$EPOCHREALTIME
last=$start
# What was left over before we started (another run's leftovers) is not ours.
bash scripts/check-leaks.sh --quiet --data-dir "$data" --state-dir "$state" \
    --save-baseline "$work/leaks-before.txt"
echo "==> $runs runs"
for ((i = 0; i < runs; i++)); do
    # kind, the arguments, and the expected outcome: exit status (a number,
    # or "nonzero") and one JSON field that must have the given value.
    case $((i % 20)) in
        0)
            kind=timeout want_rc=nonzero field=timed_out value=true
            args=(--timeout 100ms busybox sleep 5)
            ;;
        1)
            kind=oom want_rc=nonzero field=oom_killed value=true
            # shellcheck disable=SC2016 # expanded by the container's sh
            args=(--memory 8m busybox sh -c 'x=a; while true; do x=$x$x; done')
            ;;
        2)
            kind=exit3 want_rc=3 field=exit_code value=3
            args=(busybox sh -c 'exit 3')
            ;;
        3)
            kind=false want_rc=1 field=exit_code value=1
            args=(busybox false)
            ;;
        *)
            kind=true want_rc=0 field=exit_code value=0
            args=(busybox true)
            ;;
    esac
    rc=0
    "${berth_base[@]}" run --json "${args[@]}" >"$io/out" 2>"$io/err" </dev/null || rc=$?
    line=""
    if [[ -s $io/out ]]; then
        line=$(tail -n 1 "$io/out")
    fi

    if [[ $want_rc == nonzero ]]; then rc_ok=$((rc != 0)); else rc_ok=$((rc == want_rc)); fi
    ok=0
    if ((rc_ok)) && json_has "$line" "$field" "$value"; then ok=1; fi
    why="want exit status $want_rc and \"$field\": $value"
    count[$kind]=$((${count[$kind]:-0} + 1))
    if ((!ok)); then
        bad=$((bad + 1))
        {
            echo "--- run $i ($kind): $why; berth exited $rc"
            echo "stdout (last line): $line"
            echo "stderr:"
            tail -n 20 "$io/err"
        } >>"$bad_log"
        if ((!keep_going)); then
            echo "run $i ($kind) ended wrongly:" >&2
            cat "$bad_log" >&2
            echo "(stopping at the first wrong run; --keep-going to go on)" >&2
            break
        fi
    fi

    if (((i + 1) % 1000 == 0)); then
        now=$EPOCHREALTIME
        el_ms=$(((10#${now/./} - 10#${start/./}) / 1000))
        chunk_ms=$(((10#${now/./} - 10#${last/./}) / 1000))
        last=$now
        printf '  %6d runs  %7.1f s  last 1000: %.1f runs/s  wrong so far: %d\n' \
            "$((i + 1))" "$(awk -v m="$el_ms" 'BEGIN { print m / 1000 }')" \
            "$(awk -v m="$chunk_ms" 'BEGIN { print (m > 0) ? 1000000 / m : 0 }')" "$bad"
    fi
done
done_runs=$i
((done_runs < runs)) && done_runs=$((i + 1)) # stopped early: run i was run
end=$EPOCHREALTIME
el_ms=$(((10#${end/./} - 10#${start/./}) / 1000))

echo
echo "== churn: $done_runs runs in $(awk -v m="$el_ms" -v n="$done_runs" \
    'BEGIN { printf "%.1f s, %.1f runs/s", m / 1000, (m > 0) ? n * 1000 / m : 0 }')"
for kind in true false exit3 timeout oom; do
    printf '  %-8s %d\n' "$kind" "${count[$kind]:-0}"
done
echo "  wrong outcomes: $bad"
if ((bad > 0)); then
    head -n 60 "$bad_log"
fi

echo
leaks=0
bash scripts/check-leaks.sh --data-dir "$data" --state-dir "$state" \
    --baseline "$work/leaks-before.txt" || leaks=1

if ((bad > 0 || leaks)); then
    echo "churn: FAILED (wrong outcomes: $bad, leftovers: $([[ $leaks == 1 ]] && echo yes || echo no))" >&2
    exit 1
fi
echo "churn: OK"
