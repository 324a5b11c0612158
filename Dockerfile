# syntax=docker/dockerfile:1
# eleanor-ledger: `docker build -t eleanor-ledger .`
#
# Stage 1 builds the release binaries with the registry and target directory in BuildKit cache
# mounts, so a rebuild after a source change recompiles only this crate. Stage 2 is a slim
# Debian with the binaries, a non-root user and the /data volume for the embedded backend.
# The binaries are named, not globbed: tests/k8s_manifests.rs checks each is a [[bin]] of
# Cargo.toml and that every [[bin]] is in the image.

# Base images are named by tag. Pin them by digest where the image is built (a digest could not
# be looked up and checked where this file was written, and an unchecked one is worse than none):
# `docker buildx imagetools inspect rust:1.95-slim-bookworm` prints it; then write
# `FROM rust:1.95-slim-bookworm@sha256:<digest>` (and likewise for debian:bookworm-slim).
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin ledger-server --bin ledger-init --bin ledger-verify \
    && mkdir -p /out \
    && cp target/release/ledger-server target/release/ledger-init target/release/ledger-verify /out/

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 ledger \
    && useradd --system --uid 10001 --gid ledger --home-dir /data --shell /usr/sbin/nologin ledger \
    && mkdir -p /data \
    && chown ledger:ledger /data
COPY --from=build /out/ /usr/local/bin/
USER 10001:10001
ENV ELEANOR_LEDGER_LISTEN=0.0.0.0:8080 \
    ELEANOR_LEDGER_DATA_DIR=/data \
    ELEANOR_LEDGER_LOG_FORMAT=json
VOLUME ["/data"]
EXPOSE 8080
# The binary probes itself (GET /livez on loopback, `ledger-server --probe`): no curl or shell
# in the image. /livez, as the liveness probe: a storage outage does not make a container
# unhealthy (/health, the readiness check, says that).
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/ledger-server", "--probe"]
# SIGTERM: stop accepting, finish in-flight batches, exit 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/ledger-server"]
