"""Plumbing shared by the conformance scenarios.

A scenario drives real Dramatiq through its public API into some state and
prints, one JSON object per line on stdout, what the exporter must report in
that state. The Go driver (conformance_test.go) reads each line, scrapes the
exporter until it agrees or the phase's timeout passes, and answers "ok" on
stdin; only then does the scenario move on. Logs go to stderr.

Protocol (stdout):
  {"scenario": NAME, "dramatiq": VERSION, "namespace": NS,
   "heartbeat_timeout": SECONDS, "queues": [Q...]}      first line
  (queues: passed to the exporter's --dramatiq.queues; omitted when none)
  {"phase": NAME, "timeout": SECONDS, "queues": {Q: {...}},
   "absent_queues": [Q...], "processes": {"alive": N, "stale": N}}
  {"done": true}                                         last line

A queue's expectations (every key optional; a missing key is not checked):
  ready, inflight, delayed, dead_letter, orphaned: exact integers;
  dead_letter_last_timestamp: unix seconds (within 1 s), or null when the
    series must be absent (empty dead-letter queue);
  oldest_message_timestamp: unix seconds of the head message's creation, so
    the age must be now - that (within 1 s); null when the age must be 0;
  dead_lettered_total: exact integer, messages dead-lettered since the
    exporter started.
A phase may also carry "actors": {Q: {ACTOR: N}}, the exact
dramatiq_actor_dead_lettered_total of those pairs.

Every expected value comes from Dramatiq's own view: what was sent, the
Message objects send() returned, middleware hooks (before_delay_message,
after_nack, ...), and the worker's in-memory work queue.
"""

import argparse
import atexit
import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware, default_middleware

HERE = os.path.dirname(os.path.abspath(__file__))
VERSION = tuple(int(p) for p in dramatiq.__version__.split(".")[:2])

# Sentinel: leave this field out of the expectation.
SKIP = object()


def middleware():
    """Dramatiq's default middleware minus Prometheus.

    Dramatiq 1.x enables its Prometheus middleware by default; it binds port
    9191, so scenarios running in parallel would collide, and it has nothing
    to do with the broker's state.
    """
    return [m() for m in default_middleware if m.__name__ != "Prometheus"]


def make_broker(url, namespace, *, heartbeat_timeout=60, maintenance_chance=0, dead_message_ttl=None, extra=()):
    """A RedisBroker for one scenario client.

    maintenance_chance defaults to 0 so that no client requeues or forgets
    anything by chance (Dramatiq's default is 1 in 1000 calls): a scenario
    that wants maintenance asks for it explicitly, which keeps every
    expectation deterministic.
    """
    kw = {}
    if dead_message_ttl is not None:
        kw["dead_message_ttl"] = dead_message_ttl
    return RedisBroker(
        url=url,
        namespace=namespace,
        middleware=middleware() + list(extra),
        heartbeat_timeout=int(heartbeat_timeout * 1000),
        maintenance_chance=maintenance_chance,
        **kw,
    )


class Recorder(Middleware):
    """Counts middleware hooks so a scenario can wait for Dramatiq to reach a
    state instead of sleeping."""

    def __init__(self):
        self.cond = threading.Condition()
        self.counts = collections.Counter()
        self.nack_times = []
        self.worker = None

    def _hit(self, name):
        with self.cond:
            self.counts[name] += 1
            self.cond.notify_all()

    def after_worker_boot(self, broker, worker):
        self.worker = worker

    def before_process_message(self, broker, message):
        self._hit("process")

    def after_process_message(self, broker, message, *, result=None, exception=None):
        self._hit("failed" if exception is not None else "succeeded")

    def before_delay_message(self, broker, message):
        self._hit("delay")

    def after_ack(self, broker, message):
        self._hit("ack")

    def after_nack(self, broker, message):
        # after_nack runs right after the nack script ZADDed the message to
        # the dead-letter set with the client's clock; this is that moment
        # within a few milliseconds.
        with self.cond:
            self.nack_times.append(time.time())
        self._hit("nack")

    def wait(self, name, n, timeout=30):
        with self.cond:
            if not self.cond.wait_for(lambda: self.counts[name] >= n, timeout):
                raise SystemExit(f"timed out waiting for {n} x {name}: {dict(self.counts)}")

    def count(self, name):
        with self.cond:
            return self.counts[name]


