#!/usr/bin/env bash
# The whole product on one machine, on loopback: redis-server, PostgreSQL, a
# Dramatiq app (two worker processes, a producer, a worker that crashes now
# and then, a legacy pickle producer), the exporter on :10191, the workers'
# own metrics (Dramatiq's Prometheus middleware) on :10192 and :10193, and
# Debian's Prometheus scraping them with the shipped alert rules.
# DEMO_BROKER=rabbitmq runs the same app on RabbitMQ instead of Redis (a
# private node with the management and Prometheus plugins; the exporter
# reads it as a user with only the monitoring tag).
#
#   scripts/demo.sh               start, print the URLs, stop on Ctrl-C
#   scripts/demo.sh --background  start, print the URLs, return (for scripts)
#   scripts/demo-stop.sh          stop everything started here
#
# State, logs and pid files live in .demo/ (removed on the next start);
# PostgreSQL's cluster lives in a directory of its own under /tmp (named in
# .demo/pg-dir), which the postgres user can reach wherever the checkout is.
# Ports can be moved with DEMO_REDIS_PORT, DEMO_PG_PORT, DEMO_EXPORTER_PORT,
# DEMO_PROMETHEUS_PORT, DEMO_WORKERS_METRICS_PORT and
# DEMO_REPORTS_METRICS_PORT (on RabbitMQ also DEMO_AMQP_PORT,
# DEMO_RABBITMQ_MGMT_PORT, DEMO_RABBITMQ_PROM_PORT, DEMO_EPMD_PORT and
# DEMO_RABBITMQ_DIST_PORT); PG_BINDIR names PostgreSQL's bin directory
# (default: the newest /usr/lib/postgresql/*/bin).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEMO="$ROOT/.demo"
PIDS="$DEMO/pids"
LOGS="$DEMO/logs"
REDIS_PORT="${DEMO_REDIS_PORT:-16379}"
PG_PORT="${DEMO_PG_PORT:-15432}"
EXPORTER_PORT="${DEMO_EXPORTER_PORT:-10191}"
PROM_PORT="${DEMO_PROMETHEUS_PORT:-9090}"
# Dramatiq's own Prometheus middleware, one exposition server per worker CLI.
WORKERS_METRICS_PORT="${DEMO_WORKERS_METRICS_PORT:-10192}"
REPORTS_METRICS_PORT="${DEMO_REPORTS_METRICS_PORT:-10193}"
# Shorter than Dramatiq's 60 s default so a crashed worker shows up as stale
# with orphaned messages within a minute. App and exporter must agree.
HEARTBEAT_TIMEOUT="${DEMO_HEARTBEAT_TIMEOUT:-20}"
NAMESPACE=dramatiq
PY="$ROOT/.venv/bin/python"
BROKER="${DEMO_BROKER:-redis}"
AMQP_PORT="${DEMO_AMQP_PORT:-15674}"
RABBIT_MGMT_PORT="${DEMO_RABBITMQ_MGMT_PORT:-15673}"
RABBIT_PROM_PORT="${DEMO_RABBITMQ_PROM_PORT:-15693}"
EPMD_PORT="${DEMO_EPMD_PORT:-14369}"
RABBIT_DIST_PORT="${DEMO_RABBITMQ_DIST_PORT:-25674}"
# Debian's /usr/sbin/rabbitmq-server switches to the rabbitmq user; the
# node's own script runs it as whoever starts the demo.
RABBIT_BIN=/usr/lib/rabbitmq/bin/rabbitmq-server

background=false
for arg in "$@"; do
	case "$arg" in
	--background) background=true ;;
	-h | --help)
		sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "demo: unknown argument $arg (try --help)" >&2
		exit 2
		;;
	esac
done

say() { printf 'demo: %s\n' "$*"; }
die() {
	printf 'demo: %s\n' "$*" >&2
	exit 1
}

