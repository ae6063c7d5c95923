# syntax=docker/dockerfile:1
#
# agentapi container image: a static Go binary on distroless, run as a
# non-root user. Build with
#
#   docker build --build-arg VERSION=$(git describe --tags --always) -t agentapi .
#
# internal/systemtest/deploy_test.go builds the binary with the same flags as the
# build stage below and checks that it is static, that the version is stamped,
# and that the server runs on a read-only root filesystem; keep the two in step.

# The golang images set GOTOOLCHAIN=local: their Go must be at least go.mod's
# go line (pull a fresh image if a cached one is older).
ARG GO_VERSION=1.26

# --- build ---------------------------------------------------------------
# Runs on the builder's own platform and cross-compiles (no cgo, so no C
# toolchain for the target is needed).
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src

# Dependencies first, so editing the code does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download

COPY . .

ARG VERSION=dev
ARG TARGETOS
ARG TARGETARCH
# CGO_ENABLED=0: a static binary that needs no libc in the final image (the
# SQLite driver is pure Go). -trimpath keeps build paths out of the binary;
# -s -w drop the symbol table and DWARF. -buildvcs=false: .git is not in the
# build context (.dockerignore); the version comes from VERSION instead.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X github.com/agentapi/agentapi/internal/cli.Version=${VERSION}" \
      -o /out/agentapi ./cmd/agentapi \
 && mkdir -p /out/data

# --- runtime -------------------------------------------------------------
# distroless/static: CA certificates (for HTTPS to the model provider),
# tzdata and an /etc/passwd with the nonroot user (65532); no shell, no
# package manager.
FROM gcr.io/distroless/static-debian12:nonroot

ARG VERSION=dev
LABEL org.opencontainers.image.title="agentapi" \
      org.opencontainers.image.description="AI Agent API gateway" \
      org.opencontainers.image.version="${VERSION}"

COPY --from=build /out/agentapi /agentapi
# The data directory is the working directory, so the default SQLite file
# (DATABASE_URL=agentapi.db) and an optional .env are looked up there. It is
# the only place the server writes to; mount a volume here when using SQLite.
COPY --from=build --chown=65532:65532 /out/data /data
WORKDIR /data

# Numeric, so Kubernetes' runAsNonRoot can verify it without a runAsUser.
USER 65532:65532

ENV HOST=0.0.0.0 \
    PORT=8000
EXPOSE 8000

# The binary checks GET /health on HOST:PORT itself: the image has no curl.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/agentapi", "healthcheck"]

# The server drains in-flight requests on SIGTERM (SHUTDOWN_TIMEOUT, 30s by
# default); give `docker stop` a longer --time than that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/agentapi"]
CMD ["serve"]
