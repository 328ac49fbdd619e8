#!/usr/bin/env bash
# Networking figures: what a network costs a container start, throughput
# through a published port, and how close a bandwidth limit holds.
#
# Usage: bench/network.sh [-n RUNS] [--seconds S] [--no-docker] [--berth PATH]
#
#   -n RUNS       timed runs per variant for the start cost (default 100)
#   --seconds S   length of each iperf3 transfer (default 5)
#   --no-docker   skip Docker's peers even if it could be had
#   --berth PATH  use this berth binary instead of building target/dist/berth
#
# 1. Start cost: each a whole `run` on the busybox image of the host's
#    GNU `date +%s%N` (busybox's has no nanoseconds), in blocks (five rounds,
#    order rotated, a settle pause before each). Two figures a run: the
#    start, from fork to the clock the container's first program reads (the
#    host and the container share the clock), and the whole run, from fork
#    to exit. Medians, and the cost of a network as the difference to the
#    same tool's `none`:
#      berth none | berth bridge | berth cni:bench (Debian's CNI bridge +
#      host-local + portmap, run by berth as a CNI runtime does) |
#      docker none | docker bridge (a private dockerd, --iptables=false: its
#      own bridge and veths, no firewall changes)
# 2. Throughput: iperf3 (TCP, one stream) from the host to a server in a
#    container through a published port (host address:port, DNAT in the
#    kernel), against the same over the host's loopback; on the default
#    bridge (MTU 1500) and on a network made with --mtu 65535 (loopback's
#    own MTU is 65536); Docker's peer is its userland proxy (docker-proxy,
#    what Docker publishes ports with when it does not touch the firewall).
# 3. Egress limit: iperf3 from a container with --egress-rate 10mbit to the
#    host; the goal is 10 Mbit/s within ±10 %.
# 4. Overlay: two test hosts (network namespaces joined by a veth pair, MTU
#    1500, their "direct link"), each with its own berth data dir and the
#    same overlay network (VXLAN, MTU 1450); iperf3 from a container on one
#    to a container on the other, against iperf3 between the hosts
#    themselves over the direct link.
#
# The containers see the host's date and iperf3 through read-only binds of
# /usr and /lib. Nothing is left: a private data dir and bridge, removed at exit.
set -euo pipefail
export LC_ALL=C
export HOME=${HOME:-/root}
cd "$(dirname "$0")/.."
# shellcheck source=bench/common.sh
source bench/common.sh

runs=100
seconds=5
want_docker=1
berth_bin=""
while (($#)); do
    case "$1" in
        -n | --runs) runs=${2:?}; shift 2 ;;
        --seconds) seconds=${2:?}; shift 2 ;;
        --no-docker) want_docker=0; shift ;;
        --berth) berth_bin=${2:?}; shift 2 ;;
        -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
        *) echo "network.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done
[[ $runs =~ ^[1-9][0-9]*$ && $seconds =~ ^[1-9][0-9]*$ ]] || {
    echo "network.sh: -n and --seconds take whole numbers, at least 1" >&2
    exit 2
}

prepare_berth "$berth_bin"
if ((want_docker)) && ! command -v dockerd >/dev/null 2>&1; then
    bash scripts/ensure-deps.sh --with-docker || true
fi

work=$(mktemp -d /var/tmp/berth-netbench.XXXXXX)
runroot=$(make_runroot berth-netbench)
tag=$(printf '%04x' $((RANDOM)))
bridge="bnb$tag"
cgroup_parent="berth-netbench-$$"
berth_base=("$berth" --data-dir "$work/data" --cgroup-parent "$cgroup_parent" --bridge "$bridge"
    --cni-conf-dir "$work/cni")
