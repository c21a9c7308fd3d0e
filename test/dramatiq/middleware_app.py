"""Workers with Dramatiq's Prometheus middleware, for middleware_test.go:
`python -m dramatiq middleware_app`, or imported with --send to enqueue.

Environment: MW_REDIS_URL, plus the middleware's own dramatiq_prom_host,
dramatiq_prom_port, dramatiq_prom_db (and dramatiq_prom_lock for 1.x).
"""
import ctypes
import os
import signal
import sys

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware.prometheus import Prometheus

if __name__ != "__main__":
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

broker = RedisBroker(url=os.environ["MW_REDIS_URL"], namespace="mw")
# Dramatiq 1.x has it in its default middleware; 2.x needs it added.
if not any(isinstance(m, Prometheus) for m in broker.middleware):
    broker.add_middleware(Prometheus())
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="q1", max_retries=2, min_backoff=10, max_backoff=20)
def flaky(i):
    raise ValueError(f"flaky {i}")


@dramatiq.actor(queue_name="q1")
def ok(i):
    pass


if __name__ == "__main__" and sys.argv[1:] == ["--send"]:
    for i in range(3):
        flaky.send(i)
        ok.send(i)
