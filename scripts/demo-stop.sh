#!/usr/bin/env bash
# Stops everything scripts/demo.sh started, by the pid files in .demo/pids/,
# removes PostgreSQL's directory under /tmp (named in .demo/pg-dir), and
# checks that nothing is left running.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEMO="$ROOT/.demo"
PIDS="$DEMO/pids"
say() { printf 'demo-stop: %s\n' "$*"; }

# The cluster directory demo.sh made under /tmp, if any. Only a path of the
# shape demo.sh makes is ever removed.
PGDIR=""
if [[ -f "$DEMO/pg-dir" ]]; then
	PGDIR="$(cat "$DEMO/pg-dir")"
	[[ "$PGDIR" == /tmp/dramatiq-demo-pg.* && "$PGDIR" != */../* ]] || PGDIR=""
fi

if [[ ! -d "$PIDS" ]]; then
	[[ -n "$PGDIR" ]] && rm -rf -- "$PGDIR" && rm -f "$DEMO/pg-dir"
	say "nothing to stop (no .demo/pids)"
	exit 0
fi

alive() { kill -0 "$1" 2>/dev/null; }

# stop_all SECONDS NAME...: TERM to each NAME's process group (the demo
# started each in its own session, so pid = group id), all at once; KILL
# whatever is left after SECONDS. The dramatiq CLIs get TERM on their main
# process only: it forwards TERM to its workers, which finish the actor they
# run and requeue what they prefetched (a second TERM would kill them).
stop_all() {
	local secs="$1" name f pid
	shift
	local pids=()
	for name in "$@"; do
		f="$PIDS/$name.pid"
		[[ -f "$f" ]] || continue
		pid="$(cat "$f")"
		rm -f "$f"
		[[ -n "$pid" ]] && alive "$pid" || continue
		say "stopping $name (pid $pid)"
		case "$name" in
		workers*) kill -TERM "$pid" 2>/dev/null ;;
		*) kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null ;;
		esac
		pids+=("$pid")
	done
	local deadline=$((SECONDS + secs)) any
	while ((SECONDS < deadline)); do
		any=false
		for pid in "${pids[@]}"; do
			alive "$pid" && any=true
		done
		$any || break
		sleep 0.2
	done
	for pid in "${pids[@]}"; do
		if alive "$pid"; then
			say "pid $pid did not stop on TERM in ${secs}s; KILL"
		fi
		# Anything still in the group (a child that ignored TERM) goes too.
		kill -KILL -- "-$pid" 2>/dev/null || true
	done
}

# Producers and chaos first (nothing new arrives), then the workers, then
# the observers and the servers.
stop_all 10 producer legacy-producer chaos chaos-victim
stop_all 20 workers workers-reports
stop_all 10 dbload exporter prometheus redis
# RabbitMQ (DEMO_BROKER=rabbitmq) syncs to disk on the way down; its epmd after it.
stop_all 30 rabbitmq
stop_all 5 epmd

# PostgreSQL was daemonized by pg_ctl, in its own session.
if [[ -f "$PIDS/postgres.pid" ]]; then
	pid="$(cat "$PIDS/postgres.pid")"
	if alive "$pid"; then
		say "stopping PostgreSQL (pid $pid)"
		# SIGINT is PostgreSQL's fast shutdown, the same as pg_ctl -m fast,
		# and needs neither pg_ctl's path nor its user.
		kill -INT "$pid" 2>/dev/null
		for _ in $(seq 1 50); do
			alive "$pid" || break
			sleep 0.2
		done
		alive "$pid" && kill -KILL "$pid"
	fi
	rm -f "$PIDS/postgres.pid"
fi

if [[ -n "$PGDIR" ]]; then
	rm -rf -- "$PGDIR" && rm -f "$DEMO/pg-dir"
fi

left="$(ls "$PIDS" 2>/dev/null)"
[[ -n "$left" ]] && say "unknown pid files left: $left"
say "stopped"
