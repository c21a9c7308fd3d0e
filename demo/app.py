"""A small Dramatiq application for the local demo (scripts/demo.sh).

Its actors cover every state the exporter reports: fast and slow work
(ready, in flight, oldest age), a flaky actor (retries waiting in the delay
queue), one that always fails (dead letters) and reminders scheduled for
later (delayed). Run it with the dramatiq CLI: `dramatiq app` from demo/.

Settings come from the environment, as in a real deployment:
  DEMO_BROKER             redis (RedisBroker, the default) or rabbitmq
                          (RabbitmqBroker)
  REDIS_URL               the Redis broker (default redis://127.0.0.1:6379/0)
  DRAMATIQ_NAMESPACE      RedisBroker namespace (default dramatiq)
  DEMO_AMQP_URL           the RabbitMQ broker (default
                          amqp://guest:guest@127.0.0.1:5672/%2F); not
                          RABBITMQ_URL, which is the exporter's setting
  DEMO_HEARTBEAT_TIMEOUT  seconds; the exporter's --dramatiq.heartbeat-timeout
                          must be the same (default 60, Dramatiq's default)
  dramatiq_prom_db        when set, the workers export Dramatiq's own metrics
                          with its Prometheus middleware: this is its
                          multi-process directory (PROMETHEUS_MULTIPROC_DIR
                          must be the same), dramatiq_prom_port its port.
                          scripts/demo.sh sets them for its two workers.
"""
import os
import random
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker

if os.environ.get("DEMO_BROKER", "redis") == "rabbitmq":
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    broker = RabbitmqBroker(url=os.environ.get("DEMO_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"))
else:
    broker = RedisBroker(
        url=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        namespace=os.environ.get("DRAMATIQ_NAMESPACE", "dramatiq"),
        heartbeat_timeout=int(float(os.environ.get("DEMO_HEARTBEAT_TIMEOUT", "60")) * 1000),
    )
if os.environ.get("dramatiq_prom_db"):
    # Imported only then: the module creates its directory on import.
    from dramatiq.middleware.prometheus import Prometheus

    # Dramatiq 1.x had it among its default middleware; 2.x does not.
    if not any(isinstance(m, Prometheus) for m in broker.middleware):
        broker.add_middleware(Prometheus())
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="default")
def resize_thumbnail(image_id):
    """Fast: a few milliseconds."""
    time.sleep(random.uniform(0.005, 0.05))


@dramatiq.actor(queue_name="reports", time_limit=120_000)
def build_report(customer_id):
    """Slow: seconds each, so a burst leaves a backlog with a visible age."""
    time.sleep(random.uniform(2, 6))


class PaymentGatewayTimeout(Exception):
    pass


@dramatiq.actor(queue_name="payments", max_retries=4, min_backoff=2_000, max_backoff=30_000)
def charge_card(order_id):
    """Flaky: times out half the time; retries wait in payments.DQ."""
    time.sleep(random.uniform(0.05, 0.3))
    if random.random() < 0.5:
        raise PaymentGatewayTimeout(f"gateway timed out for order {order_id}")


@dramatiq.actor(queue_name="webhooks.outbound", max_retries=0)
def post_webhook(endpoint_id):
    """Always fails: the endpoint is gone, so every message is dead-lettered."""
    raise ConnectionRefusedError(f"endpoint {endpoint_id} refused the connection")


@dramatiq.actor(queue_name="emails")
def send_reminder(user_id):
    """Sent with a delay (minutes), so it sits in emails.DQ until due."""
    time.sleep(random.uniform(0.01, 0.1))
