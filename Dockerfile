# syntax=docker/dockerfile:1
# One recipe for every service of the workspace. Build from the repository root, naming the
# service and its two ports (compose.yaml passes the same; tests/deploy checks they agree with the
# binaries and the manifests):
#   docker build --build-arg SERVICE=recommendations --build-arg PORT=50051 --build-arg ADMIN_PORT=9464 \
#     -t bookshop/recommendations .
#   docker build --build-arg SERVICE=marketplace --build-arg PORT=8080 --build-arg ADMIN_PORT=9465 \
#     -t bookshop/marketplace .

# rust:1.95-slim-bookworm. Pinned by digest so a rebuild is reproducible; Renovate/Dependabot
# bump the digest. Its Rust is at least the workspace's rust-version (tests/deploy checks).
FROM rust:1.95-slim-bookworm@sha256:d7482085ff5b415f84dba5647ae71606650bdef00db7aeb69f4b3d170c3e4082 AS chef
RUN cargo install --locked cargo-chef --version 0.1.78
WORKDIR /src

# A recipe of the workspace's dependencies: it changes only when a Cargo.toml or Cargo.lock does,
# and it is the same for every service, so their builds share it.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
# The package and binary to build: recommendations or marketplace.
ARG SERVICE
RUN test -n "${SERVICE}" || { echo "pass --build-arg SERVICE=<recommendations|marketplace>" >&2; exit 1; }
COPY --from=planner /src/recipe.json recipe.json
# Dependencies alone, in their own layer: editing our code does not rebuild them.
RUN cargo chef cook --release --locked --recipe-path recipe.json --package "${SERVICE}"
COPY . .
RUN cargo build --release --locked --package "${SERVICE}" --bin "${SERVICE}"

# gcr.io/distroless/cc-debian12:nonroot: glibc and CA roots, no shell, uid 65532.
# Pinned by digest; Renovate/Dependabot bump it.
FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f
# A stage sees only the ARGs it declares itself.
ARG SERVICE
# The service's own listener (GRPC_PORT or HTTP_PORT) and its admin listener (ADMIN_PORT:
# /metrics, /healthz, /readyz), at the binary's defaults.
ARG PORT
ARG ADMIN_PORT
# One path for every service: an exec-form ENTRYPOINT cannot name a build ARG.
COPY --from=builder /src/target/release/${SERVICE} /usr/local/bin/service
# OCI annotations (`docker inspect`, registries, scanners). The version defaults to the
# workspace's ([workspace.package] in Cargo.toml; tests/deploy checks they agree); a release
# build passes its own with --build-arg VERSION=….
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="${SERVICE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/example/bookshop" \
      org.opencontainers.image.licenses="Apache-2.0"
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd. Nothing is
# written at run time, so the root filesystem can be read-only (as the manifests and compose run it).
USER 65532:65532
EXPOSE ${PORT} ${ADMIN_PORT}
# Kubernetes probes gRPC health or /readyz and the admin /healthz itself, and Docker's
# HEALTHCHECK would need a shell or a client binary, which distroless does not have.
# checkov:skip=CKV_DOCKER_2:probes live in the Deployment (native gRPC/HTTP); no shell to run a HEALTHCHECK
ENTRYPOINT ["/usr/local/bin/service"]
