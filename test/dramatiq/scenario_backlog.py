"""1. A backlog: N messages on a queue and no worker.

ready is N, the oldest age is measured from the first message's creation
time, and the sending process is one alive process.
"""
import time

import dramatiq
from harness import Scenario, queue

N = 25

s = Scenario("backlog")
broker = s.broker()


@dramatiq.actor(broker=broker, queue_name="backlog")
def work(i):
    pass


sent = [work.send(i) for i in range(N)]
# Let the first message age past the 1 s tolerance, so an exporter that
# reports 0 (or the newest message's age) cannot pass.
time.sleep(1.5)
s.expect(
    "backlog",
    queues={"backlog": queue(ready=N, oldest=sent[0])},
    processes={"alive": 1, "stale": 0},
)
s.done()
