#!/usr/bin/env bash
# Builds the release `berth` and `berth-shim` binaries as static, non-PIE
# executables in target/dist/.
#
# Why static non-PIE: berth is started once per container by scripts and
# schedulers, so its own start-up is on the hot path. A dynamically linked
# binary spends ~0.3 ms in the dynamic loader and a static-PIE one ~0.2 ms
# relocating itself (measured on the 2-core VM this project builds on);
# a static non-PIE binary does neither, and has no runtime dependencies.
#
# Why berth-shim against musl (when the Rust target is installed, or can be
# added with rustup): a shim is started for every container the agent
# creates. Static glibc probes the CPU's caches with dozens of `cpuid`
# instructions before main, and each one traps to the hypervisor in a VM:
# ~0.4 ms per start here (berth-shim: 0.92 ms to print its usage against
# glibc, 0.53 ms against musl). The shim is single-threaded and allocates
# little, so musl's simple allocator costs nothing there; musl also halves
# its resident memory. berth itself stays on glibc: it runs the server and
# the agent, whose threads need glibc's allocator. Against musl its `berth
# run` was 0.5-0.8 ms faster (with a start-up arena, and jemalloc beyond
# it), but the task server then cost ~0.5 ms more CPU per task and
# bench/tasks.sh fell from 206-217 to 179 tasks/s.
#
# The explicit --target keeps these flags away from build scripts and proc
# macros, which must stay dynamic.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
if ! command -v cargo >/dev/null 2>&1; then
    # shellcheck disable=SC1091
    [[ -f "$HOME/.cargo/env" ]] && source "$HOME/.cargo/env"
    [[ -d /root/.cargo/bin ]] && PATH="/root/.cargo/bin:$PATH"
fi
host=$(rustc -vV | sed -n 's/^host: //p')
musl=${host%%-*}-unknown-linux-musl

shim_target=$host
if rustup target list --installed 2>/dev/null | grep -qx "$musl"; then
    shim_target=$musl
elif timeout 300 rustup target add "$musl" >/dev/null 2>&1; then
    shim_target=$musl
else
    echo "build: Rust target $musl unavailable (rustup target add $musl failed);" \
        "berth-shim is built against glibc and starts ~0.4 ms slower" >&2
fi

static_build() { # PACKAGE TARGET [cargo args...]
    local package=$1 target=$2
    shift 2
    RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static ${RUSTFLAGS:-}" \
        cargo build --release --locked -p "$package" --target "$target" \
        --target-dir target/static "$@"
}
static_build berth "$host" "$@"
static_build berth-shim "$shim_target" "$@"

mkdir -p target/dist
install_bin() { # NAME TARGET
    cp "target/static/$2/release/$1" "target/dist/$1.tmp"
    mv "target/dist/$1.tmp" "target/dist/$1"
}
install_bin berth "$host"
install_bin berth-shim "$shim_target"
echo "built target/dist/berth ($host) and target/dist/berth-shim ($shim_target)"
