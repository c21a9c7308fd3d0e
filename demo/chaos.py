"""Crashes a worker now and then, as an OOM kill would (scripts/demo.sh).

Every ten minutes it starts an extra `dramatiq app` worker on the reports
queue, hands it a batch of reports so it surely holds some, and SIGKILLs it
a few seconds later. Its messages stay in its ack set (orphaned) and its
heartbeat goes stale until Dramatiq's maintenance (a 1-in-1000 chance per
broker call on that queue) puts them back. On RabbitMQ (DEMO_BROKER) the
node puts them back at once, redelivered, and the worker's consumers go.
"""
import os
import signal
import subprocess
import sys
import time

from app import build_report

HERE = os.path.dirname(os.path.abspath(__file__))
PID_FILE = os.environ.get("DEMO_CHAOS_VICTIM_PID_FILE")
FIRST, EVERY, LIFETIME = 5, 600, 8

victim = None


def kill_victim():
    global victim
    if victim is not None and victim.poll() is None:
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
    victim = None
    if PID_FILE and os.path.exists(PID_FILE):
        os.remove(PID_FILE)


def stop(signum, frame):
    kill_victim()
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)

time.sleep(FIRST)
while True:
    # python -m dramatiq: the venv's dramatiq script breaks in a path with a space.
    victim = subprocess.Popen(
        [sys.executable, "-m", "dramatiq", "app", "--processes", "1", "--threads", "2", "--queues", "reports"],
        cwd=HERE,
        start_new_session=True,
    )
    if PID_FILE:
        with open(PID_FILE, "w") as f:
            f.write(f"{victim.pid}\n")
    for customer in range(20):
        build_report.send(9000 + customer)
    time.sleep(LIFETIME)
    print(f"chaos: SIGKILL worker {victim.pid} and its children", file=sys.stderr, flush=True)
    kill_victim()
    time.sleep(EVERY)
