"""New TLS 1.3 connections to 127.0.0.1:PORT, one at a time, for SECONDS,
each asking for NAME by SNI; prints how many completed (bench/certs.sh)."""
import socket
import ssl
import sys
import time

port, name, seconds = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
count, end = 0, time.monotonic() + seconds
while time.monotonic() < end:
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with ctx.wrap_socket(raw, server_hostname=name):
            count += 1
print(count)
