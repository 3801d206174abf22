# CI-only stand-in for rust:1-bookworm: Debian's rustc-web/cargo-web (1.96 from bookworm-security).
FROM local/debian:bookworm
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends cargo-web rustc-web gcc libc6-dev ca-certificates \
 && rm -rf /var/lib/apt/lists/*
