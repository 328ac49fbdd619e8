#!/usr/bin/env bash
# A berth fleet on one machine, for tests and for trying berth: one server
# (or several sharing one PostgreSQL database) and N agent hosts, each agent
# in a network namespace of its own.
#
# Usage: scripts/fleet.sh VERB [OPTIONS]
#
#   up --hosts N [--servers M --postgres] [--dir DIR] [options below]
#                       start a fleet and print (and write to DIR/env) the
#                       settings a client needs
#   status [--dir DIR] [--json]
#                       every server (address, pid, alive or not, which one
#                       leads) and every host: namespace, address, agent
#                       pid, alive or not, link, containers
#   kill-host NAME [--dir DIR]
#                       kill -9 the host's agent, its shims and its
#                       containers at once, and take its link down, as if
#                       the machine had died
#   revive-host NAME [--dir DIR]
#                       bring the link up and start the agent again on the
#                       same data dir (it keeps its identity)
#   kill-server NAME|leader [--dir DIR]
#                       kill -9 the server NAME (server-I), or the one that
#                       leads (holds the dispatch lease) as GET /v1/servers
#                       of any live server says; prints the name killed
#   revive-server NAME [--dir DIR]
#                       start the server NAME again with the same flags and
#                       wait until it answers
#   down [--dir DIR]    remove everything the fleet made: processes,
#                       containers, cgroups, mounts, namespaces, links, its
#                       PostgreSQL database, DIR. Safe to run twice, and
#                       after an `up` that failed
#
# Every verb takes --dir DIR (default /tmp/berth-fleet); fleets in
# different dirs are independent and can run side by side. Keep DIR short
# (about 30 characters at most): the agents' data dirs are below it, and
# their containers' unix sockets below those. revive-host and revive-server
# also take --bin-dir and --timeout; kill-server leader takes --timeout (how
# long to wait for a live server to lead).
#
# Options of up:
#   --hosts N             agent hosts, named host-1 … host-N (1 to 200)
#   --servers M           servers, named server-1 … server-M (1 to 9,
#                         default 1); more than one needs --postgres
#   --postgres            the servers share a PostgreSQL database made for
#                         this fleet (berth_fleet_<tag>) in the local
#                         cluster scripts/postgres.sh starts, instead of
#                         SQLite; down drops it
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
#   --server-port P       server-1's port on the bridge; server-I listens on
#                         P + I - 1 [default 8380]
#   --agent-port P        each agent's port in its namespace [default 7420]
#   --timeout SECS        how long to wait for each daemon to answer
#                         [default 30]
#   --keep-on-failure     leave what a failed up made, for a look (then
#                         `down`)
#
# What up makes (all names carry a tag, 8 hex digits of DIR's path, so
# fleets never collide and `down` finds everything by name alone):
#   a bridge bfl<tag> holding A.B.C.1/24, where the servers listen;
#   per host a network namespace berth-fleet-<tag>-host-I whose eth0
#   (A.B.C.<I+1>/24) is a veth pair with bfl<tag>hI on the bridge, loopback
#   up, and an agent listening on A.B.C.<I+1>:7420 that joins every server;
#   per host a cgroup parent berth-fleet-<tag>-host-I in every hierarchy,
#   a data dir DIR/host-I/data and a log DIR/host-I/agent.log;
#   per server a data dir DIR/server-I (log server.log, pid server.pid),
#   started with --name server-I --advertise http://A.B.C.1:PORT;
#   the store: SQLite DIR/server-1/berth.db, or with --postgres the
#   database berth_fleet_<tag>; a project and its token, the fleet's join
#   token (DIR/join.token) and an operator token (DIR/operator.token). No
#   firewall rule and no route beyond the bridge's.
#
# DIR/env (and up's standard output) holds KEY=VALUE lines:
#   BERTH_URL, BERTH_PROJECT_ID, BERTH_TOKEN   for berth and IronWorker clients
#                           (BERTH_URL lists every server, comma separated)
#   BERTH_FLEET_HOSTS       host names, comma-separated
#   BERTH_FLEET_SERVERS     server names, comma-separated
#   BERTH_FLEET_DIR         DIR
#   BERTH_FLEET_DATABASE    the servers' database, for operator commands
#   BERTH_OPERATOR_TOKEN    for `berth node …` and `berth server ls`
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
#   scripts/fleet.sh up --hosts 2 --servers 3 --postgres --dir /tmp/f3
#   scripts/fleet.sh kill-server leader --dir /tmp/f3    # prints e.g. server-1
#   scripts/fleet.sh revive-server server-1 --dir /tmp/f3
#
# Needs: root, Linux with network namespaces and veth/bridge links,
# iproute2 (ip), util-linux (nsenter, setsid, flock), coreutils; with
# --postgres PostgreSQL and psql (scripts/ensure-deps.sh installs them).
#
# Exit status: 0 done; 1 something failed (the message says what; up
# cleaned up after itself); 2 usage error; 3 no fleet in DIR; 4 no such
# host or server; 5 conflict (a fleet already runs in DIR, the subnet, a
# name or the database is taken, the host or server is alive).
set -euo pipefail

