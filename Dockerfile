# dramatiq_exporter: a static binary on a distroless base, running as an
# unprivileged user. Build: docker build -t dramatiq_exporter .
# deploy/deploy_test.go checks this file against the code (port, paths,
# build flags), since no Docker engine runs in CI.

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
# Dependencies first, so editing code does not invalidate this layer.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG REVISION=unknown
ARG BRANCH=unknown
# CGO_ENABLED=0: the binary needs no libc, so it runs on a base without one.
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w \
        -X github.com/prometheus/common/version.Version=${VERSION} \
        -X github.com/prometheus/common/version.Revision=${REVISION} \
        -X github.com/prometheus/common/version.Branch=${BRANCH} \
        -X github.com/prometheus/common/version.BuildUser=docker \
        -X github.com/prometheus/common/version.BuildDate=unknown" \
      -o /out/dramatiq_exporter ./cmd/dramatiq_exporter

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
