# The configuration each benchmark gives each proxy, in one place so that
# bench/run.sh and bench/instructions.sh measure the same set-ups. Sourced,
# not run. Every proxy has one worker and round-robins over three backends
# with health checks on. Each function writes one file.
#
# Two settings, read by the functions, set by the caller before calling:
# - PROXY_THREADS (default 1): workers of each proxy (nginx processes,
#   HAProxy threads, lb and bare Pingora threads);
# - HEADERS (default `lb-only`): which proxies add forwarding headers.
#   `lb-only`: lb adds X-Forwarded-For/-Proto/-Host and X-Request-Id, the
#   peers add none (what each does out of the box); `minimal`: none adds
#   any (lb with `headers` off); `like-for-like`: nginx and HAProxy are
#   configured to add the same four headers lb adds.
# - LB_SERVER_EXTRA (default empty): one more line of lb's `server:`
#   section, e.g. `work_stealing: false` (bench/runtime.sh).
# And, for bench/tls.sh, a TLS listener beside the plaintext one when
# TLS_PORT is set: TLS_CERT and TLS_KEY (PEM files), TLS_PEM (the two
# concatenated, for HAProxy). TLS 1.2 and 1.3, one cipher each where the
# proxy lets it be chosen (TLS_AES_128_GCM_SHA256 and
# ECDHE-ECDSA-AES128-GCM-SHA256; lb has no cipher setting, so the clients
# offer only these), h2 and http/1.1 by ALPN, session resumption left on
# as each proxy has it by default (nginx with a shared cache, as usually
# deployed): the benchmark's clients never offer a session. Counters for
# bench/tls.sh's checks, when set: NGINX_STATUS_PORT (nginx's stub_status
# on a plaintext port of its own), HAPROXY_STATS_SOCKET (a UNIX socket).
PROXY_THREADS=${PROXY_THREADS:-1}
HEADERS=${HEADERS:-lb-only}
TLS_PORT=${TLS_PORT:-}

# wait_port PORT: waits up to 10 s for something to accept on 127.0.0.1:PORT;
# exits the script, naming it, when nothing does.
wait_port() {
  for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done
  echo "${0##*/}: nothing listens on $1" >&2; exit 1
}

# backends_conf FILE DIR B1 B2 B3: one nginx answering `return 200` on three
# ports, in the background.
backends_conf() {
  cat > "$1" <<EOF
worker_processes 1;
daemon on;
pid $2/nginx.pid;
error_log $2/error.log warn;
events { worker_connections 20000; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$3; location / { return 200 "ok\n"; } }
  server { listen 127.0.0.1:$4; location / { return 200 "ok\n"; } }
  server { listen 127.0.0.1:$5; location / { return 200 "ok\n"; } }
}
EOF
}

# nginx_proxy_conf FILE DIR PORT MODE B1 B2 B3: nginx as a proxy with an
# upstream keep-alive pool. MODE `background` (a daemon with its master) or
# `foreground` (one process, for valgrind).
nginx_proxy_conf() {
  local process="daemon on;"
  [ "$4" = foreground ] && process="daemon off;
master_process off;"
  local headers=""
  [ "$HEADERS" = like-for-like ] && headers="proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$host;
      proxy_set_header X-Request-Id \$request_id;
      add_header X-Request-Id \$request_id always;"
  local tls=""
  [ -n "$TLS_PORT" ] && tls="listen 127.0.0.1:$TLS_PORT ssl http2;
    ssl_certificate $TLS_CERT;
    ssl_certificate_key $TLS_KEY;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256;
    ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;
    ssl_session_cache shared:SSL:10m;"
  local status=""
  [ -n "${NGINX_STATUS_PORT:-}" ] && status="server { listen 127.0.0.1:$NGINX_STATUS_PORT; location / { stub_status; } }"
  cat > "$1" <<EOF
worker_processes $PROXY_THREADS;
worker_rlimit_nofile 65536;
$process
pid $2/nginx.pid;
error_log $2/error.log warn;
events { worker_connections 20000; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  upstream backends {
    server 127.0.0.1:$5 max_fails=3 fail_timeout=10s;
    server 127.0.0.1:$6 max_fails=3 fail_timeout=10s;
    server 127.0.0.1:$7 max_fails=3 fail_timeout=10s;
    keepalive 128;
  }
  server {
    listen 127.0.0.1:$3;
    $tls
    location / {
      proxy_pass http://backends;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      $headers
    }
  }
  $status
}
EOF
}

