#!/usr/bin/env bash
# Builds the pinned Go tools the tests run, each into its own ignored folder
# .build/tools/<name>-<version>/<name>, and skips any that is already built.
# The version is in the folder name, so bumping a pin builds the new one
# beside the old and a test can never pick up a stale binary.
#
#   scripts/tools.sh            # build what is missing
#   scripts/tools.sh --list     # print "name module-version version path" of each tool
#
# Tests find these binaries through internal/testserver.Tool, which reads
# the same pins from this file, so there is one list of versions.
#
# Cold, the four Prometheus tools took about 11 minutes on the 2-core CI
# machine (module download plus compile); warm (Go build cache filled) a few
# seconds each; already built: nothing happens. See the README's "Tests".
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.build/tools"

# name, module version, package, and the version the binary reports (stamped
# with -ldflags as upstream's release builds do; Prometheus 3.x is module
# v0.3xx). One line per tool; keep the format, Go tests parse it.
PINS="
promtool     v0.316.0 github.com/prometheus/prometheus/cmd/promtool        3.16.0
prometheus   v0.316.0 github.com/prometheus/prometheus/cmd/prometheus      3.16.0
alertmanager v0.35.0  github.com/prometheus/alertmanager/cmd/alertmanager 0.35.0
amtool       v0.35.0  github.com/prometheus/alertmanager/cmd/amtool       0.35.0
"

say() { printf 'tools: %s\n' "$*"; }

if [[ "${1:-}" == --list ]]; then
	while read -r name version pkg reports; do
		[[ -n "$name" ]] || continue
		printf '%s %s %s %s\n' "$name" "$version" "$reports" "$TOOLS/$name-$version/$name"
	done <<<"$PINS"
	exit 0
fi

GO="${GO:-go}"
built=()
while read -r name version pkg reports; do
	[[ -n "$name" ]] || continue
	dir="$TOOLS/$name-$version"
	if [[ -x "$dir/$name" ]]; then
		built+=("$name@$version")
		continue
	fi
	say "building $name $version from $pkg (minutes on a cold Go cache)"
	start=$(date +%s)
	# Into a temporary folder first, so an interrupted build never leaves a
	# binary that the check above would take for a finished one.
	tmp="$(mktemp -d "$TOOLS/.tmp-$name.XXXXXX" 2>/dev/null || { mkdir -p "$TOOLS" && mktemp -d "$TOOLS/.tmp-$name.XXXXXX"; })"
	if ! GOBIN="$tmp" "$GO" install -ldflags "-X github.com/prometheus/common/version.Version=$reports" "$pkg@$version"; then
		rm -rf "$tmp"
		say "building $name $version failed"
		exit 1
	fi
	rm -rf "$dir"
	mv "$tmp" "$dir"
	say "built $name $version in $(($(date +%s) - start))s: ${dir#"$ROOT"/}/$name"
done <<<"$PINS"
if ((${#built[@]})); then
	say "already built: ${built[*]}"
fi