readonly PROG=fleet.sh
readonly EXIT_FAILED=1 EXIT_USAGE=2 EXIT_NO_FLEET=3 EXIT_NO_HOST=4 EXIT_CONFLICT=5
readonly MAX_HOSTS=200 MAX_SERVERS=9
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
servers=""
postgres=0
# The NAME of kill-host, revive-host, kill-server and revive-server.
name_arg=""
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
    (($#)) || usage_error "a verb is needed: up, status, kill-host, revive-host, kill-server, revive-server or down"
    case "$1" in
        -h | --help | help) print_help; exit 0 ;;
        up | status | kill-host | revive-host | kill-server | revive-server | down) verb=$1 ;;
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
            --servers) need_value "$@"; servers=$2; shift 2 ;;
            --servers=*) servers=${1#*=}; shift ;;
            --postgres) postgres=1; shift ;;
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
                [[ $verb == *-host || $verb == *-server ]] ||
                    usage_error "$verb takes no argument ($1)"
                [[ -z $name_arg ]] || usage_error "$verb takes one name (got $name_arg and $1)"
                name_arg=$1
                shift
                ;;
        esac
    done
    # Options that only make sense for some verbs are refused elsewhere, so
    # that a mistyped command line never half-works.
    if [[ $verb != up ]]; then
        [[ -z $hosts && -z $servers && $postgres == 0 && ${#allocatable_args[@]} -eq 0 &&
            ${#label_args[@]} -eq 0 && -z $image_tar && $stack == 1 && -z $subnet && $keep_on_failure == 0 ]] ||
            usage_error "--hosts, --servers, --postgres, --allocatable, --labels, --image, --no-stack, --subnet and --keep-on-failure are options of up"
    fi
    if [[ $verb != status ]]; then
        ((json == 0)) || usage_error "--json is an option of status"
    fi
    case "$verb" in
        kill-host | revive-host)
            [[ -n $name_arg ]] || usage_error "$verb needs a host name (e.g. $verb host-1)" ;;
        kill-server)
            [[ -n $name_arg ]] || usage_error "kill-server needs a server name or leader (e.g. kill-server server-1, kill-server leader)" ;;
        revive-server)
            [[ -n $name_arg ]] || usage_error "revive-server needs a server name (e.g. revive-server server-1)"
            [[ $name_arg != leader ]] || usage_error "revive-server needs a server's name (server-I), not leader" ;;
    esac
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
    servers=$(conf_get "$fleet_conf" servers)
    database=$(conf_get "$fleet_conf" database)
    [[ -n $hosts && -n $subnet && -n $server_port && -n $agent_port && -n $servers && -n $database ]] ||
        die "$EXIT_NO_FLEET" "$fleet_conf is incomplete (an up that failed, or an older fleet.sh's?); remove the fleet with: $0 down --dir $dir"
    if [[ -z $bin_dir ]]; then
        bin_dir=$(conf_get "$fleet_conf" bin_dir)
    fi
}

