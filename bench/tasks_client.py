#!/usr/bin/env python3
"""A client of berth's IronWorker-v2 task API (and of the agent's unix
socket), with the timing loops of bench/tasks.sh (python3 standard library
only).

Subcommands (results go to stdout as one JSON object, progress to stderr):

  start-up --home DIR --config FILE [--log FILE] [--env K=V]... -- CMD...
                 start `berth up` (CMD; the literal @LISTEN@ in it becomes
                 127.0.0.1:PORT on a free port) in its own session with
                 HOME=DIR, and wait until it has written the client config
                 FILE and its API answers an authenticated request
  push-code --config FILE --name NAME --command CMD [--image IMAGE]
                 [--max-concurrency K]
                 POST /codes (JSON body)
  throughput --config FILE --socket SOCK --code-name NAME -n N --runs R
                 [--threads T] [--batch B] [--stats-poll-ms P] [--pid PID]
                 [--wait-quiet S] [--samples PREFIX]
                 R runs of: queue N tasks in batches of B from T threads,
                 poll GET /codes/{id}/stats every P ms until all N are
                 complete; then wait for the agent to list no container.
                 PID (berth up) is for the CPU figures
  latency --config FILE --socket SOCK --code-name NAME -m M [--poll-ms P]
                 [--slow-poll-ms S] [--settle-ms MS] [--warmup W] [--pid PID]
                 [--wait-quiet S] [--rows]
                 2M single tasks one at a time on an idle system,
                 alternately polled every P ms (client-side figure) and every
                 S ms (server-side figure without the fast polling's load)
  wait-quiet [--busy PCT] [--seconds S] [--timeout T]
                 until the machine's CPUs were less than PCT% busy (all
                 CPUs together, /proc/stat) over each of S consecutive
                 seconds, at most T seconds; reports how long it waited and
                 how busy the machine was in the last second
  containers --socket SOCK
                 the agent's containers, by state
  wait-no-containers --socket SOCK [--timeout S]
                 until the agent lists no container (exit 1 on timeout)
"""

import argparse
import calendar
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

RUNNING_OR_LATER = {"running", "complete", "error", "cancelled", "killed",
                    "timeout"}
TERMINAL = {"complete", "error", "cancelled", "killed", "timeout"}
STAT_KEYS = ("queued", "preparing", "running", "complete", "error",
             "cancelled", "killed", "timeout")


class ApiError(Exception):
    pass


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def out(obj):
    print(json.dumps(obj), flush=True)


def ms(seconds):
    return seconds * 1000.0


