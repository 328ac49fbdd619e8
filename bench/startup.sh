#!/usr/bin/env bash
# Container start-to-exit latency: berth vs runc vs docker vs the bare kernel.
#
# Usage: bench/startup.sh [-n RUNS] [-w WARMUP] [--idle-ms MS] [--idle-runs N]
#                         [--no-docker] [--berth PATH] [--save DIR]
#
#   -n RUNS        timed back-to-back runs per tool (default 200)
#   -w WARMUP      untimed runs per tool first (default 5)
#   --idle-ms MS   idle time before each run of the after-idle mode (default
#                  300; 0 skips that mode)
#   --idle-runs N  timed after-idle runs per tool (default: RUNS)
#   --no-docker    skip docker even if it could be had
#   --berth PATH   use this berth binary instead of building target/release/berth
#   --save DIR     keep the raw per-run times (microseconds) and berth's JSON
#
# Two modes, measured in one run with the same tools: back-to-back (each run
# right after the previous one, as a batch would start them) and after idle
# (the script waits MS before each run of every tool, without forking, as
# when containers start now and then: on cgroup v1 hosts the first move
# into a cgroup after a moment of idle can wait for an RCU grace period,
# which back-to-back runs hide). Each mode reports every tool's median and
# the runc/berth ratio, then the goal (berth median <= 5 ms and >= 5x faster
# than runc) is checked in both.
#
# What is timed, each as one whole command from fork to exit (what a user
# waits for), all on the same busybox rootfs built by
# scripts/make-busybox-rootfs.sh:
#   berth   berth run --json --memory 64m --pids-limit 64 busybox true
#           (default isolation: pid/mnt/uts/ipc/net namespaces, cgroup
#           limits, overlay rootfs)
#   runc    runc run on an OCI bundle from `runc spec`: args ["true"], no
#           terminal, read-only root (runc's default), the same memory and pids
#           limits; runc deletes the container on exit
#   docker  docker run --rm --memory 64m --pids-limit 64 busybox true, the
#           tarball `docker import`ed; if no daemon runs, a private dockerd is
#           started and stopped again (see start_docker for its flags)
#   floor   unshare --pid --fork --mount --uts --ipc --net true: the namespace
#           setup cost alone, no runtime at all
#
# Method: a bash loop timing each command with $EPOCHREALTIME (a builtin, no
# fork). hyperfine is not used because it cannot keep the output of every run,
# and berth's teardown_ms comes from each run's --json line. Each tool runs in
# blocks of consecutive runs, five rounds of blocks with the order rotated,
# and a settle pause before every block: slow drift of the machine hits every
# tool alike, while one tool's background work (dockerd's cleanup) does not
# land on another's runs. Every number includes the fork+exec of the measured
# command by bash, as the floor shows. berth and runc run from fresh copies
# of their binaries (see the copy below for why).
set -euo pipefail
export LC_ALL=C # $EPOCHREALTIME must use "." as its decimal point
# cargo and rustup find their toolchain through $HOME (~/.cargo, ~/.rustup);
# a bare environment (env -i, some CI runners) may not set it.
export HOME=${HOME:-/root}

runs=200
warmup=5
idle_ms=300
idle_runs=""
want_docker=1
berth_bin=""
save_dir=""
while (($#)); do
    case "$1" in
        -n | --runs) runs=${2:?}; shift 2 ;;
        -w | --warmup) warmup=${2:?}; shift 2 ;;
        --idle-ms) idle_ms=${2:?}; shift 2 ;;
        --idle-runs) idle_runs=${2:?}; shift 2 ;;
        --no-docker) want_docker=0; shift ;;
        --berth) berth_bin=${2:?}; shift 2 ;;
        --save) save_dir=${2:?}; shift 2 ;;
        -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
        *) echo "startup.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done
idle_runs=${idle_runs:-$runs}
[[ $runs =~ ^[1-9][0-9]*$ && $warmup =~ ^[0-9]+$ && $idle_ms =~ ^[0-9]+$ &&
    $idle_runs =~ ^[1-9][0-9]*$ ]] || {
    echo "startup.sh: -n, -w, --idle-ms and --idle-runs take whole numbers (-n and --idle-runs at least 1)" >&2
    exit 2
}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
# shellcheck source=bench/common.sh
source bench/common.sh

