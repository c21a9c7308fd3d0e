"""A skewed backlog enqueued by real Dramatiq, for the backlog-by-actor test.

Usage: backlog_by_actor.py REDIS_URL QUEUE N BURST SEED

Sends N messages to QUEUE through three actors, 90/9/1, in bursts of BURST
messages of one actor (a producer that fans out one job into many sends
them together), with no worker running, and prints the true count of each
actor as one JSON object on stdout.
"""
import collections
import json
import random
import sys

import dramatiq
from harness import make_broker

url, queue, n, burst, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
broker = make_broker(url, "dramatiq")
dramatiq.set_broker(broker)


@dramatiq.actor(broker=broker, queue_name=queue)
def send_email(i):
    pass


@dramatiq.actor(broker=broker, queue_name=queue)
def resize_image(i):
    pass


@dramatiq.actor(broker=broker, queue_name=queue)
def rebuild_index(i):
    pass


rng = random.Random(seed)
truth = collections.Counter()
sent = 0
while sent < n:
    x = rng.random()
    actor = send_email if x < 0.90 else resize_image if x < 0.99 else rebuild_index
    for _ in range(min(burst, n - sent)):
        actor.send(sent)
        truth[actor.actor_name] += 1
        sent += 1
print(json.dumps(truth))