def percentiles(values):
    """p50/p90/p99 (nearest rank), mean, min, max; None for no values."""
    v = sorted(values)
    n = len(v)
    if n == 0:
        return None

    def rank(p):
        return v[max(1, -(-p * n // 100)) - 1]  # ceil(p n / 100)

    return {
        "n": n,
        "p50": rank(50),
        "p90": rank(90),
        "p99": rank(99),
        "mean": statistics.fmean(v),
        "min": v[0],
        "max": v[-1],
    }


def parse_time(text):
    """RFC 3339 UTC with milliseconds (2026-11-21T10:00:00.123Z) → ms since
    the epoch, exactly (no float rounding)."""
    if text is None:
        return None
    if not text.endswith("Z"):
        raise ValueError(f"not a UTC time: {text!r}")
    body = text[:-1]
    frac = 0
    if "." in body:
        body, f = body.split(".", 1)
        frac = int((f + "000")[:3])
    t = time.strptime(body, "%Y-%m-%dT%H:%M:%S")
    return calendar.timegm(t) * 1000 + frac


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def cpu_seconds(pid):
    """(own, reaped children) CPU of a process in seconds: utime + stime of
    all its threads, and cutime + cstime of the children it has waited for
    (for berth up: its shims, and through them the containers' processes)."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    hz = os.sysconf("SC_CLK_TCK")
    return ((int(fields[11]) + int(fields[12])) / hz,
            (int(fields[13]) + int(fields[14])) / hz)


def system_cpu():
    """(busy, steal, total) jiffies of all CPUs, from /proc/stat: busy is
    user + nice + system + irq + softirq, steal what the hypervisor took."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    fields += [0] * (8 - len(fields))
    user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]
    busy = user + nice + system + irq + softirq
    return busy, steal, busy + steal + idle + iowait


def wait_quiet(busy, seconds, timeout):
    """Until the CPUs were less than `busy`% busy over each of `seconds`
    consecutive seconds, at most `timeout` s (0: only measure one second).
    Returns {quiet, waited_s, busy_pct (the last second)}."""
    t0 = time.perf_counter()
    quiet = 0
    while True:
        a = system_cpu()
        time.sleep(1.0)
        b = system_cpu()
        total = b[2] - a[2]
        busy_pct = 100.0 * (b[0] - a[0]) / total if total else 0.0
        quiet = quiet + 1 if busy_pct < busy else 0
        waited = time.perf_counter() - t0
        if quiet >= seconds or waited >= timeout:
            return {"quiet": quiet >= seconds, "waited_s": waited,
                    "busy_pct": busy_pct}


class CpuMeter:
    """CPU used by berth up, by its shims and containers, and by the whole
    machine between start and stop."""

    def __init__(self, pid):
        self.pid = pid
        self.p0 = cpu_seconds(pid)
        self.s0 = system_cpu()
        self.c0 = os.times()
        self.w0 = time.perf_counter()

    def stop(self):
        p1 = cpu_seconds(self.pid)
        s1 = system_cpu()
        c1 = os.times()
        w1 = time.perf_counter()
        wall = w1 - self.w0
        busy, steal, total = (b - a for a, b in zip(self.s0, s1))
        hz = os.sysconf("SC_CLK_TCK")
        result = {
            "wall_s": wall,
            # Shares of all CPUs together (1.0 = every CPU busy).
            "machine_busy": busy / total if total else None,
            "machine_steal": steal / total if total else None,
            "machine_cpu_s": busy / hz,
            # This client (all its threads: queueing, polling).
            "client_cpu_s": (c1.user - self.c0.user) + (c1.system - self.c0.system),
        }
        if self.p0 is not None and p1 is not None:
            own = p1[0] - self.p0[0]
            children = p1[1] - self.p0[1]
            result["up_cpu_s"] = own
            result["up_cpu_share"] = own / wall if wall else None
            result["shims_cpu_s"] = children
            # What neither berth nor this client used: kernel workers
            # (network namespace teardown, writeback) and other work.
            result["other_cpu_s"] = (busy / hz - own - children
                                     - result["client_cpu_s"])
        return result


# ---------------------------------------------------------------------------
# HTTP
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


class Client:
    """One keep-alive connection, reopened when the server closes it."""

    def __init__(self, make_conn, prefix="", headers=None):
        self.make_conn = make_conn
        self.prefix = prefix
        self.headers = headers or {}
        self.conn = None

    def connect(self):
        if self.conn is None:
            self.conn = self.make_conn()
            self.conn.connect()
            if isinstance(self.conn.sock, socket.socket) and \
                    self.conn.sock.family != socket.AF_UNIX:
                # Small requests one after another: no Nagle delay.
                self.conn.sock.setsockopt(socket.IPPROTO_TCP,
                                          socket.TCP_NODELAY, 1)

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(self, method, path, body=None, expect=(200,), raw=None):
        headers = dict(self.headers)
        data = None
        if raw is not None:
            data = raw
            headers["Content-Type"] = "application/json"
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        url = self.prefix + path
        for attempt in (0, 1):
            self.connect()
            try:
                self.conn.request(method, url, body=data, headers=headers)
                resp = self.conn.getresponse()
                payload = resp.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError,
                    ConnectionResetError):
                # A keep-alive connection the server closed meanwhile: one
                # retry on a fresh connection (never for POST, which is not
                # idempotent).
                self.close()
                if attempt or method == "POST":
                    raise
        if resp.status not in expect:
            raise ApiError(f"{method} {url}: HTTP {resp.status}: "
                           f"{payload.decode(errors='replace')[:500]}")
        if resp.getheader("connection", "").lower() == "close":
            self.close()
        return json.loads(payload) if payload else None


def api_client(config, timeout=60.0):
    url = config["url"]
    if not url.startswith("http://"):
        raise ApiError(f"unsupported API URL {url}")
    hostport = url[len("http://"):].rstrip("/")
    host, port = hostport.rsplit(":", 1)
    return Client(
        lambda: http.client.HTTPConnection(host, int(port), timeout=timeout),
        prefix=f"/2/projects/{config['project_id']}",
        headers={"Authorization": f"OAuth {config['token']}"})


def agent_client(path, timeout=30.0):
    return Client(lambda: UnixHTTPConnection(path, timeout))


def load_config(path):
    with open(path) as f:
        return json.load(f)


def code_id_of(api, name):
    codes = api.request("GET", "/codes?per_page=100")["codes"]
    for code in codes:
        if code.get("name") == name:
            return code["id"]
    raise ApiError(f"no code named {name}")


def agent_containers(agent):
    views = agent.request("GET", "/v1/containers")
    states = {}
    for v in views:
        states[v.get("state")] = states.get(v.get("state"), 0) + 1
    return len(views), states


def wait_no_containers(agent, timeout, interval=0.005):
    """Seconds until the agent lists no container; None on timeout."""
    t0 = time.perf_counter()
    while True:
        n, _ = agent_containers(agent)
        if n == 0:
            return time.perf_counter() - t0
        if time.perf_counter() - t0 > timeout:
            return None
        time.sleep(interval)


# ---------------------------------------------------------------------------
def cmd_start_up(args):
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        log("start-up: no command")
        return 2
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    listen = f"127.0.0.1:{port}"
    cmd = [listen if part == "@LISTEN@" else part for part in cmd]
    env = dict(os.environ)
    env["HOME"] = args.home
    for key in ("XDG_CONFIG_HOME", "BERTH_URL", "BERTH_TOKEN",
                "BERTH_PROJECT_ID"):
        env.pop(key, None)
    for kv in args.env:
        key, _, value = kv.partition("=")
        env[key] = value
    logf = open(args.log, "ab") if args.log else subprocess.DEVNULL
    t0 = time.perf_counter()
    # Its own session, like a daemon: a ^C to the script must not reach it
    # (the script stops it itself, by pid, after its containers are gone).
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf,
                            stderr=logf, env=env, start_new_session=True)
    deadline = t0 + args.timeout
    while True:
        if proc.poll() is not None:
            log(f"start-up: berth up exited with {proc.returncode}")
            out({"pid": proc.pid, "error": "exited"})
            return 1
        if time.perf_counter() > deadline:
            log(f"start-up: berth up did not answer within {args.timeout} s")
            out({"pid": proc.pid, "error": "timeout"})
            return 1
        try:
            config = load_config(args.config)
            if config.get("url") == f"http://{listen}":
                api = api_client(config, timeout=5)
                api.request("GET", "/codes")
                api.close()
                break
        except (OSError, ValueError, KeyError, ApiError,
                http.client.HTTPException):
            pass
        time.sleep(0.02)
    out({"pid": proc.pid, "url": config["url"],
         "project_id": config["project_id"],
         "ready_ms": ms(time.perf_counter() - t0)})
    return 0


