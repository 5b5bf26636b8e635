# syntax=docker/dockerfile:1
#
# blob-backup-operator image: a statically linked binary on distroless/static, run as 65532.
#
# The builder is rust:alpine because its native target is x86_64/aarch64-unknown-linux-musl,
# which links statically by default; the C dependencies, ring (the TLS provider of kube and
# reqwest) and mimalloc (the allocator: musl's own is slow under contention), build there
# with gcc and musl-dev. No OpenSSL, no glibc at run time.
# Build for another architecture with `docker buildx build --platform linux/arm64 .`.

ARG RUST_VERSION=1

FROM rust:${RUST_VERSION}-alpine AS builder
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
# --no-default-features: the image carries no vault emulator (DESIGN.md section 4).
# Cache mounts keep the registry and target directory between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --no-default-features --bin blob-backup-operator \
 && install -D -m 0755 target/release/blob-backup-operator /out/blob-backup-operator

# distroless/static: CA certificates (Azure's TLS), /etc/passwd with nonroot (65532), no shell.
FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="blob-backup-operator" \
      org.opencontainers.image.description="Kubernetes operator that makes Azure Blob backup declarative" \
      org.opencontainers.image.source="https://github.com/blob-backup-operator/blob-backup-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/blob-backup-operator /usr/local/bin/blob-backup-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/blob-backup-operator"]
CMD ["run"]
