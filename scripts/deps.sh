#!/usr/bin/env bash
# Installs what `make test`, `make demo` and CI need, and nothing twice:
#   - Debian packages (as root: apt-get; otherwise: list them and fail);
#     rabbitmq-server's post-install start may be refused (policy-rc.d):
#     tests start private nodes of their own,
#   - .venv/ with the pinned current Dramatiq (test/dramatiq/requirements.txt),
#   - .build/venv-dramatiq-oldest/ with the oldest Dramatiq release that has
#     the current Redis layout (test/dramatiq/requirements-oldest.txt),
#   - .build/venv-dramatiq-rabbitmq-oldest/ with the oldest Dramatiq release
#     whose RabbitMQ broker runs on this Python
#     (test/dramatiq/requirements-rabbitmq-oldest.txt),
#   - .build/bin/staticcheck at a pinned version (what `make lint` runs),
#   - Prometheus 3 / Alertmanager tools built from Go modules (scripts/tools.sh).
# Re-runs are fast: each step checks first and says what it skipped.
#
#   scripts/deps.sh          everything
#   scripts/deps.sh --demo   only what `make demo` runs: redis-server,
#                            PostgreSQL, Prometheus, curl and .venv/
set -euo pipefail

demo_only=false
for arg in "$@"; do
	case "$arg" in
	--demo) demo_only=true ;;
	*)
		echo "deps: unknown argument $arg (scripts/deps.sh [--demo])" >&2
		exit 2
		;;
	esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

STATICCHECK_VERSION="v0.8.2" # honnef.co/go/tools; 2026.x line, accepts Go 1.26
VENV="$ROOT/.venv"
OLD_VENV="$ROOT/.build/venv-dramatiq-oldest"
OLD_RABBIT_VENV="$ROOT/.build/venv-dramatiq-rabbitmq-oldest"

say() { printf 'deps: %s\n' "$*"; }

# ---------------------------------------------------------------- apt
# package name -> a file that proves it is installed. Checking files instead
# of dpkg status also accepts the same tool installed another way.
declare -A PROBES=(
	[redis-server]=/usr/bin/redis-server
	[postgresql]=/usr/lib/postgresql/15/bin/postgres
	[prometheus]=/usr/bin/promtool
	[prometheus-alertmanager]=/usr/bin/amtool
	[chromium]=/usr/bin/chromium
	[curl]=/usr/bin/curl
	# Debian's wrapper in /usr/sbin switches to the rabbitmq user; tests run
	# the node's own script (internal/testserver/rabbitmq.go).
	[rabbitmq-server]=/usr/lib/rabbitmq/bin/rabbitmq-server
)
packages=(redis-server postgresql prometheus prometheus-alertmanager chromium curl rabbitmq-server)
$demo_only && packages=(redis-server postgresql prometheus curl)
$demo_only && [[ "${DEMO_BROKER:-redis}" == rabbitmq ]] && packages=(rabbitmq-server postgresql prometheus curl)
missing=()
for pkg in "${packages[@]}"; do
	probe="${PROBES[$pkg]}"
	if [[ "$pkg" == postgresql ]]; then
		# Any major version will do for the tests; prefer what is there.
		compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null && continue
	elif [[ -x "$probe" ]]; then
		continue
	fi
	missing+=("$pkg")
done
PYTHON="${PYTHON:-python3}"
if ! command -v "$PYTHON" >/dev/null 2>&1; then
	missing+=(python3 python3-venv)
elif ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
	missing+=(python3-venv)
fi

if ((${#missing[@]})); then
	if [[ "$(id -u)" != 0 ]]; then
		say "missing Debian packages: ${missing[*]}"
		say "install them as root: apt-get install -y ${missing[*]}"
		exit 1
	fi
	say "apt-get update (missing: ${missing[*]})"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	say "apt-get install ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
	say "Debian packages present (${packages[*]})"
fi

# ---------------------------------------------------------------- venvs
# make_venv DIR REQUIREMENTS: (re)creates DIR only when the requirements or
# the interpreter changed since the stamp was written.
make_venv() {
	local dir="$1" req="$2" stamp want
	stamp="$dir/.deps-stamp"
	want="$(
		sha256sum "$req" | cut -d' ' -f1
		"$PYTHON" -c 'import sys; print(sys.version)'
	)"
	if [[ -x "$dir/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
		say "$(basename "$dir"): up to date ($(grep -v '^#' "$req" | tr '\n' ' '))"
		return 0
	fi
	say "$(basename "$dir"): creating with $("$PYTHON" --version) from ${req#"$ROOT"/}"
	rm -rf "$dir"
	"$PYTHON" -m venv "$dir"
	if ! "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$req"; then
		rm -rf "$dir"
		say "$(basename "$dir"): pip install failed"
		return 1
	fi
	"$dir/bin/python" -c 'import dramatiq, redis; print("deps:   dramatiq", dramatiq.__version__, "redis-py", redis.__version__)'
	printf '%s\n' "$want" >"$stamp"
}

mkdir -p "$ROOT/.build"
make_venv "$VENV" "$ROOT/test/dramatiq/requirements.txt"
if $demo_only; then
	say "done (demo only)"
	exit 0
fi
make_venv "$OLD_VENV" "$ROOT/test/dramatiq/requirements-oldest.txt"
make_venv "$OLD_RABBIT_VENV" "$ROOT/test/dramatiq/requirements-rabbitmq-oldest.txt"

# ---------------------------------------------------------------- staticcheck
SC="$ROOT/.build/bin/staticcheck"
if [[ -x "$SC" ]] && "$SC" -version 2>/dev/null | grep -q "${STATICCHECK_VERSION#v}"; then
	say ".build/bin/staticcheck $STATICCHECK_VERSION present"
else
	say "go install honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION -> .build/bin/"
	mkdir -p "$ROOT/.build/bin"
	GOBIN="$ROOT/.build/bin" go install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
fi

# ---------------------------------------------------------------- Go tools
# Prometheus 3, Alertmanager 0.35 and their CLIs, built from their Go modules
# (Debian's packages above are the 2.x/0.25 line; the tests run both).
"$ROOT/scripts/tools.sh"

say "done"