def cmd_push_code(args):
    api = api_client(load_config(args.config))
    data = {"name": args.name, "image": args.image,
            "command": args.code_command}
    if args.max_concurrency:
        data["max_concurrency"] = args.max_concurrency
    code = api.request("POST", "/codes", data)
    out({"id": code["id"], "name": args.name,
         "max_concurrency": args.max_concurrency})
    return 0


# ---------------------------------------------------------------------------
def stats_of(api, code_id):
    s = api.request("GET", f"/codes/{code_id}/stats")
    return {k: int(s.get(k) or 0) for k in STAT_KEYS}


def fetch_records(api, code_name, ids, from_wall):
    """The records of `ids` (all complete), by paging the task list from
    `from_wall` (seconds since the epoch) on."""
    want = set(ids)
    found = {}
    from_time = int(from_wall) - 1
    page = 0
    while True:
        tasks = api.request(
            "GET", f"/tasks?code_name={code_name}&complete=1&error=1"
                   f"&from_time={from_time}&page={page}&per_page=100")["tasks"]
        for t in tasks:
            if t["id"] in want:
                found[t["id"]] = t
        if len(tasks) < 100:
            break
        page += 1
    return found


def one_throughput_run(args, config, code_id, run):
    api = api_client(config)
    agent = agent_client(args.socket)
    # Idle first: nothing of the previous run left, on the server or agent.
    deadline = time.perf_counter() + 300
    while True:
        s = stats_of(api, code_id)
        busy = s["queued"] + s["preparing"] + s["running"]
        n, _ = agent_containers(agent)
        if busy == 0 and n == 0:
            break
        if time.perf_counter() > deadline:
            raise ApiError(f"not idle before run {run}: stats {s}, "
                           f"{n} containers")
        time.sleep(0.05)
    quiet = wait_quiet(25.0, 3, args.wait_quiet) if args.wait_quiet else None
    base = stats_of(api, code_id)
    load = loadavg()

    bodies = []
    left = args.n
    while left > 0:
        k = min(args.batch, left)
        bodies.append(json.dumps({"tasks": [
            {"code_name": args.code_name, "payload": ""}] * k}).encode())
        left -= k
    next_batch = [0]
    lock = threading.Lock()
    ids = []
    post_times = []
    errors = []
    last_post_end = [0.0]
    go = threading.Event()

    def worker(client):
        go.wait()
        while True:
            with lock:
                i = next_batch[0]
                next_batch[0] += 1
            if i >= len(bodies):
                return
            t0 = time.perf_counter()
            try:
                answer = client.request("POST", "/tasks", raw=bodies[i])
            except Exception as e:  # reported; the run then fails
                errors.append(str(e))
                return
            t1 = time.perf_counter()
            with lock:
                ids.extend(t["id"] for t in answer["tasks"])
                post_times.append(ms(t1 - t0))
                last_post_end[0] = max(last_post_end[0], t1)

    clients = [api_client(config) for _ in range(args.threads)]
    for c in clients:
        c.connect()  # connections are opened before the clock starts
    threads = [threading.Thread(target=worker, args=(c,), daemon=True)
               for c in clients]
    for t in threads:
        t.start()
    poller = api_client(config)
    poller.connect()
    time.sleep(0.05)  # every thread waits on the event
    wall0 = time.time()
    meter = CpuMeter(args.pid)
    t0 = time.perf_counter()
    go.set()
    period = args.stats_poll_ms / 1000.0
    samples = []  # (s since t0, complete, ended, running, preparing, queued)
    tick = 0
    t_done = None
    while True:
        tick += 1
        wake = t0 + tick * period
        now = time.perf_counter()
        if wake > now:
            time.sleep(wake - now)
        s = stats_of(poller, code_id)
        t = time.perf_counter()
        delta = {k: s[k] - base[k] for k in STAT_KEYS}
        ended = sum(delta[k] for k in TERMINAL)
        samples.append((t - t0, delta["complete"], ended, s["running"],
                        s["preparing"], s["queued"]))
        if errors:
            raise ApiError(f"queueing failed: {errors[0]}")
        if ended >= args.n:
            t_done = t
            break
        if t - t0 > args.timeout:
            raise ApiError(f"run {run}: only {ended} of {args.n} ended "
                           f"within {args.timeout} s: {delta}")
    cpu = meter.stop()
    for t in threads:
        t.join()
    for c in clients + [poller]:
        c.close()
    if len(ids) != args.n:
        raise ApiError(f"run {run}: queued {len(ids)} of {args.n}")
    final = {k: s[k] - base[k] for k in STAT_KEYS}
    not_complete = {k: v for k, v in final.items()
                    if k != "complete" and v != 0}
    # The containers are removed after each end is recorded: how long the
    # agent keeps some after the last end.
    drain = wait_no_containers(agent, 300)

    elapsed = t_done - t0
    queue_s = last_post_end[0] - t0

    def crossing(fraction):
        goal = fraction * args.n
        for sample in samples:
            if sample[1] >= goal:
                return sample[0]
        return None

    t10, t90 = crossing(0.1), crossing(0.9)
    first_complete = crossing(1.0 / args.n)
    # Server-side view of the same run, from the task records.
    records = fetch_records(api, args.code_name, ids, wall0)
    created = [parse_time(r["created_at"]) for r in records.values()]
    starts = [parse_time(r["start_time"]) for r in records.values()
              if r.get("start_time")]
    ends = [parse_time(r["end_time"]) for r in records.values()
            if r.get("end_time")]
    waits = [parse_time(r["start_time"]) - parse_time(r["created_at"])
             for r in records.values() if r.get("start_time")]
    runs_ms = [r["duration"] for r in records.values()
               if r.get("duration") is not None]
    server_span = (max(ends) - min(created)) / 1000.0 if ends else None
    api.close()
    agent.close()
    result = {
        "run": run,
        "n": args.n,
        "load_before": load,
        "quiet_before": quiet,
        "elapsed_s": elapsed,
        "tasks_per_s": args.n / elapsed,
        "queue_s": queue_s,
        "queue_tasks_per_s": args.n / queue_s,
        "post_ms": percentiles(post_times),
        "first_complete_s": first_complete,
        "steady_tasks_per_s": (0.8 * args.n / (t90 - t10)
                               if t10 is not None and t90 and t90 > t10
                               else None),
        "max_running": max(x[3] for x in samples),
        "max_preparing": max(x[4] for x in samples),
        "max_active": max(x[3] + x[4] for x in samples),
        "polls": len(samples),
        "not_complete": not_complete,
        "drain_s": drain,
        "records": len(records),
        "server_span_s": server_span,
        "server_tasks_per_s": (len(ends) / server_span
                               if server_span else None),
        "server_queue_wait_ms": percentiles(waits),
        "server_run_ms": percentiles(runs_ms),
        "first_start_after_first_create_ms": (min(starts) - min(created)
                                              if starts else None),
        "cpu": cpu,
    }
    if args.samples:
        with open(f"{args.samples}-run{run}.tsv", "w") as f:
            f.write("t_s\tcomplete\tended\trunning\tpreparing\tqueued\n")
            for x in samples:
                f.write("\t".join(f"{v:.4f}" if isinstance(v, float)
                                  else str(v) for v in x) + "\n")
    return result


