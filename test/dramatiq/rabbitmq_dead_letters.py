"""Dead letters: a failing actor with max_retries=0 goes straight to q.XQ;
one with retries goes through q.DQ (as a retry) first, and reaches q.XQ
when its retries are exhausted."""
import dramatiq
from rabbitmq_harness import Recorder, Scenario, rq, worker

s = Scenario("dead_letters")
rec = Recorder()
broker = s.broker(extra=[rec])


@dramatiq.actor(broker=broker, queue_name="fragile", max_retries=0)
def fail_now(i):
    raise RuntimeError("boom")


@dramatiq.actor(broker=broker, queue_name="fragile", max_retries=2, min_backoff=100, max_backoff=200)
def fail_later(i):
    raise RuntimeError("boom")


w = worker(broker)
for i in range(3):
    fail_now.send(i)
rec.wait("nack", 3)
s.expect("max_retries_0", queues={"fragile": rq(dead_letter=3, consumers=1, delay_consumers=1)})

fail_later.send(0)
rec.wait("nack", 4)  # 1 try + 2 retries, then rejected
if rec.count("failed") != 3 + 3:
    raise SystemExit(f"expected 6 failed runs, Dramatiq saw {rec.count('failed')}")
s.expect("after_retries", queues={"fragile": rq(dead_letter=4, consumers=1, delay_consumers=1)})
w.stop()
s.expect("stopped", queues={"fragile": rq(dead_letter=4, consumers=0, delay_consumers=0)})
broker.close()
s.done()
