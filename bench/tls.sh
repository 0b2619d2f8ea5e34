#!/usr/bin/env bash
# The TLS and HTTP/2 benchmark: lb against nginx and HAProxy terminating TLS
# in front of the same three nginx backends as bench/run.sh (proxy set-ups
# from bench/peers.sh, plus a TLS listener), one worker each, the proxy
# pinned to the last CPU and the load generator and backends to the others,
# rounds interleaved.
#
#   bench/tls.sh [--rounds N] [--duration SECS] [--connections N] [--quick]
#                [--headers lb-only|minimal|like-for-like] [--threads N]
#                [--lb PATH] [--only nginx,haproxy,lb]
#   (or bench/run.sh --tls with run.sh's options)
#
# - one certificate for all: ECDSA P-256, self-signed, made with the openssl
#   CLI at run time in a temporary directory;
# - one cipher for all: TLS_AES_128_GCM_SHA256 (TLS 1.3) and
#   ECDHE-ECDSA-AES128-GCM-SHA256 (TLS 1.2), key exchange X25519. nginx and
#   HAProxy allow only these ciphers; lb has no cipher setting, so every
#   client offers only them (h2load's --ciphers, --tls13-ciphers and
#   --groups; an OpenSSL configuration file for wrk) and no server can
#   choose another. The checks print what each proxy negotiates;
# - the lines, each with the proxy's CPU time (user + system, from /proc,
#   as bench/run.sh) divided by the requests it answered:
#     plain keep-alive  wrk -c64 over http: run.sh's line, the ratio to compare with
#     plain new conn    h2load --h1 -c16, `Connection: close`: a TCP connection a request
#     TLS 1.3 handshake the same over https: a full TLS 1.3 handshake a request
#     TLS 1.2 handshake the same, TLS 1.2
#     TLS keep-alive    wrk -c64 over https (TLS 1.3, HTTP/1.1)
#     h2                h2load -c16 -m10 over https (TLS 1.3, ALPN h2)
#   On one CPU the load generator cannot make handshakes as fast as a proxy
#   takes them (the client's ECDSA verify costs more than the server's
#   sign), so the handshake lines compare CPU per handshake and handshakes
#   per core (1e6 / CPU µs), not the rate reached;
# - no resumption: h2load resumes by default (it keeps each client's SSL
#   object, and its session, across reconnections); a small preloaded shim
#   built here drops the session at each connection's start. The checks
#   prove it before measuring: each client command runs against a probe
#   nginx that allows resumption (shared cache and tickets) and logs
#   $ssl_session_reused, which must be "." on every connection, while
#   h2load without the shim and an `openssl s_client -sess_in` control must
#   show resumptions. During the runs, the handshakes each proxy counted
#   (nginx: accepted connections; HAProxy: CumSslConns and
#   SslFrontendSessionReuse_pct; lb: lb_tls_handshakes_total, outcome ok) are printed
#   beside the requests it answered;
# - bounds: the keep-alive and h2 runs last --duration seconds; the
#   new-connection runs (h2load cannot end a timed run whose clients
#   reconnect) send a count of requests sized from the warm-up's rate to
#   last about as long; every run is also under `timeout`;
# - the machine may be shared: before each run the 1-minute load average
#   and the share of CPU busy over half a second (this benchmark idle) are
#   taken, and their ranges printed.
# Prints markdown tables. Needs nginx, haproxy, wrk, nghttp2-client
# (h2load), openssl, gcc, curl, python3 (Debian packages); installs what is
# missing, and builds lb (cargo build --release; CARGO_TARGET_DIR is
# honoured) unless --lb names a binary.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/peers.sh

rounds=3
duration=10
connections=64
lb_binary=
only=nginx,haproxy,lb
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --connections) connections=$2; shift 2 ;;
    --quick) rounds=1; duration=5; shift ;;
    --headers) HEADERS=$2; shift 2 ;;
    --threads) PROXY_THREADS=$2; shift 2 ;;
    --lb) lb_binary=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0 ;;
    *) echo "tls: unknown argument $1" >&2; exit 1 ;;
  esac
done
case "$HEADERS" in lb-only|minimal|like-for-like) ;; *) echo "tls: --headers takes lb-only, minimal or like-for-like" >&2; exit 1 ;; esac
IFS=, read -r -a names <<<"$only"

