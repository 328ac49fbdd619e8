#!/usr/bin/env bash
# Checks the shipped binaries of scripts/build.sh, which the test suite
# (built by cargo, dynamic, glibc) does not run: builds them, then
#   - runs a container with target/dist/berth (the musl build when the
#     toolchain allows) and checks its result and that nothing is left;
#   - checks that target/dist/berth links no server, store or agent code
#     (their symbols are in berthd and not in berth), and that it hands the
#     daemons' commands to target/dist/berthd (crates/berth/src/daemon.rs).
#
# Usage: scripts/check-dist.sh BUSYBOX_TARBALL   (as root)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
tarball=${1:?usage: scripts/check-dist.sh BUSYBOX_TARBALL}

bash scripts/build.sh
berth=$repo/target/dist/berth
scratch=$(mktemp -d /var/tmp/berth-check-dist.XXXXXX)
cgroup_parent=berth-check-dist-$$
base=("$berth" --data-dir "$scratch/data" --cgroup-parent "$cgroup_parent")
cleanup() {
    "${base[@]}" gc >/dev/null 2>&1 || true
    rm -rf "$scratch"
}
trap cleanup EXIT
fail() {
    echo "check-dist: $*" >&2
    exit 1
}

"${base[@]}" image import busybox "$tarball" >/dev/null
result=$("${base[@]}" run --json --memory 64m --pids-limit 64 busybox sh -c 'exit 3') && code=0 || code=$?
[[ $code == 3 ]] || fail "berth run exited $code, expected the container's 3: $result"
jq -e '.exit_code == 3 and .teardown_ms >= 0' <<<"$result" >/dev/null ||
    fail "unexpected result: $result"
out=$("${base[@]}" run busybox sh -c 'ls /sys/class/net; grep Cpus_allowed_list /proc/self/status')
[[ $out == *lo*Cpus_allowed_list:*$(grep Cpus_allowed_list /proc/self/status | cut -f2) ]] ||
    fail "unexpected container view: $out"
left=$(find "$scratch/data/containers" -mindepth 1 2>/dev/null | wc -l)
[[ $left == 0 ]] || fail "$left container files left"
for hierarchy in /sys/fs/cgroup/*/"$cgroup_parent"; do
    [[ -d $hierarchy ]] || continue
    [[ -z $(find "$hierarchy" -mindepth 1 -type d) ]] || fail "cgroups left under $hierarchy"
    rmdir "$hierarchy"
done
echo "check-dist: target/dist/berth ran containers and left nothing"

berthd=$repo/target/dist/berthd
[[ -x $berthd ]] || fail "no target/dist/berthd"
# Mangled symbol names (not stripped): <length><crate name>.
for crate in 12berth_server 11berth_store 11berth_agent; do
    grep -qa "$crate" "$berthd" || fail "berthd has no $crate symbols: this check cannot see them"
    ! grep -qa "$crate" "$berth" || fail "target/dist/berth links ${crate#??} code"
done
echo "check-dist: target/dist/berth links no server, store or agent code"
err=$("$berth" --data-dir "$scratch/data" server --database bogus:// 2>&1) && fail "server accepted a bogus database"
[[ $err == *"unsupported database URL"* ]] || fail "berthd did not run the server: $err"
help=$("$berth" up --help) || fail "berth up --help failed"
[[ $help == *"--state-on-disk"* ]] || fail "berth up --help is not berthd's: $help"
echo "check-dist: target/dist/berth hands the daemons' commands to target/dist/berthd"
