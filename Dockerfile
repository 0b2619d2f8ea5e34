# lb and the demo backend `be` in one image.
#   docker build -t lb .
#   docker run --rm -p 8000:8000 lb
# The image's /etc/lb/lb.yaml is conf/lb.yaml, whose backends are on
# 127.0.0.1:8080-8082; mount your own config there, or pass flags such as
# `-c /etc/lb/lb.yaml --backend host:port`. deploy/docker-compose.yml runs the
# whole demo (lb and three `be` containers).

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
# No ca-certificates: lb and be speak plain HTTP only.
RUN groupadd --gid 10001 lb \
    && useradd --uid 10001 --gid lb --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin lb
COPY --from=build /src/target/release/lb /src/target/release/be /usr/local/bin/
COPY conf/lb.yaml /etc/lb/lb.yaml
# Pingora's pid file and upgrade socket (server.pid_file, server.upgrade_sock)
# default to /tmp/lb.pid and /tmp/lb_upgrade.sock; /tmp in debian:bookworm-slim
# is world-writable (1777), so the non-root user can write them.
USER 10001:10001
EXPOSE 8000
# Pingora: SIGTERM = graceful shutdown, SIGINT = fast shutdown, SIGQUIT =
# graceful upgrade. lb's defaults, grace_period_seconds 5 and
# graceful_shutdown_timeout_seconds 3, add up to 8 s, shorter than Docker's
# default 10 s stop timeout, so `docker stop` does not cut a shutdown short.
# Raise the stop timeout (docker stop -t, compose stop_grace_period) if you
# raise those settings.
STOPSIGNAL SIGTERM
# No HEALTHCHECK yet: a later change adds /healthz on an admin listener.
ENTRYPOINT ["lb"]
CMD ["-c", "/etc/lb/lb.yaml"]