# ---- tools ----
export PATH="$PATH:/usr/sbin:$HOME/.cargo/bin"
need=()
command -v nginx >/dev/null || need+=(nginx)
command -v haproxy >/dev/null || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v openssl >/dev/null || need+=(openssl)
command -v python3 >/dev/null || need+=(python3)
command -v gcc >/dev/null || need+=(gcc)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  echo "tls: installing ${need[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [[ ",$only," == *,lb,* ]]; then
  if [ -z "$lb_binary" ]; then
    cargo build --release --bin lb >/dev/null 2>&1 || cargo build --release --bin lb
    lb_binary=${CARGO_TARGET_DIR:-$PWD/target}/release/lb
  fi
fi
LB=$lb_binary

cpus=$(nproc)
if [ "$cpus" -gt "$PROXY_THREADS" ]; then
  proxy_cpu="$((cpus - PROXY_THREADS))-$((cpus - 1))"; load_cpu="0-$((cpus - PROXY_THREADS - 1))"
  load_threads=$((cpus - PROXY_THREADS))
else
  echo "tls: $PROXY_THREADS proxy threads need more than $cpus CPUs; everything shares them" >&2
  proxy_cpu="0-$((cpus - 1))"; load_cpu=$proxy_cpu; load_threads=1
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d /tmp/lb-tls-bench.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for d in backends nginx probe; do
    [ -f "$work/$d/nginx.pid" ] && nginx -p "$work/$d" -c "$work/$d/nginx.conf" -s stop 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

B1=19401; B2=19402; B3=19403
P_NGINX=19411; P_HAPROXY=19412; P_LB=19413
T_NGINX=19421; T_HAPROXY=19422; T_LB=19423
T_PROBE=19430; NGINX_STATUS=19431; LB_ADMIN=19439
for p in $B1 $B2 $B3 $P_NGINX $P_HAPROXY $P_LB $T_NGINX $T_HAPROXY $T_LB $T_PROBE $NGINX_STATUS $LB_ADMIN; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "tls: port $p is already in use; stop what listens there first" >&2; exit 1
  fi
done
# Every load run ends by itself; `timeout` is the backstop: a timed run's
# duration and 30 s, five times that for a run of a count (sized from the
# warm-up's rate, which a busy machine can cut).
bounded() { timeout -k 5 "$((5 * duration + 30))" "$@"; }

# ---- certificate and client TLS settings ----
mkdir -p "$work/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
  -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout "$work/tls/key.pem" -out "$work/tls/cert.pem" 2>/dev/null
cat "$work/tls/cert.pem" "$work/tls/key.pem" > "$work/tls/haproxy.pem"
TLS_CERT=$work/tls/cert.pem; TLS_KEY=$work/tls/key.pem; TLS_PEM=$work/tls/haproxy.pem
CIPHER13=TLS_AES_128_GCM_SHA256; CIPHER12=ECDHE-ECDSA-AES128-GCM-SHA256; GROUP=X25519
# Offered groups: X25519 first, the one every check expects to be chosen;
# P-256 too, because in TLS 1.2 the certificate's curve must be among the
# client's groups (with X25519 alone every proxy fails the handshake).
GROUPS_OFFERED=X25519:P-256
# wrk has no TLS options: OpenSSL's system_default section sets what it offers.
client_conf() { # FILE MIN MAX
  cat > "$1" <<EOF
openssl_conf = default_conf
[default_conf]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
MinProtocol = $2
MaxProtocol = $3
CipherString = $CIPHER12
Ciphersuites = $CIPHER13
Groups = $GROUPS_OFFERED
EOF
}
client_conf "$work/tls/client13.cnf" TLSv1.3 TLSv1.3
h2load_tls=(--ciphers="$CIPHER12" --tls13-ciphers="$CIPHER13" --groups="$GROUPS_OFFERED")
# h2load keeps each client's SSL object from one connection to the next, and
# with it the session, so its new connections resume (the probe sees it:
# the "without the shim" row below). This shim, preloaded into h2load, drops
# the session as each connection starts, which makes every handshake a full
# one. It also caps the version at TLS 1.2 when TLS_MAX=1.2: h2load sets its
# own version range over OpenSSL's configuration, and has no option for it.
cat > "$work/tls/noresume.c" <<'EOF'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
typedef struct ssl_st SSL;
typedef struct ssl_session_st SSL_SESSION;
#define SSL_CTRL_SET_MAX_PROTO_VERSION 124 /* openssl/ssl.h */
#define TLS1_2_VERSION 0x0303
void SSL_set_connect_state(SSL *s) {
  static void (*real)(SSL *);
  static int (*set_session)(SSL *, SSL_SESSION *);
  static long (*ctrl)(SSL *, int, long, void *);
  if (!real) {
    real = (void (*)(SSL *))dlsym(RTLD_NEXT, "SSL_set_connect_state");
    set_session = (int (*)(SSL *, SSL_SESSION *))dlsym(RTLD_NEXT, "SSL_set_session");
    ctrl = (long (*)(SSL *, int, long, void *))dlsym(RTLD_NEXT, "SSL_ctrl");
  }
  real(s);
  set_session(s, NULL);
  const char *max = getenv("TLS_MAX");
  if (max && strcmp(max, "1.2") == 0) ctrl(s, SSL_CTRL_SET_MAX_PROTO_VERSION, TLS1_2_VERSION, NULL);
}
EOF
gcc -shared -fPIC -O2 -o "$work/tls/noresume.so" "$work/tls/noresume.c" -ldl

