"""8. Dotted queue names, a custom namespace, and queues that became empty.

The exporter must read only its own namespace (a decoy with the same queue
names lives in the default "dramatiq" namespace of the same Redis), must not
split queue names on dots, and must keep reporting 0 for queues whose keys
Dramatiq deleted once they emptied.
"""
import dramatiq
from harness import VERSION, Recorder, Scenario, log, make_broker, queue, worker

s = Scenario("naming", namespace="acme.jobs-v2")
rec = Recorder()
broker = s.broker(extra=[rec])

# Dots in queue names are allowed from Dramatiq 1.4 on.
if VERSION >= (1, 4):
    Q1, Q2 = "billing.invoices", "reports.daily-v2"
    absent = ["billing", "reports", "invoices"]
else:
    Q1, Q2 = "billing_invoices", "reports_daily-v2"
    absent = []
    log(f"Dramatiq {dramatiq.__version__} rejects dots in queue names; using {Q1}, {Q2}")


@dramatiq.actor(broker=broker, queue_name=Q1)
def invoice(i):
    pass


@dramatiq.actor(broker=broker, queue_name=Q2)
def report(i):
    pass


a = [invoice.send(i) for i in range(3)]
b = [report.send(i) for i in range(2)]

# Same queue names, default namespace: none of this may show up.
decoy = make_broker(s.url, "dramatiq")
decoy_invoice = dramatiq.actor(lambda i: None, broker=decoy, actor_name="invoice", queue_name=Q1)
for i in range(5):
    decoy_invoice.send(i)

s.expect(
    "filled",
    queues={Q1: queue(ready=3, oldest=a[0]), Q2: queue(ready=2, oldest=b[0])},
    absent_queues=absent,
    processes={"alive": 1, "stale": 0},
)

w = worker(broker)
rec.wait("ack", 5)
w.stop()
s.expect(
    "emptied",
    queues={Q1: queue(), Q2: queue()},
    absent_queues=absent,
    processes={"alive": 1, "stale": 0},
)
s.done()