def held_by(worker, running):
    """Messages a worker holds: the ones its threads run plus the prefetched
    ones waiting in its in-memory work queue. Waits until the consumer has
    stopped fetching (the count is stable for 0.3 s)."""
    last, stable_since = None, time.time()
    deadline = time.time() + 10
    while time.time() < deadline:
        n = running + worker.work_queue.qsize()
        if n != last:
            last, stable_since = n, time.time()
        elif time.time() - stable_since >= 0.3:
            return n
        time.sleep(0.05)
    raise SystemExit("worker's work queue never settled")


def ts(message):
    """Creation time of a message in unix seconds (Dramatiq stores ms)."""
    return message.message_timestamp / 1000.0


def queue(ready=0, inflight=0, delayed=0, dead_letter=0, orphaned=0, oldest=SKIP, dead_letter_last=SKIP):
    """One queue's expectations. oldest is the head Message (or a unix time);
    by default it is checked only when the queue is empty (age 0). The same
    holds for dead_letter_last."""
    q = dict(ready=ready, inflight=inflight, delayed=delayed, dead_letter=dead_letter, orphaned=orphaned)
    if oldest is SKIP and ready == 0:
        oldest = None
    if oldest is not SKIP:
        q["oldest_message_timestamp"] = ts(oldest) if hasattr(oldest, "message_timestamp") else oldest
    if dead_letter_last is SKIP and dead_letter == 0:
        dead_letter_last = None
    if dead_letter_last is not SKIP:
        q["dead_letter_last_timestamp"] = dead_letter_last
    return q


class Scenario:
    def __init__(self, name, *, namespace="dramatiq", heartbeat_timeout=60, configured_queues=(), start=True):
        """start=False leaves the header (and so the exporter's start) to
        start(), for state that must exist before the exporter runs."""
        p = argparse.ArgumentParser(description=f"conformance scenario {name}")
        p.add_argument("--redis-url", required=True)
        p.add_argument("--namespace", default=namespace)
        self.args = p.parse_args()
        self.name = name
        self.url = self.args.redis_url
        self.namespace = self.args.namespace
        self.heartbeat_timeout = heartbeat_timeout
        self.children = []
        # Children run in their own sessions; make sure they die with us
        # even when the scenario fails half-way.
        atexit.register(self.cleanup)
        header = dict(
            scenario=name,
            dramatiq=dramatiq.__version__,
            namespace=self.namespace,
            heartbeat_timeout=heartbeat_timeout,
        )
        if configured_queues:
            header["queues"] = list(configured_queues)
        self.header = header
        if start:
            self.start()

    def start(self):
        self._emit(**self.header)

    def broker(self, **kw):
        kw.setdefault("heartbeat_timeout", self.heartbeat_timeout)
        return make_broker(self.url, self.namespace, **kw)

    def _emit(self, **obj):
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def expect(self, phase, *, queues=None, absent_queues=None, processes=None, actors=None, timeout=15):
        """States what the exporter must show now and waits for the driver."""
        obj = {"phase": phase, "timeout": timeout, "queues": queues or {}}
        if actors is not None:
            obj["actors"] = actors
        if absent_queues:
            obj["absent_queues"] = absent_queues
        if processes is not None:
            obj["processes"] = processes
        log(f"phase {phase}: {json.dumps(obj)}")
        self._emit(**obj)
        answer = sys.stdin.readline().strip()
        if answer != "ok":
            self.cleanup()
            raise SystemExit(f"driver answered {answer!r} to phase {phase}")

    def spawn(self, args, env=None):
        """Starts a child in its own process group, killed at cleanup."""
        full = dict(os.environ)
        full.update(env or {})
        full["PYTHONPATH"] = HERE + os.pathsep + full.get("PYTHONPATH", "")
        p = subprocess.Popen(args, env=full, cwd=HERE, stdout=sys.stderr, start_new_session=True)
        self.children.append(p)
        return p

    def cleanup(self):
        for p in self.children:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()

    def done(self):
        self.cleanup()
        self._emit(done=True)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def worker(broker, **kw):
    """An in-process Worker with one thread, so prefetch is exactly two
    messages per queue (Dramatiq's default: threads * 2)."""
    kw.setdefault("worker_threads", 1)
    kw.setdefault("worker_timeout", 100)
    w = dramatiq.Worker(broker, **kw)
    w.start()
    return w
