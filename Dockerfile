# Multi-stage build of the paygate image: a static-enough release binary on a distroless
# base, running as the non-root user 65532. Build: docker build -t paygate .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin paygate

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/paygate /usr/local/bin/paygate
USER 65532:65532
EXPOSE 50051 9090
ENTRYPOINT ["/usr/local/bin/paygate"]
CMD ["serve"]
