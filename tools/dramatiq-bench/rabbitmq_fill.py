"""Fills a RabbitMQ vhost for dramatiq-bench's RabbitMQ mode, through real
Dramatiq's RabbitmqBroker: N Dramatiq queues (3N RabbitMQ queues, declared
by Dramatiq with its arguments), each with ready messages, delayed messages
in q.DQ and dead letters in q.XQ.

Usage: python rabbitmq_fill.py AMQP_URL QUEUES READY DELAYED DEAD
"""

import sys

import dramatiq
import pika
from dramatiq.brokers.rabbitmq import RabbitmqBroker


def main():
    url, queues, ready, delayed, dead = sys.argv[1], *map(int, sys.argv[2:6])
    broker = RabbitmqBroker(url=url, confirm_delivery=False)
    dramatiq.set_broker(broker)
    for i in range(queues):
        name = "queue_%05d" % i
        # enqueue declares q, q.DQ and q.XQ as a producer does.
        for _ in range(ready):
            broker.enqueue(dramatiq.Message(queue_name=name, actor_name="task", args=(i,), kwargs={}, options={}))
        for _ in range(delayed):
            broker.enqueue(dramatiq.Message(queue_name=name, actor_name="task", args=(i,), kwargs={}, options={}), delay=3_600_000)
        if dead:
            broker.declare_queue(name)
        for _ in range(dead):
            broker.channel.basic_publish(
                exchange="", routing_key=name + ".XQ", body=b'{"queue_name":"%s"}' % name.encode(),
                properties=pika.BasicProperties(delivery_mode=2),
            )
    broker.close()


if __name__ == "__main__":
    main()
