"""Backlog: messages sent and no worker. Two queues, so that each number
lands on its own queue; nothing is in flight, delayed or dead."""
import dramatiq
from rabbitmq_harness import Scenario, rq

s = Scenario("backlog")
broker = s.broker()


@dramatiq.actor(broker=broker, queue_name="emails")
def email(i):
    pass


@dramatiq.actor(broker=broker, queue_name="reports")
def report(i):
    pass


for i in range(5):
    email.send(i)
for i in range(3):
    report.send(i)
s.expect("sent", queues={
    "emails": rq(ready=5, consumers=0, delay_consumers=0, max_priority=None, dead_ttl=7 * 86400 * 1000),
    "reports": rq(ready=3, consumers=0, delay_consumers=0),
})
broker.close()
s.done()
