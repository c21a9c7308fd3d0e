"""Example Dramatiq app for the docker-compose demo.

Run the worker:       dramatiq tasks
Enqueue some work:    python tasks.py 200
Both read REDIS_URL, like dramatiq_exporter does.
"""

import os
import random
import sys
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker

broker = RedisBroker(url=os.environ.get("REDIS_URL", "redis://localhost:6379/0"))
# Dramatiq 2.x adds its Prometheus middleware only when asked: the workers'
# own counters (job "dramatiq-workers" in deploy/prometheus/prometheus.yml).
from dramatiq.middleware.prometheus import Prometheus  # noqa: E402

broker.add_middleware(Prometheus())
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="default", max_retries=2, min_backoff=1000, max_backoff=5000)
def resize_image(image_id):
    time.sleep(random.uniform(0.05, 0.3))
    if random.random() < 0.1:
        raise RuntimeError(f"cannot decode image {image_id}")


@dramatiq.actor(queue_name="emails", max_retries=0)
def send_email(address):
    time.sleep(random.uniform(0.1, 0.5))
    if address.endswith(".invalid"):
        raise ValueError("undeliverable address")


@dramatiq.actor(queue_name="reports")
def build_report(report_id):
    time.sleep(2)


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    for i in range(n):
        resize_image.send(i)
        send_email.send(f"user{i}@example.{'invalid' if i % 7 == 0 else 'com'}")
        if i % 10 == 0:
            build_report.send_with_options(args=(i,), delay=30_000)
    print(f"enqueued {n} images, {n} emails and {(n + 9) // 10} delayed reports")