# ------------------------------------------------------------ prerequisites
# newest_pg_bindir prints the newest /usr/lib/postgresql/*/bin, or nothing.
# A failing `ls | sort | tail` would end the script silently under pipefail.
newest_pg_bindir() {
	local d best=""
	for d in /usr/lib/postgresql/*/bin; do
		[[ -x "$d/initdb" ]] || continue
		if [[ -z "$best" ]] || [[ "$(printf '%s\n%s\n' "$best" "$d" | sort -V | tail -n 1)" == "$d" ]]; then
			best="$d"
		fi
	done
	printf '%s' "$best"
}
PGBIN="${PG_BINDIR:-$(newest_pg_bindir)}"
case "$BROKER" in
redis) broker_bins=(redis-server) broker_ports=("$REDIS_PORT") ;;
rabbitmq)
	[[ -x "$RABBIT_BIN" ]] || die "$RABBIT_BIN not found: run DEMO_BROKER=rabbitmq scripts/deps.sh --demo (make demo DEMO_BROKER=rabbitmq does)"
	broker_bins=(epmd) broker_ports=("$AMQP_PORT" "$RABBIT_MGMT_PORT" "$RABBIT_PROM_PORT" "$EPMD_PORT" "$RABBIT_DIST_PORT")
	;;
*) die "DEMO_BROKER must be redis or rabbitmq, not $BROKER" ;;
esac
for bin in "${broker_bins[@]}" prometheus curl go; do
	command -v "$bin" >/dev/null || die "$bin not found: run scripts/deps.sh --demo (make demo does)"
done
for bin in initdb pg_ctl psql; do
	[[ -x "$PGBIN/$bin" ]] || die "PostgreSQL's $bin not found in ${PGBIN:-/usr/lib/postgresql/*/bin}: run scripts/deps.sh --demo, or set PG_BINDIR"
done
[[ -x "$PY" ]] || die ".venv/bin/python not found: run scripts/deps.sh --demo (make demo does)"
if [[ "$(id -u)" == 0 ]]; then
	id postgres >/dev/null 2>&1 || die "PostgreSQL refuses to run as root, and there is no postgres user to run it as (Debian's postgresql package creates it)"
