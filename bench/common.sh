# shellcheck shell=bash
# Shared by bench/startup.sh and bench/churn.sh (sourced, not run).

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
        [[ -n $d && -d $d ]] || continue
        unmount_below "$d"
        rm -rf --one-file-system "$d"
    done
}

# cargo may be installed by rustup without being on PATH yet.
if ! command -v cargo >/dev/null 2>&1 && [[ -f "$HOME/.cargo/env" ]]; then
    # shellcheck disable=SC1091
    source "$HOME/.cargo/env"
fi
