#!/usr/bin/env bash
# Soak tests and store throughput: the long runs kept out of every
# `cargo test` (scripts/test.sh), run here on demand.
#
# Usage: bench/soak.sh
#
#   1. ten_thousand_tasks_survive_a_server_crash (crates/berth/tests/tasks.rs):
#      10,000 tasks through `berth up` while the server is killed with
#      SIGKILL and restarted; every task must end exactly once, complete
#   2. the store's dispatcher cycle and queueing rates on SQLite and
#      PostgreSQL (crates/berth-store/benches/dispatcher_cycle.rs)
#
# Needs root (real containers) and what scripts/test.sh sets up: the busybox
# test image and PostgreSQL, which this script prepares the same way.
set -euo pipefail
export HOME=${HOME:-/root}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
if ! command -v cargo >/dev/null 2>&1; then
    # shellcheck disable=SC1091
    [[ -f "$HOME/.cargo/env" ]] && source "$HOME/.cargo/env"
fi
bash scripts/ensure-deps.sh >/dev/null
busybox_tar="$repo/target/test-assets/busybox.tar.gz"
[[ -s $busybox_tar ]] || bash scripts/make-busybox-rootfs.sh "$busybox_tar"
export BERTH_TEST_BUSYBOX_TAR="$busybox_tar"
BERTH_TEST_POSTGRES_URL=$(bash scripts/postgres.sh)
export BERTH_TEST_POSTGRES_URL

echo "==> soak: 10,000 tasks across a server crash"
cargo test -p berth --test tasks -- --ignored --exact \
    ten_thousand_tasks_survive_a_server_crash --nocapture
echo "==> store: dispatcher cycle and queueing rates"
cargo bench -p berth-store --bench dispatcher_cycle
