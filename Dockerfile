# One image for every orelink role: `orelink run <role>` (see k8s/).
# Build: docker build -t orelink .   (the topology, schemas and catalog are
# embedded in the binary; a mounted topology.dir overrides them).

FROM rust:1.88-bookworm AS build
# librdkafka is built from source by rdkafka-sys (configure + make; OpenSSL vendored).
RUN apt-get update && apt-get install -y --no-install-recommends cmake pkg-config perl && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY services services
COPY schemas schemas
COPY topology topology
COPY tests tests
RUN cargo build --release --locked -p orelink && strip target/release/orelink

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin orelink
COPY --from=build /src/target/release/orelink /usr/local/bin/orelink
USER 10001
ENTRYPOINT ["/usr/local/bin/orelink"]
CMD ["run", "all"]
