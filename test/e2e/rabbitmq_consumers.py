"""Consumers for rabbitmq_test.go, with pika as Dramatiq's RabbitmqBroker uses it.

- one connection consumes QUEUE and never acks: a worker process busy with
  its prefetched messages (consumers 1, in flight = what it holds);
- another consumes QUEUE_DQ and never acks either, like a worker holding
  delayed messages until their eta, but closes and reopens its connection
  every CHURN seconds: what consumer_timeout does to a worker holding a
  message past it. RabbitMQ redelivers the held messages each time.

Prints "ready" once both consume, then runs until killed.
"""

import sys
import time

import pika

url, queue, delay_queue, churn = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])


def consume(name):
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=100)
    ch.basic_consume(queue=name, on_message_callback=lambda *a: None, auto_ack=False)
    return conn


busy = consume(queue)
held = consume(delay_queue)
print("ready", flush=True)
opened = time.monotonic()
while True:
    busy.process_data_events(time_limit=0.1)
    held.process_data_events(time_limit=0.1)
    if time.monotonic() - opened > churn:
        held.close()
        held = consume(delay_queue)
        opened = time.monotonic()
