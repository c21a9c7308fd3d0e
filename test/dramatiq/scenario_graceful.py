"""9. A graceful worker shutdown: held messages go back to the queue.

A worker blocked in an actor holds some messages (running + prefetched) and
some delayed ones. Worker.stop() lets the running one finish, then pushes
everything else it holds back, so nothing stays in flight or orphaned.
"""
import threading
import time

import dramatiq
from harness import Recorder, Scenario, held_by, queue, worker

N = 6
D = 2
HOUR_MS = 3600 * 1000

s = Scenario("graceful")
rec = Recorder()
broker = s.broker(extra=[rec])
gate = threading.Event()


@dramatiq.actor(broker=broker, queue_name="jobs")
def job(i):
    gate.wait(60)


sent = [job.send(i) for i in range(N)]
for i in range(D):
    job.send_with_options(args=(100 + i,), delay=HOUR_MS)
w = worker(broker)
rec.wait("process", 1)
rec.wait("delay", D)
held = held_by(w, running=1)
if not 0 < held < N:
    raise SystemExit(f"worker holds {held} of {N}: scenario needs 0 < held < N")
s.expect(
    "running",
    queues={"jobs": queue(ready=N - held, inflight=held, delayed=D, oldest=sent[held])},
    processes={"alive": 1, "stale": 0},
)

stopper = threading.Thread(target=w.stop)
stopper.start()
time.sleep(0.2)  # stop() is waiting for the running actor
gate.set()
stopper.join(30)
if stopper.is_alive():
    raise SystemExit("Worker.stop() did not return")
done = rec.count("ack")
# Which message heads the list depends on whether the consumer fetched once
# more while the worker thread finished; the count does not.
s.expect(
    "stopped",
    queues={"jobs": queue(ready=N - done, delayed=D)},
    processes={"alive": 1, "stale": 0},
)
s.done()
