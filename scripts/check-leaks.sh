#!/usr/bin/env bash
# Count what berth runs left behind, print it, and exit 1 if anything is left.
#
# Usage: scripts/check-leaks.sh [--data-dir DIR] [--state-dir DIR] [--quiet]
#                               [--cgroup-parent NAME]
#                               [--save-baseline FILE | --baseline FILE]
#
#   --save-baseline FILE  record what is there now (and exit 0): run it before
#                         a test suite...
#   --baseline FILE       ...and after it with this, to count only what is new.
#                         cgroups and named netns outlive the processes that
#                         made them, so without a baseline one crashed run
#                         long ago would fail every later check on the machine.
#
# The directories default like berth's own: $BERTH_DATA_DIR or
# /var/lib/berth, $BERTH_STATE_DIR or /run/berth, and the cgroup parent
# $BERTH_CGROUP_PARENT or "berth".
#
# Checked (each is a way a crashed or buggy teardown shows up):
#   mounts       lines of /proc/mounts mentioning "berth", the data dir or the
#                state dir (overlay rootfs, bind mounts, /proc of a container)
#   cgroups      cgroup directories below any directory named like the cgroup
#                parent ("berth"), or named berth-*/berth_*, anywhere under
#                /sys/fs/cgroup (covers
#                cgroup v1 controllers, the hybrid "unified" v2 mount, pure v2,
#                and berth cgroups nested under the caller's own cgroup)
#   state        entries in STATE_DIR/containers
#   data         entries in DATA_DIR/containers
#   processes    processes whose program is berth* (the CLI, its helpers,
#                test binaries), whose command line names the data or state
#                dir, or that sit in a berth cgroup (container processes:
#                their own command line says nothing about berth)
#   netns        named network namespaces (`ip netns list`)
#   links        network links berth names: container veths (bv…), user
#                network bridges (br-<12 hex>), the default bridge (berth0)
#                and tests' own bridges (bt…)
#   nftables     nf_tables tables named like berth's bridges (berth0, bt…),
#                when `nft` is installed
#
# Processes are matched on the program name rather than "cmdline contains
# berth" because rustc, cargo and editors working on the berth repository
# mention berth in their arguments without being leaks. This script, its
# ancestors (e.g. churn.sh, test.sh) and its children are never counted.
#
# Exit: 0 nothing left, 1 leftovers found, 2 usage error.
set -euo pipefail

data_dir=${BERTH_DATA_DIR:-/var/lib/berth}
state_dir=${BERTH_STATE_DIR:-/run/berth}
cgroup_parent=${BERTH_CGROUP_PARENT:-berth}
quiet=0
save_baseline=""
baseline=""
while (($#)); do
    case "$1" in
        --data-dir) data_dir=${2:?--data-dir needs a value}; shift 2 ;;
        --data-dir=*) data_dir=${1#*=}; shift ;;
        --state-dir) state_dir=${2:?--state-dir needs a value}; shift 2 ;;
        --state-dir=*) state_dir=${1#*=}; shift ;;
        --cgroup-parent) cgroup_parent=${2:?--cgroup-parent needs a value}; shift 2 ;;
        --cgroup-parent=*) cgroup_parent=${1#*=}; shift ;;
        --quiet | -q) quiet=1; shift ;;
        --save-baseline) save_baseline=${2:?--save-baseline needs a file}; shift 2 ;;
        --baseline) baseline=${2:?--baseline needs a file}; shift 2 ;;
        -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
        *) echo "check-leaks: unknown argument: $1" >&2; exit 2 ;;
    esac
done
# Canonical paths, so "/var/tmp/x/" and "/var/tmp/x" match the same mounts.
data_dir=$(realpath -m -- "$data_dir")
state_dir=$(realpath -m -- "$state_dir")

# Items of the baseline, keyed "category<TAB>item". Processes are keyed by
# pid and command line, so a new process reusing an old pid still counts.
declare -A known=()
if [[ -n $baseline ]]; then
    if [[ -f $baseline ]]; then
        while IFS= read -r l; do known[$l]=1; done <"$baseline"
    else
        echo "check-leaks: baseline $baseline not found; counting everything" >&2
    fi
fi
if [[ -n $save_baseline ]]; then
    : >"$save_baseline"
fi

total=0
ignored=0
# report CATEGORY ITEM...: drop baseline items, print up to 20 of the rest,
# count them all.
report() {
    local what=$1
    shift
    local item kept=()
    for item in "$@"; do
        [[ -n $save_baseline ]] && printf '%s\t%s\n' "$what" "$item" >>"$save_baseline"
        if [[ -n ${known["$what"$'\t'"$item"]:-} ]]; then
            ignored=$((ignored + 1))
            continue
        fi
        kept+=("$item")
    done
    local n=${#kept[@]}
    total=$((total + n))
    if ((n == 0)); then
        ((quiet)) || printf '  %-10s 0\n' "$what"
        return
    fi
    printf '  %-10s %d LEFT\n' "$what" "$n"
    local shown=0
    for item in "${kept[@]}"; do
        if ((shown == 20)); then
            echo "      ... and $((n - 20)) more"
            break
        fi
        echo "      $item"
        shown=$((shown + 1))
    done
}

((quiet)) || echo "leak check (data dir $data_dir, state dir $state_dir):"

# --- mounts ---------------------------------------------------------------
# /proc/mounts escapes spaces as \040; the paths we compare with have none
# in practice, and a false negative is impossible for the "berth" match.
mounts=()
while IFS= read -r line; do
    case "$line" in
        *berth* | *" $data_dir"[/\ ]* | *" $state_dir"[/\ ]*) mounts+=("$line") ;;
    esac
done </proc/mounts
report mounts "${mounts[@]+"${mounts[@]}"}"

