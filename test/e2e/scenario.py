"""Drives real Dramatiq into the situations the shipped alerts watch, for the
end-to-end test (e2e_test.go), which watches them through a real Prometheus.

    scenario.py --redis-url URL --heartbeat-timeout SECONDS --markers DIR

Queues, all in the default namespace "dramatiq":
  emails       producer only, no worker listens: ready messages nobody takes
               (QueueNotConsumed), one created 30 minutes ago at the head
               (QueueLatencyHigh, QueueLatencyBudgetBurnFast/Slow), and a
               backlog that grows by two messages a second for as long as
               this script runs (BacklogGrowing). Its delay queue: two
               overdue messages held by a hung consumer in this process
               (DelayedMessagesOverdue) and one nobody claims
               (DelayedMessagesUnclaimed).
  crash        two `dramatiq` CLI worker processes (e2e_app.py) take messages
               and are SIGKILLed while they hold them: orphaned messages and
               two stale processes (OrphanedMessages, WorkersDying).
  reports      served by a live worker in this process: two messages fail
               with max_retries=0 (dead letters), one is delayed by ten
               minutes (delayed, held by the live worker). Then
               export_report fails (max_retries=0) twice, and after a few
               scrapes 12 more times: 16 dead letters in all, counted per
               actor by the exporter (DramatiqActorDeadLettersHigh).
  drain        served by the same live worker, slowly: a backlog going down
               (the queue dashboard's drain trend and time to drain).
  busy         served by a second live worker whose one thread blocks until
               the scenario stops: five messages, one running, some
               prefetched, the rest ready, plus one delayed by ten minutes
               (the recording rules of docs/recording-rules.md: workload 5,
               unfinished 6). The blocked message is held by a live worker
               (MessageHeldTooLong, its threshold lowered by the test).
  zz_overflow  one message, so there are six queues; the exporter runs with
               --dramatiq.max-queues=5 and drops this one (QueuesDropped).

Every client runs with maintenance_chance=0, so nothing recovers the dead
workers' messages while the test looks at them.

stdout carries one JSON object per line, {"event": NAME, ...}: "started",
"cli" (the CLI's pid, so the test can kill its process group if this script
dies), "holding", "killed", "stopped". Logs go to stderr. When stdin closes,
the script stops its worker and producer (all its processes then go stale)
and exits.
"""

import argparse
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware

HERE = os.path.dirname(os.path.abspath(__file__))
CRASH_MESSAGES = 6  # two CLI processes hold at most 2 each (prefetch = 2 x 1 thread)
DRAIN_MESSAGES = 240
DRAIN_SECONDS = 0.25  # per message: the drain lasts about a minute

p = argparse.ArgumentParser()
p.add_argument("--redis-url", required=True)
p.add_argument("--heartbeat-timeout", type=float, required=True)
p.add_argument("--markers", required=True)
p.add_argument("--dramatiq-cli", required=True)
args = p.parse_args()

logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="[%(asctime)s] %(name)s %(message)s")


def emit(event, **kw):
    sys.stdout.write(json.dumps(dict(event=event, **kw)) + "\n")
    sys.stdout.flush()


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] scenario: {msg}", file=sys.stderr, flush=True)


class Nacks(Middleware):
    """Counts dead-letterings, so the script can wait for them."""

    def __init__(self):
        self.cond = threading.Condition()
        self.n = 0

    def after_nack(self, broker, message):
        with self.cond:
            self.n += 1
            self.cond.notify_all()

    def wait(self, n, timeout):
        with self.cond:
            if not self.cond.wait_for(lambda: self.n >= n, timeout):
                raise SystemExit(f"only {self.n} of {n} messages dead-lettered after {timeout}s")


nacks = Nacks()
broker = RedisBroker(
    url=args.redis_url,
    heartbeat_timeout=int(args.heartbeat_timeout * 1000),
    maintenance_chance=0,
)
broker.add_middleware(nacks)
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="emails")
def send_email(i):
    pass  # never runs: no worker listens to emails


@dramatiq.actor(queue_name="crash")
def hold(i):
    pass  # runs in e2e_app.py's worker processes


@dramatiq.actor(queue_name="reports", max_retries=0)
def build_report(i):
    raise RuntimeError(f"report {i} failed on purpose")


@dramatiq.actor(queue_name="reports", max_retries=0)
def export_report(i):
    raise RuntimeError(f"export {i} failed on purpose")


@dramatiq.actor(queue_name="reports")
def scheduled_report(i):
    pass


@dramatiq.actor(queue_name="drain")
def slow(i):
    time.sleep(DRAIN_SECONDS)


BUSY_MESSAGES = 5
busy_running = threading.Event()
busy_release = threading.Event()


