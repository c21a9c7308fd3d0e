"""A SIGKILLed `dramatiq` CLI worker: RabbitMQ requeues what its connection
held, so the messages are ready again (no orphans) and its consumers on q
and q.DQ are gone."""
import json
import os
import signal
import sys
import tempfile
import time

import dramatiq
from rabbitmq_harness import Scenario, log, rq

N = 6
s = Scenario("crash")
producer = s.broker()


@dramatiq.actor(broker=producer, queue_name="crash")
def hold(i):
    pass


for i in range(N):
    hold.send(i)

marker = os.path.join(tempfile.mkdtemp(prefix="conformance-rabbitmq-crash-"), "held.json")
cli = s.spawn(
    [sys.executable, "-m", "dramatiq", "rabbitmq_cli_app", "--processes", "1", "--threads", "1"],
    env={"CONFORMANCE_AMQP_URL": s.url, "CONFORMANCE_MARKER": marker},
)
deadline = time.time() + 60
while not os.path.exists(marker):
    if time.time() > deadline or cli.poll() is not None:
        s.cleanup()
        raise SystemExit("the dramatiq CLI worker never started the blocking actor")
    time.sleep(0.05)
with open(marker) as f:
    held = json.load(f)["held"]
log(f"CLI worker holds {held} of {N}")
if held != 2:
    raise SystemExit(f"worker holds {held} of {N}, expected 2 (1 thread, prefetch 2)")
s.expect("holding", queues={"crash": rq(ready=N - held, inflight=held, consumers=1, delay_consumers=1)})

os.killpg(cli.pid, signal.SIGKILL)
cli.wait()
s.expect("killed", queues={"crash": rq(ready=N, inflight=0, consumers=0, delay_consumers=0)})
producer.close()
s.done()
