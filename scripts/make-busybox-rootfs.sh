#!/usr/bin/env bash
# Build a tiny, self-contained rootfs from the static busybox binary.
#
# Usage:
#   scripts/make-busybox-rootfs.sh OUT.tar.gz        # also OUT.tar, OUT.tar.zst
#   scripts/make-busybox-rootfs.sh --dir DIR          # plain directory (runc bundles)
#   scripts/make-busybox-rootfs.sh --dir DIR OUT.tar.gz   # both at once
#
# Environment: BUSYBOX=/path/to/static/busybox (default /bin/busybox).
#
# Why this exists: the tests and benchmarks need a real image without a
# container registry. busybox-static gives ~270 applets in one 2 MB binary
# that has no dynamic loader, so the rootfs needs nothing else.
#
# The tarball is deterministic (sorted entries, mtime 0, owner 0:0, gzip
# without a timestamp) so that the same busybox always gives the same bytes
# and hence the same digest when imported: tests may rely on that.
set -euo pipefail

usage() {
    echo "usage: $0 [--dir DIR] [OUT.tar|OUT.tar.gz|OUT.tgz|OUT.tar.zst]" >&2
    echo "       at least one of --dir DIR or OUT must be given" >&2
    exit 2
}

out_dir=""
out_tar=""
while (($#)); do
    case "$1" in
        --dir)
            (($# >= 2)) || usage
            out_dir=$2
            shift 2
            ;;
        --dir=*)
            out_dir=${1#--dir=}
            shift
            ;;
        -h | --help) usage ;;
        -*)
            echo "unknown option: $1" >&2
            usage
            ;;
        *)
            [[ -z $out_tar ]] || usage
            out_tar=$1
            shift
            ;;
    esac
done
[[ -n $out_dir || -n $out_tar ]] || usage

# Pick the compressor from the name before doing any work. gzip -n leaves
# out the name and timestamp gzip would otherwise store (determinism).
compress=()
if [[ -n $out_tar ]]; then
    case "$out_tar" in
        *.tar.gz | *.tgz) compress=(gzip -n -6) ;;
        *.tar.zst) compress=(zstd -q -T1 -19) ;;
        *.tar) compress=(cat) ;;
        *)
            echo "error: $out_tar: unknown extension (want .tar, .tar.gz, .tgz, .tar.zst)" >&2
            exit 2
            ;;
    esac
fi

busybox=${BUSYBOX:-/bin/busybox}
if [[ ! -x $busybox ]]; then
    echo "error: $busybox not found; install busybox-static (scripts/ensure-deps.sh)" >&2
    exit 1
fi
# A dynamically linked busybox (Debian's plain 'busybox' package) would need
# its libc inside the rootfs and fail with a confusing ENOENT at exec time.
# ldd prints "not a dynamic executable" (and exits 1) for a static binary.
if ldd "$busybox" 2>&1 | grep -q '=>'; then
    echo "error: $busybox is dynamically linked; install busybox-static" >&2
    exit 1
fi

# Refuse to populate a non-empty directory: we would mix with whatever is there.
if [[ -n $out_dir && -e $out_dir ]]; then
    if [[ ! -d $out_dir ]] || [[ -n $(ls -A "$out_dir") ]]; then
        echo "error: --dir $out_dir exists and is not an empty directory" >&2
        exit 1
    fi
fi

# Stage everything in a private temp dir, then tar / move it into place, so a
# half-built rootfs is never visible under the final name.
stage_parent=$(mktemp -d "${TMPDIR:-/tmp}/berth-rootfs.XXXXXX")
trap 'rm -rf -- "$stage_parent"' EXIT
root=$stage_parent/rootfs
mkdir -m 0755 "$root"

# Set modes explicitly (not via umask) so the result does not depend on the
# caller's umask.
for d in bin sbin usr usr/bin usr/sbin etc dev proc sys root tmp var var/tmp; do
    mkdir -p "$root/$d"
    chmod 0755 "$root/$d"
done
chmod 0700 "$root/root"
chmod 1777 "$root/tmp" "$root/var/tmp"

install -m 0755 "$busybox" "$root/bin/busybox"

# One symlink per applet. `--list-full` gives paths relative to / such as
# "bin/sh" or "usr/sbin/chroot". Links are relative ("../../bin/busybox") so
# they resolve correctly both inside the container and when the rootfs is
# inspected from the host, and never point outside the rootfs.
while IFS= read -r applet; do
    [[ -n $applet ]] || continue
    [[ $applet == bin/busybox ]] && continue
    dir=$(dirname "$applet")
    mkdir -p "$root/$dir"
    chmod 0755 "$root/$dir"
    if [[ $dir == . ]]; then
        target=bin/busybox
    elif [[ $dir == bin ]]; then
        target=busybox
    else
        # one "../" per path component of the link's directory
        up=$(printf '%s' "$dir" | sed -e 's|[^/][^/]*|..|g')
        target=$up/bin/busybox
    fi
    ln -sfn "$target" "$root/$applet"
done < <("$busybox" --list-full | LC_ALL=C sort)

cat >"$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat >"$root/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
GROUP
# Name resolution for "localhost" works even with --network none.
cat >"$root/etc/hosts" <<'HOSTS'
127.0.0.1	localhost
::1	localhost
HOSTS
chmod 0644 "$root/etc/passwd" "$root/etc/group" "$root/etc/hosts"

if [[ -n $out_tar ]]; then
    mkdir -p "$(dirname "$out_tar")"
    tmp_tar="$out_tar.tmp.$$"
    # GNU tar options for reproducibility; entries are "./bin/busybox" etc.,
    # the shape `docker export` and most rootfs tarballs have.
    tar --create --format=gnu --sort=name --mtime=@0 \
        --owner=0 --group=0 --numeric-owner \
        -C "$root" . | "${compress[@]}" >"$tmp_tar"
    mv -f "$tmp_tar" "$out_tar"
    echo "wrote $out_tar ($(stat -c %s "$out_tar") bytes, $("$busybox" --list-full | wc -l) applets)"
fi

if [[ -n $out_dir ]]; then
    mkdir -p "$out_dir"
    # cp -a keeps modes, symlinks and (as root) ownership.
    cp -a "$root/." "$out_dir/"
    chmod 0755 "$out_dir"
    echo "wrote rootfs directory $out_dir"
fi