# The first three octets of the subnet ("10.201.7").
net_prefix() { printf '%s' "${subnet%.0/24}"; }
server_ip() { printf '%s.1' "$(net_prefix)"; }
host_ip() { printf '%s.%d' "$(net_prefix)" $(($(host_index "$1") + 1)); }

# Servers are numbered 1 … $servers; server I is named server-I, listens on
# the bridge at port $server_port + I - 1 and keeps DIR/server-I.
server_dir() { printf '%s/server-%d' "$dir" "$1"; }
server_address() { printf '%s:%d' "$(server_ip)" $((server_port + $1 - 1)); }
server_url() { printf 'http://%s' "$(server_address "$1")"; }
# server_urls: every server's URL, comma separated (BERTH_URL, --join).
server_urls() {
    local i out=""
    for ((i = 1; i <= servers; i++)); do
        out+=${out:+,}$(server_url "$i")
    done
    printf '%s' "$out"
}
server_names() {
    local sep=${1:-,} i out=""
    for ((i = 1; i <= servers; i++)); do
        out+=${out:+$sep}server-$i
    done
    printf '%s' "$out"
}
# server_index NAME: I of server-I, if the fleet has it (else fails).
server_index() {
    local i=${1#server-}
    [[ $1 == server-* && $i =~ ^[1-9][0-9]*$ ]] && ((i <= servers)) || return 1
    printf '%d' "$i"
}

# The servers' store: SQLite in server-1's dir, or (--postgres) a database
# of the local cluster named after the tag, so that `down` can find it
# without DIR's records.
database=""
sqlite_url() { printf 'sqlite://%s/berth.db' "$(server_dir 1)"; }
pg_database_name() { printf 'berth_fleet_%s' "$tag"; }
# pg_url_for URL DB: URL with its database (path) replaced by DB.
pg_url_for() {
    local base=${1%%\?*} scheme rest authority
    local query=${1#"$base"}
    scheme=${base%%://*}
    rest=${base#*://}
    authority=${rest%%/*}
    printf '%s://%s/%s%s' "$scheme" "$authority" "$2" "$query"
}
# pg_sql URL SQL: runs SQL as the role of URL, printing rows unaligned.
pg_sql() {
    PGCONNECT_TIMEOUT=10 timeout 60 psql "$1" -X -v ON_ERROR_STOP=1 -Atqc "$2" </dev/null
}
# pg_admin_url: the URL of a role that may create databases, from
# scripts/postgres.sh (which starts the local cluster if need be). Its
# chatter (psql's notices) is shown only if it fails.
pg_admin_url() {
    local errors status=0
    errors=$(mktemp)
    bash "$repo/scripts/postgres.sh" 2>"$errors" || status=$?
    ((status == 0)) || cat "$errors" >&2
    rm -f "$errors"
    return "$status"
}
# redact_url URL: URL without its password, for messages.
redact_url() {
    if [[ $1 =~ ^([a-z]+://[^:/@]*):[^@]*@(.*)$ ]]; then
        printf '%s:***@%s' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
    else
        printf '%s' "$1"
    fi
}
pg_installed() {
    command -v psql >/dev/null 2>&1 && [[ -n $(ls -A /usr/lib/postgresql 2>/dev/null) ]]
}

check_host_name() {
    local name=$1 i
    i=$(host_index "$name")
    if [[ $name != host-* || ! $i =~ ^[1-9][0-9]*$ ]] || ((i > hosts)); then
        die "$EXIT_NO_HOST" "no host $name in the fleet of $dir (hosts: $(host_names ' '))"
    fi
}
check_server_name() {
    server_index "$1" >/dev/null ||
        die "$EXIT_NO_HOST" "no server $1 in the fleet of $dir (servers: $(server_names ' '))"
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
# server_pid I: server-I's pid if it runs. (Its command line names its
# data dir DIR/server-I; there are at most 9, so no server-1 prefix of
# another's.)
server_pid() { daemon_pid "$(server_dir "$1")/server.pid" "--data-dir $(server_dir "$1") "; }
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
server_answers() { # I
    local code
    code=$(http_status "$(server_ip)" $((server_port + $1 - 1)) /2/projects/fleet-probe/tasks)
    [[ -n $code ]]
}
# operator_get PATH: the body of an operator's GET PATH from the first
# running server that answers (every server serves the whole API); fails
# if none does.
operator_get() {
    local i body token
    token=$(cat "$dir/operator.token" 2>/dev/null) || return 1
    for ((i = 1; i <= servers; i++)); do
        [[ -n $(server_pid "$i") ]] || continue
        body=$(http_body "$(server_ip)" $((server_port + i - 1)) "$1" "$token")
        if [[ -n $body ]]; then
            printf '%s' "$body"
            return 0
        fi
    done
    return 1
}
# host_credential NAME: the bearer the server presents to NAME's agent.
host_credential() {
    json_field "$(cat "$(host_dir "$1")/data/agent/identity.json" 2>/dev/null)" credential
}
# agent_answers NAME: the agent answers on its address (with its own
# credential) and the servers list it as ready.
agent_answers() { # NAME
    local code credential
    credential=$(host_credential "$1")
    [[ -n $credential ]] || return 1
    code=$(http_status "$(host_ip "$1")" "$agent_port" /v1/node "$credential")
    [[ $code == 200 ]] || return 1
    [[ $(operator_get "/v1/nodes/$1") == *'"state":"ready"'* ]]
}

# The servers' own list (GET /v1/servers): one flat JSON object per server,
# so one line per server once split at "{".
# leader_name: the name of the server that leads (holds a live dispatch
# lease and is up), empty if none; fails if no server answered.
leader_name() {
    local list
    list=$(operator_get /v1/servers) || return 1
    [[ $list == *'"servers"'* ]] || return 1
    tr '{' '\n' <<<"$list" |
        sed -n '/"leader":true/ { /"state":"up"/ { s/.*"name":"\([^"]*\)".*/\1/p; } }'
}
# lease_term: the dispatch lease's term (empty if none or no answer).
lease_term() {
    local list
    list=$(operator_get /v1/servers) || return 0
    sed -n 's/.*"term":\([0-9][0-9]*\).*/\1/p' <<<"$list"
}
# live_leader: the leader, if it is one of this fleet's servers and its
# process runs (a killed leader is still marked until its lease expires).
live_leader() {
    local name i
    name=$(leader_name) || return 0
    i=$(server_index "$name") || return 0
    [[ -n $(server_pid "$i") ]] && printf '%s' "$name"
    return 0
}

# --- attaching agents to the server ---------------------------------------

# attach_flags server | agent NAME: the flags that connect agents and
# server, one per line.
#
# The servers take joins with the fleet's join token (--join-token-file
# DIR/join.token). Each agent serves its API on its address (--listen) and
# joins the fleet through any of its servers (--join URL1,URL2,… tried in
# turn; --join-token-file … --name NAME), reporting
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
                --join "$(server_urls)" --join-token-file "$dir/join.token" --name "$name" \
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

# start_server I: server-I on its port of the bridge, on the fleet's
# store, named and advertised so that `berth server ls` tells them apart.
start_server() {
    local i=$1 sd pid
    local -a attach
    sd=$(server_dir "$i")
    mkdir -p "$sd"
    mapfile -t attach < <(attach_flags server)
    "${daemon_env[@]}" setsid "$bin_dir/berthd" --data-dir "$sd" \
        --cgroup-parent "$(cgroup_of "server-$i")" \
        server --listen "$(server_address "$i")" --database "$database" \
        --name "server-$i" --advertise "$(server_url "$i")" "${attach[@]}" \
        </dev/null >>"$sd/server.log" 2>&1 &
    pid=$!
    disown "$pid"
    printf '%s\n' "$pid" >"$sd/server.pid"
    rm -f "$sd/killed"
}
wait_for_server() { # I
    local sd
    sd=$(server_dir "$1")
    wait_for "server-$1" "$(<"$sd/server.pid")" "$sd/server.log" server_answers "$1"
}

# operator ARGS…: berthd's operator commands, on the servers' database
# directly (no server needs to run).
operator() {
    "${daemon_env[@]}" "$bin_dir/berthd" --data-dir "$(server_dir 1)" "$@" --database "$database" </dev/null
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
    servers=${servers:-1}
    [[ $servers =~ ^[1-9][0-9]*$ ]] && ((servers <= MAX_SERVERS)) ||
        usage_error "--servers must be a whole number from 1 to $MAX_SERVERS (got $servers)"
    ((servers == 1 || postgres)) ||
        usage_error "--servers $servers needs --postgres: servers share one store, and SQLite is one server's"
    ((server_port + servers - 1 <= 65535)) ||
        usage_error "--server-port $server_port: the $servers servers' ports ($server_port to $((server_port + servers - 1))) must be at most 65535"
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
    # The database is made once DIR's records name it (so that a failed up
    # drops it); whether the cluster answers and the name is free is
    # checked first, changing nothing.
    local pg_admin="" pg_name=""
    if ((postgres)); then
        command -v psql >/dev/null 2>&1 ||
            die "$EXIT_FAILED" "psql not found: --postgres needs PostgreSQL (scripts/ensure-deps.sh installs it)"
        pg_admin=$(pg_admin_url) ||
            die "$EXIT_FAILED" "scripts/postgres.sh failed (see above): --postgres needs the local PostgreSQL cluster"
        [[ $pg_admin == postgres://* || $pg_admin == postgresql://* ]] ||
            die "$EXIT_FAILED" "scripts/postgres.sh printed no postgres:// URL: $pg_admin"
        pg_name=$(pg_database_name)
        local taken
        taken=$(pg_sql "$pg_admin" "SELECT 1 FROM pg_database WHERE datname = '$pg_name'") ||
            die "$EXIT_FAILED" "could not ask PostgreSQL ($(redact_url "$pg_admin")) for its databases"
        [[ -z $taken ]] ||
            die "$EXIT_CONFLICT" "the database $pg_name of a fleet in $dir exists but $dir holds none: remove it with: $0 down --dir $dir"
        database=$(pg_url_for "$pg_admin" "$pg_name")
    else
        database=$(sqlite_url)
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

    printf 'hosts=%s\nservers=%s\nsubnet=%s\nserver_port=%s\nagent_port=%s\nbin_dir=%s\ntag=%s\nbridge=%s\ndatabase=%s\npg_admin=%s\npg_database=%s\n' \
        "$hosts" "$servers" "$subnet" "$server_port" "$agent_port" "$bin_dir" "$tag" "$bridge" \
        "$database" "$pg_admin" "$pg_name" >"$dir/fleet.conf"
    if ((postgres)); then
        pg_sql "$pg_admin" "CREATE DATABASE $pg_name" >/dev/null ||
            die "$EXIT_FAILED" "could not create the database $pg_name"
        note "database: $pg_name (PostgreSQL, $(redact_url "$database"))"
    fi
    local i
    for ((i = 1; i <= servers; i++)); do
        mkdir -p "$(server_dir "$i")"
    done
    (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$dir/join.token")

    local defaults name labels allocatable
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

    # Side by side: the store serializes their migrations.
    for ((i = 1; i <= servers; i++)); do
        start_server "$i"
    done
    for ((i = 1; i <= servers; i++)); do
        wait_for_server "$i" || die "$EXIT_FAILED" "server-$i did not come up"
    done
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
        printf 'BERTH_URL=%s\n' "$(server_urls)"
        printf 'BERTH_PROJECT_ID=%s\n' "$id"
        printf 'BERTH_TOKEN=%s\n' "$token"
        printf 'BERTH_FLEET_HOSTS=%s\n' "$(host_names ,)"
        printf 'BERTH_FLEET_SERVERS=%s\n' "$(server_names ,)"
        printf 'BERTH_FLEET_DIR=%q\n' "$dir"
        printf 'BERTH_FLEET_DATABASE=%q\n' "$database"
        printf 'BERTH_OPERATOR_TOKEN=%s\n' "$operator_token"
    } >"$dir/env.tmp"
    mv -f "$dir/env.tmp" "$dir/env"
    up_done=1
    trap - EXIT INT TERM
    cat "$dir/env"
    note "fleet up: $(server_names ' ') at $(server_urls), hosts $(host_names ' ')"
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

# server_state I PID: alive, killed (by kill-server) or dead (it exited).
server_state() {
    if [[ -n $2 ]]; then
        printf alive
    elif [[ -f $(server_dir "$1")/killed ]]; then
        printf killed
    else
        printf dead
    fi
}

cmd_status() {
    load_fleet
    set_names
    local spid i name pid alive link conts labels allocatable leader term
    # Which server leads, as the servers say (asked of the first running
    # one that answers); none if no server answers.
    leader=$(live_leader)
    term=$(lease_term)
    if ((json)); then
        spid=$(server_pid 1)
        printf '{"dir":%s,"url":%s,"database":%s,"leader":%s,"term":%s,"server":{"address":"%s","pid":%s,"alive":%s},"servers":[' \
            "$(json_str "$dir")" "$(json_str "$(server_urls)")" "$(json_str "$database")" \
            "$([[ -n $leader ]] && json_str "$leader" || echo null)" "${term:-null}" \
            "$(server_address 1)" "${spid:-null}" "$([[ -n $spid ]] && echo true || echo false)"
        for ((i = 1; i <= servers; i++)); do
            pid=$(server_pid "$i")
            ((i > 1)) && printf ','
            printf '{"name":"server-%d","address":"%s","url":"%s","pid":%s,"alive":%s,"state":"%s","leader":%s,"data_dir":%s}' \
                "$i" "$(server_address "$i")" "$(server_url "$i")" "${pid:-null}" \
                "$([[ -n $pid ]] && echo true || echo false)" "$(server_state "$i" "$pid")" \
                "$([[ $leader == "server-$i" ]] && echo true || echo false)" "$(json_str "$(server_dir "$i")")"
        done
        printf '],"hosts":['
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
    printf 'fleet %s   %s   database %s\n' "$dir" "$(server_urls)" "$(redact_url "$database")"
    printf '%-8s %-20s %-8s %-7s %s\n' SERVER ADDRESS PID STATE ROLE
    local role
    for ((i = 1; i <= servers; i++)); do
        pid=$(server_pid "$i")
        if [[ -z $pid ]]; then
            role=-
        elif [[ $leader == "server-$i" ]]; then
            role="leader (term $term)"
        elif [[ -n $leader ]]; then
            role=follower
        else
            role="- (no server leads or answers)"
        fi
        printf '%-8s %-20s %-8s %-7s %s\n' "server-$i" "$(server_address "$i")" \
            "${pid:--}" "$(server_state "$i" "$pid")" "$role"
    done
    printf '%-8s %-28s %-20s %-8s %-7s %-5s %-10s %s\n' HOST NAMESPACE ADDRESS PID STATE LINK CONTAINERS LABELS
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
    check_host_name "$name_arg"
    require_tools
    spare_ancestors
    local name=$name_arg pid killed ns veth
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
    check_host_name "$name_arg"
    require_tools
    resolve_bin_dir
    set_daemon_env
    local name=$name_arg pid ns veth
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

# --- kill-server / revive-server ------------------------------------------

# server_pids I: server-I's process (a server runs no children).
server_pids() {
    server_pid "$1"
    echo
    berth_pids_naming "--data-dir $(server_dir "$1") "
}

# wait_for_leader: the live server that leads, waiting up to --timeout for
# one (right after a leader died its lease must expire first).
wait_for_leader() {
    local deadline=$((SECONDS + wait_secs)) name
    while :; do
        name=$(live_leader)
        if [[ -n $name ]]; then
            printf '%s' "$name"
            return 0
        fi
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

cmd_kill_server() {
    load_fleet
    set_names
    require_tools
    spare_ancestors
    local name=$name_arg i pid killed
    if [[ $name == leader ]]; then
        name=$(wait_for_leader) ||
            die "$EXIT_FAILED" "no running server of $dir leads (none answered GET /v1/servers with a live leader within ${wait_secs}s, --timeout)"
    fi
    check_server_name "$name"
    i=$(server_index "$name")
    pid=$(server_pid "$i")
    killed=$(kill_until_gone "$name" server_pids "$i") ||
        die "$EXIT_FAILED" "could not kill $name"
    : >"$(server_dir "$i")/killed"
    if [[ -n $pid ]]; then
        note "$name: killed (pid $pid)"
    else
        note "$name was not running (killed $killed process(es))"
    fi
    printf '%s\n' "$name"
}

cmd_revive_server() {
    load_fleet
    set_names
    check_server_name "$name_arg"
    require_tools
    resolve_bin_dir
    set_daemon_env
    local name=$name_arg i pid
    i=$(server_index "$name")
    pid=$(server_pid "$i")
    [[ -z $pid ]] || die "$EXIT_CONFLICT" "$name is alive (pid $pid): kill-server it first"
    start_server "$i"
    wait_for_server "$i" || die "$EXIT_FAILED" "$name did not come back"
    note "$name: revived (pid $(server_pid "$i")) at $(server_url "$i")"
}

# --- down -----------------------------------------------------------------

# Every process of the fleet: servers, agents, shims (by pid file, by data
# dir, by cgroup parent), anything in its namespaces, anything in its
# cgroups.
fleet_pids() {
    local f ns parent
    local pid
    # (DIR/server/ is where an older fleet.sh kept its one server.)
    for f in "$dir"/server*/server.pid "$dir"/host-*/agent.pid; do
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

# fleet_database: "ADMIN_URL NAME" of the fleet's PostgreSQL database to
# drop, or nothing. From DIR's records when they are complete (nothing for
# a SQLite fleet); else (the records are lost or half written) the name
# follows from the tag, and the local cluster is asked, if PostgreSQL is
# installed (scripts/postgres.sh; quietly nothing otherwise).
fleet_database() {
    local conf=$dir/fleet.conf admin name
    if [[ -f $conf && -n $(conf_get "$conf" tag) ]]; then
        admin=$(conf_get "$conf" pg_admin)
        name=$(conf_get "$conf" pg_database)
    elif [[ $verb == up ]]; then
        # A failed up writes its records before it makes a database.
        return 0
    else
        pg_installed || return 0
        admin=$(pg_admin_url 2>/dev/null) || return 0
        name=$(pg_database_name)
    fi
    [[ -n $admin && $name =~ ^berth_fleet_[0-9a-f]{8}$ ]] || return 0
    printf '%s %s' "$admin" "$name"
}

# database_exists ADMIN NAME
database_exists() {
    [[ -n $(pg_sql "$1" "SELECT 1 FROM pg_database WHERE datname = '$2'" 2>/dev/null) ]]
}

# drop_database ADMIN NAME: drops it (ending its sessions) if it exists.
drop_database() {
    pg_sql "$1" "DROP DATABASE IF EXISTS $2 WITH (FORCE)" >/dev/null && ! database_exists "$1" "$2"
}

do_down() {
    local failed=0 killed m parent d ns link tries pg admin db
    spare_ancestors
    killed=$(kill_until_gone "the fleet in $dir" fleet_pids) || failed=1

    # With every server dead, nothing reconnects to the database.
    pg=$(fleet_database)
    if [[ -n $pg ]]; then
        admin=${pg%% *}
        db=${pg#* }
        if ! drop_database "$admin" "$db"; then
            note "could not drop the database $db ($(redact_url "$admin"))"
            failed=1
        fi
    fi

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
    local leftovers="" pg
    leftovers=$(fleet_netns)$(fleet_links)$(fleet_cgroup_parents)
    if [[ ! -e $dir && -z $leftovers ]]; then
        # DIR and everything named after it are gone; its database may not
        # be (a DIR removed by hand).
        pg=$(fleet_database)
        if [[ -n $pg ]] && database_exists "${pg%% *}" "${pg#* }"; then
            drop_database "${pg%% *}" "${pg#* }" ||
                die "$EXIT_FAILED" "could not drop the database ${pg#* } of the fleet in $dir"
            printf 'no fleet in %s: dropped its database %s\n' "$dir" "${pg#* }"
            return 0
        fi
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
    kill-server) cmd_kill_server ;;
    revive-server) cmd_revive_server ;;
    down) cmd_down ;;
esac
