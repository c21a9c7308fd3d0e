"""4. Dead letters: an actor that always fails, with max_retries=0.

Each message is nacked into the dead-letter set. The last-dead-letter
timestamp is the time of the newest nack (as seen by an after_nack hook),
not the first.
"""
import time

import dramatiq
from harness import Recorder, Scenario, queue, worker

# "fine" empties within milliseconds, before any discovery scan could see
# it; naming it in --dramatiq.queues makes the exporter report it anyway.
s = Scenario("dead_letters", configured_queues=["fine"])
rec = Recorder()
broker = s.broker(extra=[rec])


@dramatiq.actor(broker=broker, queue_name="doomed", max_retries=0)
def doomed(i):
    raise RuntimeError("permanent failure (expected by the scenario)")


@dramatiq.actor(broker=broker, queue_name="fine")
def fine(i):
    pass


w = worker(broker)
doomed.send(0)
fine.send(0)
rec.wait("nack", 1)
rec.wait("ack", 1)
s.expect(
    "one_dead",
    queues={
        "doomed": queue(dead_letter=1, dead_letter_last=rec.nack_times[-1]),
        "fine": queue(),
    },
    processes={"alive": 1, "stale": 0},
)

# More than the 1 s tolerance later, two more: the newest must win.
time.sleep(1.5)
doomed.send(1)
doomed.send(2)
rec.wait("nack", 3)
w.stop()
s.expect(
    "three_dead",
    queues={
        "doomed": queue(dead_letter=3, dead_letter_last=max(rec.nack_times)),
        "fine": queue(),
    },
    processes={"alive": 1, "stale": 0},
)
s.done()