# ---- backends, proxies, probe ----
mkdir -p "$work/backends/logs" "$work/nginx/logs" "$work/probe/logs"
backends_conf "$work/backends/nginx.conf" "$work/backends" $B1 $B2 $B3
taskset -c "$load_cpu" nginx -p "$work/backends" -c "$work/backends/nginx.conf"
wait_port $B1; wait_port $B2; wait_port $B3

declare -A port tport pid
for name in "${names[@]}"; do
  case "$name" in
    nginx)
      TLS_PORT=$T_NGINX NGINX_STATUS_PORT=$NGINX_STATUS nginx_proxy_conf "$work/nginx/nginx.conf" "$work/nginx" $P_NGINX background $B1 $B2 $B3
      taskset -c "$proxy_cpu" nginx -p "$work/nginx" -c "$work/nginx/nginx.conf"
      port[nginx]=$P_NGINX; tport[nginx]=$T_NGINX ;;
    haproxy)
      TLS_PORT=$T_HAPROXY HAPROXY_STATS_SOCKET=$work/haproxy.sock haproxy_cfg "$work/haproxy.cfg" $P_HAPROXY $B1 $B2 $B3
      taskset -c "$proxy_cpu" haproxy -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
      pids+=($!); pid[haproxy]=$!
      port[haproxy]=$P_HAPROXY; tport[haproxy]=$T_HAPROXY ;;
    lb)
      TLS_PORT=$T_LB lb_yaml "$work/lb.yaml" lb $P_LB $LB_ADMIN $B1 $B2 $B3
      if ! "$LB" -t -c "$work/lb.yaml" >"$work/lb-t.log" 2>&1; then
        echo "tls: $LB does not accept a TLS listener (lb -t):" >&2; cat "$work/lb-t.log" >&2
        echo "tls: use --only nginx,haproxy to measure the peers alone" >&2; exit 1
      fi
      RUST_LOG=warn taskset -c "$proxy_cpu" "$LB" -c "$work/lb.yaml" >"$work/lb.log" 2>&1 &
      pids+=($!); pid[lb]=$!
      port[lb]=$P_LB; tport[lb]=$T_LB ;;
    *) echo "tls: unknown proxy $name (nginx, haproxy, lb)" >&2; exit 1 ;;
  esac
