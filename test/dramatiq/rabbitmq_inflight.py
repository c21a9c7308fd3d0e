"""In flight with prefetch: a worker with one thread runs one message and
prefetches one more (prefetch = 2 x threads); both are q's unacked."""
import threading

import dramatiq
from rabbitmq_harness import Recorder, Scenario, held_by, rq, worker

N = 6
s = Scenario("inflight")
rec = Recorder()
broker = s.broker(extra=[rec])
release = threading.Event()


@dramatiq.actor(broker=broker, queue_name="busy")
def block(i):
    release.wait(60)


for i in range(N):
    block.send(i)
s.expect("sent", queues={"busy": rq(ready=N)})

w = worker(broker)
rec.wait("process", 1)
held = held_by(w, running=1)  # Dramatiq's own view: running + prefetched
if held != 2:
    raise SystemExit(f"worker holds {held} messages, expected 2 (1 thread, prefetch 2)")
s.expect("running", queues={"busy": rq(ready=N - held, inflight=held, consumers=1, delay_consumers=1)})

release.set()
rec.wait("ack", N)
s.expect("drained", queues={"busy": rq(consumers=1, delay_consumers=1)})
w.stop()
broker.close()
s.done()
