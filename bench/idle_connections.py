"""Opens N keep-alive connections to 127.0.0.1:PORT, sends one request on
each, reads the answer, then holds them all open and idle until killed.
Creates READY_FILE once every connection is idle.

    python3 bench/idle_connections.py PORT N READY_FILE
"""

import asyncio
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


async def main(port, count, ready_file):
    held = []
    batch = 500
    for start in range(0, count, batch):
        results = await asyncio.gather(
            *(open_one(port, held) for _ in range(start, min(count, start + batch))),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, Exception)]
        if failures:
            print(f"idle_connections: {len(failures)} failed, e.g. {failures[0]!r}", file=sys.stderr)
    open(ready_file, "w").close()
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]))
