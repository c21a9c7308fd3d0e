"""Real Dramatiq producers for probe_test.go: one broker, one namespace.

    probe_app.py --url URL --namespace NS --queue Q --ready N --delayed M

Sends N messages and M delayed by an hour to queue Q through RedisBroker,
prints {"event": "ready", Q: {"ready": N, "delayed": M}} and waits for stdin
to close. No worker runs, so the counts stay put.
"""

import argparse
import json
import sys

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import default_middleware

p = argparse.ArgumentParser()
p.add_argument("--url", required=True)
p.add_argument("--namespace", required=True)
p.add_argument("--queue", required=True)
p.add_argument("--ready", type=int, required=True)
p.add_argument("--delayed", type=int, required=True)
args = p.parse_args()

broker = RedisBroker(
    url=args.url,
    namespace=args.namespace,
    middleware=[m() for m in default_middleware if m.__name__ != "Prometheus"],
    maintenance_chance=0,
)
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=args.queue)
def task(i):
    pass


for i in range(args.ready):
    task.send(i)
for i in range(args.delayed):
    task.send_with_options(args=(i,), delay=3600 * 1000)
print(json.dumps({"event": "ready", args.queue: {"ready": args.ready, "delayed": args.delayed}}), flush=True)
sys.stdin.read()
