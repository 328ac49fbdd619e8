#!/usr/bin/env bash
# End-to-end test of scripts/fleet.sh with the real binaries.
#
# Part 1: a fleet of one server (SQLite) and 3 agent hosts in network
# namespaces, a task queued through the server's IronWorker API that runs
# on one of them, kill-host and revive-host of that host, down, and then
# nothing of the fleet left anywhere.
# Part 2 (HA): 2 servers sharing a PostgreSQL database and 2 hosts; a task
# through BERTH_URL listing both; kill-server leader, the other leads and
# runs a new task (the client fails over); revive-server brings the killed
# one back as a follower; down leaves nothing, the database dropped.
#
# Usage: tests/fleet-script.sh
#   BERTH_BIN_DIR          the binaries (fleet.sh's default: target/dist if
#                          built, else target/debug)
#   BERTH_TEST_BUSYBOX_TAR the stack image (else fleet.sh makes one)
# Part 2 needs PostgreSQL (scripts/postgres.sh starts the local cluster); it
# fails, never skips, without it.
#
# Runs as root, side by side with other tests: everything lives in a
# directory of its own under /tmp, and the fleet's names derive from it.
# Removes its fleet even when it fails. Exit 0 passed, 1 failed.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
fleet=$repo/scripts/fleet.sh
# Short: the agents' data dirs are below DIR, and their containers' unix
# sockets below those (107 bytes at most).
work=$(mktemp -d /tmp/bft.XXXXXX)
dir=$work/f
ha_dir=$work/h
started=$SECONDS

say() { printf '\n--- %s\n' "$*"; }
fail() {
    printf 'FAIL: %s\n' "$*" >&2
    exit 1
}

# Whatever happens, the fleet goes; on failure its logs are shown first.
finish() {
    local status=$?
    trap - EXIT
    local d
    for d in "$dir" "$ha_dir"; do
        if ((status != 0)) && [[ -d $d ]]; then
            echo "--- logs of the failed run ($d)" >&2
            tail -n 30 "$d"/server-*/server.log "$d"/host-*/agent.log >&2 2>/dev/null || true
        fi
        "$fleet" down --dir "$d" >/dev/null 2>&1 || {
            echo "fleet.sh down --dir $d failed in the clean-up" >&2
            status=1
        }
    done
    "$fleet" down --dir "$work/b" >/dev/null 2>&1 || true
    rm -rf --one-file-system -- "$work"
    if ((status == 0)); then
        echo "fleet-script: passed in $((SECONDS - started)) s"
    else
        echo "fleet-script: FAILED" >&2
    fi
    exit "$status"
}
trap finish EXIT

# The names fleet.sh gives what it makes outside DIR (docs/fleet.md).
tag_of() { printf '%s' "$(realpath -m -- "$1")" | sha256sum | cut -c1-8; }

