"""Delayed messages (delay=1h): waiting in q.DQ with no worker, then held
unacked by a running worker until their eta (still delayed, not in flight),
then back to waiting once the worker stops and its connection closes."""
import dramatiq
from rabbitmq_harness import Recorder, Scenario, rq, worker

K = 4
HOUR_MS = 3600 * 1000

s = Scenario("delayed")
rec = Recorder()
broker = s.broker(extra=[rec])


@dramatiq.actor(broker=broker, queue_name="later")
def later(i):
    pass


for i in range(K):
    later.send_with_options(args=(i,), delay=HOUR_MS)
s.expect("no_worker", queues={"later": rq(delayed=K, delayed_held=0, consumers=0, delay_consumers=0)})

w = worker(broker)
rec.wait("delay", K)  # the worker's delay consumer received every one
s.expect("worker_holds_them", queues={"later": rq(delayed=K, delayed_held=K, consumers=1, delay_consumers=1)})

w.stop()
s.expect("worker_stopped", queues={"later": rq(delayed=K, delayed_held=0, consumers=0, delay_consumers=0)})
broker.close()
s.done()
