"""2. Delayed messages (delay=1h), without and with a worker running.

A running worker claims delayed messages at once into its memory (the .DQ
list empties), but they are still delayed, not ready and not in flight.
After a graceful stop they are pushed back and still count as delayed.
"""
import dramatiq
from harness import Recorder, Scenario, queue, worker

K = 7
HOUR_MS = 3600 * 1000

s = Scenario("delayed")
rec = Recorder()
broker = s.broker(extra=[rec])


@dramatiq.actor(broker=broker, queue_name="later")
def later(i):
    pass


for i in range(K):
    later.send_with_options(args=(i,), delay=HOUR_MS)
s.expect("no_worker", queues={"later": queue(delayed=K)}, processes={"alive": 1, "stale": 0})

w = worker(broker)
rec.wait("delay", K)  # the worker claimed every one of them
s.expect("worker_holds_them", queues={"later": queue(delayed=K)}, processes={"alive": 1, "stale": 0})

w.stop()
s.expect("worker_stopped", queues={"later": queue(delayed=K)}, processes={"alive": 1, "stale": 0})
s.done()
