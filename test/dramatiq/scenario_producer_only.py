"""7. Producer-only processes: they heartbeat, so they are alive, and they
hold nothing.
"""
import subprocess
import sys

import dramatiq
from harness import HERE, Scenario, queue

s = Scenario("producer_only")
broker = s.broker()


@dramatiq.actor(broker=broker, queue_name="outbox")
def deliver(i):
    pass


first = deliver.send(0)
s.expect(
    "this_process",
    queues={"outbox": queue(ready=1, oldest=first)},
    processes={"alive": 1, "stale": 0},
)

# A second, short-lived producer process: it sends two messages and exits.
# Its heartbeat stays (and is fresh for 60 s); it owns no ack set.
code = (
    "import sys, dramatiq; from harness import make_broker\n"
    "b = make_broker(sys.argv[1], sys.argv[2])\n"
    "a = dramatiq.actor(lambda i: None, broker=b, actor_name='deliver', queue_name='outbox')\n"
    "a.send(1); a.send(2)\n"
)
subprocess.run([sys.executable, "-c", code, s.url, s.namespace], cwd=HERE, check=True)
s.expect(
    "another_process",
    queues={"outbox": queue(ready=3, oldest=first)},
    processes={"alive": 2, "stale": 0},
)
s.done()