# --- cgroups --------------------------------------------------------------
# Parent directories named like the cgroup parent may stay (berth keeps them
# as the root of its hierarchy); anything below them, or any cgroup named
# berth-<x>/berth_<x> elsewhere (per-container or per-test parents), is a
# leak. -maxdepth bounds the walk on machines with deep systemd trees.
cgroups=()
if [[ -d /sys/fs/cgroup ]]; then
    while IFS= read -r dir; do
        [[ $(basename "$dir") == "$cgroup_parent" ]] && continue
        cgroups+=("$dir")
    done < <(find /sys/fs/cgroup -mindepth 1 -maxdepth 10 -type d \
        \( -path "*/$cgroup_parent/*" -o -path '*/berth/*' \
        -o -name 'berth-*' -o -name 'berth_*' \) 2>/dev/null | LC_ALL=C sort)
fi
report cgroups "${cgroups[@]+"${cgroups[@]}"}"

# --- state and data dir containers ----------------------------------------
list_entries() {
    [[ -d $1 ]] || return 0
    find "$1" -mindepth 1 -maxdepth 1 -printf '%p\n' 2>/dev/null | LC_ALL=C sort
}
state_left=()
while IFS= read -r e; do state_left+=("$e"); done < <(list_entries "$state_dir/containers")
report state "${state_left[@]+"${state_left[@]}"}"
data_left=()
while IFS= read -r e; do data_left+=("$e"); done < <(list_entries "$data_dir/containers")
report data "${data_left[@]+"${data_left[@]}"}"

# --- processes ------------------------------------------------------------
# Build the pid -> ppid map once from /proc/*/stat. The comm field is in
# parentheses and may contain spaces, so cut everything up to the last ")".
declare -A ppid_of=()
for stat in /proc/[0-9]*/stat; do
    # Builtins only (no fork per process): this loop sees every process on
    # the machine. A process may exit between the glob and the read.
    { read -r s <"$stat"; } 2>/dev/null || continue
    pid=${stat#/proc/}
    pid=${pid%/stat}
    rest=${s##*) }
    read -r _state ppid _ <<<"$rest"
    ppid_of[$pid]=$ppid
done
# Our own ancestors (who started us) and our own process tree are exempt.
declare -A exempt=()
p=$$
while [[ -n $p && $p != 0 ]]; do
    exempt[$p]=1
    p=${ppid_of[$p]:-}
done
is_ours() { # pid -> true if $$ is among its ancestors
    local q=$1 hops=0
    while [[ -n $q && $q != 0 && $hops -lt 64 ]]; do
        [[ $q == "$$" ]] && return 0
        q=${ppid_of[$q]:-}
        hops=$((hops + 1))
    done
    return 1
}
in_berth_cgroup() { # pid -> true if any of its cgroup paths is berth's
    local lines line path
    { mapfile -t lines <"/proc/$1/cgroup"; } 2>/dev/null || return 1
    for line in "${lines[@]}"; do
        path=${line#*:}  # "hierarchy-id:controllers:path"
        path=${path#*:}
        case "$path/" in
            */berth/* | */berth-* | */berth_* | */"$cgroup_parent"/*) return 0 ;;
        esac
    done
    return 1
}
procs=()
for pid in "${!ppid_of[@]}"; do
    [[ -n ${exempt[$pid]:-} ]] && continue
    is_ours "$pid" && continue
    # Kernel threads have an empty cmdline; reading fails if the process
    # exited meanwhile. Either way there is nothing to report.
    { mapfile -d '' -t args <"/proc/$pid/cmdline"; } 2>/dev/null || continue
    ((${#args[@]} > 0)) || continue
    cmd="${args[*]}"
    prog=${args[0]##*/}
    why=""
    if [[ $prog == berth* ]]; then
        why="program"
    elif [[ $cmd == *"$data_dir"* || $cmd == *"$state_dir"* ]]; then
        why="names data/state dir"
    elif in_berth_cgroup "$pid"; then
        why="in berth cgroup"
    fi
    [[ -n $why ]] && procs+=("pid $pid ($why): ${cmd:0:160}")
done
report processes "${procs[@]+"${procs[@]}"}"

# --- named network namespaces ---------------------------------------------
netns=()
if command -v ip >/dev/null 2>&1; then
    while IFS= read -r ns; do
        [[ -n $ns ]] && netns+=("$ns")
    done < <(ip netns list 2>/dev/null || true)
fi
report netns "${netns[@]+"${netns[@]}"}"

# --- network links and nf_tables tables -----------------------------------
is_berth_name() {
    [[ $1 == bv* || $1 == berth0 || $1 =~ ^br-[0-9a-f]{12}$ || $1 =~ ^bt[0-9a-f]{8,10}$ ]]
}
links=()
if [[ -d /sys/class/net ]]; then
    for dev in /sys/class/net/*; do
        name=${dev##*/}
        is_berth_name "$name" && links+=("$name")
    done
fi
report links "${links[@]+"${links[@]}"}"
tables=()
if command -v nft >/dev/null 2>&1; then
    while read -r _ family name; do
        is_berth_name "$name" && tables+=("$family $name")
    done < <(nft list tables 2>/dev/null || true)
fi
report nftables "${tables[@]+"${tables[@]}"}"

if ((ignored > 0)); then
    echo "  ($ignored item(s) already there in the baseline, not counted)"
fi
if [[ -n $save_baseline ]]; then
    ((total == 0)) || echo "check-leaks: baseline saved with $total item(s) already left over" >&2
    exit 0
fi
if ((total > 0)); then
    echo "leak check: $total leftover(s) found" >&2
    exit 1
fi
((quiet)) || echo "leak check: nothing left"
exit 0
