"""max_priority: q and q.DQ get x-max-priority (q.XQ does not), and messages
with broker_priority count like any other. Releases without max_priority
(1.2.0) declare no x-max-priority."""
import inspect

from rabbitmq_harness import Scenario, rq  # first: it readies pika

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

s = Scenario("priority")
has = "max_priority" in inspect.signature(RabbitmqBroker.__init__).parameters
broker = s.broker(max_priority=5) if has else s.broker()


@dramatiq.actor(broker=broker, queue_name="ranked")
def ranked(i):
    pass


for i in range(6):
    if has:
        ranked.send_with_options(args=(i,), broker_priority=i % 6)
    else:
        ranked.send(i)
ranked.send_with_options(args=(99,), delay=3600 * 1000)
s.expect("sent", queues={"ranked": rq(ready=6, delayed=1, max_priority=5 if has else None)})
broker.close()
s.done()