done
# The probe: a TLS server that allows resumption and logs whether each
# connection resumed, to check what the clients offer.
cat > "$work/probe/nginx.conf" <<EOF
worker_processes 1;
daemon on;
pid $work/probe/nginx.pid;
error_log $work/probe/error.log warn;
events { worker_connections 4096; }
http {
  log_format tls '\$ssl_protocol \$ssl_cipher \$ssl_curve \$ssl_session_reused \$server_protocol \$connection';
  access_log $work/probe/access.log tls;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$T_PROBE ssl http2;
    ssl_certificate $TLS_CERT;
    ssl_certificate_key $TLS_KEY;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:PROBE:1m;
    ssl_session_tickets on;
    location / { return 200 "ok\n"; }
  }
}
EOF
taskset -c "$load_cpu" nginx -p "$work/probe" -c "$work/probe/nginx.conf"
wait_port $T_PROBE
for name in "${names[@]}"; do wait_port "${port[$name]}"; wait_port "${tport[$name]}"; done
[[ ",$only," == *,nginx,* ]] && pid[nginx]=$(pgrep -P "$(cat "$work/nginx/nginx.pid")" | head -1)
clock_ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/${pid[$1]}/stat"; }
load1() { cut -d' ' -f1 /proc/loadavg; }
# busy: percent of all CPUs busy over half a second, taken between runs
# while this benchmark's proxies are idle: what others use of the machine.
busy() {
  local a b
  a=$(awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat); sleep 0.5
  b=$(awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " "); u = y[1] - x[1]; i = y[2] - x[2]; printf "%.0f", (u + i > 0 ? 100 * u / (u + i) : 0) }'
}

# ---- the load generators: each prints "count errors" (requests answered,
# errors) on its last line ----
# h2load_run URL ARGS...: h2load, bounded; prints "succeeded failed+errored"
# and leaves its output in $work/last.
h2load_run() {
  local url=$1; shift
  bounded taskset -c "$load_cpu" h2load -t"$load_threads" "${h2load_tls[@]}" "$@" "$url" >"$work/last" 2>&1 || true
  awk '/^requests:/ {gsub(",",""); print $8, $10 + $12 + $14; found=1} END {if (!found) print 0, -1}' "$work/last"
}
wrk_run() { # URL OPENSSL_CONF
  OPENSSL_CONF=$2 bounded taskset -c "$load_cpu" wrk -t"$load_threads" -c"$connections" -d"${duration}s" "$1" >"$work/last" 2>&1 || true
  awk '/requests in/ {n=$1} /Non-2xx/ {e+=$NF} /Socket errors/ {gsub(",",""); e+=$4+$6+$8+$10} END {print n+0, e+0}' "$work/last"
}
# load LINE NAME DURATION: one measured run of LINE against proxy NAME.
load() {
  local t=$3 p=${port[$2]} tp=${tport[$2]}
  case "$1" in
    plain-ka) duration=$t wrk_run "http://127.0.0.1:$p/" /dev/null ;;
    # A new connection a request: h2load -D never ends once its clients
    # reconnect (it hangs after "Stopped all clients"), so these run a count
    # of requests, sized from the warm-up's rate to last about $t s.
    plain-new) h2load_run "http://127.0.0.1:$p/" --h1 -H "Connection: close" -c 16 -n "$(count "$1" "$2" "$t")" ;;
    tls13-hs) LD_PRELOAD=${shim-$work/tls/noresume.so} \
      h2load_run "https://127.0.0.1:$tp/" --h1 -H "Connection: close" -c 16 -n "$(count "$1" "$2" "$t")" ;;
    tls12-hs) TLS_MAX=1.2 LD_PRELOAD=${shim-$work/tls/noresume.so} \
      h2load_run "https://127.0.0.1:$tp/" --h1 -H "Connection: close" -c 16 -n "$(count "$1" "$2" "$t")" ;;
    tls-ka) duration=$t wrk_run "https://127.0.0.1:$tp/" "$work/tls/client13.cnf" ;;
    h2) h2load_run "https://127.0.0.1:$tp/" -c 16 -m 10 -D "$t" ;;
  esac
}
# count LINE NAME SECONDS: requests for about SECONDS at the rate the
# warm-up saw (1,000 a second before it), at least 500.
declare -A rate_seen
count() { awk -v r="${rate_seen[$1,$2]:-1000}" -v t="$3" 'BEGIN { n = int(r * t); print (n < 500 ? 500 : n) }'; }
lines=(plain-ka plain-new tls13-hs tls12-hs tls-ka h2)
declare -A title=([plain-ka]="plain keep-alive (wrk -c$connections)" [plain-new]="plain, new connection a request (h2load --h1 -c16)"
  [tls13-hs]="TLS 1.3 full handshake a request (h2load --h1 -c16)" [tls12-hs]="TLS 1.2 full handshake a request (h2load --h1 -c16)"
  [tls-ka]="TLS 1.3 keep-alive HTTP/1.1 (wrk -c$connections)" [h2]="TLS 1.3 HTTP/2 (h2load -c16 -m10)")

