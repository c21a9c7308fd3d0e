"""Dead letters expire: q.XQ carries x-message-ttl, read by Dramatiq 2.x from
dramatiq_dead_message_ttl (ms) when its RabbitMQ module is imported, and
RabbitMQ drops expired dead letters. Releases without that variable (1.2.0)
always use 7 days, and there the dead letters stay."""
import inspect
import os

os.environ["dramatiq_dead_message_ttl"] = "10000"

from rabbitmq_harness import Recorder, Scenario, rq, worker  # noqa: E402 (first: it readies pika)

import dramatiq  # noqa: E402
from dramatiq.brokers import rabbitmq as rmq  # noqa: E402

TTL = 10000 if "dramatiq_dead_message_ttl" in inspect.getsource(rmq) else 7 * 86400 * 1000
if rmq.DEAD_MESSAGE_TTL != TTL:
    raise SystemExit(f"Dramatiq {dramatiq.__version__} uses a dead-letter TTL of {rmq.DEAD_MESSAGE_TTL} ms, expected {TTL}")

s = Scenario("dead_ttl")
rec = Recorder()
broker = s.broker(extra=[rec])


@dramatiq.actor(broker=broker, queue_name="shortlived", max_retries=0)
def fail(i):
    raise RuntimeError("boom")


w = worker(broker)
for i in range(2):
    fail.send(i)
rec.wait("nack", 2)
w.stop()
if TTL < 60000:
    # Seen before they expire (statistics lag 0.5 s in the test node)...
    s.expect("dead", queues={"shortlived": rq(dead_ttl=TTL, dead_letter=2)}, timeout=TTL / 1000 - 2)
    # ...and gone after: RabbitMQ dropped them, nothing consumed them.
    s.expect("expired", queues={"shortlived": rq(dead_ttl=TTL, dead_letter=0)}, timeout=40)
else:
    s.expect("dead", queues={"shortlived": rq(dead_ttl=TTL, dead_letter=2)})
broker.close()
s.done()
