"""Sends a realistic mix of demo jobs forever (scripts/demo.sh runs it).

Steady traffic of fast jobs and payments, webhooks that all fail, reminders
scheduled minutes ahead, and every so often a burst of slow reports that the
workers need a while to work off.
"""
import itertools
import random
import signal
import sys
import time

from app import build_report, charge_card, post_webhook, resize_thumbnail, send_reminder

running = True


def stop(signum, frame):
    global running
    running = False


signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)

next_burst = time.time() + 5
for n in itertools.count():
    if not running:
        break
    resize_thumbnail.send(n)
    if n % 3 == 0:
        charge_card.send(n)
    if n % 7 == 0:
        post_webhook.send(random.randint(1, 40))
    if n % 5 == 0:
        send_reminder.send_with_options(args=(n,), delay=random.randint(60_000, 600_000))
    if n % 20 == 0:
        build_report.send(random.randint(1, 500))
    if time.time() >= next_burst:
        # Month-end: a pile of reports at once.
        for _ in range(random.randint(15, 40)):
            build_report.send(random.randint(1, 500))
        next_burst = time.time() + random.uniform(60, 180)
        print(f"producer: sent a burst of reports after {n} jobs", file=sys.stderr, flush=True)
    time.sleep(random.uniform(0.1, 0.4))
