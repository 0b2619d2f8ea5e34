# lb and the demo backend `be` in one image.
#   docker build -t lb .
#   docker run --rm -p 8000:8000 lb
# The image's /etc/lb/lb.yaml is deploy/lb.docker.yaml: conf/lb.yaml (backends
# on 127.0.0.1:8080-8082) plus the admin API on 127.0.0.1:9000 for the
# HEALTHCHECK. Mount your own config there, or pass flags such as
# `-c /etc/lb/lb.yaml --backend host:port`. deploy/docker-compose.yml runs the
# whole demo (lb and a scalable `be` service); deploy/kubernetes/ has
# manifests; deploy/README.md explains both, and upgrades.

# ---- build ----
FROM rust:1-bookworm AS build
# Pingora's zlib-ng build (libz-ng-sys) needs cmake; the image has a C compiler.
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, in their own layer, so a change under src/ does not
# download them again.
COPY Cargo.toml Cargo.lock ./
RUN cargo fetch --locked
COPY src ./src
# The release profile uses fat LTO and one codegen unit: slow, but small and fast.
RUN cargo build --release --locked --bins

# ---- runtime ----
FROM debian:bookworm-slim
# ca-certificates: the system roots, for backends over TLS (backend_tls
#   without a ca file).
# tini: PID 1, passes signals on and reaps every process, the old lb of an
#   in-place upgrade included.
# curl: the HEALTHCHECK. procps: pgrep and pkill, for lb-entrypoint.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini curl procps ca-certificates \
    && apt-get clean && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 lb \
    && useradd --uid 10001 --gid lb --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin lb
COPY --from=build /src/target/release/lb /src/target/release/be /usr/local/bin/
# lb-entrypoint: runs lb and keeps the container alive through an in-place
# upgrade. lb-upgrade: the in-place upgrade in one command
# (`docker exec CONTAINER lb-upgrade -c /etc/lb/lb.yaml`).
COPY deploy/lb-entrypoint scripts/lb-upgrade /usr/local/bin/
RUN chmod 0755 /usr/local/bin/lb-entrypoint /usr/local/bin/lb-upgrade
COPY deploy/lb.docker.yaml /etc/lb/lb.yaml
# Pingora's pid file and upgrade socket (server.pid_file, server.upgrade_sock)
# default to /tmp/lb.pid and /tmp/lb_upgrade.sock; /tmp in debian:bookworm-slim
# is world-writable (1777), so the non-root user can write them.
USER 10001:10001
# 8000: clients. 443: HTTPS and HTTP/2, when the config has a TLS listener
# there (deploy/lb.compose.yaml does, with certificates mounted at
# /etc/lb/certs). 9000: the admin API (on loopback in the default config).
EXPOSE 8000 443 9000
# Needs an admin listener on port 9000 that 127.0.0.1 reaches (loopback or
# 0.0.0.0), as the default config and deploy/lb.compose.yaml have. A config
# of your own without one makes the container "unhealthy": add it, or run
# with --no-healthcheck. GET /healthz needs no token.
HEALTHCHECK --interval=5s --timeout=2s --start-period=5s --retries=3 \
    CMD curl -fsS http://127.0.0.1:9000/healthz || exit 1
# Pingora: SIGTERM = graceful shutdown, SIGINT = fast shutdown, SIGQUIT =
# graceful upgrade. lb's defaults, grace_period_seconds 5 and
# graceful_shutdown_timeout_seconds 3, add up to 8 s, shorter than Docker's
# default 10 s stop timeout, so `docker stop` does not cut a shutdown short.
# Raise the stop timeout (docker stop -t, compose stop_grace_period) if you
# raise those settings. tini passes SIGTERM to lb-entrypoint, which passes it
# to every lb process.
STOPSIGNAL SIGTERM
# The arguments (CMD, `docker run lb ARGS`, compose `command`, Kubernetes
# `args`) are lb's. To run `be` instead: --entrypoint be, or
# command: ["tini", "--", "be"] in Kubernetes.
ENTRYPOINT ["tini", "--", "lb-entrypoint"]
CMD ["-c", "/etc/lb/lb.yaml"]
