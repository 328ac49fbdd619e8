#!/usr/bin/env python3
"""A small client of the berth agent's HTTP API on its unix socket, and the
timing loops of bench/agent.sh (python3 standard library only).

Subcommands (every one takes --socket PATH; results go to stdout as one JSON
object, progress to stderr):

  ping                     GET /v1/ping once; exit 1 if nobody answers
  start-agent [--expect K] [--log FILE] [--timeout S] -- CMD...
                           start CMD (the agent) in its own session and time,
                           from just before the spawn: the first answered
                           GET /v1/ping, and the first GET /v1/containers
                           listing K containers, all "running"
  lifecycle -n N [--warmup W] [--times FILE] -- ENGINE_CMD...
                           N agent lifecycles (POST, GET wait, DELETE) of
                           busybox `true`, interleaved run by run with N runs
                           of ENGINE_CMD (e.g. berth run busybox true)
  create-many -k K [--prefix P]
                           K containers of busybox `sleep 100000`, one after
                           another; each POST returns once it runs
  shim-memory [--expect K] VmRSS and Pss of every running container's shim
  delete-all [--jobs J]    DELETE ?force=true every container the agent lists
  states                   the number of containers in each state
  shims                    the shim pid of every container, one a line
"""

import argparse
import concurrent.futures
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a unix socket (the host part of the URL is unused)."""

    def __init__(self, path, timeout=None):
        super().__init__("agent", timeout=timeout)
        self.unix_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if self.timeout is not None:
                sock.settimeout(self.timeout)
            sock.connect(self.unix_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class ApiError(Exception):
    pass


class Client:
    """One keep-alive connection, reopened when the agent closes it."""

    def __init__(self, path, timeout=120.0):
        self.path = path
        self.timeout = timeout
        self.conn = None

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(self, method, url, body=None, expect=(200,)):
        headers = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = UnixHTTPConnection(self.path, self.timeout)
            try:
                self.conn.request(method, url, body=data, headers=headers)
                resp = self.conn.getresponse()
                payload = resp.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError,
                    ConnectionResetError):
                # A keep-alive connection the server closed meanwhile: one
                # retry on a fresh connection (never for POST, which is not
                # idempotent, unless nothing was sent).
                self.close()
                if attempt or method == "POST":
                    raise
        if resp.status not in expect:
            raise ApiError(f"{method} {url}: HTTP {resp.status}: "
                           f"{payload.decode(errors='replace')[:500]}")
        if resp.getheader("connection", "").lower() == "close":
            self.close()
        return json.loads(payload) if payload else None


def ms(seconds):
    return seconds * 1000.0


def summary(values):
    """median, p90 (nearest rank), mean, min, max of a list of ms."""
    v = sorted(values)
    n = len(v)
    rank = max(1, -(-9 * n // 10))  # ceil(0.9 n)
    return {
        "n": n,
        "median": statistics.median(v),
        "p90": v[rank - 1],
        "mean": statistics.fmean(v),
        "min": v[0],
        "max": v[-1],
    }


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def out(obj):
    print(json.dumps(obj), flush=True)


# ---------------------------------------------------------------------------
def cmd_ping(args):
    try:
        Client(args.socket, timeout=5).request("GET", "/v1/ping")
    except (OSError, ApiError, http.client.HTTPException) as e:
        log(f"ping: {e}")
        return 1
    out({"ok": True})
    return 0


def try_ping(path):
    """True once the agent answers /v1/ping; False while nobody listens."""
    c = Client(path, timeout=5)
    try:
        c.request("GET", "/v1/ping")
        return True
    except (FileNotFoundError, ConnectionRefusedError):
        return False
    finally:
        c.close()


def cmd_start_agent(args):
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        log("start-agent: no command")
        return 2
    logf = open(args.log, "ab") if args.log else subprocess.DEVNULL
    t0 = time.perf_counter()
    # Its own session, like a daemon: our exit or a ^C to the script must
    # not reach it (the script stops it itself, by pid).
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=logf,
                            start_new_session=True)
    t_spawned = time.perf_counter()
    deadline = t0 + args.timeout
    t_ping = None
    while True:
        if try_ping(args.socket):
            t_ping = time.perf_counter()
            break
        if proc.poll() is not None:
            log(f"start-agent: the agent exited with {proc.returncode} "
                "before answering")
            return 1
        if time.perf_counter() > deadline:
            log(f"start-agent: no answer within {args.timeout} s")
            out({"pid": proc.pid, "error": "timeout"})
            return 1
        time.sleep(0.0005)
    # Everything must be known and running: rediscovery happens before the
    # agent serves, so this normally holds at the first answer already.
    client = Client(args.socket)
    polls = 0
    while True:
        views = client.request("GET", "/v1/containers")
        polls += 1
        running = sum(1 for v in views if v.get("state") == "running")
        if len(views) == args.expect and running == args.expect:
            t_list = time.perf_counter()
            break
        if time.perf_counter() > deadline:
            states = {}
            for v in views:
                states[v.get("state")] = states.get(v.get("state"), 0) + 1
            log(f"start-agent: expected {args.expect} running containers, "
                f"the agent lists {len(views)}: {states}")
            out({"pid": proc.pid, "error": "containers", "states": states})
            return 1
        time.sleep(0.01)
    client.close()
    out({
        "pid": proc.pid,
        "spawn_ms": ms(t_spawned - t0),
        "ping_ms": ms(t_ping - t0),
        "all_running_ms": ms(t_list - t0),
        "list_polls": polls,
        "containers": args.expect,
    })
    return 0


# ---------------------------------------------------------------------------
def agent_lifecycle(client, cid):
    """POST, wait, DELETE of one `true` container: (create, total) in s."""
    t0 = time.perf_counter()
    view = client.request("POST", "/v1/containers",
                          {"id": cid, "image": "busybox", "command": ["true"]},
                          expect=(201,))
    t1 = time.perf_counter()
    if view.get("state") not in ("running", "exited"):
        raise ApiError(f"{cid}: created in state {view.get('state')}")
    view = client.request("GET", f"/v1/containers/{cid}/wait?timeout=60")
    t2 = time.perf_counter()
    client.request("DELETE", f"/v1/containers/{cid}", expect=(204,))
    t3 = time.perf_counter()
    result = view.get("result") or {}
    if view.get("state") != "exited" or result.get("exit_code") != 0:
        raise ApiError(f"{cid}: ended as {json.dumps(view)}")
    return t1 - t0, t2 - t1, t3 - t2, t3 - t0


def engine_run(cmd):
    """(total, until_running) in s. With `--json`, berth run reports how
    long its container ran (wall_time_ms) and its teardown (teardown_ms):
    what is left of the total is process start, create and start, the
    comparable part of a POST."""
    t0 = time.perf_counter()
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t1 = time.perf_counter()
    if p.returncode != 0:
        raise ApiError(f"{' '.join(cmd)} exited with {p.returncode}: "
                       f"{p.stderr.decode(errors='replace')[:500]}")
    total = t1 - t0
    until_running = None
    lines = p.stdout.decode(errors="replace").strip().splitlines()
    if lines:
        try:
            result = json.loads(lines[-1])
            until_running = total - (result["wall_time_ms"]
                                     + result["teardown_ms"]) / 1000.0
        except (ValueError, KeyError, TypeError):
            pass
    return total, until_running


def cmd_lifecycle(args):
    engine = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not engine:
        log("lifecycle: no engine command")
        return 2
    client = Client(args.socket)
    prefix = f"lc{os.getpid()}"
    serial = 0

    def agent_once():
        nonlocal serial
        serial += 1
        return agent_lifecycle(client, f"{prefix}-{serial}")

    for _ in range(args.warmup):
        agent_once()
        engine_run(engine)
    create, wait, delete, total, eng, eng_start = [], [], [], [], [], []
    t_start = time.perf_counter()
    for i in range(args.n):
        # Alternate which goes first, so that neither always follows the
        # other's background work (ABBA order).
        if i % 2 == 0:
            a = agent_once()
            e = engine_run(engine)
        else:
            e = engine_run(engine)
            a = agent_once()
        create.append(ms(a[0]))
        wait.append(ms(a[1]))
        delete.append(ms(a[2]))
        total.append(ms(a[3]))
        eng.append(ms(e[0]))
        if e[1] is not None:
            eng_start.append(ms(e[1]))
        if (i + 1) % 50 == 0 or i + 1 == args.n:
            log(f"  {i + 1}/{args.n}")
    elapsed = time.perf_counter() - t_start
    client.close()
    if args.times:
        with open(args.times, "w") as f:
            f.write("agent_create_ms agent_wait_ms agent_delete_ms "
                    "agent_total_ms engine_ms\n")
            for row in zip(create, wait, delete, total, eng):
                f.write(" ".join(f"{x:.3f}" for x in row) + "\n")
    diffs = [a - e for a, e in zip(total, eng)]
    start_diffs = [a - e for a, e in zip(create, eng_start)]
    out({
        "n": args.n,
        "warmup": args.warmup,
        "elapsed_s": elapsed,
        "agent_total": summary(total),
        "agent_create": summary(create),
        "agent_wait": summary(wait),
        "agent_delete": summary(delete),
        "engine": summary(eng),
        "paired_diff": summary(diffs),
        "engine_until_running": summary(eng_start) if eng_start else None,
        "create_start_paired_diff": summary(start_diffs) if start_diffs else None,
    })
    return 0


# ---------------------------------------------------------------------------
def cmd_create_many(args):
    client = Client(args.socket)
    times = []
    t_start = time.perf_counter()
    for i in range(args.k):
        cid = f"{args.prefix}-{i}"
        t0 = time.perf_counter()
        view = client.request("POST", "/v1/containers",
                              {"id": cid, "image": "busybox",
                               "command": ["sleep", "100000"]},
                              expect=(201,))
        times.append(ms(time.perf_counter() - t0))
        if view.get("state") != "running":
            raise ApiError(f"{cid}: created in state {view.get('state')}")
        if (i + 1) % 100 == 0 or i + 1 == args.k:
            log(f"  {i + 1}/{args.k} running "
                f"({time.perf_counter() - t_start:.1f} s)")
    elapsed = time.perf_counter() - t_start
    client.close()
    first = times[:min(100, len(times))]
    last = times[-min(100, len(times)):]
    out({
        "k": args.k,
        "elapsed_s": elapsed,
        "create": summary(times),
        "create_first100_median": statistics.median(first),
        "create_last100_median": statistics.median(last),
    })
    return 0


def read_kib(path, key):
    with open(path) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise ValueError(f"{key} not in {path}")


def cpu_ticks(pid):
    """utime + stime of a process, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def is_shim(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv0 = f.read().split(b"\0", 1)[0]
    except OSError:
        return False
    return argv0.endswith(b"berth-shim")


def cmd_shim_memory(args):
    views = Client(args.socket).request("GET", "/v1/containers")
    pids = [v["shim_pid"] for v in views
            if v.get("state") == "running" and v.get("shim_pid")]
    if args.expect is not None and len(pids) != args.expect:
        log(f"shim-memory: {len(pids)} running shims, expected {args.expect}")
        return 1
    rss, pss = [], []
    for pid in pids:
        if not is_shim(pid):
            log(f"shim-memory: pid {pid} is not a berth-shim")
            return 1
        rss.append(read_kib(f"/proc/{pid}/status", "VmRSS"))
        pss.append(read_kib(f"/proc/{pid}/smaps_rollup", "Pss"))
    agent = {}
    if args.agent_pid:
        if args.cpu_window > 0:
            # The agent's own CPU use while nothing happens but its
            # background work (exit watchers, the memory policy's samples).
            c0, w0 = cpu_ticks(args.agent_pid), time.perf_counter()
            time.sleep(args.cpu_window)
            c1, w1 = cpu_ticks(args.agent_pid), time.perf_counter()
            hz = os.sysconf("SC_CLK_TCK")
            agent["agent_idle_cpu_percent"] = 100.0 * (c1 - c0) / hz / (w1 - w0)
        agent |= {
            "agent_rss_kib": read_kib(f"/proc/{args.agent_pid}/status", "VmRSS"),
            "agent_threads": read_kib(f"/proc/{args.agent_pid}/status",
                                      "Threads"),
            "agent_fds": len(os.listdir(f"/proc/{args.agent_pid}/fd")),
        }
    out({
        "shims": len(pids),
        "rss_median_kib": statistics.median(rss),
        "rss_max_kib": max(rss),
        "pss_median_kib": statistics.median(pss),
        "pss_max_kib": max(pss),
        "pss_total_kib": sum(pss),
        **agent,
    })
    return 0


def cmd_delete_all(args):
    views = Client(args.socket).request("GET", "/v1/containers")
    ids = [v["id"] for v in views]
    errors = []

    def delete(cid):
        c = Client(args.socket, timeout=60)
        try:
            c.request("DELETE", f"/v1/containers/{cid}?force=true",
                      expect=(204, 404))
        finally:
            c.close()

    done = 0
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(delete, cid): cid for cid in ids}
        for f in concurrent.futures.as_completed(futures):
            done += 1
            try:
                f.result()
            except Exception as e:  # reported, the rest still deleted
                errors.append(f"{futures[f]}: {e}")
            if done % 200 == 0:
                log(f"  deleted {done}/{len(ids)}")
    left = Client(args.socket).request("GET", "/v1/containers")
    out({"deleted": len(ids) - len(errors), "errors": errors[:20],
         "error_count": len(errors), "left": len(left)})
    return 1 if errors or left else 0


