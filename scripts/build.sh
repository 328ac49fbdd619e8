#!/usr/bin/env bash
# Builds the release `berth`, `berthd` and `berth-shim` binaries as static,
# non-PIE executables in target/dist/ (install them side by side).
#
# Why static non-PIE: berth is started once per container by scripts and
# schedulers, so its own start-up is on the hot path. A dynamically linked
# binary spends ~0.3 ms in the dynamic loader and a static-PIE one ~0.2 ms
# relocating itself (measured on the 2-core VM this project builds on);
# a static non-PIE binary does neither, and has no runtime dependencies.
#
# Why musl (when the Rust target is installed, or can be added with rustup):
# berth-shim is started for every container the agent creates and berth for
# every `berth run`. Static glibc probes the CPU's caches with dozens of
# `cpuid` instructions before main, and each one traps to the hypervisor in
# a VM (berth-shim: 0.92 ms to print its usage against glibc, 0.53 ms
# against musl; `berth run` 15-25% slower against glibc in an interleaved
# A/B, docs/performance.md "Startup tricks: what each is worth").
# The shim is single-threaded and allocates little, so musl's simple
# allocator costs nothing there; musl also halves its resident memory.
#
# Why two programs: berth (containers, images, the task platform's client)
# links no server, store or agent code; berthd serves `up`, `server`,
# `agent` and the operator commands (`project`, `token`, `stack`), which
# berth execs from its own directory. berthd is built against glibc: the
# long-running, multi-threaded daemons are faster there (bench/tasks.sh:
# 206-217 tasks/s, 179 with the server on musl even with jemalloc). berth's
# musl build compiles C (zstd), hence the musl C compiler from Debian's
# musl-tools; without it berth is built against glibc too.
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
        "berth and berth-shim are built against glibc and start slower" >&2
fi
berth_target=$host
if [[ $shim_target == "$musl" ]]; then
    if command -v "${host%%-*}-linux-musl-gcc" >/dev/null 2>&1; then
        berth_target=$musl
    else
        echo "build: no musl C compiler (Debian package musl-tools): berth is" \
            "built against glibc and starts slower" >&2
    fi
fi

static_build() { # PACKAGE TARGET [cargo args...]
    local package=$1 target=$2
    shift 2
    RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static ${RUSTFLAGS:-}" \
        cargo build --release --locked -p "$package" --target "$target" \
        --target-dir target/static "$@"
}
static_build berth "$berth_target" "$@"
static_build berthd "$host" "$@"
static_build berth-shim "$shim_target" "$@"

mkdir -p target/dist
install_bin() { # NAME TARGET
    cp "target/static/$2/release/$1" "target/dist/$1.tmp"
    mv "target/dist/$1.tmp" "target/dist/$1"
}
install_bin berth "$berth_target"
install_bin berthd "$host"
install_bin berth-shim "$shim_target"
# What an earlier build shipped in berthd's place.
rm -f target/dist/berth-daemon
echo "built target/dist/berth ($berth_target), target/dist/berthd ($host)" \
    "and target/dist/berth-shim ($shim_target)"