# ---------------------------------------------------------------------------
# Scratch space and cleanup. Disk-backed things (berth's data dir with its
# overlay layers, the runc bundle, docker's data root) go under /var/tmp,
# runtime state and per-run output on a tmpfs under /run, as their
# defaults would (see make_runroot).
work=""
runroot=""
berth_base=()
dockerd_pid=""
docker_image=""
docker_owned=0
declare -a docker_cmd=()
declare -a cgroups_before=()
had_run_docker=0
had_key_json=0


stop_docker() {
    if [[ -n $docker_image && $docker_owned == 0 && ${#docker_cmd[@]} -gt 0 ]]; then
        # A daemon we did not start: remove only the image we imported.
        "${docker_cmd[@]}" rmi -f "$docker_image" >/dev/null 2>&1 || true
    fi
    [[ -n $dockerd_pid ]] || return 0
    kill -TERM "$dockerd_pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 300; i++)); do
        kill -0 "$dockerd_pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$dockerd_pid" 2>/dev/null; then
        echo "dockerd did not stop in 30 s; killing it" >&2
        kill -KILL "$dockerd_pid" 2>/dev/null || true
    fi
    wait "$dockerd_pid" 2>/dev/null || true
    # containerd is dockerd's child and exits with it; if it was orphaned,
    # end it by the pid it recorded (never by name: other daemons may run).
    # The pid is only trusted if that process still names our exec root.
    local cpid_file="$runroot/docker-exec/containerd/containerd.pid" cpid
    if [[ -s $cpid_file ]]; then
        cpid=$(<"$cpid_file")
        if [[ $cpid =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$cpid/cmdline" 2>/dev/null |
            grep -qF -- "$runroot/"; then
            kill -TERM "$cpid" 2>/dev/null || true
        fi
    fi
    dockerd_pid=""
    # What dockerd leaves outside its data/exec roots: empty "docker" cgroups
    # in every hierarchy, /run/docker, and its trust key. Remove what was not
    # there before we started it (rmdir only removes empty cgroups).
    local cg
    for cg in /sys/fs/cgroup/*/docker /sys/fs/cgroup/docker; do
        [[ -d $cg ]] || continue
        [[ " ${cgroups_before[*]} " == *" $cg "* ]] && continue
        find "$cg" -depth -mindepth 1 -type d -exec rmdir {} \; 2>/dev/null || true
        rmdir "$cg" 2>/dev/null || true
    done
    ((had_run_docker)) || rm -rf /run/docker
    ((had_key_json)) || rm -f /etc/docker/key.json
}

cleanup() {
    local rc=$?
    set +e
    stop_docker
    if [[ -n $runroot ]]; then
        "${runc:-runc}" --root "$runroot/runc" list -q 2>/dev/null | while IFS= read -r id; do
            "${runc:-runc}" --root "$runroot/runc" delete -f "$id" >/dev/null 2>&1
        done
    fi
    remove_berth_work
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------
prepare_berth "$berth_bin"

work=$(mktemp -d /var/tmp/berth-bench.XXXXXX)
runroot=$(make_runroot berth-bench)
mkdir -p "$work/data" "$runroot/state" "$runroot/runc" "$runroot/io"
io=$runroot/io # per-run stdout/stderr, on tmpfs

# berth and runc are timed from fresh copies in the work dir. How fast a
# program starts depends on how its page cache was filled: a file just
# written sits in large folios, while one evicted (memory pressure, the
# host's reclaim, drop_caches) and read back through exec's page faults
# sits in 4 KiB pages, each of which every run then maps and unmaps one by
# one (berth run: ~0.6 ms slower here, see the README's Performance). A
# copy puts both in the freshly installed state, whatever the machine did
# before. The floor's system binaries are used as they are.
mkdir -p "$work/bin"
install -m 0755 "$berth" "$work/bin/berth"
berth=$work/bin/berth
install -m 0755 "$(command -v runc)" "$work/bin/runc"
runc=$work/bin/runc

echo "==> busybox rootfs"
tarball=$work/busybox.tar.gz
mkdir -p "$work/bundle"
bash scripts/make-busybox-rootfs.sh --dir "$work/bundle/rootfs" "$tarball"

echo "==> berth: import"
berth_base=("$berth" --data-dir "$work/data")
# --state-dir is for the host agent (issue 3); `berth run` keeps its
# per-container files under the data dir and has no such flag yet.
if "$berth" --help 2>/dev/null | grep -q -e '--state-dir'; then
    berth_base+=(--state-dir "$runroot/state")
fi
"${berth_base[@]}" image import busybox "$tarball"
berth_cmd=("${berth_base[@]}" run --json --memory 64m --pids-limit 64 busybox true)

echo "==> runc: bundle"
(cd "$work/bundle" && "$runc" spec)
jq '.process.args = ["true"]
  | .process.terminal = false
  | .root.readonly = true
  | .linux.resources.memory = {"limit": 67108864}
  | .linux.resources.pids = {"limit": 64}' \
    "$work/bundle/config.json" >"$work/bundle/config.json.new"
mv "$work/bundle/config.json.new" "$work/bundle/config.json"
runc_cmd=("$runc" --root "$runroot/runc" run --bundle "$work/bundle")
floor_cmd=(unshare --pid --fork --mount --uts --ipc --net true)

# ---------------------------------------------------------------------------
# Docker: a daemon that already runs is used as is; otherwise Debian's
# docker.io is installed if needed and a private dockerd started, with its
# data, exec root and socket inside our scratch dirs.
docker_skip=""
start_docker() {
    if ((!want_docker)); then
        docker_skip="disabled by --no-docker"
        return
    fi
    if ! command -v dockerd >/dev/null 2>&1 && ! command -v docker >/dev/null 2>&1; then
        echo "docker not installed: trying Debian's docker.io"
        bash scripts/ensure-deps.sh --with-docker || true
    fi
    # Prefer the client that matches Debian's daemon; a newer client (e.g. a
    # static one in /usr/local/bin) works too, negotiating the API down.
    local cli
    if [[ -x /usr/bin/docker ]]; then cli=/usr/bin/docker; else cli=$(command -v docker || true); fi
    if [[ -z $cli ]]; then
        docker_skip="no docker client (apt-get install docker.io failed?)"
        return
    fi
    if "$cli" info >/dev/null 2>&1; then
        echo "using the running docker daemon"
        docker_cmd=("$cli")
        docker_owned=0
        docker_image="berth-bench-busybox:$$" # do not clobber its busybox
    elif ! command -v dockerd >/dev/null 2>&1; then
        docker_skip="no daemon running and no dockerd to start (docker client only)"
        return
    else
        # --bridge=none and --iptables=false: leave the host's interfaces and
        # firewall alone (the default docker0 bridge adds iptables rules and a
        # FORWARD DROP policy that outlive the daemon). Containers then get a
        # network namespace with only loopback, like berth's default, which
        # also keeps the comparison fair: with the bridge, docker run takes
        # ~2x longer here because of the veth setup.
        cgroups_before=()
        local cg
        for cg in /sys/fs/cgroup/*/docker /sys/fs/cgroup/docker; do
            [[ -d $cg ]] && cgroups_before+=("$cg")
        done
        [[ -e /run/docker ]] && had_run_docker=1
        [[ -e /etc/docker/key.json ]] && had_key_json=1
        mkdir -p "$work/docker"
        echo "starting a private dockerd (log: $work/docker/dockerd.log)"
        dockerd --data-root "$work/docker/root" \
            --exec-root "$runroot/docker-exec" \
            --pidfile "$runroot/docker.pid" \
            -H "unix://$runroot/docker.sock" \
            --bridge=none --iptables=false --ip-masq=false \
            --log-level=warn >"$work/docker/dockerd.log" 2>&1 </dev/null &
        dockerd_pid=$!
        docker_cmd=("$cli" -H "unix://$runroot/docker.sock")
        docker_owned=1
        docker_image=busybox:latest
        local i
        for ((i = 0; i < 300; i++)); do
            "${docker_cmd[@]}" info >/dev/null 2>&1 && break
            if ! kill -0 "$dockerd_pid" 2>/dev/null; then
                docker_skip="dockerd exited at start: $(tail -n 3 "$work/docker/dockerd.log" | tr '\n' ' ')"
                dockerd_pid=""
                return
            fi
            sleep 0.1
        done
        if ! "${docker_cmd[@]}" info >/dev/null 2>&1; then
            docker_skip="dockerd did not answer within 30 s"
            return
        fi
        echo "dockerd ready after $((i / 10)).$((i % 10)) s"
    fi
    if ! "${docker_cmd[@]}" import "$tarball" "$docker_image" >/dev/null; then
        docker_skip="docker import failed"
        return
    fi
}
# Leftovers from before us are not ours. Taken before dockerd starts: its
# own mounts live under our scratch dir, whose name mentions berth.
bash scripts/check-leaks.sh --quiet --data-dir "$work/data" --state-dir "$runroot/state" \
    --save-baseline "$work/leaks-before.txt"

echo "==> docker"
start_docker
if [[ -n $docker_skip ]]; then
    echo "DOCKER SKIPPED: $docker_skip"
fi

tools=(berth runc)
[[ -z $docker_skip ]] && tools+=(docker)
tools+=(floor)

# ---------------------------------------------------------------------------
# run_one TOOL SERIAL: run the tool once; set $elapsed_us. A failing run
# aborts the benchmark: timing a failure would measure the wrong thing.
elapsed_us=0
run_one() {
    local tool=$1 serial=$2 t0 t1 rc=0
    case $tool in
        berth)
            t0=$EPOCHREALTIME
            "${berth_cmd[@]}" >"$io/out" 2>"$io/err" </dev/null || rc=$?
            t1=$EPOCHREALTIME
            ;;
        runc)
            t0=$EPOCHREALTIME
            "${runc_cmd[@]}" "bb$$-$serial" >"$io/out" 2>"$io/err" </dev/null || rc=$?
            t1=$EPOCHREALTIME
            ;;
        docker)
            t0=$EPOCHREALTIME
            "${docker_cmd[@]}" run --rm --memory 64m --pids-limit 64 "$docker_image" true \
                >"$io/out" 2>"$io/err" </dev/null || rc=$?
            t1=$EPOCHREALTIME
            ;;
        floor)
            t0=$EPOCHREALTIME
            "${floor_cmd[@]}" >"$io/out" 2>"$io/err" </dev/null || rc=$?
            t1=$EPOCHREALTIME
            ;;
    esac
    if ((rc != 0)); then
        echo "$tool run $serial failed with exit code $rc; its output:" >&2
        cat "$io/out" "$io/err" >&2
        exit 1
    fi
    # "1700000000.123456" -> microseconds; 10# stops a leading 0 meaning octal
    elapsed_us=$((10#${t1/./} - 10#${t0/./}))
}

echo "==> warmup ($warmup per tool)"
serial=0
for ((i = 0; i < warmup; i++)); do
    for tool in "${tools[@]}"; do
        serial=$((serial + 1))
        run_one "$tool" "$serial"
    done
done

# Rounds of per-tool blocks: each tool runs a block of consecutive runs,
# then the machine settles before the next tool. Running the tools one run
# at a time interleaved made each pay for the previous one's background
# work (dockerd and containerd clean up after every container on the same
# two CPUs); rounds still spread slow drift of the machine over every tool.
rounds=5
modes=(b2b)
((idle_ms > 0)) && modes+=(idle)
declare -A mode_runs=([b2b]=$runs [idle]=$idle_runs)
declare -A mode_title=([b2b]="back-to-back" [idle]="after ${idle_ms} ms idle before each run")
# The after-idle wait: a read that times out on a FIFO nobody writes to,
# since forking `sleep` before every run would be activity of its own.
idle_s=$(printf '%d.%03d' $((idle_ms / 1000)) $((idle_ms % 1000)))
mkfifo "$runroot/idle"
exec {idle_fd}<>"$runroot/idle"
idle_wait() { read -r -t "$idle_s" -u "$idle_fd" _ || true; }
# The hypervisor's steal time (/proc/stat: a vCPU wanted to run and the host
# ran something else) during each tool's blocks: this VM's noise comes and
# goes with the host's load, and this says which tool's runs it hit.
declare -A steal_ticks=() all_ticks=() total_s=()
cpu_ticks() { awk '/^cpu / { print $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9; exit }' /proc/stat; }
k=${#tools[@]}
for mode in "${modes[@]}"; do
    n=${mode_runs[$mode]}
    per_block=$(((n + rounds - 1) / rounds))
    echo "==> ${mode_title[$mode]}: timing $n runs per tool in $rounds rounds of blocks: ${tools[*]}"
    for tool in "${tools[@]}"; do : >"$work/times.$mode.$tool"; done
    : >"$work/berth.$mode.jsonl"
    start_all=$EPOCHREALTIME
    done_runs=0
    for ((round = 0; round < rounds && done_runs < n; round++)); do
        block=$((n - done_runs < per_block ? n - done_runs : per_block))
        for ((j = 0; j < k; j++)); do
            tool=${tools[$(((round + j) % k))]}
            sync
            sleep 1
            read -r steal0 ticks0 < <(cpu_ticks)
            for ((i = 0; i < block; i++)); do
                serial=$((serial + 1))
                [[ $mode == idle ]] && idle_wait
                run_one "$tool" "$serial"
                echo "$elapsed_us" >>"$work/times.$mode.$tool"
                if [[ $tool == berth ]]; then
                    # --json prints its line last on stdout; without it this
                    # is not the berth the benchmark was written for.
                    line=$(tail -n 1 "$io/out")
                    if [[ $line != "{"*'"exit_code"'* ]]; then
                        echo "berth run --json printed no result line; stdout ends with: $line" >&2
                        exit 1
                    fi
                    echo "$line" >>"$work/berth.$mode.jsonl"
                fi
            done
            read -r steal1 ticks1 < <(cpu_ticks)
            steal_ticks[$mode.$tool]=$((${steal_ticks[$mode.$tool]:-0} + steal1 - steal0))
            all_ticks[$mode.$tool]=$((${all_ticks[$mode.$tool]:-0} + ticks1 - ticks0))
        done
        done_runs=$((done_runs + block))
        echo "  $done_runs/$n"
    done
    total_s[$mode]=$(((10#${EPOCHREALTIME/./} - 10#${start_all/./}) / 1000000))
done
exec {idle_fd}<&-

# ---------------------------------------------------------------------------
# stats FILE (one number per line, microseconds) -> "median p90 mean min max"
# in milliseconds. p90 is the nearest-rank 90th percentile.
stats() {
    sort -n "$1" | awk '
        { v[NR] = $1; sum += $1 }
        END {
            if (NR == 0) { print "nan nan nan nan nan"; exit }
            med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            r = int(0.9 * NR); if (r < 0.9 * NR) r++; if (r < 1) r = 1
            printf "%.2f %.2f %.2f %.2f %.2f\n", med / 1000, v[r] / 1000, sum / NR / 1000, v[1] / 1000, v[NR] / 1000
        }'
}
declare -A median=()
echo
echo "== machine"
echo "kernel:   $(uname -r) ($(uname -m))"
echo "cpus:     $(nproc) x $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
echo "memory:   $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
    cgmode="v2 (unified)"
elif [[ -f /sys/fs/cgroup/unified/cgroup.controllers ]]; then
    cgmode="v1 + v2 hybrid (v2 controllers: $(cat /sys/fs/cgroup/unified/cgroup.controllers))"
else
    cgmode="v1"
fi
# favordynmods changes the after-idle figures of cgroup moves: say whether
# this host has it on any cgroup mount.
# (mountinfo: ... - FSTYPE SOURCE SUPER_OPTIONS)
if awk '{ split(substr($0, index($0, " - ") + 3), f, " ") }
        f[1] ~ /^cgroup/ && ("," f[3] ",") ~ /,favordynmods,/ { found = 1 }
        END { exit !found }' /proc/self/mountinfo; then
    cgmode+=", favordynmods on"
else
    cgmode+=", no favordynmods (a default host)"
fi
echo "cgroups:  $cgmode"
echo "fs:       $(findmnt -n -o FSTYPE -T "$work" 2>/dev/null || stat -f -c %T "$work") for the data dir and bundle ($work)"
echo "runc:     $("$runc" --version | head -n 1)"
if [[ -z $docker_skip ]]; then
    echo "docker:   server $("${docker_cmd[@]}" version -f '{{.Server.Version}}' 2>/dev/null || echo '?')"
fi
for mode in "${modes[@]}"; do
    echo "runs:     ${mode_title[$mode]}: ${mode_runs[$mode]} per tool, in rounds of blocks, ${total_s[$mode]}s"
done
echo "warmup:   $warmup per tool, untimed"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
for mode in "${modes[@]}"; do
    echo
    echo "== results, ${mode_title[$mode]} (ms, fork to exit of the whole command)"
    printf '%-8s %9s %9s %9s %9s %9s\n' tool median p90 mean min max
    for tool in "${tools[@]}"; do
        read -r med p90 mean min max < <(stats "$work/times.$mode.$tool")
        median[$mode.$tool]=$med
        printf '%-8s %9s %9s %9s %9s %9s\n' "$tool" "$med" "$p90" "$mean" "$min" "$max"
    done
    if [[ -n $docker_skip ]]; then
        printf '%-8s skipped: %s\n' docker "$docker_skip"
    fi
    echo
    echo "runc/berth median ratio:   $(ratio "${median[$mode.runc]}" "${median[$mode.berth]}")  (>1: berth is faster)"
    if [[ -z $docker_skip ]]; then
        echo "docker/berth median ratio: $(ratio "${median[$mode.docker]}" "${median[$mode.berth]}")"
    fi
    echo "berth - floor median:      $(awk -v a="${median[$mode.berth]}" -v b="${median[$mode.floor]}" 'BEGIN { printf "%.2f ms", a - b }')"
    printf 'host steal during blocks:  '
    for tool in "${tools[@]}"; do
        printf '%s %s%%  ' "$tool" "$(awk -v s="${steal_ticks[$mode.$tool]:-0}" -v t="${all_ticks[$mode.$tool]:-0}" \
            'BEGIN { if (t > 0) printf "%.1f", 100 * s / t; else print "?" }')"
    done
    echo "(of the VM's CPU time; above a few % the figures are the host's)"

    # berth's own view of each run, from its --json line.
    for field in teardown_ms wall_time_ms; do
        if jq -r ".$field // empty" "$work/berth.$mode.jsonl" >"$work/$field" 2>/dev/null && [[ -s $work/$field ]]; then
            # stats works in microseconds; these are milliseconds already
            awk '{ print $1 * 1000 }' "$work/$field" >"$work/$field.us"
            read -r med p90 _ < <(stats "$work/$field.us")
            echo "berth $field (from --json): median $med, p90 $p90"
        else
            echo "berth $field: not found in the --json output"
        fi
    done
done

echo
echo "== goal: berth median <= 5 ms and >= 5x faster than runc, in every mode"
for mode in "${modes[@]}"; do
    b=${median[$mode.berth]} r=${median[$mode.runc]}
    verdict=$(awk -v b="$b" -v r="$r" 'BEGIN {
        time = (b <= 5.0); speed = (b > 0 && r / b >= 5.0)
        if (time && speed) print "met"
        else if (!time && !speed) print "missed (time and ratio)"
        else if (!time) print "missed (time)"
        else print "missed (ratio)"
    }')
    printf '%-52s berth %s ms, %sx runc: %s\n' "${mode_title[$mode]}:" "$b" "$(ratio "$r" "$b")" "$verdict"
done

if [[ -n $save_dir ]]; then
    mkdir -p "$save_dir"
    for mode in "${modes[@]}"; do
        for tool in "${tools[@]}"; do cp "$work/times.$mode.$tool" "$save_dir/times-$mode-$tool.us"; done
        cp "$work/berth.$mode.jsonl" "$save_dir/berth-runs-$mode.jsonl"
    done
    echo "raw results saved in $save_dir"
fi

# The runs must have cleaned up after themselves: check before our own
# cleanup hides anything (not fatal here; bench/churn.sh is the real test).
stop_docker
echo
bash scripts/check-leaks.sh --data-dir "$work/data" --state-dir "$runroot/state" \
    --baseline "$work/leaks-before.txt" ||
    echo "WARNING: berth runs left things behind (see above)"