def cmd_shims(args):
    views = Client(args.socket).request("GET", "/v1/containers")
    for v in views:
        if v.get("shim_pid"):
            print(v["shim_pid"])
    return 0


def cmd_states(args):
    views = Client(args.socket).request("GET", "/v1/containers")
    states = {}
    for v in views:
        states[v.get("state")] = states.get(v.get("state"), 0) + 1
    out({"total": len(views), "states": states})
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--socket", required=True)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("ping")
    s = sub.add_parser("start-agent")
    s.add_argument("--expect", type=int, default=0)
    s.add_argument("--log")
    s.add_argument("--timeout", type=float, default=300.0)
    s.add_argument("cmd", nargs=argparse.REMAINDER)
    s = sub.add_parser("lifecycle")
    s.add_argument("-n", type=int, default=200)
    s.add_argument("--warmup", type=int, default=5)
    s.add_argument("--times")
    s.add_argument("cmd", nargs=argparse.REMAINDER)
    s = sub.add_parser("create-many")
    s.add_argument("-k", type=int, required=True)
    s.add_argument("--prefix", default=f"sl{os.getpid()}")
    s = sub.add_parser("shim-memory")
    s.add_argument("--expect", type=int)
    s.add_argument("--agent-pid", type=int)
    s.add_argument("--cpu-window", type=float, default=0.0)
    s = sub.add_parser("delete-all")
    s.add_argument("--jobs", type=int, default=4)
    sub.add_parser("states")
    sub.add_parser("shims")
    args = p.parse_args()
    # A broken pipe on stdout (| head) must not print a traceback.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    handlers = {
        "ping": cmd_ping,
        "start-agent": cmd_start_agent,
        "lifecycle": cmd_lifecycle,
        "create-many": cmd_create_many,
        "shim-memory": cmd_shim_memory,
        "delete-all": cmd_delete_all,
        "states": cmd_states,
        "shims": cmd_shims,
    }
    try:
        return handlers[args.command](args)
    except (ApiError, OSError, http.client.HTTPException) as e:
        log(f"agent_client {args.command}: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