def cmd_throughput(args):
    config = load_config(args.config)
    api = api_client(config)
    code_id = code_id_of(api, args.code_name)
    api.close()
    runs = []
    for run in range(1, args.runs + 1):
        r = one_throughput_run(args, config, code_id, run)
        runs.append(r)
        log(f"  run {run}: {args.n} tasks in {r['elapsed_s']:.2f} s = "
            f"{r['tasks_per_s']:.1f} tasks/s (queued in {r['queue_s']:.2f} s"
            f" = {r['queue_tasks_per_s']:.0f}/s; steady "
            f"{(r['steady_tasks_per_s'] or 0):.1f}/s; server span "
            f"{(r['server_span_s'] or 0):.2f} s; up CPU "
            f"{r['cpu'].get('up_cpu_s', 0):.1f} s, machine busy "
            f"{100 * (r['cpu']['machine_busy'] or 0):.0f}%;"
            f" containers gone {r['drain_s'] or -1:.2f} s later)")
        if r["not_complete"]:
            log(f"  run {run}: not complete: {r['not_complete']}")
    out({
        "n": args.n,
        "runs": runs,
        "median_tasks_per_s": statistics.median(r["tasks_per_s"]
                                                for r in runs),
        "median_queue_tasks_per_s": statistics.median(
            r["queue_tasks_per_s"] for r in runs),
        "all_complete": all(not r["not_complete"] for r in runs),
    })
    return 0


