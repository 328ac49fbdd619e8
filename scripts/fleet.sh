#!/usr/bin/env bash
# A berth fleet on one machine, for tests and for trying berth: one server
# and N agent hosts, each agent in a network namespace of its own.
#
# Usage: scripts/fleet.sh VERB [OPTIONS]
#
#   up --hosts N [--dir DIR] [options below]
#                       start a fleet and print (and write to DIR/env) the
#                       settings a client needs
#   status [--dir DIR] [--json]
#                       the server and every host: namespace, address,
#                       agent pid, alive or not, link, containers
#   kill-host NAME [--dir DIR]
#                       kill -9 the host's agent, its shims and its
#                       containers at once, and take its link down, as if
#                       the machine had died
#   revive-host NAME [--dir DIR]
#                       bring the link up and start the agent again on the
#                       same data dir (it keeps its identity)
#   down [--dir DIR]    remove everything the fleet made: processes,
#                       containers, cgroups, mounts, namespaces, links, DIR.
#                       Safe to run twice, and after an `up` that failed
#
# Every verb takes --dir DIR (default /tmp/berth-fleet); fleets in
# different dirs are independent and can run side by side. Keep DIR short
# (about 30 characters at most): the agents' data dirs are below it, and
# their containers' unix sockets below those. revive-host also takes
# --bin-dir and --timeout.
#
# Options of up:
#   --hosts N             agent hosts, named host-1 … host-N (1 to 200)
#   --bin-dir DIR         where berth, berthd and berth-shim are
#                         [env BERTH_BIN_DIR; default: the repository's
#                         target/dist if it has berthd, else target/debug]
#   --allocatable [HOST:]cpus=C,memory=M,disk=D,pids=P
#                         what a host offers to tasks; without HOST: every
#                         host. Keys may be left out. Default: cpus = this
#                         machine's, memory and disk = 80 % of the
#                         machine's (free disk of DIR) split evenly, pids =
#                         half of pid_max split evenly (repeatable).
#                         The agent reports it to the server (placement
#                         never gives a host more); its memory is also the
#                         agent's --memory-ceiling
#   --labels [HOST:]k=v,… labels added to a host's (every host's without
#                         HOST:). Every host has host=host-I and zone=a or
#                         zone=b (alternating: host-1 a, host-2 b, …)
#                         (repeatable)
#   --image TAR           the stack image every host imports as
#                         berth/stack-busybox:latest, the image the
#                         runtimes sh and binary map to
#                         [default: $BERTH_TEST_BUSYBOX_TAR if set, else one
#                         made by scripts/make-busybox-rootfs.sh]
#   --no-stack            import no image and map no runtime
#   --subnet A.B.C.0/24   the test subnet [default: a free one in
#                         10.200.0.0/16 … 10.249.255.0/24, picked from DIR]
#   --server-port P       the server's port on the bridge [default 8380]
#   --agent-port P        each agent's port in its namespace [default 7420]
#   --timeout SECS        how long to wait for each daemon to answer
#                         [default 30]
#   --keep-on-failure     leave what a failed up made, for a look (then
#                         `down`)
#
# What up makes (all names carry a tag, 8 hex digits of DIR's path, so
# fleets never collide and `down` finds everything by name alone):
#   a bridge bfl<tag> holding A.B.C.1/24, where the server listens;
#   per host a network namespace berth-fleet-<tag>-host-I whose eth0
#   (A.B.C.<I+1>/24) is a veth pair with bfl<tag>hI on the bridge, loopback
#   up, and an agent listening on A.B.C.<I+1>:7420;
#   per host a cgroup parent berth-fleet-<tag>-host-I in every hierarchy,
#   a data dir DIR/host-I/data and a log DIR/host-I/agent.log;
#   the server's data dir DIR/server (SQLite DIR/server/berth.db, log
#   DIR/server/server.log); a project and its token, the fleet's join token
#   (DIR/join.token) and an operator token (DIR/operator.token). No firewall
#   rule and no route beyond the bridge's.
#
# DIR/env (and up's standard output) holds KEY=VALUE lines:
#   BERTH_URL, BERTH_PROJECT_ID, BERTH_TOKEN   for berth and IronWorker clients
#   BERTH_FLEET_HOSTS       host names, comma-separated
#   BERTH_FLEET_DIR         DIR
#   BERTH_FLEET_DATABASE    the server's database, for operator commands
#   BERTH_OPERATOR_TOKEN    for `berth node …` (the fleet's hosts)
# Load it into a shell with: set -a; . DIR/env; set +a
#
# Examples:
#   sudo scripts/fleet.sh up --hosts 3
#   set -a; . /tmp/berth-fleet/env; set +a
#   berth code push hello --runtime sh --file hello.sh --dir ./pkg
#   berth task queue hello --count 20 --wait
#   scripts/fleet.sh status
#   scripts/fleet.sh kill-host host-2 && scripts/fleet.sh revive-host host-2
#   scripts/fleet.sh down
#   scripts/fleet.sh up --hosts 4 --dir /tmp/f2 --allocatable cpus=1,memory=1g \
#       --allocatable host-4:memory=256m --labels host-3:gpu=true
#
# Needs: root, Linux with network namespaces and veth/bridge links,
# iproute2 (ip), util-linux (nsenter, setsid, flock), coreutils.
#
# Exit status: 0 done; 1 something failed (the message says what; up
# cleaned up after itself); 2 usage error; 3 no fleet in DIR; 4 no such
# host; 5 conflict (a fleet already runs in DIR, the subnet or a name is
# taken, the host is alive).
set -euo pipefail

readonly PROG=fleet.sh
readonly EXIT_FAILED=1 EXIT_USAGE=2 EXIT_NO_FLEET=3 EXIT_NO_HOST=4 EXIT_CONFLICT=5
readonly MAX_HOSTS=200
readonly STACK_IMAGE=berth/stack-busybox:latest
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() {
    local code=$1
    shift
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit "$code"
}
note() { printf '%s: %s\n' "$PROG" "$*" >&2; }
usage_error() {
    printf '%s: %s\n' "$PROG" "$*" >&2
    printf 'Try: %s --help\n' "$0" >&2
    exit "$EXIT_USAGE"
}
print_help() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }

# --- options ------------------------------------------------------------

verb=""
dir=/tmp/berth-fleet
bin_dir=${BERTH_BIN_DIR:-}
hosts=""
host_arg=""
json=0
subnet=""
server_port=8380
agent_port=7420
wait_secs=30
keep_on_failure=0
stack=1
image_tar=""
allocatable_args=()
label_args=()

