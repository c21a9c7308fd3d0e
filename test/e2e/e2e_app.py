"""The worker the end-to-end test kills: `dramatiq e2e_app --queues crash`.

Configured by environment, because the dramatiq CLI imports this module by
name in each worker process: E2E_REDIS_URL, E2E_HEARTBEAT_TIMEOUT (seconds)
and E2E_MARKERS (a directory; each worker process writes a file named after
its pid there once it runs a message, so it holds at least that one).
"""
import ctypes
import os
import signal
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker

# Linux: die with the parent process (the dramatiq CLI's main process), so
# that no worker outlives a test binary killed without its cleanups.
ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

# maintenance_chance=0: no client may requeue the dead workers' messages by
# chance while the test watches them sit orphaned.
broker = RedisBroker(
    url=os.environ["E2E_REDIS_URL"],
    heartbeat_timeout=int(float(os.environ["E2E_HEARTBEAT_TIMEOUT"]) * 1000),
    maintenance_chance=0,
)
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="crash")
def hold(i):
    """Blocks until the process is SIGKILLed, holding its message (and the
    prefetched one behind it) in the worker's ack set."""
    marker = os.path.join(os.environ["E2E_MARKERS"], str(os.getpid()))
    with open(marker + ".tmp", "w") as f:
        f.write(str(i))
    os.rename(marker + ".tmp", marker)
    time.sleep(3600)
