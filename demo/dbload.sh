#!/usr/bin/env bash
# The demo application's database traffic (scripts/demo.sh runs it): a
# steady trickle of inserts, a session left idle in a transaction, and now
# and then a "migration" that holds an exclusive lock while a report query
# waits behind it. Stopped with its whole process group by demo-stop.sh.
set -u
port="$1"
q() { psql -h 127.0.0.1 -p "$port" -U postgres -d shop -q -X "$@"; }
while true; do
	# Forgotten transaction: idle in transaction for 30 s.
	{ echo "BEGIN; SELECT count(*) FROM orders;"; sleep 30; echo "COMMIT;"; } | q >/dev/null &
	# Migration holding a lock for 20 s; the report query waits for it.
	q -c "BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(20); COMMIT;" >/dev/null &
	sleep 1
	q -c "SELECT sum(total) FROM orders" >/dev/null &
	for _ in $(seq 1 40); do
		q -c "INSERT INTO orders (total) VALUES (round((random() * 200)::numeric, 2))" >/dev/null 2>&1
		sleep 1
	done
	wait
done
