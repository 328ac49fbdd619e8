"""The official IronWorker Python client (iron-worker 1.3.8), unchanged,
against a running berth: upload, queue with options, wait, log, stdout,
run, retry, cancel, progress, listings and schedules.

Run by crates/berth/tests/clients.rs with the client's own configuration
(IRON_PROTOCOL, IRON_HOST, IRON_PORT, IRON_PROJECT_ID, IRON_TOKEN) in a
fresh working directory. Exits non-zero, saying which step failed, on the
first thing that does not work.
"""

import datetime
import json
import os
import sys
import time

from iron_worker import CodePackage, IronWorker, Task

CODE = "py-hello"
# The worker: prints its task id and payload; a payload asking to sleep or
# fail does so.
WORKER_SH = """\
echo "hello from $TASK_ID"
payload=$(cat "$PAYLOAD_FILE")
echo "payload: $payload"
case "$payload" in
  *sleep*) sleep 60 ;;
  *fail*) echo "failing on purpose" >&2; exit 3 ;;
esac
"""


def explain_http_errors(kind, error, trace):
    """Shows what berth answered when a request of the client failed (the
    client's HTTPError says only the status)."""
    sys.__excepthook__(kind, error, trace)
    response = getattr(error, "response", None)
    if response is not None:
        print("berth answered %s: %s" % (response.status_code, response.text), file=sys.stderr)


sys.excepthook = explain_http_errors


def step(text):
    print("--", text, flush=True)


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def encode_multipart_formdata(fields, files):
    """The client's own encoder, with bytes kept as bytes.

    iron-worker 1.3.8 joins the parts as text, so under Python 3 it sends
    str(b"PK...") -- the repr of the zip -- instead of the zip (a client bug,
    worked around here, not in the server). The parts, names and headers
    are the client's.
    """
    boundary = "----------ThIs_Is_tHe_bouNdaRY_$"
    lines = []
    for key, value in fields:
        lines += [
            ("--" + boundary).encode(),
            ('Content-Disposition: form-data; name="%s"' % key).encode(),
            b"",
            value.encode() if isinstance(value, str) else value,
        ]
    for key, filename, value in files:
        lines += [
            ("--" + boundary).encode(),
            (
                'Content-Disposition: form-data; name="%s"; filename="%s"'
                % (key, filename)
            ).encode(),
            ("Content-Type: %s" % IronWorker.get_content_type(filename)).encode(),
            b"",
            value,
        ]
    lines += [("--" + boundary + "--").encode(), b""]
    return "multipart/form-data; boundary=%s" % boundary, b"\r\n".join(lines)


IronWorker.encode_multipart_formdata = staticmethod(encode_multipart_formdata)

worker = IronWorker()

# Every response's Warning headers, recorded by wrapping the client's one
# request method (its behaviour is unchanged).
warnings_seen = []
_request = worker.client.request


def recording_request(*args, **kwargs):
    result = _request(*args, **kwargs)
    warning = result["resp"].headers.get("Warning")
    if warning:
        warnings_seen.append((kwargs.get("url") or args[0], warning))
    return result


worker.client.request = recording_request


def wait_until(what, predicate, timeout=30):
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        check(time.time() < deadline, "timed out waiting for " + what)
        time.sleep(0.1)


step("upload a code package (classic form: runtime sh, a zip)")
with open("worker.sh", "w") as f:
    f.write(WORKER_SH)
package = CodePackage(name=CODE, runtime="sh")
package.merge("worker.sh")
uploaded = worker.upload(package)
check(uploaded.id, "upload answered no id: %r" % vars(uploaded))
codes = {c.name: c for c in worker.codes()}
check(CODE in codes, "codes() does not list %s: %r" % (CODE, list(codes)))
check(codes[CODE].id == uploaded.id, "codes() shows another id")
check(worker.code(uploaded.id).name == CODE, "code() names another code")
revisions = worker.revisions(uploaded.id)
check(
    uploaded.revision in [r.revision for r in revisions],
    "revisions %r miss %r" % ([r.revision for r in revisions], uploaded.revision),
)

step("queue with options, wait, read the log and stdout")
task = worker.queue(
    code_name=CODE,
    payload={"greeting": "hi"},
    priority=2,
    timeout=30,
    label="py-label",
    cluster="py-cluster",
)
check(task.id, "queue answered no id")
done = worker.wait_for_task(task)
check(done.status == "complete", "task ended %s: %s" % (done.status, done.message))
check(done.priority == 2, "priority %r" % done.priority)
check(done.timeout == 30, "timeout %r" % done.timeout)
check(done.label == "py-label", "label %r" % done.label)
check(done.cluster == "py-cluster", "cluster %r" % done.cluster)
check(done.payload == {"greeting": "hi"}, "payload %r" % done.payload)
check(isinstance(done.created_at, datetime.datetime), "created_at %r" % done.created_at)
log = worker.log(done)
check("hello from %s" % task.id in log, "log: %r" % log)
check('payload: {"greeting": "hi"}' in log, "log: %r" % log)
check(worker.stdout(done) == log, "stdout differs from the log")

