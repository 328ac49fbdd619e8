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
# Why against musl (when the Rust target is installed, or can be added with
# rustup): berth and berth-shim are started once per container. Static glibc
# probes the CPU's caches with dozens of `cpuid` instructions before main,
# and each one traps to the hypervisor in a VM: ~0.4 ms per start here
# (berth-shim: 0.92 ms to print its usage against glibc, 0.53 ms against
# musl). musl's own allocator would give that back in berth (it returns
# memory to the kernel between bursts), so berth's first MiB of
# allocations comes from a static arena and the rest from jemalloc (see
# crates/berth/src/arena.rs); the shim is single-threaded and allocates
# little, so it keeps musl's allocator, which also halves its memory.

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

# The musl build needs the Rust target and a musl C compiler for the -sys
# crates (zstd, jemalloc): Debian's musl-tools (scripts/ensure-deps.sh).
static_target=$host
why_not_musl=
if ! command -v "${host%%-*}-linux-musl-gcc" >/dev/null 2>&1; then
    why_not_musl="no musl C compiler (Debian package musl-tools)"
elif rustup target list --installed 2>/dev/null | grep -qx "$musl" ||
    timeout 300 rustup target add "$musl" >/dev/null 2>&1; then
    static_target=$musl
else
    why_not_musl="Rust target $musl unavailable (rustup target add $musl failed)"
fi
if [[ -n $why_not_musl ]]; then
    echo "build: $why_not_musl; berth and berth-shim are built against glibc" \
        "and start ~0.5 ms slower" >&2
fi

static_build() { # PACKAGE TARGET [cargo args...]
    local package=$1 target=$2
    shift 2
    RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static ${RUSTFLAGS:-}" \
        cargo build --release --locked -p "$package" --target "$target" \
        --target-dir target/static "$@"
}
static_build berth "$static_target" "$@"
static_build berth-shim "$static_target" "$@"

mkdir -p target/dist
install_bin() { # NAME TARGET
    cp "target/static/$2/release/$1" "target/dist/$1.tmp"
    mv "target/dist/$1.tmp" "target/dist/$1"
}
install_bin berth "$static_target"
install_bin berth-shim "$static_target"
echo "built target/dist/berth and target/dist/berth-shim ($static_target)"
