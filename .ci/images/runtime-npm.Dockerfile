# CI-only stand-in for node:20-bookworm-slim with its npm (Debian's nodejs package has none).
FROM local/node:bookworm
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends npm \
 && rm -rf /var/lib/apt/lists/*
