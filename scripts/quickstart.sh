#!/usr/bin/env bash
# The single-quoted commands below are expanded by the container's shell.
# shellcheck disable=SC2016
# berth's main job on its embedded defaults, from a fresh Debian machine:
# install what is missing, build berth, make a small busybox stack, import
# it, run containers in it and show what they did.
#
# Uses the default data dir (/var/lib/berth, or $BERTH_DATA_DIR). Run as root.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }

say "system packages"
bash scripts/ensure-deps.sh

say "building berth (static release binary)"
bash scripts/build.sh
berth="$repo/target/dist/berth"

say "making the busybox stack"
stack="$repo/target/test-assets/busybox.tar.gz"
mkdir -p "$(dirname "$stack")"
bash scripts/make-busybox-rootfs.sh "$stack"

say "importing it"
show "$berth" image import busybox "$stack"
show "$berth" image ls

say "a container: its own pids, hostname, network and files"
show "$berth" run busybox sh -c 'echo "pid $$ on $(hostname)"; ps; ls /sys/class/net; id'

say "limits are enforced, and the result says so"
show "$berth" run --json --memory 16m busybox sh -c 'dd if=/dev/zero of=/dev/null bs=64M count=1' || true
show "$berth" run --json --timeout 300ms busybox sleep 10 || true
show "$berth" run --json --pids-limit 8 busybox sh -c 'for i in 1 2 3 4 5 6 7 8 9 10; do sleep 1 & done; echo forked what it could' || true
show "$berth" run busybox sh -c 'exit 42' || echo "exit code: $?"

say "100 containers, one after another"
start=$(date +%s%N)
for _ in $(seq 100); do "$berth" run busybox true; done
end=$(date +%s%N)
echo "100 containers in $(((end - start) / 1000000)) ms"

say "nothing left behind"
show "$berth" gc
