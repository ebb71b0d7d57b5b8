# syntax=docker/dockerfile:1
#
# One image for all of Mentat: mt, the four services and the demo app.
#   docker build -t mentat:local .
#   docker run --rm mentat:local                # mt --help
#   docker run --rm mentat:local mentat-router --help

# ---- build ------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# The registry and git caches survive between builds; target/ stays in the
# layer so that a changed source tree can never yield stale binaries.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    cargo build --release --bins --locked \
 && mkdir -p /out \
 && for bin in mt mentat-planner mentat-executor mentat-health-watcher mentat-notifier \
               mentat-router mentat-demo-app; do \
        cp "target/release/$bin" /out/; \
    done

# ---- runtime ----------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# Non-root user; /var/lib/mentat is its home and the executor's data dir
# (a named volume mounted there starts with this ownership).
RUN groupadd --system --gid 10001 mentat \
 && useradd --system --uid 10001 --gid mentat --home-dir /var/lib/mentat \
        --no-create-home --shell /usr/sbin/nologin mentat \
 && mkdir -p /var/lib/mentat \
 && chown mentat:mentat /var/lib/mentat
# The executor starts replica commands through PATH: mentat-demo-app is found
# here, next to mt.
COPY --from=builder /out/ /usr/local/bin/
USER 10001:10001
WORKDIR /var/lib/mentat
CMD ["mt", "--help"]
