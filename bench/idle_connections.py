"""Opens N keep-alive connections to 127.0.0.1:PORT, sends one request on
each, reads the answer, then holds them all open and idle until killed.
Creates READY_FILE once every connection is idle.

    python3 bench/idle_connections.py PORT N READY_FILE [--h2]

With --h2 the connections are HTTP/2 over TLS (ALPN h2, the certificate
not verified; needs the `h2` package from PyPI): one stream each, then idle.
"""

import asyncio
import ssl
import sys

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


async def open_one(port, held):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(REQUEST)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    if length:
        await reader.readexactly(length)
    held.append(writer)


def tls_context():
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    return context


async def open_one_h2(port, held):
    import h2.config
    import h2.connection
    import h2.events

    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls_context())
    if writer.get_extra_info("ssl_object").selected_alpn_protocol() != "h2":
        raise RuntimeError("the server did not choose h2")
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "GET"), (":path", "/"), (":scheme", "https"),
                          (":authority", "bench")], end_stream=True)
    writer.write(conn.data_to_send())
    await writer.drain()
    done = False
    while not done:
        data = await reader.read(65536)
        if not data:
            raise RuntimeError("closed before the answer")
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.StreamEnded) or isinstance(event, h2.events.StreamReset):
                done = True
        writer.write(conn.data_to_send())
    await writer.drain()
    held.append((reader, writer))


async def main(port, count, ready_file, use_h2):
    held = []
    batch = 500
    opener = open_one_h2 if use_h2 else open_one
    for start in range(0, count, batch):
        results = await asyncio.gather(
            *(opener(port, held) for _ in range(start, min(count, start + batch))),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, Exception)]
        if failures:
            print(f"idle_connections: {len(failures)} failed, e.g. {failures[0]!r}", file=sys.stderr)
    open(ready_file, "w").close()
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], "--h2" in sys.argv[4:]))