# ---------------------------------------------------------------------------
def cmd_latency(args):
    config = load_config(args.config)
    api = api_client(config)
    agent = agent_client(args.socket)
    body = json.dumps({"tasks": [{"code_name": args.code_name,
                                  "payload": ""}]}).encode()

    def one(poll_s, want_client):
        # Idle: the previous task's container is gone, then a short settle.
        if wait_no_containers(agent, 60) is None:
            raise ApiError("the agent still lists containers after 60 s")
        time.sleep(args.settle_ms / 1000.0)
        wall0 = time.time()
        t0 = time.perf_counter()
        answer = api.request("POST", "/tasks", raw=body)
        t_post = time.perf_counter()
        tid = answer["tasks"][0]["id"]
        t_running = None
        seen_running = False
        polls = 0
        while True:
            task = api.request("GET", f"/tasks/{tid}")
            t = time.perf_counter()
            polls += 1
            status = task["status"]
            if t_running is None and status in RUNNING_OR_LATER:
                t_running = t
                seen_running = status == "running"
            if status in TERMINAL:
                t_end = t
                break
            if t - t0 > 60:
                raise ApiError(f"task {tid} still {status} after 60 s")
            # Fast until it runs; then the rest needs no precision.
            time.sleep(poll_s if t_running is None or not want_client
                       else max(poll_s, 0.005))
        if status != "complete":
            raise ApiError(f"task {tid} ended {status}: {task.get('msg')}")
        created = parse_time(task["created_at"])
        start = parse_time(task["start_time"])
        end = parse_time(task["end_time"])
        return {
            "id": tid,
            "post_sent_wall_ms": wall0 * 1000.0,
            "created_ms": created,
            "start_ms": start,
            "end_ms": end,
            "server_ms": start - created,
            "server_end_ms": end - created,
            "run_ms": end - start,
            "client_running_ms": ms(t_running - t0),
            "client_end_ms": ms(t_end - t0),
            "post_ms": ms(t_post - t0),
            "saw_running": seen_running,
            "polls": polls,
        }

    for _ in range(args.warmup):
        one(args.slow_poll_ms / 1000.0, False)
    quiet = wait_quiet(25.0, 3, args.wait_quiet) if args.wait_quiet else None
    load = loadavg()
    meter = CpuMeter(args.pid)
    fast, slow = [], []
    for i in range(2 * args.m):
        if i % 2 == 0:
            fast.append(one(args.poll_ms / 1000.0, True))
        else:
            slow.append(one(args.slow_poll_ms / 1000.0, False))
        if (i + 1) % 50 == 0 or i + 1 == 2 * args.m:
            log(f"  {i + 1}/{2 * args.m}")
    cpu = meter.stop()
    api.close()
    agent.close()

    def col(rows, key):
        return percentiles([r[key] for r in rows])

    out({
        "m": args.m,
        "poll_ms": args.poll_ms,
        "slow_poll_ms": args.slow_poll_ms,
        "load_before": load,
        "quiet_before": quiet,
        "fast": {
            "server_ms": col(fast, "server_ms"),
            "client_running_ms": col(fast, "client_running_ms"),
            "client_end_ms": col(fast, "client_end_ms"),
            "server_end_ms": col(fast, "server_end_ms"),
            "run_ms": col(fast, "run_ms"),
            "post_ms": col(fast, "post_ms"),
            "polls": col(fast, "polls"),
            "saw_running": sum(1 for r in fast if r["saw_running"]),
        },
        "slow": {
            "server_ms": col(slow, "server_ms"),
            "server_end_ms": col(slow, "server_end_ms"),
            "run_ms": col(slow, "run_ms"),
            "post_ms": col(slow, "post_ms"),
        },
        "all": {
            "server_ms": col(fast + slow, "server_ms"),
        },
        "cpu": cpu,
        "rows": (fast + slow) if args.rows else None,
    })
    return 0