dockerd_pid=""
cni_bridge="cnb$tag"
hosts=("bnb$tag-a" "bnb$tag-b")
cleanup() {
    set +e
    local h
    for h in a b; do
        [[ -d $work/host-$h ]] && ip netns exec "bnb$tag-$h" "$berth" --data-dir "$work/host-$h" \
            --cgroup-parent "$cgroup_parent" gc >/dev/null 2>&1
    done
    for h in "${hosts[@]}"; do ip netns del "$h" 2>/dev/null; done
    if [[ -n $dockerd_pid ]]; then
        stop_gracefully "$dockerd_pid" 20 dockerd
        ip link del docker0 2>/dev/null
    fi
    pkill -f "iperf3 -s -p 52" 2>/dev/null
    "${berth_base[@]}" network rm bridge >/dev/null 2>&1
    ip link del "$cni_bridge" 2>/dev/null
    remove_berth_work
    for d in /sys/fs/cgroup/*/"$cgroup_parent" /sys/fs/cgroup/"$cgroup_parent"; do
        [[ -d $d ]] && rmdir "$d" 2>/dev/null
    done
}
trap cleanup EXIT

tarball=$work/busybox.tar.gz
bash scripts/make-busybox-rootfs.sh --dir "$work/rootfs" "$tarball" >/dev/null
"${berth_base[@]}" image import busybox "$tarball" >/dev/null
host_ip=$(ip -4 -o addr show scope global | awk '$2 !~ /^(bt|bnb|br-|cnb|docker)/ { sub(/\/.*/, "", $4); print $4; exit }')
[[ -n $host_ip ]] || { echo "network.sh: the host has no global IPv4 address" >&2; exit 1; }
echo "host address: $host_ip; TCP congestion control: $(cat /proc/sys/net/ipv4/tcp_congestion_control)"