# haproxy_cfg FILE PORT B1 B2 B3: balance roundrobin, http-reuse always.
haproxy_cfg() {
  local headers=""
  [ "$HEADERS" = like-for-like ] && headers="option forwardfor
  http-request set-header X-Forwarded-Proto %[ssl_fc,iif(https,http)]
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  unique-id-format %{+X}o\\ %ci:%cp_%fi:%fp_%Ts_%rt:%pid
  unique-id-header X-Request-Id
  http-response set-header X-Request-Id %[unique-id]"
  local tls="" tls_global=""
  [ -n "$TLS_PORT" ] && tls="bind 127.0.0.1:$TLS_PORT ssl crt $TLS_PEM alpn h2,http/1.1" \
    && tls_global="ssl-default-bind-ciphers ECDHE-ECDSA-AES128-GCM-SHA256
  ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256
  ssl-default-bind-options ssl-min-ver TLSv1.2
  ${HAPROXY_STATS_SOCKET:+stats socket $HAPROXY_STATS_SOCKET level admin}"
  cat > "$1" <<EOF
global
  nbthread $PROXY_THREADS
  log stderr format short local0 err
  $tls_global
defaults
  mode http
  timeout connect 2s
  timeout client 120s
  timeout server 30s
  timeout http-keep-alive 120s
  option http-keep-alive
frontend fe
  bind 127.0.0.1:$2
  $tls
  $headers
  default_backend be
backend be
  balance roundrobin
  http-reuse always
  option httpchk GET /
  server b1 127.0.0.1:$3 check inter 2s
  server b2 127.0.0.1:$4 check inter 2s
  server b3 127.0.0.1:$5 check inter 2s
EOF
}

# lb_yaml FILE NAME PORT ADMIN_PORT B1 B2 B3: lb; NAME keeps its pid file and
# upgrade socket apart from another lb's in the same directory.
lb_yaml() {
  local dir headers=""
  dir=$(dirname "$1")
  [ "$HEADERS" = minimal ] && headers="headers: {forwarded: false, request_id: false}"
  local listeners="[127.0.0.1:$3]"
  [ -n "$TLS_PORT" ] && listeners="
  - 127.0.0.1:$3
  - {address: 127.0.0.1:$TLS_PORT, tls: {certificates: [{cert: $TLS_CERT, key: $TLS_KEY}]}, http2: true}"
  cat > "$1" <<EOF
server:
  threads: $PROXY_THREADS
  pid_file: $dir/$2.pid
  upgrade_sock: $dir/${2}_upgrade.sock
  grace_period_seconds: 1
  graceful_shutdown_timeout_seconds: 1
  ${LB_SERVER_EXTRA:-}
listeners: $listeners
backends: [127.0.0.1:$5, 127.0.0.1:$6, 127.0.0.1:$7]
health_check: {path: /, interval: 2s}
timeouts: {client_idle: 120s}
limits: {max_connections: 30000}
admin: {listen: 127.0.0.1:$4}
$headers
EOF
  # LB_EXTRA_YAML: a file appended to lb's config, with B1, B2 and B3 standing
  # for the backends' ports (bench/routes.sh writes one with many routes).
  if [ -n "${LB_EXTRA_YAML:-}" ]; then
    sed -e "s/B1/$5/g; s/B2/$6/g; s/B3/$7/g" "$LB_EXTRA_YAML" >> "$1"
  fi
}
