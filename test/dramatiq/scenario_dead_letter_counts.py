"""Dead-letter counters: messages that fail for good, with max_retries=0 and
after retries with a short backoff, counted exactly per queue and actor
across scrapes, while Dramatiq's maintenance prunes the dead-letter queue
(a short dead_message_ttl and maintenance on every dispatch call), and when
several messages are nacked in the same millisecond. Dead letters there
before the exporter started are not counted.
"""
import time

import dramatiq
import dramatiq.brokers.redis as redis_broker
from harness import Recorder, Scenario, worker

# Long enough that a phase's first scrapes see every new dead letter before
# maintenance prunes it, even on a slow machine.
TTL_MS = 8000

s = Scenario("dead_letter_counts", configured_queues=["jobs", "other"], start=False)
rec = Recorder()
broker = s.broker(extra=[rec], maintenance_chance=1000000, dead_message_ttl=TTL_MS)


@dramatiq.actor(broker=broker, queue_name="jobs", max_retries=0)
def boom(i):
    raise RuntimeError("permanent failure (expected by the scenario)")


@dramatiq.actor(broker=broker, queue_name="jobs", max_retries=2, min_backoff=20, max_backoff=50)
def flaky(i):
    raise RuntimeError("fails on every retry (expected by the scenario)")


@dramatiq.actor(broker=broker, queue_name="other", max_retries=0)
def crash(i):
    raise RuntimeError("permanent failure (expected by the scenario)")


w = worker(broker)
# Dead before the exporter starts: never counted.
for i in range(5):
    boom.send(i)
crash.send(0)
rec.wait("nack", 6)
s.start()
s.expect("existing_not_counted", queues={"jobs": {"dead_lettered_total": 0}, "other": {"dead_lettered_total": 0}})

# Several per scrape, from both failure paths.
for i in range(7):
    boom.send(i)
for i in range(3):
    flaky.send(i)
crash.send(1)
crash.send(2)
rec.wait("nack", 18)
s.expect(
    "first_batch",
    queues={"jobs": {"dead_lettered_total": 10}, "other": {"dead_lettered_total": 2}},
    actors={"jobs": {"boom": 7, "flaky": 3}, "other": {"crash": 2}},
)

# Past the TTL, the next dispatch calls prune every older dead letter while
# new ones arrive: the set shrinks from 15 to 4, and the counter still rises
# by exactly 4.
time.sleep(TTL_MS / 1000 + 0.5)
for i in range(3):
    boom.send(i)
flaky.send(9)
rec.wait("nack", 22)
s.expect(
    "pruned_while_counting",
    queues={"jobs": {"dead_lettered_total": 14, "dead_letter": 4}, "other": {"dead_lettered_total": 2}},
    actors={"jobs": {"boom": 10, "flaky": 4}, "other": {"crash": 2}},
)

# Six nacks in one millisecond: the broker's clock is frozen while they fail.
frozen = redis_broker.current_millis()
real = redis_broker.current_millis
redis_broker.current_millis = lambda: frozen
try:
    for i in range(6):
        boom.send(i)
    rec.wait("nack", 28)
finally:
    redis_broker.current_millis = real
s.expect(
    "same_millisecond",
    queues={"jobs": {"dead_lettered_total": 20}, "other": {"dead_lettered_total": 2}},
    actors={"jobs": {"boom": 16, "flaky": 4}, "other": {"crash": 2}},
)
w.stop()
s.done()
