# dramatiq_exporter: a static binary on a distroless base, running as an
# unprivileged user. Build: docker build -t dramatiq_exporter .
# deploy/deploy_test.go checks this file against the code (port, paths,
# build flags), since no Docker engine runs in CI.

ARG GO_VERSION=1.26

# The build stage runs on the builder's own platform and cross-compiles
# for the target (Go needs no emulation for that), so one
#   docker buildx build --platform linux/amd64,linux/arm64 .
# builds each image's binary natively fast. TARGETOS, TARGETARCH and
# TARGETVARIANT (v7 of linux/arm/v7) are set by BuildKit for each platform.
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
# Dependencies first, so editing code does not invalidate this layer.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# .dockerignore leaves .git out, so the revision comes as an argument:
#   --build-arg REVISION=$(git rev-parse HEAD)
# The version is the VERSION file's unless given.
ARG VERSION
ARG REVISION
ARG BRANCH
ARG TARGETOS TARGETARCH TARGETVARIANT
# make build: the Makefile's static build (CGO_ENABLED=0, -trimpath, the
# version ldflags), the same as make release's binaries.
RUN GOOS="$TARGETOS" GOARCH="$TARGETARCH" \
      GOARM="$(if [ "$TARGETARCH" = arm ]; then echo "${TARGETVARIANT#v}"; fi)" \
      make build BIN=/out/dramatiq_exporter BUILD_USER=docker

# distroless/static: CA certificates (for rediss:// and TLS to PostgreSQL),
# tzdata, /etc/passwd with the nonroot user, and nothing else: no shell.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/dramatiq_exporter /bin/dramatiq_exporter
USER 65532:65532
EXPOSE 10191
# The exporter's own health: does the process serve HTTP? `healthcheck`
# GETs /-/healthy on the listen address (https when --web.config.file turns
# TLS on), since the image has no curl. It touches neither Redis nor the
# database: an exporter restarted because Redis is down could not report
# that Redis is down, and a probe every 30 s in every container must cost
# the broker nothing. If you change the listen address, set it in the config
# file (web.listen_addresses) or pass the same flag here.
HEALTHCHECK --interval=30s --timeout=10s --start-period=10s --retries=3 \
  CMD ["/bin/dramatiq_exporter", "healthcheck"]
ENTRYPOINT ["/bin/dramatiq_exporter"]
