"""5. In flight: a worker blocked inside an actor, with prefetch.

In-flight equals the messages the worker holds (the running one plus the
prefetched ones in its work queue), ready drops by the same amount, and the
head of the ready list is the first message not fetched.
"""
import threading

import dramatiq
from harness import Recorder, Scenario, held_by, queue, worker

N = 10

s = Scenario("inflight")
rec = Recorder()
broker = s.broker(extra=[rec])
gate = threading.Event()


@dramatiq.actor(broker=broker, queue_name="busy")
def busy(i):
    gate.wait(60)


sent = [busy.send(i) for i in range(N)]
w = worker(broker)
rec.wait("process", 1)
held = held_by(w, running=1)
if not 0 < held < N:
    raise SystemExit(f"worker holds {held} of {N}: scenario needs 0 < held < N")
s.expect(
    "blocked",
    queues={"busy": queue(ready=N - held, inflight=held, oldest=sent[held])},
    processes={"alive": 1, "stale": 0},
)

gate.set()
rec.wait("ack", N)
w.stop()
s.expect("drained", queues={"busy": queue()}, processes={"alive": 1, "stale": 0})
s.done()
