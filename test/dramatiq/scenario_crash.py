"""6. A crash: SIGKILL a `dramatiq` CLI worker that holds messages.

Heartbeat timeout is 3 s for every Dramatiq client and for the exporter.
Once it passes, the killed worker's messages are orphaned (still in
flight, since nobody acked them) and the process is stale. A second client
with maintenance_chance=1_000_000 then enqueues one message on that queue;
Dramatiq's maintenance requeues the orphans first, so orphaned returns to 0
and ready rises by the orphans plus the new message.
"""
import json
import os
import signal
import sys
import tempfile
import time

import dramatiq
from harness import Scenario, log, queue

N = 6
HB = 3

s = Scenario("crash", heartbeat_timeout=HB)
producer = s.broker()


@dramatiq.actor(broker=producer, queue_name="crash")
def hold(i):
    pass


sent = [hold.send(i) for i in range(N)]

marker = os.path.join(tempfile.mkdtemp(prefix="conformance-crash-"), "held.json")
cli = s.spawn(
    [sys.executable, "-m", "dramatiq", "cli_app", "--processes", "1", "--threads", "1"],
    env={
        "CONFORMANCE_REDIS_URL": s.url,
        "CONFORMANCE_NAMESPACE": s.namespace,
        "CONFORMANCE_HEARTBEAT_TIMEOUT": str(HB),
        "CONFORMANCE_MARKER": marker,
    },
)
deadline = time.time() + 30
while not os.path.exists(marker):
    if time.time() > deadline or cli.poll() is not None:
        s.cleanup()
        raise SystemExit("the dramatiq CLI worker never started the blocking actor")
    time.sleep(0.05)
with open(marker) as f:
    held = json.load(f)["held"]
log(f"CLI worker holds {held} of {N}")
if not 0 < held < N:
    raise SystemExit(f"worker holds {held} of {N}: scenario needs 0 < held < N")

s.expect("holding", queues={"crash": queue(ready=N - held, inflight=held, oldest=sent[held])})

# The whole CLI process group: the main process and its worker child, the
# way an OOM kill or a lost machine ends them.
os.killpg(cli.pid, signal.SIGKILL)
cli.wait()
killed_at = time.time()

# The worker's last heartbeat is at most killed_at, the producer's older:
# both turn stale after HB seconds, and nothing forgets them, since every
# client here has maintenance off.
s.expect(
    "orphaned",
    queues={"crash": queue(ready=N - held, inflight=held, orphaned=held, oldest=sent[held])},
    processes={"alive": 0, "stale": 2},
    timeout=HB + 15,
)
# The worker's last heartbeat was at most about a second before the kill (an
# idle consumer polls at least once a second), so the exporter must not have
# called it stale much before killed_at + HB.
if time.time() - killed_at < HB - 1.5:
    raise SystemExit(f"exporter reported orphans {time.time() - killed_at:.1f}s after the kill, before the {HB}s heartbeat timeout could pass")

maint = s.broker(maintenance_chance=1_000_000)


@dramatiq.actor(broker=maint, queue_name="crash", actor_name="hold")
def hold_again(i):
    pass


extra = hold_again.send(N)
# Maintenance put the orphans back at the tail, then the new message went
# after them: the head is still the first message nobody fetched.
s.expect("recovered", queues={"crash": queue(ready=N + 1, oldest=sent[held])})
s.done()
