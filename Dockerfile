# syntax=docker/dockerfile:1.7
# The paygate image: a release binary on distroless (glibc, CA certificates, no shell), as the
# non-root user 65532. Build: docker build -t paygate . (BuildKit). The build step is the
# command CI runs (.ci/run takes it from this file), and CI starts that binary on the rendered
# Helm chart. Base images are pinned by digest; update tag and digest together.
FROM rust:1.95-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1 AS build
WORKDIR /src
COPY . .
# The registry and target directories are BuildKit caches: a source change recompiles paygate,
# not its dependencies.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin paygate && cp target/release/paygate ./paygate

FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="paygate" \
      org.opencontainers.image.description="gRPC gateway for subscription cancels and refunds at payment providers (Antom, PayXpert)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
COPY --from=build /src/paygate /usr/local/bin/paygate
USER 65532:65532
# gRPC, provider notifications, Prometheus metrics.
EXPOSE 50051 8081 9090
# A gRPC health client in the binary: distroless has no shell or curl.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/paygate", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/paygate"]
CMD ["serve"]
