"""A storm of slow POSTs: N connections each send a request head announcing
a large body, then trickle the body a few bytes at a time; after HOLD
seconds every connection is closed at once. Prints how many were opened and
how many lb closed before the end.

    python3 bench/slow_post_storm.py PORT N HOLD_SECONDS [READY_FILE]

READY_FILE, when given, is created once every connection has sent its head
(the moment to read the proxy's peak memory). Bounded: HOLD seconds of
trickle, then the close; a connection that cannot open is counted, not
retried.
"""

import asyncio
import sys

HEAD = b"POST /upload HTTP/1.1\r\nHost: storm\r\nContent-Length: 10000000\r\n\r\n"
TRICKLE = b"x" * 16
TRICKLE_EVERY = 1.0


async def open_one(port):
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HEAD + TRICKLE)
    await writer.drain()
    return writer


async def trickle(writer, hold):
    """Sends a few body bytes a second until `hold` runs out or the peer closes."""
    loop = asyncio.get_running_loop()
    end = loop.time() + hold
    while loop.time() < end:
        await asyncio.sleep(TRICKLE_EVERY)
        if writer.is_closing():
            return False
        try:
            writer.write(TRICKLE)
            await writer.drain()
        except OSError:
            return False
    return True


async def main(port, count, hold, ready_file):
    writers, failed = [], 0
    for start in range(0, count, 250):
        batch = await asyncio.gather(
            *(open_one(port) for _ in range(start, min(count, start + 250))),
            return_exceptions=True,
        )
        failed += sum(isinstance(w, Exception) for w in batch)
        writers += [w for w in batch if not isinstance(w, Exception)]
    if ready_file:
        open(ready_file, "w").close()
    alive = await asyncio.gather(*(trickle(w, hold) for w in writers))
    for writer in writers:
        writer.transport.abort()
    print(f"storm: {len(writers)} opened, {failed} failed to open, "
          f"{alive.count(False)} closed by the proxy before the end")


if __name__ == "__main__":
    ready = sys.argv[4] if len(sys.argv) > 4 else None
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), ready))
