"""3. Retries: an actor that fails with max_retries >= 1 and a long backoff.

Each failed message is re-enqueued with a delay (the backoff) and the
original delivery is acked, so the messages count as delayed, not dead and
not in flight.
"""
import dramatiq
from harness import Recorder, Scenario, queue, worker

M = 4
HOUR_MS = 3600 * 1000

s = Scenario("retries")
rec = Recorder()
broker = s.broker(extra=[rec])


@dramatiq.actor(broker=broker, queue_name="flaky", max_retries=5, min_backoff=HOUR_MS, max_backoff=HOUR_MS)
def flaky(i):
    raise RuntimeError("transient failure (expected by the scenario)")


for i in range(M):
    flaky.send(i)
w = worker(broker)
rec.wait("failed", M)
rec.wait("ack", M)  # original deliveries acked after the retry was enqueued
rec.wait("delay", M)  # and the retries claimed by the delay consumer
s.expect("in_backoff", queues={"flaky": queue(delayed=M)}, processes={"alive": 1, "stale": 0})

w.stop()
s.expect("worker_stopped", queues={"flaky": queue(delayed=M)}, processes={"alive": 1, "stale": 0})
s.done()
