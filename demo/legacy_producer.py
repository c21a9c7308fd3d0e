"""An old service that still sends pickled messages to a queue that no
worker consumes any more (scripts/demo.sh runs it).

It shows two things the exporter reports: a backlog nobody works off, and
bodies it cannot decode (dramatiq_exporter_broker_anomalies).
"""
import signal
import sys
import time

import dramatiq
from dramatiq.encoder import PickleEncoder

from app import broker

dramatiq.set_encoder(PickleEncoder())
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))


@dramatiq.actor(broker=broker, queue_name="legacy.exports")
def export_csv(n):
    pass


# A bounded trickle: the queue grows for a while, then stays.
for n in range(30):
    export_csv.send(n)
    time.sleep(60)
signal.pause()
