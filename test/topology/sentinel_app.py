"""Real Dramatiq behind Redis Sentinel, for sentinel_test.go.

    sentinel_app.py --sentinels HOST:PORT,... --master NAME --namespace NS

The broker's client is redis-py's Sentinel-managed master_for(NAME), as
production apps behind Sentinel configure it, so Dramatiq itself follows the
failover the test causes.

Queues:
  backlog  no worker listens: 7 ready messages and 3 delayed by an hour, then
           5 more once the test says the failover is over ("more" on stdin).
  work     a worker in this process consumes it while a producer thread
           sends one message every 100 ms, before, during and after the
           failover.

stdout: one JSON object per line, {"event": NAME, ...}:
  "ready"   the first messages are in; the expected counts follow.
  "expect"  after "more": the expected counts, and how many work messages the
            worker finished after the failover (Dramatiq followed it).
  "stopped" after stdin closed and the worker stopped.
"""

import argparse
import json
import logging
import sys
import threading
import time

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import default_middleware
from redis.sentinel import Sentinel

p = argparse.ArgumentParser()
p.add_argument("--sentinels", required=True)
p.add_argument("--master", required=True)
p.add_argument("--namespace", required=True)
args = p.parse_args()

logging.basicConfig(level=logging.CRITICAL, stream=sys.stderr)

sentinel = Sentinel(
    [(a.rsplit(":", 1)[0], int(a.rsplit(":", 1)[1])) for a in args.sentinels.split(",")],
    socket_timeout=0.5,
    socket_connect_timeout=0.5,
)
client = sentinel.master_for(args.master, socket_timeout=1, socket_connect_timeout=0.5)
broker = RedisBroker(
    client=client,
    namespace=args.namespace,
    middleware=[m() for m in default_middleware if m.__name__ != "Prometheus"],
    heartbeat_timeout=10000,
    maintenance_chance=0,
)
dramatiq.set_broker(broker)

processed = 0
processed_lock = threading.Lock()


@dramatiq.actor(queue_name="work", max_retries=0)
def work(i):
    global processed
    with processed_lock:
        processed += 1


@dramatiq.actor(queue_name="backlog")
def later(i):
    pass


def emit(event, **kw):
    print(json.dumps(dict(event=event, **kw)), flush=True)


def retry(f):
    """Retries f while Redis is failing over."""
    deadline = time.time() + 60
    while True:
        try:
            return f()
        except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError):
            if time.time() > deadline:
                raise
            time.sleep(0.1)


for i in range(7):
    later.send(i)
for i in range(3):
    later.send_with_options(args=(i,), delay=3600 * 1000)

worker = dramatiq.Worker(broker, queues={"work"}, worker_threads=2, worker_timeout=100)
worker.start()

stop = threading.Event()
sent = 0


def produce():
    global sent
    while not stop.is_set():
        try:
            work.send(sent)
            sent += 1
        except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError):
            pass  # the master is gone; keep trying, as an app would
        stop.wait(0.1)


producer = threading.Thread(target=produce, daemon=True)
producer.start()
emit("ready", backlog={"ready": 7, "delayed": 3})

line = sys.stdin.readline()
if line.strip() == "more":
    with processed_lock:
        before = processed
    for i in range(5):
        retry(lambda: later.send(100 + i))
    # Let work go on against the new master for a moment, then drain it.
    time.sleep(1)
    stop.set()
    producer.join()
    retry(lambda: broker.join("work", timeout=30000))
    with processed_lock:
        after = processed
    emit("expect", backlog={"ready": 12, "delayed": 3}, work={"ready": 0, "inflight": 0, "delayed": 0},
         processed_after_failover=after - before)
    sys.stdin.readline()

worker.stop()
emit("stopped")