# Everything of the fleet tagged TAG (in DIR D) that exists, one per line.
leftovers() {
    local tag=$1 d=$2
    ip netns list 2>/dev/null | awk -v p="berth-fleet-$tag-" 'index($1, p) == 1 { print "netns " $1 }'
    ip -o link show 2>/dev/null | awk -F': ' -v p="bfl$tag" '{ n = $2; sub(/@.*/, "", n); if (index(n, p) == 1) print "link " n }'
    find /sys/fs/cgroup -maxdepth 3 -name "berth-fleet-$tag-*" -printf 'cgroup %p\n' 2>/dev/null
    awk -v d="$d" 'index($5, d) == 1 { print "mount " $5 }' /proc/self/mountinfo
    local p args
    for p in /proc/[0-9]*; do
        { mapfile -d '' -t args <"$p/cmdline"; } 2>/dev/null || continue
        ((${#args[@]} > 0)) || continue
        [[ ${args[0]##*/} == berth* && "${args[*]}" == *"$d"* ]] && echo "process ${p#/proc/}: ${args[*]}"
    done
    [[ -e $d ]] && echo "dir $d"
    return 0
}

# http_get ADDRESS PATH TOKEN: the body of GET PATH, or nothing if nothing
# answered within 2 s.
http_get() {
    timeout 2 bash -c '
        exec 3<>"/dev/tcp/${0%:*}/${0##*:}" || exit 1
        printf "GET %s HTTP/1.0\r\nAuthorization: Bearer %s\r\n\r\n" "$1" "$2" >&3
        sed "1,/^\r$/d" <&3' "$1" "$2" "$3" 2>/dev/null || true
}

# expect_exit CODE COMMAND…: runs COMMAND and checks its exit status.
expect_exit() {
    local want=$1 got=0
    shift
    "$@" >"$work/out" 2>&1 || got=$?
    ((got == want)) || fail "$* exited $got, expected $want: $(cat "$work/out")"
}

# wait_until SECS DESCRIPTION COMMAND…
wait_until() {
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@"; do
        ((SECONDS < deadline)) || fail "$what: not within the time allowed"
        sleep 0.1
    done
}

status_json() { "$fleet" status --dir "$dir" --json; }
host_field() { status_json | jq -r --arg h "$1" ".hosts[] | select(.name == \$h) | .$2"; }

say "usage errors change nothing"
expect_exit 2 "$fleet" up --dir "$dir"
expect_exit 2 "$fleet" up --hosts 0 --dir "$dir"
expect_exit 2 "$fleet" up --hosts 2 --dir "$dir" --allocatable cpus=many
expect_exit 2 "$fleet" up --hosts 2 --dir "$dir" --labels host-3:gpu=true
expect_exit 2 "$fleet" status --dir "$dir" --hosts 2
expect_exit 3 "$fleet" status --dir "$dir"
expect_exit 3 "$fleet" kill-host host-1 --dir "$dir"
[[ ! -e $dir ]] || fail "a refused command made $dir"

say "an up that fails half way removes what it made"
echo "not an image" >"$work/junk.tar"
expect_exit 1 "$fleet" up --hosts 2 --dir "$work/b" --image "$work/junk.tar"
grep -q "up failed; removing what it made" "$work/out" || fail "no clean-up notice: $(cat "$work/out")"
left=$(leftovers "$(tag_of "$work/b")" "$work/b")
[[ -z $left ]] || fail "the failed up left: $left"

say "up --hosts 3"
"$fleet" up --hosts 3 --dir "$dir" --labels host-3:gpu=true --allocatable memory=2g >"$work/up.out"
for key in BERTH_URL BERTH_PROJECT_ID BERTH_TOKEN BERTH_FLEET_HOSTS; do
    grep -q "^$key=." "$work/up.out" || fail "up printed no $key: $(cat "$work/up.out")"
done
cmp -s "$work/up.out" "$dir/env" || fail "up printed something else than it wrote to $dir/env"
# The env file is for shells; the client commands get nothing else.
(
    set -a
    # shellcheck disable=SC1091
    . "$dir/env"
    set +a
    env | grep -E '^BERTH_(URL|PROJECT_ID|TOKEN|OPERATOR_TOKEN|FLEET_[A-Z_]+)=' >"$work/client.env"
)
[[ $(grep -c '^BERTH_FLEET_HOSTS=host-1,host-2,host-3$' "$work/client.env") == 1 ]] ||
    fail "BERTH_FLEET_HOSTS is not host-1,host-2,host-3: $(cat "$work/client.env")"
expect_exit 5 "$fleet" up --hosts 1 --dir "$dir"

tag=$(tag_of "$dir")
bin_dir=$(sed -n 's/^bin_dir=//p' "$dir/fleet.conf")
# The bearer the server presents to a host's agent: its own, in its identity.
credential_of() {
    jq -r .credential "$dir/$1/data/agent/identity.json"
}
berth() {
    local -a client_env
    mapfile -t client_env <"$work/client.env"
    env -i PATH="$PATH" HOME="$work/home" "${client_env[@]}" "$bin_dir/berth" "$@" </dev/null
}
mkdir -p "$work/home"

say "every host joined: ready in the server's node list, each with a credential of its own"
berth node ls --json >"$work/nodes.json" || fail "berth node ls failed"
[[ $(jq '[.[] | select(.state == "ready")] | length' "$work/nodes.json") == 3 ]] ||
    fail "not 3 ready hosts: $(cat "$work/nodes.json")"
[[ $(jq -r '[.[].name] | join(",")' "$work/nodes.json") == host-1,host-2,host-3 ]] ||
    fail "hosts are not host-1..3: $(cat "$work/nodes.json")"
[[ $(for h in host-1 host-2 host-3; do credential_of "$h"; done | sort -u | wc -l) == 3 ]] ||
    fail "hosts share a credential"
! grep -q "$(credential_of host-1)" "$work/nodes.json" || fail "berth node ls shows a host's credential"

say "every host: alive, in its own network namespace, answering on its address with its labels"
status_json >"$work/status.json"
[[ $(jq '.server.alive' "$work/status.json") == true ]] || fail "the server is not alive: $(cat "$work/status.json")"
[[ $(jq -c '[.servers[] | [.name, .alive, .leader]]' "$work/status.json") == '[["server-1",true,true]]' &&
    $(jq -r .leader "$work/status.json") == server-1 ]] ||
    fail "not one live server-1 that leads: $(cat "$work/status.json")"
[[ $(grep -c '^BERTH_FLEET_SERVERS=server-1$' "$work/client.env") == 1 ]] ||
    fail "BERTH_FLEET_SERVERS is not server-1: $(cat "$work/client.env")"
[[ $(jq '[.hosts[] | select(.alive and .link == "up")] | length' "$work/status.json") == 3 ]] ||
    fail "not 3 live hosts: $(cat "$work/status.json")"
for h in host-1 host-2 host-3; do
    ns=berth-fleet-$tag-$h
    pid=$(host_field "$h" pid)
    [[ $(readlink "/proc/$pid/ns/net") == "net:[$(stat -L -c %i "/run/netns/$ns")]" ]] ||
        fail "the agent of $h (pid $pid) is not in the network namespace $ns"
    [[ $(readlink "/proc/$pid/ns/net") != $(readlink /proc/self/ns/net) ]] || fail "$h shares this machine's network"
    node=$(http_get "$(host_field "$h" address)" /v1/node "$(credential_of "$h")")
    [[ $(jq -r '.labels.host' <<<"$node") == "$h" ]] || fail "$h's agent reports other labels: $node"
    [[ $(jq -r '.capacity.memory_ceiling_bytes' <<<"$node") == $((2 * 1024 * 1024 * 1024)) ]] ||
        fail "$h's agent did not get memory=2g: $node"
done
[[ $(host_field host-3 labels.gpu) == true && $(host_field host-1 labels.gpu) == null ]] ||
    fail "--labels host-3:gpu=true did not reach host-3 alone: $(cat "$work/status.json")"
[[ $(host_field host-1 labels.zone)$(host_field host-2 labels.zone) == ab ]] || fail "zones are not a, b"

say "a task queued through the server runs on a host and ends complete"
mkdir -p "$work/pkg"
cat >"$work/pkg/hello.sh" <<'SCRIPT'
echo "hello from the fleet: $(cat "$PAYLOAD_FILE")"
SCRIPT
cat >"$work/pkg/sleep.sh" <<'SCRIPT'
echo sleeping
sleep 120
SCRIPT
berth code push hello --runtime sh --file hello.sh --dir "$work/pkg" >/dev/null
berth code push sleeper --runtime sh --file sleep.sh --dir "$work/pkg" >/dev/null
id=$(berth task queue hello --payload ahoy --wait --json | jq -r '.tasks[0].id // .id' | head -n 1)
[[ $(berth task show "$id" --json | jq -r .status) == complete ]] || fail "task $id: $(berth task show "$id")"
[[ $(berth task log "$id") == "hello from the fleet: ahoy" ]] || fail "task $id's log: $(berth task log "$id")"

say "a running task's container is on one host, its shim in that host's namespace"
sleeper=$(berth task queue sleeper --json | jq -r '.tasks[0].id // .id' | head -n 1)
running_host() { status_json | jq -r '.hosts[] | select(.containers > 0) | .name'; }
some_host_runs() { [[ -n $(running_host) ]]; }
wait_until 20 "the sleeper's container to run on a host" some_host_runs
victim=$(running_host)
[[ $(wc -l <<<"$victim") == 1 ]] || fail "one task runs on several hosts: $victim"
cgroup=berth-fleet-$tag-$victim
shims=()
for p in /proc/[0-9]*; do
    { mapfile -d '' -t args <"$p/cmdline"; } 2>/dev/null || continue
    ((${#args[@]} > 0)) || continue
    [[ ${args[0]##*/} == berth-shim && "${args[*]}" == *"--cgroup-parent $cgroup"* ]] && shims+=("${p#/proc/}")
done
((${#shims[@]} == 1)) || fail "expected one shim of $victim, found: ${shims[*]-none}"
[[ $(readlink "/proc/${shims[0]}/ns/net") == "net:[$(stat -L -c %i "/run/netns/berth-fleet-$tag-$victim")]" ]] ||
    fail "the shim of $victim is not in its network namespace"
container_pids=$(find /sys/fs/cgroup -mindepth 3 -maxdepth 4 -path "*/$cgroup/*/cgroup.procs" -exec cat {} + | sort -u)
[[ -n $container_pids ]] || fail "no container process in $victim's cgroups"
victim_pid=$(host_field "$victim" pid)
victim_address=$(host_field "$victim" address)
[[ $(berth task show "$sleeper" --json | jq -r .status) == running ]] || fail "the sleeper is not running"

say "kill-host $victim: agent, shim and container die at once; its link goes down"
"$fleet" kill-host "$victim" --dir "$dir"
for p in "$victim_pid" "${shims[0]}" $container_pids; do
    if [[ -e /proc/$p ]] && ! grep -q '^State:.*Z' "/proc/$p/status" 2>/dev/null; then
        fail "process $p of $victim outlived kill-host"
    fi
done
[[ $(host_field "$victim" state) == killed && $(host_field "$victim" link) == down ]] ||
    fail "status after kill-host: $(status_json)"
[[ $(host_field "$victim" containers) == 0 ]] || fail "containers still run on $victim"
# A dead machine answers nothing: both ends of its cable are down.
for link in "$(ip -o link show dev "bfl$tag${victim/host-/h}")" "$(ip -n "berth-fleet-$tag-$victim" -o link show dev eth0)"; do
    [[ $link == *"<"*">"* && ! $link =~ \<([A-Z_]+,)*UP[,\>] ]] || fail "a link of $victim is up: $link"
done
[[ -z $(http_get "$victim_address" /v1/node "$(credential_of "$victim")") ]] || fail "the killed $victim still answers"
[[ $(status_json | jq '[.hosts[] | select(.alive)] | length') == 2 ]] || fail "the other hosts died too"
expect_exit 0 "$fleet" kill-host "$victim" --dir "$dir"
expect_exit 4 "$fleet" kill-host host-4 --dir "$dir"

say "revive-host $victim: same data dir, answering again, and the fleet runs tasks"
"$fleet" revive-host "$victim" --dir "$dir"
[[ $(host_field "$victim" state) == alive && $(host_field "$victim" link) == up ]] ||
    fail "status after revive-host: $(status_json)"
[[ $(host_field "$victim" pid) != "$victim_pid" ]] || fail "revive-host started no new agent"
node=$(http_get "$victim_address" /v1/node "$(credential_of "$victim")")
[[ $(jq -r '.images | index("berth/stack-busybox:latest") != null' <<<"$node") == true ]] ||
    fail "the revived $victim lost its data dir's images: $node"
expect_exit 5 "$fleet" revive-host "$victim" --dir "$dir"
id=$(berth task queue hello --payload again --wait --json | jq -r '.tasks[0].id // .id' | head -n 1)
[[ $(berth task log "$id") == "hello from the fleet: again" ]] || fail "no task after revive: $(berth task show "$id")"

say "down: nothing of the fleet is left"

"$fleet" down --dir "$dir"
left=$(leftovers "$tag" "$dir")
[[ -z $left ]] || fail "down left: $left"
# check-leaks.sh counts what berth leaves machine-wide; other tests may
# run meanwhile, so only what names this fleet counts here.
bash "$repo/scripts/check-leaks.sh" --data-dir "$dir" >"$work/leaks" 2>&1 || true
# Its items are the lines indented by six spaces.
if grep -E '^      ' "$work/leaks" | grep -E "$tag|$dir"; then
    fail "check-leaks.sh found the fleet's leftovers (above)"
fi
expect_exit 0 "$fleet" down --dir "$dir"
grep -q "nothing to remove" "$work/out" || fail "a second down: $(cat "$work/out")"
expect_exit 3 "$fleet" status --dir "$dir"

# --- part 2: servers sharing PostgreSQL ----------------------------------

say "HA: usage errors change nothing"
expect_exit 2 "$fleet" up --hosts 2 --servers 2 --dir "$ha_dir"
grep -q -- "--postgres" "$work/out" || fail "--servers 2 without --postgres: $(cat "$work/out")"
expect_exit 2 "$fleet" up --hosts 2 --servers 10 --postgres --dir "$ha_dir"
expect_exit 2 "$fleet" up --hosts 2 --servers 0 --postgres --dir "$ha_dir"
expect_exit 2 "$fleet" status --servers 2 --dir "$ha_dir"
expect_exit 2 "$fleet" kill-server --dir "$ha_dir"
expect_exit 2 "$fleet" revive-server leader --dir "$ha_dir"
expect_exit 3 "$fleet" kill-server leader --dir "$ha_dir"
[[ ! -e $ha_dir ]] || fail "a refused command made $ha_dir"

pg_admin=$(bash "$repo/scripts/postgres.sh" 2>/dev/null) || fail "scripts/postgres.sh failed: part 2 needs PostgreSQL"
ha_tag=$(tag_of "$ha_dir")
ha_db=berth_fleet_$ha_tag
database_exists() {
    [[ $(psql "$pg_admin" -X -Atqc "SELECT count(*) FROM pg_database WHERE datname = '$1'" </dev/null) == 1 ]]
}

say "HA: down drops a fleet's database even when its records are lost"
lost_dir=$work/lost
lost_db=berth_fleet_$(tag_of "$lost_dir")
psql "$pg_admin" -X -qc "CREATE DATABASE $lost_db" </dev/null
database_exists "$lost_db" || fail "could not make $lost_db"
expect_exit 0 "$fleet" down --dir "$lost_dir"
grep -q "dropped its database $lost_db" "$work/out" || fail "down of a lost fleet: $(cat "$work/out")"
! database_exists "$lost_db" || fail "down left the lost fleet's database $lost_db"

say "HA: up --servers 2 --postgres --hosts 2"
"$fleet" up --servers 2 --postgres --hosts 2 --dir "$ha_dir" >"$work/ha-up.out"
cmp -s "$work/ha-up.out" "$ha_dir/env" || fail "up printed something else than it wrote to $ha_dir/env"
(
    set -a
    # shellcheck disable=SC1091
    . "$ha_dir/env"
    set +a
    env | grep -E '^BERTH_(URL|PROJECT_ID|TOKEN|OPERATOR_TOKEN|FLEET_[A-Z_]+)=' >"$work/ha.env"
)
ha_status() { "$fleet" status --dir "$ha_dir" --json; }
ha_status >"$work/ha-status.json"
url_1=$(jq -r '.servers[0].url' "$work/ha-status.json")
url_2=$(jq -r '.servers[1].url' "$work/ha-status.json")
[[ $url_1 == http://*:* && $url_2 == http://*:* && $url_1 != "$url_2" ]] ||
    fail "not two server URLs: $(cat "$work/ha-status.json")"
grep -qx "BERTH_URL=$url_1,$url_2" "$work/ha.env" || fail "BERTH_URL does not list both servers: $(cat "$work/ha.env")"
grep -qx "BERTH_FLEET_SERVERS=server-1,server-2" "$work/ha.env" || fail "BERTH_FLEET_SERVERS: $(cat "$work/ha.env")"
grep -qx "BERTH_FLEET_DATABASE=postgres://.*/$ha_db" "$work/ha.env" || fail "BERTH_FLEET_DATABASE: $(cat "$work/ha.env")"
database_exists "$ha_db" || fail "up made no database $ha_db"
expect_exit 5 "$fleet" up --servers 2 --postgres --hosts 2 --dir "$ha_dir"
# ha_berth ARGS…: berth as the HA fleet's client (BERTH_URL as up wrote it,
# or as in $work/ha-client.env once that exists).
ha_berth() {
    local -a client_env
    local env_file=$work/ha.env
    [[ -f $work/ha-client.env ]] && env_file=$work/ha-client.env
    mapfile -t client_env <"$env_file"
    env -i PATH="$PATH" HOME="$work/home" "${client_env[@]}" "$bin_dir/berth" "$@" </dev/null
}
# Every agent joins through both servers.
for h in host-1 host-2; do
    pid=$(jq -r --arg h "$h" '.hosts[] | select(.name == $h) | .pid' "$work/ha-status.json")
    mapfile -d '' -t args <"/proc/$pid/cmdline"
    [[ " ${args[*]} " == *" --join $url_1,$url_2 "* ]] || fail "the agent of $h does not join both servers: ${args[*]}"
done

say "HA: both servers answer, one leads"
operator_token=$(sed -n 's/^BERTH_OPERATOR_TOKEN=//p' "$work/ha.env")
for url in "$url_1" "$url_2"; do
    list=$(http_get "${url#http://}" /v1/servers "$operator_token")
    [[ $(jq '[.servers[] | select(.state == "up")] | length' <<<"$list") == 2 ]] ||
        fail "$url does not list two servers up: $list"
    [[ $(jq -c '[.servers[] | select(.leader) | .name]' <<<"$list") =~ ^\[\"server-[12]\"\]$ ]] ||
        fail "$url: not exactly one leader: $list"
    [[ $(jq -r '[.servers[] | .name + "=" + .url] | sort | join(" ")' <<<"$list") == "server-1=$url_1 server-2=$url_2" ]] ||
        fail "$url: names or advertised URLs are not the fleet's: $list"
done
ha_berth server ls --json >"$work/servers.json" || fail "berth server ls failed"
leader=$(jq -r '.servers[] | select(.leader) | .name' "$work/servers.json")
[[ $leader == server-[12] && $(jq -r .leader "$work/ha-status.json") == "$leader" ]] ||
    fail "berth server ls and status disagree on the leader: $(cat "$work/servers.json") $(cat "$work/ha-status.json")"
[[ $(jq '[.servers[] | select(.alive and .state == "alive")] | length' "$work/ha-status.json") == 2 ]] ||
    fail "not two live servers in status: $(cat "$work/ha-status.json")"
follower=server-$((3 - ${leader#server-}))
# From here the client lists the leader first: once it is killed, every
# request must fail over to the other URL.
leader_url=$(jq -r --arg s "$leader" '.servers[] | select(.name == $s) | .url' "$work/ha-status.json")
follower_url=$(jq -r --arg s "$follower" '.servers[] | select(.name == $s) | .url' "$work/ha-status.json")
sed "s|^BERTH_URL=.*|BERTH_URL=$leader_url,$follower_url|" "$work/ha.env" >"$work/ha-client.env"

say "HA: a task queued through BERTH_URL completes"
ha_berth code push hello --runtime sh --file hello.sh --dir "$work/pkg" >/dev/null
id=$(ha_berth task queue hello --payload one --wait --json | jq -r '.tasks[0].id // .id' | head -n 1)
[[ $(ha_berth task log "$id") == "hello from the fleet: one" ]] || fail "task $id: $(ha_berth task show "$id")"

say "HA: kill-server leader ($leader): $follower leads within 10 s, and runs a new task (BERTH_URL=$leader_url,$follower_url)"
leader_pid=$(jq -r --arg s "$leader" '.servers[] | select(.name == $s) | .pid' "$work/ha-status.json")
killed_at=$SECONDS
killed=$("$fleet" kill-server leader --dir "$ha_dir")
[[ $killed == "$leader" ]] || fail "kill-server leader killed $killed, not the leader $leader"
if [[ -e /proc/$leader_pid ]] && ! grep -q '^State:.*Z' "/proc/$leader_pid/status" 2>/dev/null; then
    fail "$leader (pid $leader_pid) outlived kill-server"
fi
[[ $(ha_status | jq -r --arg s "$leader" '.servers[] | select(.name == $s) | .state') == killed ]] ||
    fail "status after kill-server: $(ha_status)"
follower_leads() {
    [[ $(ha_berth server ls --json 2>/dev/null | jq -r '[.servers[] | select(.leader and .state == "up") | .name] | join(",")') == "$follower" ]]
}
wait_until 10 "$follower to lead after $leader was killed" follower_leads
echo "$follower leads $((SECONDS - killed_at)) s after the kill"
[[ $(ha_status | jq -r .leader) == "$follower" ]] || fail "status does not show $follower leading: $(ha_status)"
id=$(ha_berth task queue hello --payload two --wait --json | jq -r '.tasks[0].id // .id' | head -n 1)
[[ $(ha_berth task log "$id") == "hello from the fleet: two" ]] || fail "no task after the failover: $(ha_berth task show "$id")"
expect_exit 0 "$fleet" kill-server "$leader" --dir "$ha_dir"
expect_exit 4 "$fleet" kill-server server-3 --dir "$ha_dir"
expect_exit 4 "$fleet" revive-server host-1 --dir "$ha_dir"

say "HA: revive-server $leader: back, as a follower"
"$fleet" revive-server "$leader" --dir "$ha_dir"
expect_exit 5 "$fleet" revive-server "$leader" --dir "$ha_dir"
ha_status >"$work/ha-status.json"
[[ $(jq -r --arg s "$leader" '.servers[] | select(.name == $s) | "\(.state) \(.leader)"' "$work/ha-status.json") == "alive false" &&
    $(jq -r .leader "$work/ha-status.json") == "$follower" ]] || fail "status after revive-server: $(cat "$work/ha-status.json")"
list=$(http_get "${url_1#http://}" /v1/servers "$operator_token")
# The killed instance stays listed (it could not leave) until it is silent
# for 5 s: the revived one is the newest of that name.
[[ $(jq -r --arg s "$leader" '[.servers[] | select(.name == $s)] | max_by(.started_at_ms) | "\(.state) \(.leader)"' <<<"$list") == "up false" ]] ||
    fail "the revived $leader is not listed up and following: $list"
id=$(ha_berth task queue hello --payload three --wait --json | jq -r '.tasks[0].id // .id' | head -n 1)
[[ $(ha_berth task log "$id") == "hello from the fleet: three" ]] || fail "no task after the revive: $(ha_berth task show "$id")"

say "HA: down: nothing of the fleet is left, the database dropped"
"$fleet" down --dir "$ha_dir"
left=$(leftovers "$ha_tag" "$ha_dir")
[[ -z $left ]] || fail "down left: $left"
! database_exists "$ha_db" || fail "down left the database $ha_db"
expect_exit 0 "$fleet" down --dir "$ha_dir"
grep -q "nothing to remove" "$work/out" || fail "a second down: $(cat "$work/out")"