# ---- checks ----
echo "checking what the clients offer and what each proxy negotiates..." >&2
checks=$work/checks.md
{
  echo "### Checks"
  echo
  echo "Probe (nginx allowing resumption: shared cache and tickets; \$ssl_session_reused per connection):"
  echo
  echo "| client command (2 s) | requests | connections | resumed | protocol cipher group (distinct) | HTTP |"
  echo "| --- | ---: | ---: | ---: | --- | --- |"
} > "$checks"
probe_check() { # LINE EXPECTED_PROTOCOL [resumes]
  : > "$work/probe/access.log"
  port[probe]=$T_PROBE; tport[probe]=$T_PROBE
  local n errs
  read -r n errs < <(load "$1" probe 2)
  sleep 0.5
  awk -v line="$1${shim+ without the shim}" -v want="$2" -v n="$n" -v resumes="${3:-}" '
    { conn[$6]=1; if (!($6 in seen)) { seen[$6]=1; if ($4=="r") r++; combos[$1" "$2" "$3]=1; http[$5]=1 } }
    END { c=0; for (k in conn) c++; s=""; for (k in combos) s=s (s?"; ":"") k; h=""; for (k in http) h=h (h?", ":"") k;
          printf "| %s | %d | %d | %d | %s | %s |\n", line, n, c, r+0, s, h
          bad = (resumes ? r == 0 : r > 0) || (c == 0) || (length(combos) != 1) || (s !~ want)
          exit bad }' "$work/probe/access.log" >> "$checks" \
    || { echo "tls: the probe check of $1 failed:" >&2; tail -3 "$checks" >&2; exit 1; }
}
probe_check tls13-hs "^TLSv1.3 $CIPHER13 $GROUP\$"
probe_check tls12-hs "^TLSv1.2 $CIPHER12 $GROUP\$"
shim= probe_check tls13-hs "^TLSv1.3 $CIPHER13 $GROUP\$" resumes
probe_check tls-ka "^TLSv1.3 $CIPHER13 $GROUP\$"
probe_check h2 "^TLSv1.3 $CIPHER13 $GROUP\$"
# The control: a client that does offer its session must show up as resumed.
: > "$work/probe/access.log"
req=$'GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n'
timeout 10 openssl s_client -quiet -connect 127.0.0.1:$T_PROBE -sess_out "$work/tls/session" <<<"$req" >/dev/null 2>&1 || true
control=$(timeout 10 openssl s_client -connect 127.0.0.1:$T_PROBE -sess_in "$work/tls/session" <<<"$req" 2>/dev/null | grep -m1 -E '^(New|Reused),' || true)
sleep 0.3
echo >> "$checks"
echo "Control: openssl s_client -sess_out then -sess_in: \"$control\"; the probe logged reused = $(awk '{printf "%s", $4}' "$work/probe/access.log" | sed 's/\./. /g;s/r/r /g')." >> "$checks"
[[ "$control" == Reused* ]] && grep -q ' r ' "$work/probe/access.log" || { echo "tls: the resumption control did not resume; the probe cannot tell" >&2; cat "$checks" >&2; exit 1; }

{
  echo
  echo "What each proxy negotiates (openssl s_client; restricted = offering only the benchmark's cipher and group, as the load generators do; open = OpenSSL 3.0's default offer):"
  echo
  echo "| proxy | TLS 1.3 restricted | TLS 1.2 restricted | TLS 1.3 open | ALPN (h2,http/1.1 offered) |"
  echo "| --- | --- | --- | --- | --- |"
} >> "$checks"
negotiated() { # PORT ARGS...
  local p=$1; shift
  timeout 10 openssl s_client -connect 127.0.0.1:$p -servername localhost "$@" </dev/null 2>/dev/null \
    | awk '/^New,|^Reused,/ {split($0,a,", "); v=a[2]; sub(/Cipher is /,"",a[3]); c=a[3]} /Server Temp Key:/ {sub(/.*Key: /,""); sub(/,.*/,""); g=$0} /^ALPN protocol:/ {alpn=$3} /No ALPN/ {alpn="none"}
           END { if (ENVIRON["WANT"]=="alpn") print alpn; else print v" "c" "g }'
}
for name in "${names[@]}"; do
  tp=${tport[$name]}
  r13=$(negotiated "$tp" -tls1_3 -ciphersuites $CIPHER13 -groups $GROUPS_OFFERED)
  r12=$(negotiated "$tp" -tls1_2 -cipher $CIPHER12 -groups $GROUPS_OFFERED)
  open13=$(negotiated "$tp" -tls1_3)
  alpn=$(WANT=alpn negotiated "$tp" -tls1_3 -alpn h2,http/1.1)
  echo "| $name | $r13 | $r12 | $open13 | $alpn |" >> "$checks"
  [ "$r13" = "TLSv1.3 $CIPHER13 $GROUP" ] && [ "$r12" = "TLSv1.2 $CIPHER12 $GROUP" ] && [ "$alpn" = h2 ] \
    || { echo "tls: $name does not negotiate the benchmark's TLS settings:" >&2; tail -1 "$checks" >&2; exit 1; }
