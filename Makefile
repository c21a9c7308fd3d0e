# dramatiq_exporter. `make run` serves metrics, `make demo` starts a whole
# local stack, `make test` installs what the tests need and runs them all.
GO        ?= go
BIN       ?= dramatiq_exporter
# What --version and dramatiq_exporter_build_info report. In a clone: the
# VERSION file and git. In a source archive without .git (`git archive`,
# GitHub's "Source code" downloads): internal/buildinfo/archive.txt, which
# git fills in on export (export-subst in .gitattributes). The build date
# is the commit's time (SOURCE_DATE_EPOCH), so that builds are reproducible.
# A variable set in the environment or on the command line wins; empty
# counts as unset, as with a Dockerfile ARG given no value.
ARCHIVE_INFO := internal/buildinfo/archive.txt
IN_GIT    := $(shell test -e .git && git rev-parse --verify -q HEAD >/dev/null 2>&1 && echo yes)
VERSION   := $(or $(VERSION),$(shell cat VERSION 2>/dev/null),0.0.0)
ifeq ($(IN_GIT),yes)
REVISION  := $(or $(REVISION),$(shell git rev-parse HEAD))
BRANCH    := $(or $(BRANCH),$(shell git rev-parse --abbrev-ref HEAD))
SOURCE_DATE_EPOCH := $(or $(SOURCE_DATE_EPOCH),$(shell git log -1 --format=%ct))
else
REVISION  := $(or $(REVISION),$(shell sed -n 's/^revision=\([0-9a-f]\{40,64\}\)$$/\1/p' $(ARCHIVE_INFO) 2>/dev/null))
SOURCE_DATE_EPOCH := $(or $(SOURCE_DATE_EPOCH),$(shell sed -n 's/^epoch=\([0-9]\{1,\}\)$$/\1/p' $(ARCHIVE_INFO) 2>/dev/null),$(shell date +%s))
endif
REVISION  := $(or $(REVISION),unknown)
BRANCH    := $(or $(BRANCH),unknown)
BUILD_USER := $(or $(BUILD_USER),$(shell id -un)@$(shell hostname))
# GNU date, then BSD date (macOS).
BUILD_DATE := $(or $(BUILD_DATE),$(shell date -u -d @$(SOURCE_DATE_EPOCH) +%Y%m%d-%H:%M:%S 2>/dev/null || date -u -r $(SOURCE_DATE_EPOCH) +%Y%m%d-%H:%M:%S))
export SOURCE_DATE_EPOCH
VPKG      := github.com/prometheus/common/version
# -buildid= and -trimpath: the same source gives the same binary on any
# machine (make release checks it).
LDFLAGS   := -s -w -buildid= -X $(VPKG).Version=$(VERSION) -X $(VPKG).Revision=$(REVISION) \
             -X $(VPKG).Branch=$(BRANCH) -X $(VPKG).BuildUser=$(BUILD_USER) \
             -X $(VPKG).BuildDate=$(BUILD_DATE)
TEST_TIMEOUT ?= 9m
# How much `make fuzz` runs each Fuzz function: a count of executions, not
# a duration. Go 1.26's fuzzing coordinator can fail a duration-bounded run
# with a bare "context deadline exceeded" when the deadline races a busy
# worker (go.dev/issue/75804, fixed in Go 1.27); a count sets no deadline.
FUZZTIME     ?= 10000x
# Quoted: the checkout may live in a path with spaces.
STATICCHECK  := "$(CURDIR)/.build/bin/staticcheck"

.PHONY: all build release run deps test fuzz lint vet unit bench demo demo-stop generate docs clean

all: build

# A static binary for the GOOS/GOARCH/GOARM in the environment (the host's
# when unset). make release and the Dockerfile build through this target.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o '$(BIN)' ./cmd/dramatiq_exporter

