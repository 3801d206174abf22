# CI-only stand-in for node:20-bookworm-slim (no registry pulls here): Debian's nodejs and a `node` user.
FROM local/debian:bookworm
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd -g 1000 node && useradd -u 1000 -g node -m -s /bin/sh node
CMD ["node"]
