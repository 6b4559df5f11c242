# Herald: build a release binary (default features: jemalloc, Kafka ingest with librdkafka and
# OpenSSL built from source and linked in), then ship it on a slim Debian.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY static ./static
COPY benches ./benches
RUN cargo build --release --locked --bin herald

FROM debian:bookworm-slim
# CA certificates for TLS to Redis (rediss://) and to Kafka brokers (security.protocol=ssl).
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 herald
COPY --from=build /src/target/release/herald /usr/local/bin/herald
USER herald
ENV HERALD_LISTEN=0.0.0.0:8080
EXPOSE 8080
# `herald health` asks this node's /healthz (HERALD_LISTEN, HERALD_BASE_PATH): no curl needed.
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/herald", "health"]
ENTRYPOINT ["/usr/local/bin/herald"]
CMD ["serve"]
