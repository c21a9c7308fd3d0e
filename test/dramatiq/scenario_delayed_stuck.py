"""Delayed work that does not come back: unclaimed and overdue.

Unclaimed: delayed messages sit in the .DQ list while no process consumes
the delay queue. The age runs from the later of the message's enqueue time
and the last scrape that saw the list empty, so messages a stopping worker
pushes back are not reported as old as their creation.

Overdue: a holder claims delayed messages (a real Dramatiq consumer of the
delay queue, fetching through Dramatiq's own script) and never promotes
them. Messages sent with a negative delay have an eta already 2 minutes
past, beyond the exporter's 1-minute grace, so they are overdue as soon as
they are held; acking them clears the count.
"""
import time

import dramatiq
from dramatiq.common import dq_name
from harness import Recorder, Scenario, queue, ts, worker

HOUR_MS = 3600 * 1000

s = Scenario("delayed_stuck")
rec = Recorder()
broker = s.broker(extra=[rec])


@dramatiq.actor(broker=broker, queue_name="later")
def later(i):
    pass


def q(delayed, **kw):
    d = queue(delayed=delayed)
    d.update(kw)
    return d


first = [later.send_with_options(args=(i,), delay=HOUR_MS) for i in range(3)]
s.expect("unclaimed_no_worker", queues={"later": q(3, delayed_unclaimed_since=ts(first[0]), delayed_overdue=0)})

time.sleep(4)
w = worker(broker)
rec.wait("delay", 3)  # the worker claimed every one of them
s.expect("claimed_by_worker", queues={"later": q(3, delayed_unclaimed_since=None, delayed_overdue=0)})

# A graceful stop pushes the held messages back to the .DQ list. They were
# created 4 s before the exporter last saw the list empty: the age must
# not include those 4 s.
w.stop()
s.expect("pushed_back", queues={"later": q(3, delayed_unclaimed_since_after=ts(first[0]) + 3, delayed_overdue=0)})

# A holder that claims and never promotes (a hung delay consumer).
holder_broker = s.broker()
holder = holder_broker.consume(dq_name("later"), prefetch=10, timeout=100)
held = [next(holder) for _ in range(3)]
assert all(m is not None for m in held), held
s.expect("held_not_due", queues={"later": q(3, delayed_unclaimed_since=None, delayed_overdue=0)})

late = [later.send_with_options(args=(10 + i,), delay=-120 * 1000) for i in range(2)]
s.expect("unclaimed_again", queues={"later": q(5, delayed_unclaimed_since=ts(late[0]), delayed_overdue=0)})

held_late = []
while len(held_late) < 2:
    m = next(holder)
    if m is not None:
        held_late.append(m)
s.expect("held_overdue", queues={"later": q(5, delayed_unclaimed_since=None, delayed_overdue=2)})

for m in held_late:
    holder.ack(m)
s.expect("overdue_acked", queues={"later": q(3, delayed_unclaimed_since=None, delayed_overdue=0)})
s.done()
