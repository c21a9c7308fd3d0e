#!/usr/bin/env bash
# The demo application's database traffic (scripts/demo.sh runs it). Every
# 30 s cycle has: a pooled connection sitting idle, a session that forgot to
# commit (idle in transaction for most of the cycle), a "migration" holding
# an exclusive lock for 15 s while a report query waits behind it, and a
# trickle of inserts. demo-stop.sh stops it with its whole process group.
set -u
port="$1"
q() { "${PSQL:-psql}" -h 127.0.0.1 -p "$port" -U postgres -d shop -q -X "$@"; }
while true; do
	{ sleep 29; } | q >/dev/null &
	{ echo "BEGIN; SELECT count(*) FROM orders;"; sleep 28; echo "COMMIT;"; } | q >/dev/null &
	q -c "BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(15); COMMIT;" >/dev/null &
	sleep 0.5
	q -c "SELECT sum(total) FROM orders" >/dev/null &
	for _ in $(seq 1 25); do
		q -c "INSERT INTO orders (total) VALUES (round((random() * 200)::numeric, 2))" >/dev/null 2>&1 &
		sleep 1
	done
	wait
done
