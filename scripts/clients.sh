#!/usr/bin/env bash
# Install the official IronWorker clients that berth's end-to-end client
# tests drive unchanged (crates/berth/tests/clients.rs):
#
#   Python  iron-worker 1.3.8 and its dependencies, pinned in
#           tests/clients/requirements.txt, into a venv at target/clients/python
#   Node    iron_worker 0.1.8, pinned by tests/clients/package.json and
#           package-lock.json, into tests/clients/node_modules
#
# Usage: scripts/clients.sh        (scripts/ensure-deps.sh runs it)
#
# Idempotent and quick when installed: each install is stamped with the hash
# of the file it was made from (and the interpreter's version) and redone
# only when that changes. Installs Debian's python3/venv or nodejs/npm when
# the machine has none (as root). Never reads standard input.
set -euo pipefail
export HOME=${HOME:-/root}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
clients="$repo/tests/clients"
venv="$repo/target/clients/python"
mkdir -p "$repo/target/clients"

# Two runs at once (two test.sh in one checkout) would install over each other.
exec 9>"$repo/target/clients/.lock"
flock 9

apt_install() {
    if ((EUID != 0)); then
        echo "clients: need root to install $* (or install them by hand)" >&2
        exit 1
    fi
    echo "clients: installing $*"
    export DEBIAN_FRONTEND=noninteractive
    local opts=(-y -q --no-install-recommends -o DPkg::Lock::Timeout=300 -o Dpkg::Use-Pty=0)
    if ! apt-get install "${opts[@]}" "$@" </dev/null; then
        apt-get update -q -o DPkg::Lock::Timeout=300 </dev/null
        apt-get install "${opts[@]}" "$@" </dev/null
    fi
}

hash_of() {
    sha256sum "$@" | awk '{ printf "%s ", $1 }'
}

# ----- Python ---------------------------------------------------------------
# One interpreter start (a pyenv shim costs ~0.3 s): its version, and
# whether it can make a venv.
python_version() {
    python3 -c 'import sys, venv, ensurepip; print(sys.version.split()[0])' 2>/dev/null
}
if ! version=$(python_version); then
    apt_install python3 python3-venv
    version=$(python_version)
fi
python_stamp="$(hash_of "$clients/requirements.txt")$version"
installed=("$venv"/lib/python*/site-packages/iron_worker.py)
if [[ $(cat "$venv/.berth-stamp" 2>/dev/null) == "$python_stamp" && -f ${installed[0]} ]]; then
    echo "clients: Python client installed ($venv)"
else
    echo "clients: installing the Python client into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        -r "$clients/requirements.txt"
    "$venv/bin/python" -c 'import iron_worker'
    echo "$python_stamp" >"$venv/.berth-stamp"
fi

# ----- Node -----------------------------------------------------------------
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt_install nodejs npm
fi
modules="$clients/node_modules"
node_stamp="$(hash_of "$clients/package.json" "$clients/package-lock.json")$(node --version)"
if [[ $(cat "$modules/.berth-stamp" 2>/dev/null) == "$node_stamp" ]] &&
    [[ -f $modules/iron_worker/package.json ]]; then
    echo "clients: Node client installed ($modules)"
else
    echo "clients: installing the Node client into $modules"
    # npm ci installs exactly the lock file (and fails if it disagrees with
    # package.json) after removing node_modules.
    (cd "$clients" && npm ci --no-audit --no-fund --loglevel=error </dev/null)
    node -e 'require(process.argv[1])' "$modules/iron_worker" >/dev/null
    echo "$node_stamp" >"$modules/.berth-stamp"
fi
