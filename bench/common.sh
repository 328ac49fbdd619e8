# shellcheck shell=bash
# Shared by the bench scripts (sourced, not run).

# unmount_below DIR: lazily unmount every mount at or below DIR, deepest first,
# so that the rm -rf that follows can never reach into a mounted filesystem.
unmount_below() {
    local dir=$1 mp
    [[ -n $dir ]] || return 0
    awk -v d="$dir" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/mounts |
        sort -r | while IFS= read -r mp; do umount -l "$mp" 2>/dev/null || true; done
}

# prepare_berth [BINARY]: installs dependencies and sets $berth to BINARY, or
# to a fresh static release build (scripts/build.sh) when none is given.
prepare_berth() {
    echo "==> dependencies and build"
    bash scripts/ensure-deps.sh
    if [[ -n ${1:-} ]]; then
        berth=$(realpath "$1")
    else
        bash scripts/build.sh
        berth="$PWD/target/dist/berth" # the scripts cd to the repository first
    fi
    [[ -x $berth ]] || { echo "no berth binary at $berth" >&2; exit 1; }
}

# remove_berth_work: what both benchmarks do on exit, success or not. Runs
# `berth gc` on the private data dir (berth_base), then unmounts and removes
# the work dirs ($work, $runroot). Never deletes through a mount.
# shellcheck disable=SC2154 # berth_base is set by the sourcing script
remove_berth_work() {
    if ((${#berth_base[@]} > 0)); then
        # Leftovers of a failed run; berth gc only touches its own data dir.
        "${berth_base[@]}" gc >/dev/null 2>&1
    fi
    local d
    for d in "${work:-}" "${runroot:-}"; do
        remove_tree "$d"
    done
}

# make_runroot NAME: prints a new directory under /run with a private tmpfs
# on it, for runtime state and per-run output. /run is a tmpfs on a usual
# host, but not on every machine (this project's VMs have it on the root
# ext4, where truncating the previous run's output alone cost a tool that
# prints something ~0.14 ms a run, and runc's state files cost runc more).
# remove_tree unmounts it.
make_runroot() {
    local dir
    dir=$(mktemp -d "/run/$1.XXXXXX") || return 1
    if ! mount -t tmpfs -o mode=0700,size=256m "$1" "$dir"; then
        rmdir "$dir"
        return 1
    fi
    echo "$dir"
}

# remove_tree DIR: unmounts everything at or below DIR, then removes it
# (never through a mount). Nothing to do for an empty or missing DIR.
remove_tree() {
    [[ -n ${1:-} && -d $1 ]] || return 0
    unmount_below "$1"
    rm -rf --one-file-system "$1"
}

# cargo may be installed by rustup without being on PATH yet.
if ! command -v cargo >/dev/null 2>&1 && [[ -f "$HOME/.cargo/env" ]]; then
    # shellcheck disable=SC1091
    source "$HOME/.cargo/env"
fi

# The process and cgroup checks of the scripts that run a long-lived berth
# (agent.sh, tasks.sh). They read $work (the scratch dir) and
# $cgroup_parent, which the sourcing script sets.

# alive PID: true while PID runs (a zombie waiting for its reaper does not
# count: an orphaned agent is reaped by init only a moment later).
alive() {
    local stat state
    read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
    state=${stat##*) }
    state=${state%% *}
    [[ -n $state && $state != Z && $state != X ]]
}

# wait_gone SECONDS PID...: until none of the PIDs is alive; false on timeout.
wait_gone() {
    local limit=$1 i p any
    shift
    for ((i = 0; i < limit * 10; i++)); do
        any=0
        for p in "$@"; do
            if alive "$p"; then any=1; break; fi
        done
        ((any)) || return 0
        sleep 0.1
    done
    return 1
}

# our_processes: pids of live processes whose command line names the scratch
# dir (agents, berth up and shims: --data-dir, the shim's --dir).
our_processes() {
    local f pid files
    [[ -n $work ]] || return 0
    # One grep over every command line (NUL-separated arguments; -a reads
    # them as text). The list is taken here, before grep is spawned: grep,
    # whose own arguments name the dir, is never in it.
    files=(/proc/[0-9]*/cmdline)
    while IFS= read -r f; do
        pid=${f#/proc/}
        pid=${pid%/cmdline}
        ((pid == $$ || pid == BASHPID)) && continue
        alive "$pid" && echo "$pid"
    done < <(grep -laF -- "$work/" "${files[@]}" 2>/dev/null)
    return 0
}

# shellcheck disable=SC2154 # cgroup_parent: set by the sourcing script
cgroup_dirs() {
    local d
    for d in /sys/fs/cgroup/*/"$cgroup_parent" /sys/fs/cgroup/"$cgroup_parent"; do
        [[ -d $d ]] && echo "$d"
    done
    return 0
}

# stop_gracefully PID SECONDS NAME: SIGTERM, then SIGKILL if PID is still
# alive after SECONDS (saying so on stderr). Never fails.
stop_gracefully() {
    local pid=$1 grace=$2 name=$3
    alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$grace" "$pid"; then
        echo "$name ($pid) did not stop within $grace s of SIGTERM; SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone 5 "$pid" || true
    fi
}

# stop_leftover_processes: SIGTERM every process still naming the scratch dir
# (a shim stops its container and records it), SIGKILL what is alive 30 s on.
stop_leftover_processes() {
    local pids p
    mapfile -t pids < <(our_processes)
    ((${#pids[@]} > 0)) || return 0
    echo "cleanup: stopping ${#pids[@]} leftover processes with SIGTERM" >&2
    kill -TERM "${pids[@]}" 2>/dev/null || true
    if ! wait_gone 30 "${pids[@]}"; then
        for p in "${pids[@]}"; do
            alive "$p" && kill -KILL "$p" 2>/dev/null
        done
        wait_gone 5 "${pids[@]}" || true
    fi
}

# gc_leftovers: what the runtime may have left (container dirs, cgroups of
# killed containers) through `berth gc` on the private data dir, then our own
# cgroup parents (rmdir: empty ones only). Reads $berth, $data, $cgroup_parent.
# shellcheck disable=SC2154 # berth, data: set by the sourcing script
gc_leftovers() {
    local d
    if [[ -n $berth && -n $data && -d $data ]]; then
        "$berth" --data-dir "$data" --cgroup-parent "$cgroup_parent" gc >/dev/null 2>&1 || true
    fi
    while IFS= read -r d; do
        find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done < <(cgroup_dirs)
}

# verify_clean WHAT PID...: sets $leftovers to what is still there ("" when
# nothing): processes naming the scratch dir, which of the PIDs (the WHAT,
# e.g. "berth up processes") still run, cgroups under our parent, mounts
# under the scratch dir and the dir itself.
verify_clean() {
    local label=$1 what=() p n=0
    shift
    mapfile -t p < <(our_processes)
    ((${#p[@]} == 0)) || what+=("${#p[@]} processes naming $work: ${p[*]}")
    for p in "$@"; do
        alive "$p" && n=$((n + 1))
    done
    ((n == 0)) || what+=("$n $label still alive")
    mapfile -t p < <(cgroup_dirs)
    ((${#p[@]} == 0)) || what+=("cgroups: ${p[*]}")
    if [[ -n $work ]]; then
        n=$(awk -v d="$work" '$2 == d || index($2, d "/") == 1' /proc/mounts | wc -l)
        ((n == 0)) || what+=("$n mounts under $work")
        [[ ! -e $work ]] || what+=("$work still exists")
    fi
    leftovers=$(printf '%s; ' "${what[@]}")
    leftovers=${leftovers%; }
}