done

# Handshakes each proxy counted, to set beside the requests it answered.
declare -A status_conn=([nginx]=1)
handshakes() {
  case "$1" in
    nginx) curl -s "http://127.0.0.1:$NGINX_STATUS/" | awk 'NR==3 {print $1}' ;;  # connections accepted, this one's too
    haproxy) python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b"show info\n")
data = b""
while True:
    b = s.recv(65536)
    if not b: break
    data += b
info = dict(l.split(": ", 1) for l in data.decode().splitlines() if ": " in l)
print(info["CumSslConns"], info.get("SslFrontendSessionReuse_pct", "?"))' "$work/haproxy.sock" ;;
    lb) curl -s "http://127.0.0.1:$LB_ADMIN/metrics" | awk '/^lb_tls_handshakes_total/ && /outcome="ok"/ {n+=$2} END {print n+0}' ;;
  esac
}

echo "warming up..." >&2
for name in "${names[@]}"; do
  for line in "${lines[@]}"; do
    s0=$(date +%s.%N); read -r n _ < <(load "$line" "$name" 2); s1=$(date +%s.%N)
    rate_seen[$line,$name]=$(awk -v n="$n" -v s0="$s0" -v s1="$s1" 'BEGIN { print (n > 0 ? n / (s1 - s0) : 1000) }')
  done
done

# ---- measured runs ----
declare -A results hs_note
for round in $(seq "$rounds"); do
  for line in "${lines[@]}"; do
    for name in "${names[@]}"; do
      l=$(load1); b=$(busy)
      echo "round $round/$rounds: $line $name (load $l, CPUs busy before $b%)" >&2
      hs_before=$(handshakes "$name" | awk '{print $1}')
      t0=$(cpu_ticks "$name"); s0=$(date +%s.%N)
      read -r n errs < <(load "$line" "$name" "$duration")
      t1=$(cpu_ticks "$name"); s1=$(date +%s.%N)
      hs_after=$(handshakes "$name")
      if [[ "$line" == *-hs ]]; then
        read -r hs reuse <<<"$hs_after"
        # nginx's count includes the status request made after the run.
        hs_note[$line,$name]+="$((hs - hs_before - ${status_conn[$name]:-0}))/$n${reuse:+ (reuse $reuse%)}; "
      fi
      # rate over the wall time, CPU µs per request, CPU share, errors, load
      results[$line,$name]+=$(awk -v n="$n" -v e="$errs" -v t=$((t1 - t0)) -v hz="$clock_ticks" -v s0="$s0" -v s1="$s1" -v l="$l" -v b="$b" \
        'BEGIN { w = s1 - s0; if (w > 0 && n > 0) printf "%.1f %.2f %.1f %d %s %s\n", n / w, t * 1e6 / hz / n, 100 * t / hz / w, e, l, b; else printf "0 0 0 %d %s %s\n", e, l, b }')$'\n'
    done
  done
done

median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }
col() { awk -v c="$2" 'NF {print $c}' <<<"${results[$1]}" | median; }