need_value() { (($# >= 2)) && [[ -n $2 ]] || usage_error "$1 needs a value"; }

parse_args() {
    (($#)) || usage_error "a verb is needed: up, status, kill-host, revive-host or down"
    case "$1" in
        -h | --help | help) print_help; exit 0 ;;
        up | status | kill-host | revive-host | down) verb=$1 ;;
        *) usage_error "unknown verb: $1" ;;
    esac
    shift
    while (($#)); do
        case "$1" in
            -h | --help) print_help; exit 0 ;;
            --dir) need_value "$@"; dir=$2; shift 2 ;;
            --dir=*) dir=${1#*=}; shift ;;
            --bin-dir) need_value "$@"; bin_dir=$2; shift 2 ;;
            --bin-dir=*) bin_dir=${1#*=}; shift ;;
            --hosts) need_value "$@"; hosts=$2; shift 2 ;;
            --hosts=*) hosts=${1#*=}; shift ;;
            --allocatable) need_value "$@"; allocatable_args+=("$2"); shift 2 ;;
            --allocatable=*) allocatable_args+=("${1#*=}"); shift ;;
            --labels) need_value "$@"; label_args+=("$2"); shift 2 ;;
            --labels=*) label_args+=("${1#*=}"); shift ;;
            --image) need_value "$@"; image_tar=$2; shift 2 ;;
            --image=*) image_tar=${1#*=}; shift ;;
            --no-stack) stack=0; shift ;;
            --subnet) need_value "$@"; subnet=$2; shift 2 ;;
            --subnet=*) subnet=${1#*=}; shift ;;
            --server-port) need_value "$@"; server_port=$2; shift 2 ;;
            --server-port=*) server_port=${1#*=}; shift ;;
            --agent-port) need_value "$@"; agent_port=$2; shift 2 ;;
            --agent-port=*) agent_port=${1#*=}; shift ;;
            --timeout) need_value "$@"; wait_secs=$2; shift 2 ;;
            --timeout=*) wait_secs=${1#*=}; shift ;;
            --keep-on-failure) keep_on_failure=1; shift ;;
            --json) json=1; shift ;;
            -*) usage_error "unknown option for $verb: $1" ;;
            *)
                [[ $verb == kill-host || $verb == revive-host ]] ||
                    usage_error "$verb takes no argument ($1)"
                [[ -z $host_arg ]] || usage_error "$verb takes one host name (got $host_arg and $1)"
                host_arg=$1
                shift
                ;;
        esac
    done
    # Options that only make sense for some verbs are refused elsewhere, so
    # that a mistyped command line never half-works.
    if [[ $verb != up ]]; then
        [[ -z $hosts && ${#allocatable_args[@]} -eq 0 && ${#label_args[@]} -eq 0 &&
            -z $image_tar && $stack == 1 && -z $subnet && $keep_on_failure == 0 ]] ||
            usage_error "--hosts, --allocatable, --labels, --image, --no-stack, --subnet and --keep-on-failure are options of up"
    fi
    if [[ $verb != status ]]; then
        ((json == 0)) || usage_error "--json is an option of status"
    fi
    if [[ $verb == kill-host || $verb == revive-host ]]; then
        [[ -n $host_arg ]] || usage_error "$verb needs a host name (e.g. $verb host-1)"
    fi
    [[ $wait_secs =~ ^[1-9][0-9]{0,3}$ ]] || usage_error "--timeout must be whole seconds, 1 to 9999 (got $wait_secs)"
    [[ $server_port =~ ^[1-9][0-9]{0,4}$ ]] && ((server_port <= 65535)) ||
        usage_error "--server-port must be a port number (got $server_port)"
    [[ $agent_port =~ ^[1-9][0-9]{0,4}$ ]] && ((agent_port <= 65535)) ||
        usage_error "--agent-port must be a port number (got $agent_port)"
    [[ -n $dir ]] || usage_error "--dir must not be empty"
    # One canonical spelling, so that /tmp/f and /tmp/f/ are one fleet.
    dir=$(realpath -m -- "$dir")
    [[ $dir != / ]] || usage_error "--dir / is not a fleet directory"
}

# --- names derived from DIR ---------------------------------------------

# Everything the fleet makes outside DIR is named after this tag, so that
# `down` finds it even when DIR's records are lost or half written.
tag=""
bridge=""
set_names() {
    tag=$(printf '%s' "$dir" | sha256sum | cut -c1-8)
    bridge=bfl$tag
}
host_index() { printf '%s' "${1#host-}"; }
netns_of() { printf 'berth-fleet-%s-%s' "$tag" "$1"; }
cgroup_of() { printf 'berth-fleet-%s-%s' "$tag" "$1"; }
# Interface names are at most 15 characters: bfl + 8 + h + up to 3.
veth_of() { printf '%sh%s' "$bridge" "$(host_index "$1")"; }
host_dir() { printf '%s/%s' "$dir" "$1"; }

# --- the fleet's records (DIR/fleet.conf, DIR/NAME/host.conf) ------------

# conf_get FILE KEY: the value of KEY=... in FILE (empty if absent).
conf_get() {
    local line
    while IFS= read -r line; do
        if [[ $line == "$2="* ]]; then
            printf '%s' "${line#*=}"
            return 0
        fi
    done <"$1"
    return 0
}

fleet_conf=""
load_fleet() {
    fleet_conf=$dir/fleet.conf
    [[ -f $fleet_conf ]] || die "$EXIT_NO_FLEET" "no fleet in $dir (no fleet.conf; start one with: $0 up --hosts N --dir $dir)"
    hosts=$(conf_get "$fleet_conf" hosts)
    subnet=$(conf_get "$fleet_conf" subnet)
    server_port=$(conf_get "$fleet_conf" server_port)
    agent_port=$(conf_get "$fleet_conf" agent_port)
    [[ -n $hosts && -n $subnet && -n $server_port && -n $agent_port ]] ||
        die "$EXIT_NO_FLEET" "$fleet_conf is incomplete (an up that failed?); remove the fleet with: $0 down --dir $dir"
    if [[ -z $bin_dir ]]; then
        bin_dir=$(conf_get "$fleet_conf" bin_dir)
    fi
}

# The first three octets of the subnet ("10.201.7").
net_prefix() { printf '%s' "${subnet%.0/24}"; }
server_ip() { printf '%s.1' "$(net_prefix)"; }
host_ip() { printf '%s.%d' "$(net_prefix)" $(($(host_index "$1") + 1)); }
server_url() { printf 'http://%s:%s' "$(server_ip)" "$server_port"; }
database_url() { printf 'sqlite://%s/server/berth.db' "$dir"; }

check_host_name() {
    local name=$1 i
    i=$(host_index "$name")
    if [[ $name != host-* || ! $i =~ ^[1-9][0-9]*$ ]] || ((i > hosts)); then
        die "$EXIT_NO_HOST" "no host $name in the fleet of $dir (hosts: $(host_names ' '))"
    fi
}
host_names() {
    local sep=${1:-,} i out=""
    for ((i = 1; i <= hosts; i++)); do
        out+=${out:+$sep}host-$i
    done
    printf '%s' "$out"
}

# --- processes ------------------------------------------------------------

