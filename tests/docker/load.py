#!/usr/bin/env python3
"""Keep-alive load for the container tests.

    load.py URL --connections N --seconds S [--stop-file F] [--timeout T]

Each of N connections sends GET after GET on one kept-alive connection
until S seconds pass or the stop file exists, then one JSON line goes to
stdout: requests answered 200, errors by kind, and answers by the `be` that
gave them (the last word of its hello message).

A connection that cannot be opened counts as `connect <error>` (nothing was
sent); any other failure is named by its exception alone.

A request that fails before any byte of its answer on a connection that had
already carried one (the server closed it idle as the request left) is sent
once more on a new connection, as browsers, curl and RFC 9110 section 9.2.2
allow for an idempotent request; those are counted apart
(`stale_connection_retries`), and one that fails again is an error.
"""
import argparse
import collections
import http.client
import json
import os
import threading
import time
from urllib.parse import urlsplit


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.ok = 0
        self.retries = 0
        self.errors = collections.Counter()
        self.by_backend = collections.Counter()

    def answer(self, status, body):
        with self.lock:
            if status == 200:
                self.ok += 1
                self.by_backend[body.decode(errors="replace").strip().rsplit(" ", 1)[-1]] += 1
            else:
                self.errors[f"status {status}"] += 1

    def error(self, kind):
        with self.lock:
            self.errors[kind] += 1

    def retry(self):
        with self.lock:
            self.retries += 1


def one_request(conn, path):
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, response.read(), response.getheader("connection", "")


def connect(host, port, timeout, tally):
    """A new connection, or None (counted as `connect <error>`)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.connect()
        return conn
    except OSError as e:
        tally.error(f"connect {type(e).__name__}")
        return None


def exchange(conn, path, tally):
    """One request on `conn`: its answer, or None with the error counted."""
    try:
        return one_request(conn, path)
    except Exception as e:  # noqa: BLE001: every failure is counted
        tally.error(type(e).__name__)
        conn.close()
        return None


STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


def worker(url, deadline, stop_file, timeout, tally):
    host, port, path = url.hostname, url.port or 80, url.path or "/"
    conn, used = None, False
    while time.monotonic() < deadline and not os.path.exists(stop_file):
        if conn is None:
            conn, used = connect(host, port, timeout, tally), False
            if conn is None:
                continue
        try:
            answer = one_request(conn, path)
        except STALE as e:
            conn.close()
            conn = None
            if not used:
                tally.error(type(e).__name__)
                continue
            # A reused connection the server had closed: once more, anew.
            tally.retry()
            conn = connect(host, port, timeout, tally)
            answer = conn and exchange(conn, path, tally)
        except Exception as e:  # noqa: BLE001: every failure is counted
            tally.error(type(e).__name__)
            conn.close()
            conn = None
            continue
        if answer is None:
            conn = None
            continue
        status, body, connection = answer
        tally.answer(status, body)
        used = True
        if connection.lower() == "close":
            conn.close()
            conn = None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--stop-file", default="/nonexistent/stop")
    parser.add_argument("--timeout", type=float, default=30)
    args = parser.parse_args()
    url = urlsplit(args.url)
    tally = Tally()
    deadline = time.monotonic() + args.seconds
    started = time.monotonic()
    threads = [
        threading.Thread(target=worker, args=(url, deadline, args.stop_file, args.timeout, tally))
        for _ in range(args.connections)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({
        "requests": tally.ok,
        "errors": sum(tally.errors.values()),
        "error_kinds": dict(tally.errors),
        "stale_connection_retries": tally.retries,
        "by_backend": dict(tally.by_backend),
        "seconds": round(time.monotonic() - started, 1),
    }))


if __name__ == "__main__":
    main()
