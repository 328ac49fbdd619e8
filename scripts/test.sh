#!/usr/bin/env bash
# THE test command: what CI runs (via .ci/run) and what developers run.
#
#   1. install missing system packages and the official IronWorker clients
#      (scripts/ensure-deps.sh, scripts/clients.sh); under CI=true the
#      clients' end-to-end tests (crates/berth/tests/clients.rs) fail rather
#      than skip when a client is missing
#   2. build the busybox test image into target/test-assets/ and export it as
#      BERTH_TEST_BUSYBOX_TAR for the integration tests; start PostgreSQL
#      (scripts/postgres.sh) and export BERTH_TEST_POSTGRES_URL
#   3. cargo fmt --check, cargo clippy -D warnings (also berth-shim for musl,
#      as scripts/build.sh ships it), every test of the workspace with
#      cargo-nextest (unit tests and the root end-to-end tests side by side,
#      see .config/nextest.toml) and the doc tests, then (on a full run) the
#      local fleet of scripts/fleet.sh (tests/fleet-script.sh: also two
#      servers sharing PostgreSQL, failing over) and the
#      shipped binaries of scripts/build.sh (scripts/check-dist.sh)
#   4. check that the test suite left no mounts, cgroups, processes or netns
#      behind (scripts/check-leaks.sh, counting only what appeared during the
#      tests; skip with BERTH_SKIP_LEAK_CHECK=1, e.g. while other berth work
#      runs on the same machine)
#
# Tiers:
#   scripts/test.sh           everything above (what CI runs)
#   scripts/test.sh --unit    the unit tests only: no root, no packages, no
#                             PostgreSQL, seconds
#   soak tests and benchmarks are never run here: bench/soak.sh, bench/*.sh
# Other arguments are passed to `cargo nextest run` (e.g. `scripts/test.sh -p
# berth-core`, or `scripts/test.sh some_test_name`); the doc tests and the
# shipped binaries are then skipped.
#
# Exits non-zero on the first failing step. Runs as root (the runtime tests
# need namespaces, mounts and cgroups) and needs no standard input.
set -euo pipefail
# cargo and rustup find their toolchain through $HOME (~/.cargo, ~/.rustup);
# a bare environment (env -i, some CI runners) may not set it.
export HOME=${HOME:-/root}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

step() { printf '\n==> %s\n' "$*"; }

# CI starts with the machine's environment, which may not have rustup's
# bin directory on PATH.
if ! command -v cargo >/dev/null 2>&1; then
    if [[ -f "$HOME/.cargo/env" ]]; then
        # shellcheck disable=SC1091
        source "$HOME/.cargo/env"
    fi
    if [[ -d /root/.cargo/bin ]]; then
        PATH="/root/.cargo/bin:$PATH"
    fi
fi
command -v cargo >/dev/null 2>&1 || {
    echo "test.sh: cargo not found" >&2
    exit 1
}

if [[ ${1:-} == --unit ]]; then
    shift
    step "unit tests (no root needed)"
    if cargo nextest --version >/dev/null 2>&1; then
        exec cargo nextest run --workspace --lib --bins "$@"
    fi
    exec cargo test --workspace --lib --bins "$@"
fi

step "system dependencies"
bash scripts/ensure-deps.sh

step "test assets"
# Rebuild the image only when the builder or busybox changed: it is
# deterministic, so a cached copy is byte-identical to a fresh one.
assets="$repo/target/test-assets"
busybox_tar="$assets/busybox.tar.gz"
mkdir -p "$assets"
if [[ ! -s $busybox_tar || scripts/make-busybox-rootfs.sh -nt $busybox_tar ||
    /bin/busybox -nt $busybox_tar ]]; then
    bash scripts/make-busybox-rootfs.sh "$busybox_tar"
else
    echo "cached $busybox_tar"
fi
export BERTH_TEST_BUSYBOX_TAR="$busybox_tar"

step "PostgreSQL"
# The store and API suites run against PostgreSQL as well as SQLite.
BERTH_TEST_POSTGRES_URL=$(bash scripts/postgres.sh)
export BERTH_TEST_POSTGRES_URL
echo "$BERTH_TEST_POSTGRES_URL"

# Plain, greppable output in CI logs.
if [[ -n ${CI:-} ]]; then
    export CARGO_TERM_COLOR=never CARGO_TERM_PROGRESS_WHEN=never
fi
export RUST_BACKTRACE=${RUST_BACKTRACE:-1}

leak_baseline="$assets/leaks-before-tests.txt"
if [[ ${BERTH_SKIP_LEAK_CHECK:-0} != 1 ]]; then
    # Leftovers from before this run (say, an old crashed run: cgroups outlive
    # their processes) are recorded so that they do not fail this one.
    bash scripts/check-leaks.sh --quiet --save-baseline "$leak_baseline"
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

# scripts/build.sh ships berth-shim built against musl when it can: keep that
# build compiling. CI adds the target as build.sh would; elsewhere a missing
# target only earns a note.
musl=$(rustc -vV | sed -n 's/^host: //p')
musl=${musl%%-*}-unknown-linux-musl
if rustup target list --installed 2>/dev/null | grep -qx "$musl" ||
    { [[ ${CI:-} == true ]] && timeout 300 rustup target add "$musl" >/dev/null 2>&1; }; then
    step "cargo clippy -p berth-shim --target $musl"
    cargo clippy -p berth-shim --target "$musl" -- -D warnings
else
    echo "note: Rust target $musl not installed: berth-shim's musl build is not checked"
fi

# nextest runs each test in its own process, binaries side by side; it comes
# with the project's toolchain image, and is installed here if missing.
if ! cargo nextest --version >/dev/null 2>&1; then
    step "installing cargo-nextest"
    cargo install --locked cargo-nextest
fi
step "tests (cargo nextest)"
cargo nextest run --workspace "$@"
if (($# == 0)); then
    step "doc tests"
    cargo test --workspace --doc
fi

if (($# == 0)); then
    step "local fleet (tests/fleet-script.sh: scripts/fleet.sh, 3 hosts; 2 servers on PostgreSQL)"
    cargo build --quiet -p berth -p berthd -p berth-shim
    BERTH_BIN_DIR="${CARGO_TARGET_DIR:-$repo/target}/debug" bash tests/fleet-script.sh
fi

if (($# == 0)); then
    step "shipped binaries (scripts/check-dist.sh)"
    bash scripts/check-dist.sh "$BERTH_TEST_BUSYBOX_TAR"
fi

if [[ ${BERTH_SKIP_LEAK_CHECK:-0} != 1 ]]; then
    step "leak check after the test suite"
    bash scripts/check-leaks.sh --baseline "$leak_baseline"
fi

step "all checks passed"