@dramatiq.actor(queue_name="busy")
def block(i):
    busy_running.set()
    busy_release.wait(600)


@dramatiq.actor(queue_name="busy")
def busy_later(i):
    pass


@dramatiq.actor(queue_name="zz_overflow")
def overflow(i):
    pass


children = []


def die_with_parent():
    """Linux: SIGKILL the child when this script dies, even by SIGKILL (the
    CLI runs in its own session, out of reach of a process-group kill)."""
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def cleanup():
    for c in children:
        if c.poll() is None:
            try:
                os.killpg(c.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            c.wait()


emit("started", dramatiq=dramatiq.__version__, pid=os.getpid())
try:
    # Created half an hour ago, as a message retried or re-enqueued much
    # later keeps its creation time: the head of emails is that old.
    old = send_email.message(0).copy(message_timestamp=int((time.time() - 1800) * 1000))
    broker.enqueue(old)
    # Delayed work that does not come back, on emails (no worker): two
    # messages due two minutes ago, claimed from emails.DQ by this process's
    # own delay consumer and never moved on (a hung holder that still
    # heartbeats, as the producer loop below keeps this process alive:
    # DelayedMessagesOverdue), then one delayed by ten minutes that nobody
    # claims (DelayedMessagesUnclaimed).
    for i in range(2):
        send_email.send_with_options(args=(100 + i,), delay=-120_000)
    hung = broker.consume("emails.DQ", prefetch=2, timeout=100)
    held = []
    deadline = time.time() + 30
    while len(held) < 2:
        if time.time() > deadline:
            raise SystemExit(f"the hung delay consumer claimed {len(held)} of 2 messages")
        m = next(hung)
        if m is not None:
            held.append(m)
    send_email.send_with_options(args=(102,), delay=600_000)
    for i in range(CRASH_MESSAGES):
        hold.send(i)
    overflow.send(0)

    cli = subprocess.Popen(
        [args.dramatiq_cli, "e2e_app", "--processes", "2", "--threads", "1", "--queues", "crash"],
        cwd=HERE,
        env=dict(
            os.environ,
            PYTHONPATH=HERE,
            E2E_REDIS_URL=args.redis_url,
            E2E_HEARTBEAT_TIMEOUT=str(args.heartbeat_timeout),
            E2E_MARKERS=args.markers,
        ),
        stdout=sys.stderr,
        start_new_session=True,
        preexec_fn=die_with_parent,
    )
    children.append(cli)
    emit("cli", pid=cli.pid)

    live = dramatiq.Worker(broker, queues={"reports", "drain"}, worker_threads=1, worker_timeout=100)
    live.start()
    for i in range(2):
        build_report.send(i)
    scheduled_report.send_with_options(args=(0,), delay=600_000)
    for i in range(DRAIN_MESSAGES):
        slow.send(i)
    busy = dramatiq.Worker(broker, queues={"busy"}, worker_threads=1, worker_timeout=100)
    busy.start()
    for i in range(BUSY_MESSAGES):
        block.send(i)
    busy_later.send_with_options(args=(0,), delay=600_000)
    if not busy_running.wait(30):
        raise SystemExit("the busy worker never ran a message")

    deadline = time.time() + 45
    while len(os.listdir(args.markers)) < 2:
        if cli.poll() is not None:
            raise SystemExit(f"the dramatiq CLI exited with {cli.returncode}")
        if time.time() > deadline:
            raise SystemExit(f"only {os.listdir(args.markers)} CLI worker processes run a message after 45s")
        time.sleep(0.05)
    nacks.wait(2, timeout=30)
    # The exporter's counter for export_report appears with its first dead
    # letters; Prometheus must scrape it (every second) before the burst
    # for increase() to see the burst.
    for i in range(2):
        export_report.send(i)
    nacks.wait(4, timeout=30)
    time.sleep(4)
    for i in range(2, 14):
        export_report.send(i)
    nacks.wait(16, timeout=30)
    pids = sorted(int(n) for n in os.listdir(args.markers) if n.isdigit())
    emit("holding", worker_pids=pids)

    # The whole CLI process group at once, the way an OOM kill or a lost
    # machine ends it: no requeue, no ack.
    os.killpg(cli.pid, signal.SIGKILL)
    cli.wait()
    emit("killed", at=time.time())

    # The producer keeps sending until the test closes stdin: it stays alive
    # in the heartbeat set, and emails' backlog keeps growing.
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    i = 1
    while not stop.wait(0.5):
        send_email.send(i)
        i += 1
    log(f"stopping after {i - 1} more emails")
    busy_release.set()
    busy.stop()
    live.stop()
    emit("stopped", emails_sent=i)
finally:
    cleanup()