mkdir -p "$work/cni"
cat >"$work/cni/10-bench.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "bench", "plugins": [
  {"type": "bridge", "bridge": "$cni_bridge", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.65.$((RANDOM % 200 + 20)).0/24"}]],
            "dataDir": "$work/cni-ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
EOF

docker_cmd=()
if ((want_docker)) && command -v dockerd >/dev/null 2>&1; then
    mkdir -p "$work/docker"
    dockerd --data-root "$work/docker/root" --exec-root "$runroot/docker-exec" \
        --pidfile "$runroot/docker.pid" -H "unix://$runroot/docker.sock" \
        --iptables=false --ip-masq=false --userland-proxy=true \
        --log-level=warn >"$work/docker/dockerd.log" 2>&1 </dev/null &
    dockerd_pid=$!
    cli=/usr/bin/docker
    [[ -x $cli ]] || cli=$(command -v docker)
    docker_cmd=("$cli" -H "unix://$runroot/docker.sock")
    for ((i = 0; i < 300; i++)); do
        "${docker_cmd[@]}" info >/dev/null 2>&1 && break
        sleep 0.1
    done
    if "${docker_cmd[@]}" info >/dev/null 2>&1; then
        "${docker_cmd[@]}" import "$tarball" busybox:latest >/dev/null
    else
        echo "DOCKER SKIPPED: dockerd did not answer (log: $work/docker/dockerd.log)"
        docker_cmd=()
    fi
fi

# ---------------------------------------------------------------------------
echo "==> start cost ($runs runs each, in blocks)"
variants=("berth none" "berth bridge" "berth cni:bench")
((${#docker_cmd[@]})) && variants+=("docker none" "docker bridge")
binds=(-v /usr:/usr:ro -v /lib:/lib:ro)
[[ -d /lib64 ]] && binds+=(-v /lib64:/lib64:ro)
declare -A times=() starts=()
run_variant() {
    local tool=${1%% *} net=${1#* } t0 t1 started
    t0=$EPOCHREALTIME
    if [[ $tool == berth ]]; then
        started=$("${berth_base[@]}" run --network "$net" "${binds[@]}" busybox /usr/bin/date +%s%N)
    else
        started=$("${docker_cmd[@]}" run --rm --network "$net" "${binds[@]}" busybox /usr/bin/date +%s%N)
    fi
    t1=$EPOCHREALTIME
    times[$1]+="$((${t1/./} - ${t0/./}))"$'\n'
    starts[$1]+="$((started / 1000 - ${t0/./}))"$'\n'
}
# Blocks of consecutive runs, five rounds, the order rotated, a settle
# pause before each block: one tool's background work (the kernel's
# namespace cleanup after Docker's veths, which holds the rtnl lock for
# tens of milliseconds) then lands on its own runs, not on the next tool's.
block=$(((runs + 4) / 5))
for v in "${variants[@]}"; do run_variant "$v"; times[$v]="" starts[$v]=""; done # warm up
for ((round = 0; round < 5; round++)); do
    for ((k = 0; k < ${#variants[@]}; k++)); do
        v=${variants[$(((k + round) % ${#variants[@]}))]}
        sleep 1
        for ((r = 0; r < block; r++)); do run_variant "$v"; done
    done
done
median_ms() { sort -n | awk '{ a[NR] = $1 } END { m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%.2f", m / 1000 }'; }
declare -A median=() start_median=()
echo "  medians                start   whole run"
for v in "${variants[@]}"; do
    median[$v]=$(printf '%s' "${times[$v]}" | median_ms)
    start_median[$v]=$(printf '%s' "${starts[$v]}" | median_ms)
    printf '  %-18s %8s ms %8s ms\n' "$v" "${start_median[$v]}" "${median[$v]}"
done
added() {
    awk -v s="${start_median[$1]}" -v t="${start_median[$2]}" -v a="${median[$1]}" -v b="${median[$2]}" \
        'BEGIN { printf "%+8.2f ms %+8.2f ms", s - t, a - b }'
}
echo "  added by a network (median minus the same tool's none):"
echo "    berth bridge    $(added "berth bridge" "berth none") (goal: <= 2 ms added to a start)"
echo "    berth cni:bench $(added "berth cni:bench" "berth none") (CNI bridge + host-local + portmap)"
if ((${#docker_cmd[@]})); then
    echo "    docker bridge   $(added "docker bridge" "docker none")"
fi

# ---------------------------------------------------------------------------
echo "==> throughput through a published port (iperf3, $seconds s, one TCP stream)"
# iperf_client PORT HOST: prints the Mbit/s the server received; tries
# again while nothing listens yet (a refused connection does not use up a
# one-shot server, a probe connection would).
iperf_client() {
    local out="" i
    for ((i = 0; i < 50; i++)); do
        out=$(iperf3 -c "$2" -p "$1" -t "$seconds" -J 2>/dev/null |
            awk -F'[:,]' '/"sum_received"/ { s = 1 } s && /"bits_per_second"/ { printf "%.0f", $2 / 1e6; exit }') || true
        [[ -n $out ]] && break
        sleep 0.1
    done
    echo "${out:-0}"
}
percent() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", (b > 0) ? 100 * a / b : 0 }'; }
iperf3 -s -p 5290 -1 >/dev/null 2>&1 &
server=$!
loopback=$(iperf_client 5290 127.0.0.1)
wait "$server" || true
echo "  host loopback:                    $loopback Mbit/s"

"${berth_base[@]}" run --network bridge -p 5291:5201 "${binds[@]}" busybox \
    /usr/bin/iperf3 -s -1 >/dev/null 2>&1 &
server=$!
published=$(iperf_client 5291 "$host_ip")
wait "$server" || true
echo "  berth -p (kernel DNAT):           $published Mbit/s ($(percent "$published" "$loopback") % of loopback; goal >= 90 %)"
"${berth_base[@]}" network create --mtu 65535 "bigmtu$tag" >/dev/null
"${berth_base[@]}" run --network "bigmtu$tag" -p 5294:5201 "${binds[@]}" busybox \
    /usr/bin/iperf3 -s -1 >/dev/null 2>&1 &
server=$!
big=$(iperf_client 5294 "$host_ip")
wait "$server" || true
"${berth_base[@]}" network rm "bigmtu$tag" >/dev/null
echo "  berth -p, network --mtu 65535:    $big Mbit/s ($(percent "$big" "$loopback") % of loopback)"
if ((${#docker_cmd[@]})); then
    "${docker_cmd[@]}" run --rm -p 5292:5201 "${binds[@]}" busybox /usr/bin/iperf3 -s -1 >/dev/null 2>&1 &
    server=$!
    proxied=$(iperf_client 5292 "$host_ip")
    wait "$server" || true
    echo "  docker -p (docker-proxy):         $proxied Mbit/s ($(percent "$proxied" "$loopback") % of loopback)"
fi

# ---------------------------------------------------------------------------
echo "==> egress limit (--egress-rate 10mbit, iperf3 from the container, $seconds s)"
iperf3 -s -p 5293 -1 >/dev/null 2>&1 &
server=$!
sleep 0.3
limited=$("${berth_base[@]}" run --network bridge --egress-rate 10mbit "${binds[@]}" busybox \
    /usr/bin/iperf3 -c "$host_ip" -p 5293 -t "$seconds" -J |
    awk -F'[:,]' '/"sum_received"/ { s = 1 } s && /"bits_per_second"/ { printf "%.2f", $2 / 1e6; exit }')
wait "$server" || true
echo "  received: $limited Mbit/s through a 10 Mbit/s limit ($(awk -v a="$limited" 'BEGIN { printf "%+.1f", 100 * (a - 10) / 10 }') %; goal within ±10 %)"

# ---------------------------------------------------------------------------
echo "==> overlay between two test hosts (iperf3, $seconds s, one TCP stream)"
# host_berth a|b ARGS: berth on that test host (its namespace, its data dir).
host_berth() {
    local h=$1
    shift
    ip netns exec "bnb$tag-$h" "$berth" --data-dir "$work/host-$h" --cgroup-parent "$cgroup_parent" "$@"
}
link=10.67.$((RANDOM % 200 + 20))
for h in a b; do
    ip netns add "bnb$tag-$h"
    ip -n "bnb$tag-$h" link set lo up
    host_berth "$h" image import busybox "$tarball" >/dev/null
done
ip link add "bnb$tag-va" netns "bnb$tag-a" type veth peer name "bnb$tag-vb" netns "bnb$tag-b"
ip -n "bnb$tag-a" addr add "$link.1/24" dev "bnb$tag-va"
ip -n "bnb$tag-b" addr add "$link.2/24" dev "bnb$tag-vb"
ip -n "bnb$tag-a" link set "bnb$tag-va" up
ip -n "bnb$tag-b" link set "bnb$tag-vb" up
host_berth a network create --driver overlay --vni 4242 --subnet 10.68.0.0/24 \
    --local "$link.1" --peer "$link.2" ov >/dev/null
host_berth b network create --driver overlay --vni 4242 --subnet 10.68.0.0/24 \
    --local "$link.2" --peer "$link.1" ov >/dev/null
ip netns exec "bnb$tag-a" iperf3 -s -p 5295 -1 >/dev/null 2>&1 &
server=$!
direct=$(ip netns exec "bnb$tag-b" bash -c "$(declare -f iperf_client); seconds=$seconds; iperf_client 5295 $link.1")
wait "$server" || true
echo "  direct link (veth, MTU 1500):     $direct Mbit/s"
host_berth a run --network ov --ip 10.68.0.2 "${binds[@]}" busybox /usr/bin/iperf3 -s -1 >/dev/null 2>&1 &
server=$!
over=$(host_berth b run --network ov --ip 10.68.0.3 "${binds[@]}" busybox sh -c \
    "for i in \$(seq 50); do /usr/bin/iperf3 -c 10.68.0.2 -t $seconds -J 2>/dev/null && exit 0; sleep 0.1; done; exit 1" |
    awk -F'[:,]' '/"sum_received"/ { s = 1 } s && /"bits_per_second"/ { printf "%.0f", $2 / 1e6; exit }')
wait "$server" || true
for h in a b; do host_berth "$h" network rm ov >/dev/null; done
echo "  overlay (VXLAN, MTU 1450):        ${over:-0} Mbit/s ($(percent "${over:-0}" "$direct") % of the direct link)"