# pid_alive PID: the process exists and is not a zombie.
pid_alive() {
    local stat rest
    [[ $1 =~ ^[0-9]+$ ]] || return 1
    { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
    rest=${stat##*) }
    [[ ${rest:0:1} != Z && ${rest:0:1} != X ]]
}

# cmdline_of PID: the command line with spaces between arguments.
cmdline_of() {
    local args=()
    { mapfile -d '' -t args <"/proc/$1/cmdline"; } 2>/dev/null || return 0
    printf '%s' "${args[*]}"
}

# daemon_pid FILE MARK: the pid in FILE if that process is alive and its
# command line contains MARK (a recycled pid is not ours).
daemon_pid() {
    local pid=""
    [[ -f $1 ]] || return 0
    read -r pid <"$1" || true
    if pid_alive "$pid" && [[ $(cmdline_of "$pid") == *"$2"* ]]; then
        printf '%s' "$pid"
    fi
}
server_pid() { daemon_pid "$dir/server/server.pid" "$dir/server"; }
agent_pid() { daemon_pid "$(host_dir "$1")/agent.pid" "$(host_dir "$1")/data"; }

parent_of() {
    local stat rest ppid=""
    { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 0
    rest=${stat##*) }
    read -r _ ppid _ <<<"$rest"
    printf '%s' "$ppid"
}

# Processes that must never be killed: this script and whoever started it
# (whose command line may well name DIR).
declare -A spared=()
spare_ancestors() {
    local p=$$
    while [[ -n $p && $p != 0 ]]; do
        spared[$p]=1
        p=$(parent_of "$p")
    done
}

# cgroup_dirs NAME: the cgroup parent NAME's directory in every hierarchy
# that has one (v1 controllers, the hybrid unified mount, pure v2).
cgroup_dirs() {
    local root=/sys/fs/cgroup d
    [[ -d $root ]] || return 0
    for d in "$root/$1" "$root"/*/"$1"; do
        [[ -d $d ]] && printf '%s\n' "$d"
    done
    return 0
}

# cgroup_pids NAME: every process in a cgroup at or below parent NAME.
cgroup_pids() {
    local d procs pid
    while IFS= read -r d; do
        while IFS= read -r procs; do
            while IFS= read -r pid; do
                [[ -n $pid ]] && printf '%s\n' "$pid"
            done <"$procs" 2>/dev/null || true
        done < <(find "$d" -name cgroup.procs 2>/dev/null)
    done < <(cgroup_dirs "$1")
}

# netns_pids NS: processes whose network namespace is NS.
netns_pids() {
    [[ -e /run/netns/$1 ]] || return 0
    ip netns pids "$1" 2>/dev/null || true
}

# berth_pids_naming TEXT…: berth processes (berthd, berth-shim, berth) whose
# command line contains one of the TEXTs. Container processes are found by
# cgroup instead: their command lines say nothing about berth. (One pass
# over /proc without a fork per process: this runs in kill loops.)
berth_pids_naming() {
    local p cmd text
    local -a args
    for p in /proc/[0-9]*; do
        { mapfile -d '' -t args <"$p/cmdline"; } 2>/dev/null || continue
        ((${#args[@]} > 0)) && [[ ${args[0]##*/} == berth* ]] || continue
        cmd="${args[*]}"
        for text in "$@"; do
            if [[ $cmd == *"$text"* ]]; then
                printf '%s\n' "${p#/proc/}"
                break
            fi
        done
    done
    return 0
}

# kill_until_gone DESCRIPTION FINDER...: SIGKILLs every pid the finder
# commands print, again and again until a sweep finds none (a shim may have
# been forking a container at the first sweep). Fails after ~10 s.
kill_until_gone() {
    local what=$1 round pid killed_total=0
    shift
    local -A seen=()
    for ((round = 0; round < 200; round++)); do
        local pids=()
        while IFS= read -r pid; do
            [[ -n $pid && -z ${spared[$pid]:-} ]] || continue
            pid_alive "$pid" || continue
            pids+=("$pid")
        done < <("$@")
        if ((${#pids[@]} == 0)); then
            printf '%d' "$killed_total"
            return 0
        fi
        kill -KILL "${pids[@]}" 2>/dev/null || true
        for pid in "${pids[@]}"; do
            if [[ -z ${seen[$pid]:-} ]]; then
                seen[$pid]=1
                killed_total=$((killed_total + 1))
            fi
        done
        sleep 0.05
    done
    note "processes of $what still alive after 10 s of SIGKILL: $("$@" | tr '\n' ' ')"
    printf '%d' "$killed_total"
    return 1
}

# Environment for the daemons: the caller's BERTH_* settings (an exported
# BERTH_AGENTS, BERTH_DATABASE, BERTH_DATA_DIR…) must not leak into them;
# BERTH_LOG (the log filter) may.
daemon_env=()
set_daemon_env() {
    local var
    daemon_env=(env)
    for var in $(compgen -e); do
        if [[ $var == BERTH_* && $var != BERTH_LOG ]]; then
            daemon_env+=(-u "$var")
        fi
    done
}

# --- HTTP probes (bash's /dev/tcp: no curl needed) ----------------------

# http_status HOST PORT PATH [BEARER]: the status code of GET PATH, or
# nothing if nothing answered within 2 s.
http_status() {
    PROBE_TOKEN=${4:-} timeout 2 bash -c '
        exec 3<>"/dev/tcp/$0/$1" || exit 1
        auth=""
        [[ -n $PROBE_TOKEN ]] && auth="Authorization: Bearer $PROBE_TOKEN"$'"'\r\n'"'
        printf "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n%s\r\n" "$2" "$0" "$auth" >&3
        read -r _ code _ <&3 && printf "%s" "$code"
    ' "$1" "$2" "$3" 2>/dev/null || true
}

# http_body IP PORT PATH [TOKEN]: the body of a GET (empty if no answer).
http_body() {
    PROBE_TOKEN=${4:-} timeout 2 bash -c '
        exec 3<>"/dev/tcp/$0/$1" || exit 1
        auth=""
        [[ -n $PROBE_TOKEN ]] && auth="Authorization: Bearer $PROBE_TOKEN"$'"'\r\n'"'
        printf "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n%s\r\n" "$2" "$0" "$auth" >&3
        sed "1,/^\r\$/d" <&3
    ' "$1" "$2" "$3" 2>/dev/null || true
}

# wait_for WHAT PID LOG CHECK...: waits until CHECK succeeds, failing
# early with the log's tail if the daemon (PID, just started) died.
wait_for() {
    local what=$1 pid=$2 log=$3 deadline
    shift 3
    deadline=$((SECONDS + wait_secs))
    while ((SECONDS < deadline)); do
        if "$@"; then
            return 0
        fi
        # pid_alive, not the pid-file check: right after the fork the
        # child may not have exec'd the daemon yet.
        if ! pid_alive "$pid"; then
            note "$what exited; the end of $log:"
            tail -n 20 "$log" >&2 2>/dev/null || true
            return 1
        fi
        sleep 0.1
    done
    note "$what did not answer within ${wait_secs}s (--timeout); the end of $log:"
    tail -n 20 "$log" >&2 2>/dev/null || true
    return 1
}
server_answers() {
    local code
    code=$(http_status "$(server_ip)" "$server_port" /2/projects/fleet-probe/tasks)
    [[ -n $code ]]
}
# host_credential NAME: the bearer the server presents to NAME's agent.
host_credential() {
    json_field "$(cat "$(host_dir "$1")/data/agent/identity.json" 2>/dev/null)" credential
}
# agent_answers NAME: the agent answers on its address (with its own
# credential) and the server lists it as ready.
agent_answers() { # NAME
    local code credential
    credential=$(host_credential "$1")
    [[ -n $credential ]] || return 1
    code=$(http_status "$(host_ip "$1")" "$agent_port" /v1/node "$credential")
    [[ $code == 200 ]] || return 1
    http_body "$(server_ip)" "$server_port" "/v1/nodes/$1" "$(<"$dir/operator.token")" |
        grep -q '"state":"ready"'
}

# --- attaching agents to the server ---------------------------------------

# attach_flags server | agent NAME: the flags that connect agents and
# server, one per line.
#
# The server takes joins with the fleet's join token (--join-token-file
# DIR/join.token). Each agent serves its API on its address (--listen) and
# joins the server (--join URL --join-token-file … --name NAME), reporting
# its labels (--labels k=v,…) and what it offers (--allocatable …, whose
# memory also caps all its containers together: --memory-ceiling). The
# agent makes its own credential, which only the server learns (kept in
# DIR/host-N/data/agent/identity.json).
attach_flags() {
    local role=$1 name kv
    case "$role" in
        server)
            printf '%s\n' --join-token-file "$dir/join.token"
            ;;
        agent)
            name=$2
            local labels allocatable
            labels=$(conf_get "$(host_dir "$name")/host.conf" labels)
            allocatable=$(conf_get "$(host_dir "$name")/host.conf" allocatable)
            printf '%s\n' --listen "$(host_ip "$name"):$agent_port" \
                --join "$(server_url)" --join-token-file "$dir/join.token" --name "$name" \
                --labels "$labels" --allocatable "$allocatable"
            local -a pairs
            IFS=, read -r -a pairs <<<"$allocatable"
            for kv in "${pairs[@]}"; do
                [[ $kv == memory=* ]] && printf '%s\n' --memory-ceiling "${kv#memory=}"
            done
            ;;
    esac
    return 0
}

# --- binaries ---------------------------------------------------------------

resolve_bin_dir() {
    if [[ -z $bin_dir ]]; then
        if [[ -x $repo/target/dist/berthd ]]; then
            bin_dir=$repo/target/dist
        else
            bin_dir=$repo/target/debug
        fi
    fi
    bin_dir=$(realpath -m -- "$bin_dir")
    local b
    for b in berthd berth-shim "$@"; do
        [[ -x $bin_dir/$b ]] ||
            die "$EXIT_FAILED" "$bin_dir/$b not found: build it (scripts/build.sh, or cargo build -p berth -p berthd -p berth-shim) or point --bin-dir / BERTH_BIN_DIR at the binaries"
    done
}

require_tools() {
    ((EUID == 0)) || die "$EXIT_FAILED" "$verb needs root (network namespaces, links, cgroups)"
    local t
    for t in ip nsenter setsid flock timeout sha256sum realpath find; do
        command -v "$t" >/dev/null 2>&1 || die "$EXIT_FAILED" "$t not found (install iproute2, util-linux and coreutils)"
    done
}

# --- up -------------------------------------------------------------------

ip_to_int() {
    local a b c d
    IFS=. read -r a b c d <<<"$1"
    printf '%d' $(((a << 24) | (b << 16) | (c << 8) | d))
}

# The IPv4 prefixes this machine already routes or has addresses in (every
# routing table), as "a.b.c.d/len" lines; "default" is left out (a test
# subnet is meant to be more specific than it).
used_prefixes() {
    ip -4 -o route show table all 2>/dev/null | awk '
        { t = $1 }
        t ~ /^(local|broadcast|unicast|multicast|anycast|blackhole|unreachable|prohibit|throw|nat)$/ { t = $2 }
        t != "default" { print t }'
    ip -4 -o addr show 2>/dev/null | awk '{ print $4 }'
}

# subnet_free A.B.C.0/24: no route or address of this machine overlaps it.
subnet_free() {
    local start end prefix base len size lo
    start=$(ip_to_int "${1%/24}")
    end=$((start + 256))
    while IFS= read -r prefix; do
        [[ $prefix =~ ^([0-9]+\.[0-9]+\.[0-9]+\.[0-9]+)(/([0-9]+))?$ ]] || continue
        base=${BASH_REMATCH[1]}
        len=${BASH_REMATCH[3]:-32}
        size=$((1 << (32 - len)))
        lo=$(($(ip_to_int "$base") & ~(size - 1) & 0xffffffff))
        if ((lo < end && start < lo + size)); then
            return 1
        fi
    done < <(used_prefixes)
    return 0
}

pick_subnet() {
    if [[ -n $subnet ]]; then
        [[ $subnet =~ ^(10|172|192)\.([0-9]{1,3})\.([0-9]{1,3})\.0/24$ ]] &&
            ((BASH_REMATCH[2] <= 255 && BASH_REMATCH[3] <= 255)) ||
            die "$EXIT_USAGE" "--subnet must be a private /24 such as 10.77.3.0/24 (got $subnet)"
        subnet_free "$subnet" || die "$EXIT_CONFLICT" "--subnet $subnet overlaps a route or address of this machine (ip route show table all)"
        return 0
    fi
    # 50 × 256 candidate /24s in 10.200.0.0–10.249.255.0, starting at a
    # place picked from the tag so that fleets rarely probe the same ones.
    local start k i
    start=$((16#${tag:0:6} % 12800))
    for ((i = 0; i < 12800; i++)); do
        k=$(((start + i) % 12800))
        subnet="10.$((200 + k / 256)).$((k % 256)).0/24"
        subnet_free "$subnet" && return 0
    done
    die "$EXIT_CONFLICT" "no free /24 in 10.200.0.0/16–10.249.0.0/16; name one with --subnet"
}

size_ok() { [[ ${1,,} =~ ^[0-9]+(\.[0-9]+)?[kmgt]?(i?b)?$ ]]; }

# check_allocatable SPEC: "cpus=…,memory=…,disk=…,pids=…", keys optional.
check_allocatable() {
    local spec=$1 kv key value
    local -a pairs
    IFS=, read -r -a pairs <<<"$spec"
    ((${#pairs[@]} > 0)) || usage_error "--allocatable: empty"
    for kv in "${pairs[@]}"; do
        key=${kv%%=*}
        value=${kv#*=}
        [[ $kv == *=* && -n $value ]] || usage_error "--allocatable $spec: expected KEY=VALUE, got \"$kv\""
        case "$key" in
            cpus) [[ $value =~ ^[0-9]+(\.[0-9]+)?$ && ! $value =~ ^0+(\.0+)?$ ]] || usage_error "--allocatable: cpus=$value is not a positive number" ;;
            memory | disk) size_ok "$value" && [[ ! ${value,,} =~ ^0+(\.0+)?[a-z]*$ ]] ||
                usage_error "--allocatable: $key=$value is not a positive size such as 512m or 4g" ;;
            pids) [[ $value =~ ^[1-9][0-9]*$ ]] || usage_error "--allocatable: pids=$value is not a positive whole number" ;;
            *) usage_error "--allocatable: unknown key \"$key\" (cpus, memory, disk, pids)" ;;
        esac
    done
}

check_labels() {
    local spec=$1 kv
    local -a pairs
    IFS=, read -r -a pairs <<<"$spec"
    ((${#pairs[@]} > 0)) || usage_error "--labels: empty"
    for kv in "${pairs[@]}"; do
        [[ $kv =~ ^[A-Za-z0-9._/-]+=[A-Za-z0-9._/:-]*$ ]] ||
            usage_error "--labels $spec: \"$kv\" is not KEY=VALUE (letters, digits and ._/- in keys; also : in values)"
    done
}

# merge_kv BASE EXTRA: comma lists of k=v, EXTRA's keys replacing BASE's.
merge_kv() {
    local out=() kv key i found
    local -a base extra
    IFS=, read -r -a base <<<"$1"
    IFS=, read -r -a extra <<<"$2"
    out=("${base[@]}")
    for kv in "${extra[@]}"; do
        key=${kv%%=*}
        found=0
        for i in "${!out[@]}"; do
            if [[ ${out[$i]%%=*} == "$key" ]]; then
                out[i]=$kv
                found=1
            fi
        done
        ((found)) || out+=("$kv")
    done
    local IFS=,
    printf '%s' "${out[*]}"
}

# split_host_spec SPEC: "host-2:k=v" → "host-2" and "k=v" (no host: "").
spec_host=""
spec_body=""
split_host_spec() {
    if [[ $1 =~ ^(host-[0-9]+):(.*)$ ]]; then
        spec_host=${BASH_REMATCH[1]}
        spec_body=${BASH_REMATCH[2]}
        local i=${spec_host#host-}
        [[ $i =~ ^[1-9][0-9]*$ ]] && ((i <= hosts)) || usage_error "$spec_host is not one of the $hosts hosts"
    else
        spec_host=""
        spec_body=$1
    fi
}

default_allocatable() {
    local mem_kib avail_kib pid_max cpus
    cpus=$(nproc)
    mem_kib=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
    avail_kib=$(df -Pk -- "$dir" | awk 'NR == 2 { print $4 }')
    pid_max=$(</proc/sys/kernel/pid_max)
    printf 'cpus=%s,memory=%dm,disk=%dm,pids=%d' "$cpus" \
        $((mem_kib * 8 / 10 / 1024 / hosts)) $((avail_kib * 8 / 10 / 1024 / hosts)) \
        $((pid_max / 2 / hosts))
}

# The stack image tarball: --image, $BERTH_TEST_BUSYBOX_TAR, or made here.
stack_tarball() {
    if [[ -n $image_tar ]]; then
        [[ -r $image_tar ]] || die "$EXIT_USAGE" "--image $image_tar: no such readable file"
        printf '%s' "$image_tar"
    elif [[ -n ${BERTH_TEST_BUSYBOX_TAR:-} && -r ${BERTH_TEST_BUSYBOX_TAR:-} ]]; then
        printf '%s' "$BERTH_TEST_BUSYBOX_TAR"
    else
        bash "$repo/scripts/make-busybox-rootfs.sh" "$dir/stack.tar.gz" >&2 ||
            die "$EXIT_FAILED" "could not make the stack image (see above); pass --image TAR or --no-stack"
        printf '%s' "$dir/stack.tar.gz"
    fi
}

write_host_conf() { # NAME LABELS ALLOCATABLE
    local hd
    hd=$(host_dir "$1")
    mkdir -p "$hd/data"
    printf 'name=%s\nnetns=%s\nveth=%s\naddress=%s\ncgroup_parent=%s\nlabels=%s\nallocatable=%s\n' \
        "$1" "$(netns_of "$1")" "$(veth_of "$1")" "$(host_ip "$1"):$agent_port" \
        "$(cgroup_of "$1")" "$2" "$3" >"$hd/host.conf"
}

make_host_network() { # NAME
    local name=$1 ns veth
    ns=$(netns_of "$name")
    veth=$(veth_of "$name")
    ip netns add "$ns"
    # The peer is made inside the namespace, so no eth0 ever appears here.
    ip link add "$veth" type veth peer name eth0 netns "$ns"
    ip link set "$veth" master "$bridge"
    ip link set "$veth" up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$(host_ip "$name")/24" dev eth0
    ip -n "$ns" link set eth0 up
}

# start_agent NAME: the agent, in the host's network namespace but this
# machine's mount namespace. (Not `ip netns exec`: it mounts a fresh /sys
# for the namespace, without the cgroup file systems under /sys/fs/cgroup
# that the agent needs.)
start_agent() {
    local name=$1 hd ns pid
    hd=$(host_dir "$name")
    ns=$(netns_of "$name")
    local -a attach
    mapfile -t attach < <(attach_flags agent "$name")
    # setsid: the agent does not share the caller's session, so a ^C or a
    # test harness's process-group kill does not take it down with the
    # caller; `down` does. setsid, nsenter and env each exec the next, so $!
    # is the agent's pid.
    "${daemon_env[@]}" setsid nsenter --net="/run/netns/$ns" -- \
        "$bin_dir/berthd" --data-dir "$hd/data" --cgroup-parent "$(cgroup_of "$name")" \
        agent --shim "$bin_dir/berth-shim" "${attach[@]}" \
        </dev/null >>"$hd/agent.log" 2>&1 &
    pid=$!
    # Ours to kill, not to wait for: no "Killed" job notice when down runs.
    disown "$pid"
    printf '%s\n' "$pid" >"$hd/agent.pid"
    rm -f "$hd/killed"
}

start_server() {
    local pid
    local -a attach
    mapfile -t attach < <(attach_flags server)
    "${daemon_env[@]}" setsid "$bin_dir/berthd" --data-dir "$dir/server" \
        --cgroup-parent "$(cgroup_of server)" \
        server --listen "$(server_ip):$server_port" --database "$(database_url)" "${attach[@]}" \
        </dev/null >>"$dir/server/server.log" 2>&1 &
    pid=$!
    disown "$pid"
    printf '%s\n' "$pid" >"$dir/server/server.pid"
}

# operator ARGS…: berthd's operator commands on the server's database.
operator() {
    "${daemon_env[@]}" "$bin_dir/berthd" --data-dir "$dir/server" "$@" --database "$(database_url)" </dev/null
}

json_field() { # JSON KEY: a string field of a flat JSON object
    sed -n "s/.*\"$2\":\"\\([^\"]*\\)\".*/\\1/p" <<<"$1"
}

up_done=0
on_up_exit() {
    local status=$?
    ((up_done)) && return 0
    if ((keep_on_failure)); then
        note "up failed; everything it made is left in place (--keep-on-failure): look, then run: $0 down --dir $dir"
    else
        note "up failed; removing what it made"
        do_down >/dev/null || note "the clean-up after the failed up failed too: run $0 down --dir $dir"
    fi
    exit $((status == 0 ? EXIT_FAILED : status))
}

cmd_up() {
    [[ -n $hosts ]] || usage_error "up needs --hosts N"
    [[ $hosts =~ ^[1-9][0-9]*$ ]] && ((hosts <= MAX_HOSTS)) ||
        usage_error "--hosts must be a whole number from 1 to $MAX_HOSTS (got $hosts)"
    local spec
    for spec in "${allocatable_args[@]+"${allocatable_args[@]}"}"; do
        split_host_spec "$spec"
        check_allocatable "$spec_body"
    done
    for spec in "${label_args[@]+"${label_args[@]}"}"; do
        split_host_spec "$spec"
        check_labels "$spec_body"
    done
    if ((stack)); then
        [[ -z $image_tar || -r $image_tar ]] || usage_error "--image $image_tar: no such readable file"
    else
        [[ -z $image_tar ]] || usage_error "--image and --no-stack contradict each other"
    fi
    require_tools
    set_names

    # Claim DIR: it must be new or empty, and fleet.conf is made with
    # noclobber, so two ups on one DIR cannot both go on.
    if [[ -e $dir && ! -d $dir ]]; then
        die "$EXIT_CONFLICT" "$dir exists and is not a directory"
    fi
    if [[ -f $dir/fleet.conf ]]; then
        die "$EXIT_CONFLICT" "a fleet already runs in $dir (see: $0 status --dir $dir; remove it with: $0 down --dir $dir)"
    fi
    if [[ -d $dir && -n $(ls -A -- "$dir") ]]; then
        die "$EXIT_CONFLICT" "$dir is not empty and holds no fleet: give an empty or new --dir"
    fi
    # The agent binds a unix socket per container in its data dir, at
    # DATA/agent/run/containers/task-<24 hex>-<attempt>/shim.sock, and a
    # socket path has at most 107 bytes: tasks fail on a longer DIR.
    local longest_data_dir
    longest_data_dir="$(host_dir "host-$hosts")/data"
    ((${#longest_data_dir} + 65 <= 107)) ||
        usage_error "--dir $dir is too long: the agents' data dirs ($longest_data_dir) must have at most 42 characters, as their containers' unix sockets are below them; use a shorter DIR (at most $((42 - ${#longest_data_dir} + ${#dir})) characters)"
    if ip link show "$bridge" >/dev/null 2>&1 ||
        [[ -n $(ip netns list 2>/dev/null | grep -F "berth-fleet-$tag-" || true) ]]; then
        die "$EXIT_CONFLICT" "links or namespaces of a fleet in $dir exist but $dir holds none: remove them with: $0 down --dir $dir"
    fi
    if ((stack)); then
        resolve_bin_dir berth
    else
        resolve_bin_dir
    fi
    mkdir -p "$dir"
    (set -C && : >"$dir/fleet.conf") 2>/dev/null ||
        die "$EXIT_CONFLICT" "another up claimed $dir first"
    trap on_up_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    spare_ancestors
    set_daemon_env

    # The subnet is picked and its bridge made under a machine-wide lock, so
    # two ups side by side never pick the same one.
    local lockfd lockfile=/run/berth-fleet.lock
    [[ -d /run/lock ]] && lockfile=/run/lock/berth-fleet.lock
    exec {lockfd}>"$lockfile"
    flock -w 60 "$lockfd" || die "$EXIT_FAILED" "waited 60 s for another fleet.sh up to pick its subnet"
    pick_subnet
    ip link add "$bridge" type bridge
    ip addr add "$(server_ip)/24" dev "$bridge"
    ip link set "$bridge" up
    exec {lockfd}>&-

    printf 'hosts=%s\nsubnet=%s\nserver_port=%s\nagent_port=%s\nbin_dir=%s\ntag=%s\nbridge=%s\n' \
        "$hosts" "$subnet" "$server_port" "$agent_port" "$bin_dir" "$tag" "$bridge" >"$dir/fleet.conf"
    mkdir -p "$dir/server"
    (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$dir/join.token")

    local defaults i name labels allocatable
    defaults=$(default_allocatable)
    for ((i = 1; i <= hosts; i++)); do
        name=host-$i
        labels="host=$name,zone=$( ((i % 2)) && echo a || echo b)"
        allocatable=$defaults
        for spec in "${allocatable_args[@]+"${allocatable_args[@]}"}"; do
            split_host_spec "$spec"
            [[ -z $spec_host ]] && allocatable=$(merge_kv "$allocatable" "$spec_body")
        done
        for spec in "${allocatable_args[@]+"${allocatable_args[@]}"}"; do
            split_host_spec "$spec"
            [[ $spec_host == "$name" ]] && allocatable=$(merge_kv "$allocatable" "$spec_body")
        done
        for spec in "${label_args[@]+"${label_args[@]}"}"; do
            split_host_spec "$spec"
            [[ -z $spec_host ]] && labels=$(merge_kv "$labels" "$spec_body")
        done
        for spec in "${label_args[@]+"${label_args[@]}"}"; do
            split_host_spec "$spec"
            [[ $spec_host == "$name" ]] && labels=$(merge_kv "$labels" "$spec_body")
        done
        write_host_conf "$name" "$labels" "$allocatable"
        make_host_network "$name"
    done
    note "network: bridge $bridge ($(server_ip)/24), $hosts network namespace(s) berth-fleet-$tag-host-*"

    if ((stack)); then
        local tarball
        tarball=$(stack_tarball)
        for ((i = 1; i <= hosts; i++)); do
            "${daemon_env[@]}" "$bin_dir/berth" --data-dir "$(host_dir "host-$i")/data" \
                image import "$STACK_IMAGE" "$tarball" </dev/null >/dev/null ||
                die "$EXIT_FAILED" "importing $tarball into host-$i failed"
        done
    fi

    start_server
    wait_for "the server" "$(<"$dir/server/server.pid")" "$dir/server/server.log" server_answers ||
        die "$EXIT_FAILED" "the server did not come up"
    local operator_token
    operator_token=$(json_field "$(operator token create --operator --name fleet.sh --json)" token)
    [[ -n $operator_token ]] || die "$EXIT_FAILED" "berthd token create --operator printed no token"
    (umask 077 && printf '%s' "$operator_token" >"$dir/operator.token")
    for ((i = 1; i <= hosts; i++)); do
        start_agent "host-$i"
    done
    for ((i = 1; i <= hosts; i++)); do
        name=host-$i
        wait_for "the agent of $name" "$(<"$(host_dir "$name")/agent.pid")" "$(host_dir "$name")/agent.log" agent_answers "$name" ||
            die "$EXIT_FAILED" "the agent of $name did not come up"
    done

    local project id token
    project=$(operator project create fleet --json) || die "$EXIT_FAILED" "berthd project create failed"
    id=$(json_field "$project" id)
    token=$(json_field "$project" token)
    [[ -n $id && -n $token ]] || die "$EXIT_FAILED" "berthd project create printed no id and token: $project"
    if ((stack)); then
        local runtime
        for runtime in sh binary; do
            operator stack map "$runtime" "$STACK_IMAGE" >/dev/null ||
                die "$EXIT_FAILED" "berthd stack map $runtime failed"
        done
    fi

    {
        printf 'BERTH_URL=%s\n' "$(server_url)"
        printf 'BERTH_PROJECT_ID=%s\n' "$id"
        printf 'BERTH_TOKEN=%s\n' "$token"
        printf 'BERTH_FLEET_HOSTS=%s\n' "$(host_names ,)"
        printf 'BERTH_FLEET_DIR=%q\n' "$dir"
        printf 'BERTH_FLEET_DATABASE=%q\n' "$(database_url)"
        printf 'BERTH_OPERATOR_TOKEN=%s\n' "$operator_token"
    } >"$dir/env.tmp"
    mv -f "$dir/env.tmp" "$dir/env"
    up_done=1
    trap - EXIT INT TERM
    cat "$dir/env"
    note "fleet up: server $(server_url), hosts $(host_names ' ')"
    note "use it: set -a; . $dir/env; set +a    (remove it: $0 down --dir $dir)"
}

# --- status ---------------------------------------------------------------

json_str() {
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    printf '"%s"' "$s"
}

# link_state NAME: up, down (taken down by kill-host) or missing.
link_state() {
    local veth out
    veth=$(veth_of "$1")
    out=$(ip -o link show dev "$veth" 2>/dev/null) || {
        printf missing
        return 0
    }
    local flags=${out#*<}
    flags=${flags%%>*}
    if [[ ,$flags, == *,UP,* ]]; then printf up; else printf down; fi
}

# container_count NAME: running containers of host NAME (cgroups below its
# parent that hold a process; a killed host's are left empty), in the
# hierarchy that has most of them.
container_count() {
    local d c n max=0 procs
    while IFS= read -r d; do
        n=0
        for c in "$d"/*/; do
            [[ -f $c/cgroup.procs ]] || continue
            procs=$(<"$c/cgroup.procs") 2>/dev/null || continue
            [[ -n $procs ]] && n=$((n + 1))
        done
        ((n > max)) && max=$n
    done < <(cgroup_dirs "$(cgroup_of "$1")")
    printf '%d' "$max"
}

# host_state NAME PID: alive, killed (by kill-host) or dead (it exited).
host_state() {
    if [[ -n $2 ]]; then
        printf alive
    elif [[ -f $(host_dir "$1")/killed ]]; then
        printf killed
    else
        printf dead
    fi
}

cmd_status() {
    load_fleet
    set_names
    local spid i name pid alive link conts labels allocatable
    spid=$(server_pid)
    if ((json)); then
        printf '{"dir":%s,"url":%s,"database":%s,"server":{"address":"%s:%s","pid":%s,"alive":%s},"hosts":[' \
            "$(json_str "$dir")" "$(json_str "$(server_url)")" "$(json_str "$(database_url)")" \
            "$(server_ip)" "$server_port" "${spid:-null}" "$([[ -n $spid ]] && echo true || echo false)"
        for ((i = 1; i <= hosts; i++)); do
            name=host-$i
            pid=$(agent_pid "$name")
            labels=$(conf_get "$(host_dir "$name")/host.conf" labels)
            allocatable=$(conf_get "$(host_dir "$name")/host.conf" allocatable)
            ((i > 1)) && printf ','
            printf '{"name":"%s","namespace":"%s","address":"%s:%s","pid":%s,"alive":%s,"state":"%s","link":"%s","containers":%d,"cgroup_parent":"%s","data_dir":%s,"labels":{' \
                "$name" "$(netns_of "$name")" "$(host_ip "$name")" "$agent_port" "${pid:-null}" \
                "$([[ -n $pid ]] && echo true || echo false)" "$(host_state "$name" "$pid")" \
                "$(link_state "$name")" "$(container_count "$name")" "$(cgroup_of "$name")" "$(json_str "$(host_dir "$name")/data")"
            local kv first=1
            local -a pairs
            IFS=, read -r -a pairs <<<"$labels"
            for kv in "${pairs[@]}"; do
                ((first)) || printf ','
                first=0
                printf '%s:%s' "$(json_str "${kv%%=*}")" "$(json_str "${kv#*=}")"
            done
            printf '},"allocatable":{'
            first=1
            IFS=, read -r -a pairs <<<"$allocatable"
            for kv in "${pairs[@]}"; do
                ((first)) || printf ','
                first=0
                printf '%s:%s' "$(json_str "${kv%%=*}")" "$(json_str "${kv#*=}")"
            done
            printf '}}'
        done
        printf ']}\n'
        return 0
    fi
    printf 'fleet %s   %s\n' "$dir" "$(server_url)"
    printf '%-8s %-28s %-20s %-8s %-7s %-5s %-10s %s\n' NAME NAMESPACE ADDRESS PID STATE LINK CONTAINERS LABELS
    printf '%-8s %-28s %-20s %-8s %-7s %-5s %-10s %s\n' server "-" "$(server_ip):$server_port" \
        "${spid:--}" "$([[ -n $spid ]] && echo alive || echo dead)" "-" "-" "-"
    for ((i = 1; i <= hosts; i++)); do
        name=host-$i
        pid=$(agent_pid "$name")
        alive=$(host_state "$name" "$pid")
        link=$(link_state "$name")
        conts=$(container_count "$name")
        labels=$(conf_get "$(host_dir "$name")/host.conf" labels)
        printf '%-8s %-28s %-20s %-8s %-7s %-5s %-10s %s\n' "$name" "$(netns_of "$name")" \
            "$(host_ip "$name"):$agent_port" "${pid:--}" "$alive" "$link" "$conts" "$labels"
    done
}

# --- kill-host / revive-host ----------------------------------------------

# Every process of host NAME, the agent first: its agent (pid file), berth
# processes naming its data dir or cgroup parent (its shims), anything in
# its network namespace, and everything in its cgroups (its containers).
host_pids() {
    local name=$1 hd
    hd=$(host_dir "$name")
    agent_pid "$name"
    echo
    # The trailing space keeps host-1 from matching host-10's shims.
    berth_pids_naming "$hd/" "--cgroup-parent $(cgroup_of "$name") "
    netns_pids "$(netns_of "$name")"
    cgroup_pids "$(cgroup_of "$name")"
}

cmd_kill_host() {
    load_fleet
    set_names
    check_host_name "$host_arg"
    require_tools
    spare_ancestors
    local name=$host_arg pid killed ns veth
    pid=$(agent_pid "$name")
    killed=$(kill_until_gone "$name" host_pids "$name") ||
        die "$EXIT_FAILED" "could not kill every process of $name"
    ns=$(netns_of "$name")
    veth=$(veth_of "$name")
    # A dead machine answers nothing: both ends of its cable go down.
    ip link set "$veth" down
    ip -n "$ns" link set eth0 down
    : >"$(host_dir "$name")/killed"
    if [[ -n $pid ]]; then
        note "$name: killed the agent (pid $pid) and $((killed - 1)) shim and container process(es); link down"
    else
        note "$name: the agent was not running; killed $killed other process(es); link down"
    fi
}

cmd_revive_host() {
    load_fleet
    set_names
    check_host_name "$host_arg"
    require_tools
    resolve_bin_dir
    set_daemon_env
    local name=$host_arg pid ns veth
    pid=$(agent_pid "$name")
    [[ -z $pid ]] || die "$EXIT_CONFLICT" "$name is alive (agent pid $pid): kill-host it first"
    ns=$(netns_of "$name")
    veth=$(veth_of "$name")
    [[ -e /run/netns/$ns ]] || die "$EXIT_FAILED" "the namespace $ns is gone; the fleet is broken: $0 down --dir $dir, then up again"
    ip link set "$veth" up
    ip -n "$ns" link set eth0 up
    start_agent "$name"
    wait_for "the agent of $name" "$(<"$(host_dir "$name")/agent.pid")" "$(host_dir "$name")/agent.log" agent_answers "$name" ||
        die "$EXIT_FAILED" "the agent of $name did not come back"
    note "$name: revived (agent pid $(agent_pid "$name")), on its old data dir"
}

# --- down -----------------------------------------------------------------

# Every process of the fleet: server, agents, shims (by pid file, by data
# dir, by cgroup parent), anything in its namespaces, anything in its
# cgroups.
fleet_pids() {
    local f ns parent
    local pid
    for f in "$dir/server/server.pid" "$dir"/host-*/agent.pid; do
        [[ -f $f ]] || continue
        daemon_pid "$f" "$dir/"
        echo
        # A daemon this very up started may not have exec'd yet (a failed
        # up cleaning up): then it is still our child, under our name.
        read -r pid <"$f" || continue
        if pid_alive "$pid" && [[ $(parent_of "$pid") == "$$" ]]; then
            printf '%s\n' "$pid"
        fi
    done
    berth_pids_naming "$dir/" "--cgroup-parent berth-fleet-$tag-"
    while IFS= read -r ns; do
        netns_pids "$ns"
    done < <(fleet_netns)
    while IFS= read -r parent; do
        cgroup_pids "$parent"
    done < <(fleet_cgroup_parents)
}

fleet_netns() {
    ip netns list 2>/dev/null | awk -v p="berth-fleet-$tag-" 'index($1, p) == 1 { print $1 }'
}
fleet_links() {
    ip -o link show 2>/dev/null | awk -F': ' -v p="$bridge" '{ n = $2; sub(/@.*/, "", n); if (index(n, p) == 1) print n }'
}
# The names of the fleet's cgroup parents present in any hierarchy.
fleet_cgroup_parents() {
    find /sys/fs/cgroup -mindepth 1 -maxdepth 2 -type d -name "berth-fleet-$tag-*" \
        -printf '%f\n' 2>/dev/null | sort -u
}

# Mount points at or below DIR, deepest first (octal escapes of
# /proc/self/mountinfo undone).
fleet_mounts() {
    awk '{ print $5 }' /proc/self/mountinfo | while IFS= read -r m; do
        m=$(printf '%b' "$m")
        [[ $m == "$dir" || $m == "$dir"/* ]] && printf '%s\n' "$m"
    done | awk '{ print length($0) "\t" $0 }' | sort -rn | cut -f2-
}

do_down() {
    local failed=0 killed m parent d ns link tries
    spare_ancestors
    killed=$(kill_until_gone "the fleet in $dir" fleet_pids) || failed=1

    for ((tries = 0; tries < 3; tries++)); do
        while IFS= read -r m; do
            umount -- "$m" 2>/dev/null || umount -l -- "$m" 2>/dev/null || true
        done < <(fleet_mounts)
        [[ -z $(fleet_mounts) ]] && break
    done
    if [[ -n $(fleet_mounts) ]]; then
        note "mounts left under $dir: $(fleet_mounts | tr '\n' ' ')"
        failed=1
    fi

    # A cgroup can be removed once its processes are reaped, which may take
    # a moment after SIGKILL: try for up to 5 s.
    while IFS= read -r parent; do
        while IFS= read -r d; do
            for ((tries = 0; tries < 100; tries++)); do
                find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
                [[ -d $d ]] || break
                sleep 0.05
            done
            if [[ -d $d ]]; then
                note "cgroup left: $d"
                failed=1
            fi
        done < <(cgroup_dirs "$parent")
    done < <(fleet_cgroup_parents)

    # Veths first (deleting one end removes its peer in the namespace), the
    # bridge last, then the namespaces.
    while IFS= read -r link; do
        [[ $link == "$bridge" ]] && continue
        ip link del "$link" 2>/dev/null || true
    done < <(fleet_links)
    ip link del "$bridge" 2>/dev/null || true
    while IFS= read -r ns; do
        ip netns del "$ns" 2>/dev/null || true
    done < <(fleet_netns)
    if [[ -n $(fleet_links) || -n $(fleet_netns) ]]; then
        note "links or namespaces left: $(fleet_links | tr '\n' ' ') $(fleet_netns | tr '\n' ' ')"
        failed=1
    fi

    if [[ -d $dir ]]; then
        if [[ -f $dir/fleet.conf || -z $(ls -A -- "$dir") ]]; then
            # --one-file-system: whatever is still mounted below is not ours
            # to delete through.
            rm -rf --one-file-system -- "$dir" || failed=1
        else
            note "$dir holds no fleet.conf: not removing a directory fleet.sh did not make"
        fi
    fi
    ((failed == 0)) || return 1
    printf 'removed the fleet in %s (%s process(es) killed)\n' "$dir" "$killed"
}

cmd_down() {
    require_tools
    set_names
    local leftovers=""
    leftovers=$(fleet_netns)$(fleet_links)$(fleet_cgroup_parents)
    if [[ ! -e $dir && -z $leftovers ]]; then
        printf 'no fleet in %s: nothing to remove\n' "$dir"
        return 0
    fi
    # A directory that is not a fleet's is never touched (down kills berth
    # processes that name DIR: a mistyped --dir must not reach real ones).
    if [[ -z $leftovers && ! -f $dir/fleet.conf ]]; then
        if [[ -d $dir && -z $(ls -A -- "$dir") ]]; then
            rmdir -- "$dir"
            printf 'no fleet in %s: removed the empty directory\n' "$dir"
            return 0
        fi
        die "$EXIT_NO_FLEET" "$dir holds no fleet (no fleet.conf) and no fleet of it is running: left alone"
    fi
    do_down || die "$EXIT_FAILED" "some of the fleet in $dir could not be removed (see above)"
}

parse_args "$@"
case "$verb" in
    up) cmd_up ;;
    status) cmd_status ;;
    kill-host) cmd_kill_host ;;
    revive-host) cmd_revive_host ;;
    down) cmd_down ;;
esac
