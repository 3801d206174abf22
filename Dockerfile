# pm-runtime as PID 1 of a Node image, running the example ecosystem.
# Base images are build args so CI can substitute local stand-ins (no registry pulls there):
#   docker build --build-arg BUILDER_IMAGE=… --build-arg RUNTIME_IMAGE=… .
# Classic-builder syntax only (no BuildKit features), so it builds everywhere.
ARG BUILDER_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=node:20-bookworm-slim

FROM ${BUILDER_IMAGE} AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY link ./link
COPY src ./src
# A static binary (glibc crt-static) drops into any image: COPY --from=… /pm-runtime …
RUN target="$(rustc -vV | sed -n 's/^host: //p')" \
 && RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked --target "$target" \
 && cp "target/$target/release/pm-runtime" /pm-runtime \
 && /pm-runtime --version

FROM ${RUNTIME_IMAGE}
COPY --from=builder /pm-runtime /usr/local/bin/pm-runtime
WORKDIR /app
COPY ecosystem.config.yml ./
COPY examples/basic ./examples/basic
# The start-order example (init job, sidecar, probes), which the container test also runs.
COPY examples/08-order-and-health ./examples/08-order-and-health
RUN chown -R node:node /app
USER node
ENV PORT=8080 PM2_HOME=/home/node/.pm2
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s CMD ["pm-runtime", "ping"]
ENTRYPOINT ["pm-runtime"]
CMD ["start", "ecosystem.config.yml"]
