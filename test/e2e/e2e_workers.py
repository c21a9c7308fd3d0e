"""Workers with Dramatiq's own Prometheus middleware, for the end-to-end test:
`dramatiq e2e_workers --processes 1`. Prometheus scrapes the middleware's
exposition server as job "dramatiq-workers"; the test checks that every
panel and rule built on it returns data, and that DramatiqActorErrorRatioHigh
fires for `charge`.

Configured by environment, because the dramatiq CLI imports this module by
name in each worker process: E2E_REDIS_URL, plus the middleware's own
dramatiq_prom_host, dramatiq_prom_port and dramatiq_prom_db (the
multi-process directory, also set as PROMETHEUS_MULTIPROC_DIR).

It uses its own namespace, so its queues are not the exporter's (the
scenario's queue count and states stay as they are). Each worker process
produces its own messages in a thread: two a second for each actor.
"""
import ctypes
import os
import signal
import threading
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware.prometheus import Prometheus

# Linux: die with the parent process (the dramatiq CLI's main process).
ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

broker = RedisBroker(url=os.environ["E2E_REDIS_URL"], namespace="e2e-workers")
# Dramatiq 2 no longer includes the middleware by default (1.x did).
if not any(isinstance(m, Prometheus) for m in broker.middleware):
    broker.add_middleware(Prometheus())
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="payments", max_retries=1, min_backoff=100, max_backoff=200)
def charge(i):
    """Even messages fail twice (the attempt and its one retry) and are
    dead-lettered: 2 errors in 3 attempts for every 2 messages."""
    time.sleep(0.01)
    if i % 2 == 0:
        raise RuntimeError(f"charge {i} declined")


@dramatiq.actor(queue_name="default")
def resize(i):
    time.sleep(0.02)


def produce():
    i = 0
    while True:
        charge.send(i)
        resize.send(i)
        i += 1
        time.sleep(0.5)


threading.Thread(target=produce, daemon=True, name="e2e-producer").start()