echo
echo "## TLS and HTTP/2: ${duration}s x $rounds rounds (medians), $PROXY_THREADS worker(s) on CPU $proxy_cpu, load on CPU $load_cpu, headers $HEADERS"
echo
echo "| line | proxy | requests/s | CPU µs per request | per core/s (1e6 / CPU µs) | proxy CPU % | errors |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: |"
for line in "${lines[@]}"; do
  for name in "${names[@]}"; do
    rps=$(col "$line,$name" 1); cpu=$(col "$line,$name" 2); share=$(col "$line,$name" 3)
    errs=$(awk 'NF {n+=$4} END {print n+0}' <<<"${results[$line,$name]}")
    awk -v l="${title[$line]}" -v p="$name" -v r="$rps" -v c="$cpu" -v s="$share" -v e="$errs" \
      'BEGIN { printf "| %s | %s | %.0f | %.2f | %.0f | %.0f | %d |\n", l, p, r, c, (c > 0 ? 1e6 / c : 0), s, e }'
  done
done
if [[ ",$only," == *,lb,* ]] && [ ${#names[@]} -gt 1 ]; then
  echo
  echo "| line | lb / best peer, requests/s | best peer / lb, CPU per request |"
  echo "| --- | ---: | ---: |"
  for line in "${lines[@]}"; do
    best_rps=0; best_cpu=
    for name in "${names[@]}"; do
      [ "$name" = lb ] && continue
      r=$(col "$line,$name" 1); c=$(col "$line,$name" 2)
      best_rps=$(printf '%s\n' "$best_rps" "$r" | sort -g | tail -1)
      best_cpu=$(printf '%s\n' ${best_cpu:+"$best_cpu"} "$c" | sort -g | head -1)
    done
    awk -v l="${title[$line]}" -v r="$(col "$line,lb" 1)" -v c="$(col "$line,lb" 2)" -v br="$best_rps" -v bc="$best_cpu" \
      'BEGIN { printf "| %s | %.2f | %.2f |\n", l, (br > 0 ? r / br : 0), (c > 0 ? bc / c : 0) }'
  done
  echo
  echo "Where a proxy's CPU % is well under 100 the rate is the load generator's, not the proxy's (the handshake lines always): read CPU per request there."
fi
echo
echo "The handshake alone: CPU µs per TLS request minus CPU µs per plaintext new-connection request (accept, request, close):"
echo
echo "| proxy | TLS 1.3 handshake, CPU µs | TLS 1.2 handshake, CPU µs | TLS 1.3 keep-alive over plain keep-alive, CPU µs a request |"
echo "| --- | ---: | ---: | ---: |"
for name in "${names[@]}"; do
  awk -v p="$name" -v new="$(col "plain-new,$name" 2)" -v h13="$(col "tls13-hs,$name" 2)" -v h12="$(col "tls12-hs,$name" 2)" \
    -v ka="$(col "plain-ka,$name" 2)" -v tka="$(col "tls-ka,$name" 2)" \
    'BEGIN { printf "| %s | %.1f | %.1f | %.2f |\n", p, h13 - new, h12 - new, tka - ka }'
done
echo
echo "Handshakes counted by each proxy / requests answered, per round (nginx: connections accepted; HAProxy: CumSslConns and SslFrontendSessionReuse_pct; lb: lb_tls_handshakes_total, outcome ok):"
echo
for line in tls13-hs tls12-hs; do
  for name in "${names[@]}"; do
    echo "- $line $name: ${hs_note[$line,$name]%; }"
  done
done
echo
cat "$checks"
echo
loads=$(for k in "${!results[@]}"; do awk 'NF {print $5}' <<<"${results[$k]}"; done | sort -g)
busys=$(for k in "${!results[@]}"; do awk 'NF {print $6}' <<<"${results[$k]}"; done | sort -g)
echo "Before the measurements: 1-minute load average $(head -1 <<<"$loads") to $(tail -1 <<<"$loads") (this benchmark's own runs count in it); CPUs busy over the half second before each run, with the proxies idle, $(head -1 <<<"$busys") to $(tail -1 <<<"$busys")% (median $(median <<<"$busys" | xargs printf "%.0f")%): what else used the machine."
echo "machine: $(nproc) CPUs, $(awk '/model name/ {$1=$2=$3=""; print; exit}' /proc/cpuinfo | sed 's/^ *//'); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'); $(nginx -v 2>&1 | sed 's/.*: //'), HAProxy $(haproxy -v | awk 'NR==1 {print $3}'), $(openssl version | cut -d' ' -f1-2) (nginx's and HAProxy's)"
