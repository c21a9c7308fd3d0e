#!/usr/bin/env bash
# Builds the pinned Go tools the tests run, each into its own ignored folder
# .build/tools/<name>-<version>/<name>, and skips any that is already built.
# The version is in the folder name, so bumping a pin builds the new one
# beside the old and a test can never pick up a stale binary.
#
#   scripts/tools.sh            # build what is missing
#   scripts/tools.sh helm ...   # only these (make release needs two)
#   scripts/tools.sh --list     # print "name module-version version path" of each tool
#
# Tests find these binaries through internal/testserver.Tool, which reads
# the same pins from this file, so there is one list of versions.
#
# Build times are in the README ("Tests"); already built, nothing happens.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.build/tools"

# name, module version, package, the version the binary reports (stamped
# with -ldflags as upstream's release builds do; Prometheus 3.x is module
# v0.3xx) and Go build tags ("-" for none). One line per tool; keep the
# format, Go tests parse it.
#
# remove_all_sd leaves every service-discovery plugin (AWS, Azure, GCE,
# Kubernetes, ...) out of Prometheus: upstream's own switch for slim builds.
# The tests use static_configs only, and the SDKs are most of the compile
# time (the AWS EC2 client alone takes over 10 minutes on 2 busy cores).
# Rule evaluation, PromQL and the HTTP API are the same code as a release.
PINS="
promtool     v0.316.0 github.com/prometheus/prometheus/cmd/promtool        3.16.0 remove_all_sd
prometheus   v0.316.0 github.com/prometheus/prometheus/cmd/prometheus      3.16.0 remove_all_sd
alertmanager v0.35.0  github.com/prometheus/alertmanager/cmd/alertmanager 0.35.0 -
amtool       v0.35.0  github.com/prometheus/alertmanager/cmd/amtool       0.35.0 -
helm         v3.22.0  helm.sh/helm/v3/cmd/helm                             3.22.0 -
cyclonedx-gomod v1.10.0 github.com/CycloneDX/cyclonedx-gomod/cmd/cyclonedx-gomod 1.10.0 -
"

# Alertmanager embeds its web UI (go:embed ui/app/dist), which upstream's
# release process builds with npm; the Go module does not carry it, so
# `go install` fails. Such a tool is built from a copy of its module with a
# placeholder page in each embedded folder. The HTTP API is all tests use.
# name -> "module path|folders to fill, relative to the module root"
declare -A UI_STUB=(
	[alertmanager]="github.com/prometheus/alertmanager|ui/app/dist/elm ui/app/dist/mantine"
)

say() { printf 'tools: %s\n' "$*"; }

# build_from_copy NAME VERSION PKG LDFLAGS TAGS OUT: builds PKG from a
# writable copy of its module with the UI_STUB folders filled.
build_from_copy() {
	local name="$1" version="$2" pkg="$3" ldflags="$4" tags="$5" out="$6"
	local module="${UI_STUB[$name]%%|*}" folders="${UI_STUB[$name]#*|}" moddir src f
	moddir="$("$GO" mod download -json "$module@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')"
	[[ -d "$moddir" ]] || { say "go mod download $module@$version gave no folder"; return 1; }
	src="$out/src"
	cp -R "$moddir" "$src"
	chmod -R u+w "$src"
	for f in $folders; do
		mkdir -p "$src/$f"
		printf '<!doctype html><title>%s</title><p>%s %s was built without its web UI; its HTTP API works.\n' \
			"$name" "$name" "$version" >"$src/$f/index.html"
	done
	(cd "$src" && "$GO" build -mod=readonly -tags "$tags" -ldflags "$ldflags" -o "$out/$name" "./${pkg#"$module"/}")
	rm -rf "$src"
}

if [[ "${1:-}" == --list ]]; then
	while read -r name version pkg reports tags; do
		[[ -n "$name" ]] || continue
		printf '%s %s %s %s\n' "$name" "$version" "$reports" "$TOOLS/$name-$version/$name"
	done <<<"$PINS"
	exit 0
fi

GO="${GO:-go}"
built=()
only=" $* "
while read -r name version pkg reports tags; do
	[[ -n "$name" ]] || continue
	[[ $# -eq 0 || "$only" == *" $name "* ]] || continue
	[[ "$tags" != - ]] || tags=""
	dir="$TOOLS/$name-$version"
	# The folder is named by version; .pin records how the binary was built,
	# so changing a tool's tags or package rebuilds it too. (A binary without
	# a .pin, from before it existed, is kept.)
	pin="$pkg $version $reports ${tags:--} ${UI_STUB[$name]:--}"
	if [[ -x "$dir/$name" ]] && { [[ ! -f "$dir/.pin" ]] || [[ "$(cat "$dir/.pin")" == "$pin" ]]; }; then
		built+=("$name@$version")
		continue
	fi
	say "building $name $version from $pkg (minutes on a cold Go cache)"
	start=$(date +%s)
	# Into a temporary folder first, so an interrupted build never leaves a
	# binary that the check above would take for a finished one.
	tmp="$(mktemp -d "$TOOLS/.tmp-$name.XXXXXX" 2>/dev/null || { mkdir -p "$TOOLS" && mktemp -d "$TOOLS/.tmp-$name.XXXXXX"; })"
	ldflags="-X github.com/prometheus/common/version.Version=$reports"
	if [[ -n "${UI_STUB[$name]:-}" ]]; then
		build=(build_from_copy "$name" "$version" "$pkg" "$ldflags" "$tags" "$tmp")
	else
		build=(env GOBIN="$tmp" "$GO" install -tags "$tags" -ldflags "$ldflags" "$pkg@$version")
	fi
	if ! "${build[@]}"; then
		rm -rf "$tmp"
		say "building $name $version failed"
		exit 1
	fi
	printf '%s\n' "$pin" >"$tmp/.pin"
	rm -rf "$dir"
	mv "$tmp" "$dir"
	say "built $name $version in $(($(date +%s) - start))s: ${dir#"$ROOT"/}/$name"
done <<<"$PINS"
if ((${#built[@]})); then
	say "already built: ${built[*]}"
fi