# The release artifacts into dist/ (RELEASING.md): an archive per platform,
# their SBOMs, the Helm chart and its index, and sha256sums.txt. The same
# commit gives byte-identical files. RELEASE_PLATFORMS narrows the list.
RELEASE_DIR       ?= dist
RELEASE_PLATFORMS ?= linux/amd64 linux/arm64 linux/arm/v7 darwin/amd64 darwin/arm64 windows/amd64
release:
	@scripts/tools.sh helm cyclonedx-gomod
	VERSION='$(VERSION)' REVISION='$(REVISION)' BRANCH='$(BRANCH)' BUILD_DATE='$(BUILD_DATE)' \
	  $(GO) run ./tools/release -out '$(RELEASE_DIR)' -platforms '$(RELEASE_PLATFORMS)'

# Serves on :10191 against $REDIS_URL (default redis://localhost:6379/0).
# ARGS passes more flags: make run ARGS='--dramatiq.namespace=myapp'
run: build
	./$(BIN) $(ARGS)

# Installs redis-server, PostgreSQL, Prometheus, Alertmanager and Chromium
# from Debian (as root), and Dramatiq from PyPI into .venv.
deps:
	@scripts/deps.sh

# test/kube is a module of its own (the Kubernetes, prometheus-operator and
# KEDA API types stay out of the exporter's go.mod): every Go step runs there too.
KUBE_TEST := test/kube

vet:
	$(GO) vet ./...
	cd $(KUBE_TEST) && $(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }

lint: vet
	$(STATICCHECK) ./...
	cd $(KUBE_TEST) && $(STATICCHECK) ./...

# Every test: unit tests against real redis-server and PostgreSQL, the
# conformance suite against real Dramatiq, rule tests with promtool and
# amtool, the end-to-end test with a real Prometheus, the browser test, and
# the Helm chart and Kubernetes examples (test/kube; no -race: it starts no
# goroutines of its own, and the race build of client-go costs minutes).
test: deps lint
	CI=$${CI:-true} $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...
	cd $(KUBE_TEST) && CI=$${CI:-true} $(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...
	@$(MAKE) --no-print-directory fuzz

# Runs every Fuzz function of the repository for FUZZTIME each, found with
# `go test -list` (a new one needs no change here). go test fuzzes one
# function per invocation. The seed corpora under testdata/fuzz also run
# in plain `go test`.
fuzz:
	@$(GO) test -list '^Fuzz' ./... | awk '/^Fuzz/ { fs = fs " " $$1; next } /^ok / && fs != "" { print $$2 fs; fs = "" }' | \
	while read -r pkg funcs; do \
		for fn in $$funcs; do \
			echo "fuzz: $$pkg $$fn ($(FUZZTIME))"; \
			$(GO) test -run='^$$' -fuzz="^$$fn\$$" -fuzztime=$(FUZZTIME) "$$pkg" || exit 1; \
		done; \
	done

# Quick loop while editing: no installs, no race detector.
unit:
	$(GO) test -count=1 ./...
	cd $(KUBE_TEST) && $(GO) test -count=1 ./...

bench: deps
	$(GO) run ./tools/dramatiq-bench $(BENCH_ARGS)

# Installs only what the demo runs (no browser, Alertmanager or linters);
# the demo builds its own exporter binary into .demo/.
# make demo DEMO_ARGS=--background returns once the demo is up;
# make demo DEMO_BROKER=rabbitmq runs it on RabbitMQ.
demo:
	@scripts/deps.sh --demo
	@scripts/demo.sh $(DEMO_ARGS)

demo-stop:
	@scripts/demo-stop.sh

# Rules, Alertmanager example, dashboards and the jsonnet mixin (mixin/) come
# from alerts/mixin/config.go, with the chart's copies of the rules and
# dashboards; deploy/kubernetes is the chart rendered
# (needs the Helm of scripts/tools.sh).
generate: docs
	$(GO) run ./alerts/gen
	cd $(KUBE_TEST) && $(GO) test -count=1 -run 'TestDeployKubernetesIsTheChart$$' . -update

# The metrics and flag references in docs/ (between their markers in
# docs/metrics.md and docs/flags.md), from the collectors' descriptors and
# the kingpin model; TestDocsAreGenerated fails when they are stale.
docs:
	$(GO) test -count=1 -run '^TestDocsAreGenerated$$' ./cmd/dramatiq_exporter -update

clean:
	rm -rf $(BIN) .build dist
