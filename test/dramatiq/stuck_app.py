"""Actors for stuck_test.go, run by the `dramatiq` CLI and as a producer.

Configured by environment: STUCK_REDIS_URL, STUCK_NAMESPACE and
STUCK_HEARTBEAT_TIMEOUT (seconds). `python stuck_app.py hold N` sends N
messages that block for an hour; `python stuck_app.py block S` sends one
that blocks for S seconds. Both actors lift Dramatiq's time limit, as a
hung thread escapes it.
"""
import os
import sys
import time

import dramatiq
from harness import make_broker

broker = make_broker(
    os.environ["STUCK_REDIS_URL"],
    os.environ["STUCK_NAMESPACE"],
    heartbeat_timeout=float(os.environ["STUCK_HEARTBEAT_TIMEOUT"]),
)
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="crash", time_limit=3_600_000)
def hold(i):
    time.sleep(3600)


@dramatiq.actor(queue_name="hung", time_limit=3_600_000)
def block(seconds):
    time.sleep(seconds)


if __name__ == "__main__":
    what, n = sys.argv[1], int(sys.argv[2])
    if what == "hold":
        for i in range(n):
            hold.send(i)
    else:
        block.send(n)