step("run (sync) returns the output")
output = worker.run(code_name=CODE, payload="ran")
check("payload: ran" in output, "run(): %r" % output)

step("delay")
delayed = worker.queue(code_name=CODE, payload="later", delay=1)
first = worker.task(delayed)
check(first.status == "queued", "a delayed task is %s at once" % first.status)
check(first.delay == 1, "delay %r" % first.delay)
check(worker.wait_for_task(delayed).status == "complete", "delayed task did not complete")

step("a failing task ends in error")
failed = worker.wait_for_task(worker.queue(code_name=CODE, payload="fail"))
check(failed.status == "error", "failing task ended %s" % failed.status)
check("failing on purpose" in worker.log(failed), "log of the failed task")

step("retry")
retried = worker.retry(failed.id, delay=0)
check(retried["msg"] == "Queued up", "retry: %r" % retried)
retry_id = retried["tasks"][0]["id"]
check(retry_id != failed.id, "retry reused the id")
check(worker.wait_for_task(Task(id=retry_id)).status == "error", "retried task")

step("progress and cancel of a running task")
sleeper = worker.queue(code_name=CODE, payload="sleep", timeout=120)
wait_until("the sleeper to run", lambda: worker.task(sleeper).status == "running")
worker.setProgress(sleeper.id, 50, "half way")
running = worker.task(sleeper)
check(running.percent == 50, "percent %r" % running.percent)
check(running.message == "half way", "msg %r" % running.message)
check(worker.cancel(sleeper) is True, "cancel")
cancelled = wait_until(
    "the sleeper to be cancelled",
    lambda: (lambda t: t if t.status not in ("queued", "preparing", "running") else None)(
        worker.task(sleeper)
    ),
)
check(cancelled.status == "cancelled", "cancelled task is %s" % cancelled.status)

step("cancel of a queued task")
waiting = worker.queue(code_name=CODE, payload="x", delay=600)
worker.cancel(waiting)
check(worker.task(waiting).status == "cancelled", "queued task not cancelled")

step("task listings")
complete = worker.tasks(code_name=CODE, complete=1)
check(task.id in [t.id for t in complete], "tasks(complete=1) misses %s" % task.id)
check(all(t.status == "complete" for t in complete), "tasks(complete=1): other statuses")
by_name = worker.tasks_by_code_name(CODE)
check(len(by_name) >= 7, "tasks_by_code_name: %d tasks" % len(by_name))

step("schedules: create, list, get, cancel")
later = datetime.datetime.now() + datetime.timedelta(hours=1)
scheduled = worker.queue(
    task=Task(
        code_name=CODE,
        payload="scheduled",
        start_at=later,
        run_every=3600,
        run_times=3,
        priority=1,
    )
)
check(scheduled.scheduled and scheduled.id, "schedule: %r" % vars(scheduled))
listed = worker.tasks(scheduled=True)
check(scheduled.id in [s.id for s in listed], "schedules list misses it")
one = worker.task(scheduled.id, scheduled=True)
check(one.code_name == CODE and one.run_every == 3600, "schedule: %r" % vars(one))
check(abs((one.start_at - later.astimezone()).total_seconds()) < 1, "start_at %r" % one.start_at)
check(worker.cancel(scheduled) is True, "schedule cancel")
check(worker.task(scheduled.id, scheduled=True).status == "cancelled", "schedule not cancelled")

step("a schedule that is due queues its task")
due = worker.queue(
    task=Task(code_name=CODE, payload="from a schedule", start_at=datetime.datetime.now())
)
ran = wait_until(
    "the schedule's task",
    lambda: [t for t in worker.tasks(code_name=CODE) if t.schedule_id == due.id],
)
check(worker.wait_for_task(ran[0]).status == "complete", "scheduled task did not complete")
check("payload: from a schedule" in worker.log(ran[0]), "scheduled task's log")

step("the client's own requests drew one warning: run()'s sync, ignored")
check(
    [w for _, w in warnings_seen] == ['299 - "tasks[0].sync: berth runs every task alike '
                                      'and keeps its output at /log and /outlog; the field '
                                      'is ignored"'],
    "warnings: %r" % warnings_seen,
)

step("an unknown field is accepted and reported in a Warning header")
answer = worker.client.post(
    "tasks",
    body=json.dumps({"tasks": [{"code_name": CODE, "payload": "", "colour": "red"}]}),
    headers={"Content-Type": "application/json"},
)
check(answer["body"]["msg"] == "Queued up", "answer %r" % answer["body"])
warning = answer["resp"].headers.get("Warning", "")
check('unknown field \\"tasks[0].colour\\"' in warning, "Warning: %r" % warning)

print("python client: all steps passed")
sys.exit(0)
