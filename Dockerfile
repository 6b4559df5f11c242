# Herald's image: a release binary with every runtime feature, on distroless.
#
#   docker build -t herald .
#   docker run --rm -p 8080:8080 -e HERALD_JWT_SECRET=$(openssl rand -hex 32) herald
#
# The binary needs glibc and libgcc_s at run time, nothing else: OpenSSL (Web Push payloads,
# librdkafka) and zlib are built from source and linked in; HTTPS, rediss:// and the Web Push
# client use rustls; herald.js, the other static files and docs/openapi.yaml are compiled into
# the binary. So the final image is distroless/cc: glibc, libgcc, CA certificates, no shell, no
# package manager, running as the numeric user nonroot (65532). deploy/validate lints this file
# with hadolint.

# Debian 12, like the runtime image below: the binary is linked against the same glibc.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY static ./static
# The OpenAPI description, served at /openapi.yaml (compiled in like static/).
COPY docs/openapi.yaml ./docs/openapi.yaml
# Cargo.toml names the benchmarks, so their sources must be here for cargo to read it.
COPY benches ./benches
# Every feature a server uses, named so the image keeps them if the defaults change: jemalloc
# (less memory per idle stream) and kafka (Kafka ingest; librdkafka built from source).
# `bench-internals` only opens internals to the benchmarks and stays out.
RUN cargo build --release --locked --bin herald --no-default-features --features jemalloc,kafka

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/herald /usr/local/bin/herald
# nonroot's numeric id: Kubernetes' runAsNonRoot can check a number, not a name.
USER 65532:65532
ENV HERALD_LISTEN=0.0.0.0:8080
EXPOSE 8080
# `herald health` asks this node's /healthz (HERALD_LISTEN, HERALD_BASE_PATH); exec form, as
# the image has no shell. `herald health --ready` asks /readyz (used by docker-compose.yml).
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/herald", "health"]
# SIGTERM (docker stop) ends the streams and drains for --drain-timeout (10 s): give
# `docker stop -t` / stop_grace_period more than that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/herald"]
CMD ["serve"]