# ---------------------------------------------------------------------------
def cmd_wait_quiet(args):
    out(wait_quiet(args.busy, args.seconds, args.timeout))
    return 0


def cmd_containers(args):
    n, states = agent_containers(agent_client(args.socket, timeout=5))
    out({"total": n, "states": states})
    return 0


def cmd_wait_no_containers(args):
    waited = wait_no_containers(agent_client(args.socket, timeout=5),
                                args.timeout, interval=0.05)
    if waited is None:
        n, states = agent_containers(agent_client(args.socket, timeout=5))
        out({"total": n, "states": states, "error": "timeout"})
        return 1
    out({"total": 0, "waited_s": waited})
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("start-up")
    s.add_argument("--home", required=True)
    s.add_argument("--config", required=True)
    s.add_argument("--log")
    s.add_argument("--env", action="append", default=[])
    s.add_argument("--timeout", type=float, default=120.0)
    s.add_argument("cmd", nargs=argparse.REMAINDER)
    s = sub.add_parser("push-code")
    s.add_argument("--config", required=True)
    s.add_argument("--name", required=True)
    s.add_argument("--image", default="berth/stack-busybox")
    s.add_argument("--command", dest="code_command", required=True)
    s.add_argument("--max-concurrency", type=int)
    s = sub.add_parser("throughput")
    s.add_argument("--config", required=True)
    s.add_argument("--socket", required=True)
    s.add_argument("--code-name", required=True)
    s.add_argument("-n", type=int, default=2000)
    s.add_argument("--runs", type=int, default=3)
    s.add_argument("--threads", type=int, default=4)
    s.add_argument("--batch", type=int, default=100)
    s.add_argument("--stats-poll-ms", type=float, default=20.0)
    s.add_argument("--timeout", type=float, default=900.0)
    s.add_argument("--pid", type=int)
    s.add_argument("--wait-quiet", type=float, default=0.0,
                   help="before each run, wait at most this long for a "
                        "quiet machine (see wait-quiet)")
    s.add_argument("--samples", help="write each run's stats samples to "
                                     "PREFIX-runK.tsv")
    s = sub.add_parser("latency")
    s.add_argument("--config", required=True)
    s.add_argument("--socket", required=True)
    s.add_argument("--code-name", required=True)
    s.add_argument("-m", type=int, default=200)
    s.add_argument("--poll-ms", type=float, default=1.0)
    s.add_argument("--slow-poll-ms", type=float, default=20.0)
    s.add_argument("--settle-ms", type=float, default=20.0)
    s.add_argument("--warmup", type=int, default=5)
    s.add_argument("--pid", type=int)
    s.add_argument("--wait-quiet", type=float, default=0.0)
    s.add_argument("--rows", action="store_true",
                   help="include every task's figures in the output")
    s = sub.add_parser("wait-quiet")
    s.add_argument("--busy", type=float, default=25.0)
    s.add_argument("--seconds", type=int, default=3)
    s.add_argument("--timeout", type=float, default=300.0)
    s = sub.add_parser("containers")
    s.add_argument("--socket", required=True)
    s = sub.add_parser("wait-no-containers")
    s.add_argument("--socket", required=True)
    s.add_argument("--timeout", type=float, default=60.0)
    args = p.parse_args()
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    handlers = {
        "start-up": cmd_start_up,
        "push-code": cmd_push_code,
        "throughput": cmd_throughput,
        "latency": cmd_latency,
        "wait-quiet": cmd_wait_quiet,
        "containers": cmd_containers,
        "wait-no-containers": cmd_wait_no_containers,
    }
    try:
        return handlers[args.command](args)
    except (ApiError, OSError, http.client.HTTPException) as e:
        log(f"tasks_client {args.command}: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
