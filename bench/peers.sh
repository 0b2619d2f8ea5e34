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
PROXY_THREADS=${PROXY_THREADS:-1}
HEADERS=${HEADERS:-lb-only}

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
    location / {
      proxy_pass http://backends;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      $headers
    }
  }
}
EOF
}

# haproxy_cfg FILE PORT B1 B2 B3: balance roundrobin, http-reuse always.
haproxy_cfg() {
  local headers=""
  [ "$HEADERS" = like-for-like ] && headers="option forwardfor
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  unique-id-format %{+X}o\\ %ci:%cp_%fi:%fp_%Ts_%rt:%pid
  unique-id-header X-Request-Id
  http-response set-header X-Request-Id %[unique-id]"
  cat > "$1" <<EOF
global
  nbthread $PROXY_THREADS
  log stderr format short local0 err
defaults
  mode http
  timeout connect 2s
  timeout client 120s
  timeout server 30s
  timeout http-keep-alive 120s
  option http-keep-alive
frontend fe
  bind 127.0.0.1:$2
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
  cat > "$1" <<EOF
server:
  threads: $PROXY_THREADS
  pid_file: $dir/$2.pid
  upgrade_sock: $dir/${2}_upgrade.sock
  grace_period_seconds: 1
  graceful_shutdown_timeout_seconds: 1
listeners: [127.0.0.1:$3]
backends: [127.0.0.1:$5, 127.0.0.1:$6, 127.0.0.1:$7]
health_check: {path: /, interval: 2s}
timeouts: {client_idle: 120s}
limits: {max_connections: 30000}
admin: {listen: 127.0.0.1:$4}
$headers
EOF
}