fi
for f in "$PIDS"/*.pid; do
	[[ -e "$f" ]] || continue
	if kill -0 "$(cat "$f")" 2>/dev/null; then
		die "already running ($(basename "$f" .pid) is up): scripts/demo-stop.sh first"
	fi
done
for port in "${broker_ports[@]}" "$PG_PORT" "$EXPORTER_PORT" "$PROM_PORT" "$WORKERS_METRICS_PORT" "$REPORTS_METRICS_PORT"; do
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		die "port $port on 127.0.0.1 is taken; set DEMO_*_PORT to move the demo"
	fi
done

# A previous run's cluster directory, if demo-stop did not remove it.
if [[ -f "$DEMO/pg-dir" ]]; then
	old="$(cat "$DEMO/pg-dir")"
	[[ "$old" == /tmp/dramatiq-demo-pg.* ]] && rm -rf -- "$old"
fi
rm -rf "$DEMO"
mkdir -p "$PIDS" "$LOGS"

# Everything started from here on is stopped if the start fails half-way.
started_ok=false
cleanup_on_failure() {
	if ! $started_ok; then
		say "start failed; stopping what was started (logs in .demo/logs/)"
		"$ROOT/scripts/demo-stop.sh" || true
	fi
}
trap cleanup_on_failure EXIT

# start NAME CMD...: runs CMD in its own session (so its whole process group
# can be stopped), logging to .demo/logs/NAME.log.
start() {
	local name="$1"
	shift
	setsid "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
	echo $! >"$PIDS/$name.pid"
}

# wait_for WHAT SECONDS CMD...: retries CMD until it succeeds.
wait_for() {
	local what="$1" secs="$2"
	shift 2
	local deadline=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || die "$what did not come up in ${secs}s (see .demo/logs/)"
		sleep 0.2
	done
}

# ------------------------------------------------------------ exporter build
say "building the exporter"
VPKG=github.com/prometheus/common/version
(cd "$ROOT" && go build -o "$DEMO/dramatiq_exporter" -ldflags "\
	-X $VPKG.Version=$(cat VERSION 2>/dev/null || echo 0.0.0) \
	-X $VPKG.Revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown) \
	-X $VPKG.Branch=$(git rev-parse --abbrev-ref HEAD 2>/dev/null || echo unknown)" \
	./cmd/dramatiq_exporter)

# ------------------------------------------------------------ the broker
if [[ "$BROKER" == redis ]]; then
	say "starting redis-server on 127.0.0.1:$REDIS_PORT"
	start redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$DEMO"
	wait_for redis-server 10 redis-cli -p "$REDIS_PORT" ping
	REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
	export REDIS_URL
	BROKER_AT="$REDIS_URL   (namespace $NAMESPACE)"
else
	# A private node, as internal/testserver/rabbitmq.go starts one: its own
	# name, directories, epmd and ports, all on loopback. Statistics every
	# second (the default is 5 s) so the numbers move visibly.
	say "starting RabbitMQ on 127.0.0.1:$AMQP_PORT (management API :$RABBIT_MGMT_PORT, rabbitmq_prometheus :$RABBIT_PROM_PORT)"
	RDIR="$DEMO/rabbitmq"
	mkdir -p "$RDIR"
	secret() { od -An -N12 -tx1 /dev/urandom | tr -d ' \n'; }
	RABBIT_ADMIN_PW="$(secret)"
	EXPORTER_RABBIT_PW="$(secret)"
	(umask 077 && printf '%s\n' "$EXPORTER_RABBIT_PW" >"$RDIR/exporter-password" &&
		printf 'admin %s\ndramatiq-exporter %s\n' "$RABBIT_ADMIN_PW" "$EXPORTER_RABBIT_PW" >"$RDIR/credentials")
	(umask 077 && printf '%s\n' \
		"listeners.tcp.default = 127.0.0.1:$AMQP_PORT" \
		"management.tcp.ip = 127.0.0.1" "management.tcp.port = $RABBIT_MGMT_PORT" \
		"prometheus.tcp.ip = 127.0.0.1" "prometheus.tcp.port = $RABBIT_PROM_PORT" \
		"loopback_users = none" "collect_statistics_interval = 1000" \
		"default_user = admin" "default_pass = $RABBIT_ADMIN_PW" "default_user_tags.administrator = true" \
		"log.console = false" "log.file.level = info" >"$RDIR/rabbit.conf")
	echo '[rabbitmq_management,rabbitmq_prometheus].' >"$RDIR/enabled_plugins"
	: >"$RDIR/rabbitmq-env.conf"
	# Our own epmd, stopped with the demo (a node that finds none starts a
	# daemon that outlives it).
	start epmd epmd -port "$EPMD_PORT" -address 127.0.0.1
	start rabbitmq env RABBITMQ_NODENAME=dramatiq-demo@localhost RABBITMQ_CONFIG_FILE="$RDIR/rabbit" \
		RABBITMQ_CONF_ENV_FILE="$RDIR/rabbitmq-env.conf" RABBITMQ_ADVANCED_CONFIG_FILE="$RDIR/advanced.config" \
		RABBITMQ_ENABLED_PLUGINS_FILE="$RDIR/enabled_plugins" RABBITMQ_MNESIA_BASE="$RDIR/mnesia" \
		RABBITMQ_LOG_BASE="$LOGS/rabbitmq" RABBITMQ_DIST_PORT="$RABBIT_DIST_PORT" ERL_EPMD_PORT="$EPMD_PORT" \
		ERL_EPMD_ADDRESS=127.0.0.1 HOME="$RDIR" \
		RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}' \
		"$RABBIT_BIN"
	MGMT="http://127.0.0.1:$RABBIT_MGMT_PORT"
	wait_for RabbitMQ 120 curl -fsS -u "admin:$RABBIT_ADMIN_PW" "$MGMT/api/overview"
	# The exporter's user: the monitoring tag and a permission entry on the
	# vhost that grants nothing, all it needs.
	rabbit_put() { curl -fsS -o /dev/null -u "admin:$RABBIT_ADMIN_PW" -X PUT -H 'Content-Type: application/json' -d "$2" "$MGMT$1"; }
	rabbit_put /api/users/dramatiq-exporter "{\"password\":\"$EXPORTER_RABBIT_PW\",\"tags\":\"monitoring\"}"
	rabbit_put /api/permissions/%2F/dramatiq-exporter '{"configure":"","write":"","read":""}'
	DEMO_AMQP_URL="amqp://admin:$RABBIT_ADMIN_PW@127.0.0.1:$AMQP_PORT/%2F"
	export DEMO_AMQP_URL
	BROKER_AT="amqp://127.0.0.1:$AMQP_PORT, management API $MGMT (users in .demo/rabbitmq/credentials)"
fi

# ------------------------------------------------------------ postgresql
# postgres refuses to run as root: as root, the cluster belongs to the
# postgres user that Debian's package creates. That user must reach the
# data and socket directories, and a checkout under /root (or any mktemp -d)
# has a 0700 parent it cannot cross, so the cluster lives in a directory of
# its own under /tmp, whoever runs the demo. A short path there also keeps
# the socket's path within the length a unix socket allows.
say "starting PostgreSQL on 127.0.0.1:$PG_PORT"
PGDIR="$(mktemp -d /tmp/dramatiq-demo-pg.XXXXXX)"
echo "$PGDIR" >"$DEMO/pg-dir"
PGDATA="$PGDIR/data"
PGSOCK="$PGDIR/socket"
mkdir -p "$PGDATA" "$PGSOCK"
touch "$PGDIR/postgres.log"
ln -s "$PGDIR/postgres.log" "$LOGS/postgres.log"
as_pg=()
if [[ "$(id -u)" == 0 ]]; then
	chown -R postgres: "$PGDIR"
	as_pg=(runuser -u postgres --)
fi
# From PGDIR: the postgres user may not enter the current directory either.
(cd "$PGDIR" && "${as_pg[@]}" "$PGBIN/initdb" -D "$PGDATA" -A trust -U postgres --no-sync) >"$LOGS/initdb.log" 2>&1 ||
	die "initdb failed: see .demo/logs/initdb.log"
(cd "$PGDIR" && "${as_pg[@]}" "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGDIR/postgres.log" -w -t 30 \
	-o "-p $PG_PORT -k $PGSOCK -c listen_addresses=127.0.0.1 -c max_connections=50" start >/dev/null) ||
	die "PostgreSQL did not start: see .demo/logs/postgres.log"
head -1 "$PGDATA/postmaster.pid" >"$PIDS/postgres.pid"
psql_demo() { "$PGBIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -q "$@"; }
psql_demo -d postgres -c "CREATE DATABASE shop"
psql_demo -d shop -c "CREATE TABLE orders (id bigserial PRIMARY KEY, total numeric NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/shop?sslmode=disable"
# The application's database sees some traffic, including a slow migration
# that holds a lock while a query waits for it.
PSQL="$PGBIN/psql" start dbload bash "$ROOT/demo/dbload.sh" "$PG_PORT"

# ------------------------------------------------------------ the dramatiq app
export DEMO_BROKER="$BROKER" DRAMATIQ_NAMESPACE="$NAMESPACE" DEMO_HEARTBEAT_TIMEOUT="$HEARTBEAT_TIMEOUT"
export PYTHONUNBUFFERED=1
say "starting Dramatiq $("$PY" -c 'import dramatiq; print(dramatiq.__version__)'): 2 worker processes, producer, chaos, legacy producer"
# One worker for the quick queues, and one single-threaded worker for the
# slow reports, which is a little under-provisioned: bursts of reports
# leave a backlog that takes minutes to work off.
# `python -m dramatiq` rather than the venv's dramatiq script: a script's
# #! line cannot hold a path with a space.
# Both run Dramatiq's Prometheus middleware (demo/app.py adds it when
# dramatiq_prom_db is set), each with its own multi-process directory and
# port: CLIs sharing a directory would each export the other's counts too.
# PROMETHEUS_MULTIPROC_DIR (prometheus_multiproc_dir for older
# prometheus_client) names the same directory, in case prometheus_client is
# imported before the middleware sets it.
prom_env() { # NAME PORT: the middleware's environment for one worker CLI
	rm -rf -- "${DEMO:?}/prometheus-multiproc-$1"
	mkdir -p "$DEMO/prometheus-multiproc-$1"
	printf '%s\n' dramatiq_prom_host=127.0.0.1 "dramatiq_prom_port=$2" \
		"dramatiq_prom_db=$DEMO/prometheus-multiproc-$1" "dramatiq_prom_lock=$DEMO/prometheus-multiproc-$1.lock" \
		"PROMETHEUS_MULTIPROC_DIR=$DEMO/prometheus-multiproc-$1" "prometheus_multiproc_dir=$DEMO/prometheus-multiproc-$1"
}
mapfile -t workers_env < <(prom_env workers "$WORKERS_METRICS_PORT")
mapfile -t reports_env < <(prom_env workers-reports "$REPORTS_METRICS_PORT")
(cd "$ROOT/demo" && export "${workers_env[@]}" && start workers "$PY" -m dramatiq app --processes 1 --threads 4 \
	--queues default payments webhooks.outbound emails)
(cd "$ROOT/demo" && export "${reports_env[@]}" && start workers-reports "$PY" -m dramatiq app --processes 1 --threads 1 --queues reports)
(cd "$ROOT/demo" && start producer "$PY" producer.py)
(cd "$ROOT/demo" && DEMO_CHAOS_VICTIM_PID_FILE="$PIDS/chaos-victim.pid" start chaos "$PY" chaos.py)
(cd "$ROOT/demo" && start legacy-producer "$PY" legacy_producer.py)

# ------------------------------------------------------------ exporter
say "starting the exporter on 127.0.0.1:$EXPORTER_PORT"
if [[ "$BROKER" == redis ]]; then
	# The demo's producers create their queues over the first seconds, after
	# the exporter's first discovery pass; on this tiny keyspace a pass
	# every 5 s (not 30 s) shows each new queue at once.
	broker_flags=(--redis.url="$REDIS_URL" --dramatiq.namespace="$NAMESPACE" --dramatiq.heartbeat-timeout="${HEARTBEAT_TIMEOUT}s"
		--dramatiq.discovery-interval=5s)
else
	broker_flags=(--broker=rabbitmq --rabbitmq.url="$MGMT" --rabbitmq.user=dramatiq-exporter
		--rabbitmq.password-file="$RDIR/exporter-password" --rabbitmq.prometheus-url="http://127.0.0.1:$RABBIT_PROM_PORT")
fi
start exporter "$DEMO/dramatiq_exporter" \
	"${broker_flags[@]}" \
	--database.url="$DATABASE_URL" \
	--environment=demo \
	--web.listen-address="127.0.0.1:$EXPORTER_PORT"
wait_for "the exporter" 20 curl -fsS "http://127.0.0.1:$EXPORTER_PORT/metrics"

# ------------------------------------------------------------ prometheus
say "starting Prometheus on 127.0.0.1:$PROM_PORT"
cat >"$DEMO/prometheus.yml" <<EOF
global:
  scrape_interval: 5s
  evaluation_interval: 5s
  external_labels:
    environment: demo
rule_files:
  # The shipped rules; a glob, so the demo runs with whichever exist.
  - "$ROOT/alerts/*.rules.yml"
scrape_configs:
  - job_name: dramatiq
    static_configs:
      - targets: ['127.0.0.1:$EXPORTER_PORT']
  # The workers' own metrics (Dramatiq's Prometheus middleware), under their
  # own job: the rules' WorkersSelector (alerts/mixin/config.go).
  - job_name: dramatiq-workers
    static_configs:
      - targets: ['127.0.0.1:$WORKERS_METRICS_PORT', '127.0.0.1:$REPORTS_METRICS_PORT']
EOF
if command -v promtool >/dev/null; then
	promtool check config "$DEMO/prometheus.yml" >"$LOGS/promtool.log" 2>&1 ||
		die "promtool rejected the demo config or the rules: see .demo/logs/promtool.log"
fi
start prometheus prometheus \
	--config.file="$DEMO/prometheus.yml" \
	--storage.tsdb.path="$DEMO/prometheus-data" \
	--web.listen-address="127.0.0.1:$PROM_PORT"
wait_for Prometheus 30 curl -fsS "http://127.0.0.1:$PROM_PORT/-/ready"

started_ok=true
trap - EXIT
rules="$(compgen -G "$ROOT/alerts/*.rules.yml" | sed "s#$ROOT/##" | tr '\n' ' ' || true)"
cat <<EOF

Dramatiq demo is up (everything on 127.0.0.1):
  exporter metrics   http://127.0.0.1:$EXPORTER_PORT/metrics
  workers' metrics   http://127.0.0.1:$WORKERS_METRICS_PORT/metrics http://127.0.0.1:$REPORTS_METRICS_PORT/metrics
  Prometheus         http://127.0.0.1:$PROM_PORT/graph
  alerts             http://127.0.0.1:$PROM_PORT/alerts   (rules: ${rules:-none yet})
  $(printf '%-18s' "$BROKER") $BROKER_AT
  PostgreSQL         $DATABASE_URL
  logs               .demo/logs/
EOF
if [[ "$BROKER" == redis ]]; then
	echo "An extra reports worker is SIGKILLed about 15 s after start (and every"
	echo "10 minutes): its messages show as orphaned once its heartbeat is"
	echo "${HEARTBEAT_TIMEOUT}s old, until Dramatiq's maintenance requeues them."
else
	echo "An extra reports worker is SIGKILLed about 15 s after start (and every"
	echo "10 minutes): RabbitMQ puts its unacked messages back, redelivered, and"
	echo "its consumers go."
fi

if $background; then
	echo "Stop it with: scripts/demo-stop.sh (or make demo-stop)"
	exit 0
fi
echo "Press Ctrl-C to stop."
trap '"$ROOT/scripts/demo-stop.sh"; exit 0' INT TERM
# Keep running while the stack is; report if a component dies.
while true; do
	for name in "$BROKER" exporter prometheus workers workers-reports producer; do
		if ! kill -0 "$(cat "$PIDS/$name.pid" 2>/dev/null || echo 0)" 2>/dev/null; then
			say "$name exited (see .demo/logs/$name.log); stopping the demo"
			"$ROOT/scripts/demo-stop.sh"
			exit 1
		fi
	done
	sleep 2 &
	wait $! || true
done
