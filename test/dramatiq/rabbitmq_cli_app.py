"""Actors for RabbitMQ scenarios that run the `dramatiq` CLI in a
subprocess. Configured by environment: CONFORMANCE_AMQP_URL and
CONFORMANCE_MARKER (a file the blocked actor writes once the worker's
holdings have settled: {"held": N, "pid": PID})."""
import json
import os
import time

import dramatiq
from rabbitmq_harness import Recorder, held_by, make_broker

recorder = Recorder()
broker = make_broker(os.environ["CONFORMANCE_AMQP_URL"], extra=[recorder])
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="crash")
def hold(i):
    """Blocks forever, after reporting how many messages the worker holds."""
    while recorder.worker is None:
        time.sleep(0.01)
    held = held_by(recorder.worker, running=1)
    marker = os.environ["CONFORMANCE_MARKER"]
    with open(marker + ".tmp", "w") as f:
        json.dump({"held": held, "pid": os.getpid()}, f)
    os.rename(marker + ".tmp", marker)
    time.sleep(3600)
