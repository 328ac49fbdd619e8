#!/usr/bin/env bash
# Install what berth's build, tests and benchmarks need on Debian 12, as root.
#
# Usage: scripts/ensure-deps.sh [--with-docker]
#
#   --with-docker   also install Debian's docker.io (dockerd + containerd),
#                   only needed by bench/startup.sh for the docker comparison.
#
# Then installs the official IronWorker clients the end-to-end tests drive
# (scripts/clients.sh: pinned pip and npm packages, in project-local places).
#
# Idempotent and fast when everything is present: one dpkg-query call, no
# apt-get update unless a package is actually missing (CI runs this on every
# build, and `apt-get update` alone costs seconds and needs the network).
# Never reads standard input (CI has none).
set -euo pipefail
# cargo and rustup find their toolchain through $HOME (~/.cargo, ~/.rustup);
# a bare environment (env -i, some CI runners) may not set it.
export HOME=${HOME:-/root}

with_docker=0
for arg in "$@"; do
    case "$arg" in
        --with-docker) with_docker=1 ;;
        -h | --help)
            awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"
            exit 0
            ;;
        *)
            echo "ensure-deps: unknown argument: $arg" >&2
            exit 2
            ;;
    esac
done

# Why each package is here:
#   build-essential  cc/ar for -sys crates (zstd-sys compiles C)
#   pkg-config       -sys crates probe system libraries with it
#   musl-tools       musl C compiler: scripts/build.sh builds berth against
#                    musl (faster process start; its -sys crates compile C)
#   busybox-static   the test/bench image: one static binary, no libc needed
#                    (the dynamic 'busybox' package would not work in a rootfs)
#   runc             reference runtime for bench/startup.sh
#   hyperfine        ad-hoc benchmarking of whole commands
#   iproute2         `ip netns list` in check-leaks.sh; network tests
#   nftables         `nft list tables` in check-leaks.sh (berth itself speaks
#                    netlink and needs no nft binary)
#   containernetworking-plugins, iptables
#                    the CNI plugins `--network cni:NAME` is tested with
#                    (portmap and the bridge's ipMasq use iptables)
#   iperf3           bench/network.sh: throughput through published ports
#   util-linux       unshare(1) for the benchmark floor, mount/umount
#   procps           ps/pgrep for debugging leaked processes
#   jq               editing runc's config.json, reading `berth run --json`
#   zstd, gzip, tar  building and checking .tar.zst / .tar.gz test images
#   ca-certificates  cargo fetching from crates.io over https
#   postgresql       the control plane's store tests run against PostgreSQL too
#                    (scripts/postgres.sh starts it)
packages=(
    build-essential
    pkg-config
    musl-tools
    busybox-static
    runc
    hyperfine
    iproute2
    nftables
    containernetworking-plugins
    iptables
    iperf3
    util-linux
    procps
    jq
    zstd
    gzip
    tar
    ca-certificates
    postgresql
)
if ((with_docker)); then
    # docker.io pulls containerd, iptables and tini; its postinst may try to
    # start the service, which is harmless (or denied by policy-rc.d).
    packages+=(docker.io)
fi

# One dpkg-query call for all packages (each call costs ~20 ms). Packages
# dpkg has never heard of are absent from its output (and make it exit
# non-zero, hence `|| true`), so anything not reported "installed" is missing.
declare -A status=()
while read -r pkg st; do
    status[${pkg%%:*}]=$st
done < <(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${packages[@]}" 2>/dev/null || true)
missing=()
for p in "${packages[@]}"; do
    [[ ${status[$p]:-} == installed ]] || missing+=("$p")
done

if ((${#missing[@]} > 0)); then
    echo "ensure-deps: installing: ${missing[*]}"
    if ((EUID != 0)); then
        echo "ensure-deps: need root to install packages (run as root or install them by hand)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt_opts=(-y -q --no-install-recommends -o DPkg::Lock::Timeout=300 -o Dpkg::Use-Pty=0
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    # Try without refreshing the index first: on a machine whose lists are
    # recent this saves the update; on a fresh one the install fails fast
    # (package unknown / 404) and we update and retry.
    if ! apt-get install "${apt_opts[@]}" "${missing[@]}" </dev/null; then
        apt-get update -q -o DPkg::Lock::Timeout=300 </dev/null
        apt-get install "${apt_opts[@]}" "${missing[@]}" </dev/null
    fi
fi

# Sanity checks that no package status can tell us.
fail=0
if ! /bin/busybox --list-full >/dev/null 2>&1; then
    echo "ensure-deps: /bin/busybox is not usable" >&2
    fail=1
elif ldd /bin/busybox 2>&1 | grep -q '=>'; then
    echo "ensure-deps: /bin/busybox is dynamically linked; busybox-static did not take over" >&2
    fail=1
fi

# The Rust toolchain comes from rustup, not apt, and cannot be downloaded
# here: only check it, with a clear message.
if ! command -v cargo >/dev/null 2>&1 && [[ -f "$HOME/.cargo/env" ]]; then
    # shellcheck disable=SC1091
    source "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "ensure-deps: cargo not found (expected in ~/.cargo/bin via rustup)" >&2
    fail=1
else
    for tool in fmt clippy; do
        if ! cargo "$tool" --version >/dev/null 2>&1; then
            echo "ensure-deps: 'cargo $tool' missing: rustup component add ${tool/fmt/rustfmt}" >&2
            fail=1
        fi
    done
fi

if ! bash "$(dirname "${BASH_SOURCE[0]}")/clients.sh"; then
    echo "ensure-deps: installing the IronWorker clients failed (scripts/clients.sh)" >&2
    fail=1
fi
exit "$fail"
