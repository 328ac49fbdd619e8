#!/usr/bin/env bash
# The single-quoted commands below are expanded by the container's shell.
# shellcheck disable=SC2016
# berth's main job on its embedded defaults, from a fresh Debian machine:
# install what is missing, build berth, start `berth up` (the task API, a
# local agent, SQLite and a default busybox stack it makes itself) in the
# background, push a classic shell-script package, queue tasks, and show
# their results and logs. berth up keeps running afterwards, with the CLI
# configured to use it.
#
# Uses the default data dir (/var/lib/berth, or $BERTH_DATA_DIR) and
# 127.0.0.1:8380 (or $BERTH_LISTEN). Run as root.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }

say "system packages"
bash scripts/ensure-deps.sh

say "building berth (static release binaries: berth, berthd, berth-shim)"
bash scripts/build.sh
# berth runs `berth up` as berthd, found next to it.
berth="$repo/target/dist/berth"

say "berth up: the task API, a local agent, SQLite and a default stack, in one process (berthd)"
data_dir=${BERTH_DATA_DIR:-/var/lib/berth}
listen=${BERTH_LISTEN:-127.0.0.1:8380}
mkdir -p "$data_dir"
log="$data_dir/up.log"
if (exec 3<>"/dev/tcp/${listen%:*}/${listen##*:}") 2>/dev/null; then
    echo "something already answers on $listen: using it (a berth up from an earlier run?)"
    up_pid=""
else
    setsid "$berth" up --listen "$listen" >"$log" 2>&1 </dev/null &
    up_pid=$!
    for _ in $(seq 200); do
        grep -q "berth is up" "$log" 2>/dev/null && break
        kill -0 "$up_pid" 2>/dev/null || { cat "$log"; echo "berth up failed" >&2; exit 1; }
        sleep 0.05
    done
    cat "$log"
fi

say "a classic IronWorker package: a shell script that reads its payload and config"
pkg=$(mktemp -d)
trap 'rm -rf "$pkg"' EXIT
cat >"$pkg/hello.sh" <<'SCRIPT'
echo "hello from task $TASK_ID, running in $(pwd) on $(hostname)"
echo "payload: $(cat "$PAYLOAD_FILE")"
echo "config:  $(cat "$CONFIG_FILE")"
echo "my arguments: $*"
SCRIPT
show "$berth" code push hello --runtime sh --file hello.sh --dir "$pkg" --config '{"greeting":"ahoy"}'

say "one task, waited for, and its log"
id=$("$berth" task queue hello --payload '{"name":"berth"}' --wait --json | sed -n 's/.*"id":"\([0-9a-f]*\)".*/\1/p' | head -1)
show "$berth" task show "$id"
show "$berth" task log "$id"

say "200 tasks, each in its own fresh container"
start=$(date +%s%N)
show "$berth" task queue hello --payload '{"name":"many"}' --count 200 --wait
end=$(date +%s%N)
echo "200 tasks queued, run and recorded in $(((end - start) / 1000000)) ms"
show "$berth" code stats hello
show "$berth" task ls --code hello --per-page 5

say "done"
if [[ -n $up_pid ]]; then
    echo "berth up keeps running (pid $up_pid, log $log); the berth CLI is configured to use it."
    echo "Stop it with: kill $up_pid"
fi
