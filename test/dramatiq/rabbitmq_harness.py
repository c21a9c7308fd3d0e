"""Plumbing shared by the RabbitMQ conformance scenarios (rabbitmq_*.py).

The same protocol as harness.py, for RabbitmqBroker. A scenario drives real
Dramatiq into a state and prints what the reader must report there; the Go
driver (rabbitmq_test.go) reads the management API until it agrees or the
phase's timeout passes, then answers "ok" on stdin.

Protocol (stdout):
  {"scenario": NAME, "dramatiq": VERSION}                first line
  {"phase": NAME, "timeout": SECONDS, "queues": {Q: {...}},
   "absent_queues": [Q...]}
  {"done": true}                                         last line

A queue's expectations (every key optional; a missing key is not checked),
exact integers unless said otherwise:
  ready, inflight, delayed, delayed_held, dead_letter,
  consumers, delay_consumers        (worker processes on q and q.DQ),
  max_priority                      (x-max-priority of q and q.DQ; null: unset),
  dead_ttl                          (x-message-ttl of q.XQ, ms),
  problems                          (how many argument problems; 0 for
                                     queues Dramatiq declared itself).
"""

import argparse
import atexit
import collections
import collections.abc
import json
import os
import signal
import subprocess
import sys

# pika 0.12 (what Dramatiq 1.2.0 runs with here, see requirements-oldest.txt)
# still names collections.Callable, which Python 3.10 removed; newer pika
# does not look at it.
if not hasattr(collections, "Callable"):
    collections.Callable = collections.abc.Callable

import dramatiq  # noqa: E402
from dramatiq.brokers.rabbitmq import RabbitmqBroker  # noqa: E402
from harness import Recorder, held_by, log, middleware, worker  # noqa: F401 (re-exported)

HERE = os.path.dirname(os.path.abspath(__file__))
VERSION = tuple(int(p) for p in dramatiq.__version__.split(".")[:2])


def make_broker(url, *, extra=(), **kw):
    return RabbitmqBroker(url=url, middleware=middleware() + list(extra), **kw)


# Sentinel: leave this key out of the expectation.
SKIP = object()


def rq(**kw):
    """One queue's expectations; by default the backlog numbers not given
    are 0 and the arguments are Dramatiq's own. A key given as SKIP is not
    checked."""
    q = dict(ready=0, inflight=0, delayed=0, delayed_held=0, dead_letter=0, problems=0)
    q.update(kw)
    return {k: v for k, v in q.items() if v is not SKIP}


class Scenario:
    def __init__(self, name):
        p = argparse.ArgumentParser(description=f"RabbitMQ conformance scenario {name}")
        p.add_argument("--amqp-url", required=True)
        self.args = p.parse_args()
        self.name = name
        self.url = self.args.amqp_url
        self.children = []
        atexit.register(self.cleanup)
        self._emit(scenario=name, dramatiq=dramatiq.__version__)

    def broker(self, **kw):
        return make_broker(self.url, **kw)

    def _emit(self, **obj):
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def expect(self, phase, *, queues=None, absent_queues=None, timeout=20):
        obj = {"phase": phase, "timeout": timeout, "queues": queues or {}}
        if absent_queues:
            obj["absent_queues"] = absent_queues
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
