#!/usr/bin/env python3
"""A gRPC test client for lb's integration tests (tests/grpc.rs).

Makes one call to service `lbtest.Echo` (see server.py) at TARGET and prints
one JSON line:

    {"ok": true, "code": "OK", "details": "", "messages": [...]}

or, when the call fails, "ok": false with the status code's name (e.g.
"INVALID_ARGUMENT", "DEADLINE_EXCEEDED") and its details. Exit status 0 when
the call succeeded, 1 when it ended with a non-OK status.

Subcommands:
    unary [TEXT]            Unary with TEXT (default "hello")
    server-stream N         ServerStream asking for N messages
    bidi N                  Bidi sending N messages "m0".."m{N-1}"
    pingpong N              Bidi, sending each of N messages only after the answer to the
                            one before arrived (fails if a proxy holds back either stream)
    big BYTES               Unary with BYTES bytes; messages is [backend, length, "intact"|"corrupt"]
    concurrent N            N Unary calls at once on one channel (HTTP/2 streams side by side)
    cancel MS               Slow MS without a deadline, cancelled by the client after 0.3 s;
                            prints CANCELLED
    fail                    Fail (the server answers INVALID_ARGUMENT "bad input")
    slow MS [--timeout S]   Slow: the server sleeps MS ms; the call's deadline is S seconds
    deadline [--timeout S]  Deadline: the server answers the seconds left before the deadline
    health [SERVICE]        grpc.health.v1.Health/Check; messages is [status name]

Plaintext (h2c) by default; --tls with --ca FILE (and --server-name NAME to
check the certificate against NAME rather than the target's host).
"""

import argparse
import json
import queue
import sys
import time

import grpc

SERVICE = "lbtest.Echo"


def identity(data):
    return data


def connection_options(parser, default):
    """The options that may stand before or after the subcommand."""
    parser.add_argument("--tls", action="store_true", default=default)
    parser.add_argument(
        "--ca", default=default, help="PEM CA certificate(s) to trust (with --tls)"
    )
    parser.add_argument(
        "--server-name", default=default, help="name to verify the certificate for"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=default,
        help="deadline in seconds (default 10; 0: none)",
    )


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", help="HOST:PORT")
    parser.set_defaults(tls=False, ca=None, server_name=None, timeout=10.0)
    connection_options(parser, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name):
        subparser = sub.add_parser(name)
        connection_options(subparser, argparse.SUPPRESS)
        return subparser

    command("unary").add_argument("text", nargs="?", default="hello")
    command("server-stream").add_argument("count", type=int)
    command("bidi").add_argument("count", type=int)
    command("pingpong").add_argument("count", type=int)
    command("big").add_argument("size", type=int)
    command("concurrent").add_argument("count", type=int)
    command("cancel").add_argument("ms", type=int)
    command("fail")
    command("slow").add_argument("ms", type=int)
    command("deadline")
    command("health").add_argument("service", nargs="?", default="")
    return parser.parse_args()


def channel(args):
    if not args.tls:
        return grpc.insecure_channel(args.target)
    root = None
    if args.ca:
        with open(args.ca, "rb") as f:
            root = f.read()
    credentials = grpc.ssl_channel_credentials(root_certificates=root)
    options = []
    if args.server_name:
        options.append(("grpc.ssl_target_name_override", args.server_name))
    return grpc.secure_channel(args.target, credentials, options=options)


def method(name):
    return f"/{SERVICE}/{name}"


def call(ch, args):
    """Makes the call; returns the list of response messages as text."""
    raw = dict(request_serializer=identity, response_deserializer=identity)
    timeout = args.timeout if args.timeout > 0 else None
    if args.command == "unary":
        reply = ch.unary_unary(method("Unary"), **raw)(
            args.text.encode(), timeout=timeout
        )
        return [reply.decode()]
    if args.command == "server-stream":
        replies = ch.unary_stream(method("ServerStream"), **raw)(
            str(args.count).encode(), timeout=timeout
        )
        return [r.decode() for r in replies]
    if args.command == "bidi":
        requests = (f"m{i}".encode() for i in range(args.count))
        replies = ch.stream_stream(method("Bidi"), **raw)(requests, timeout=timeout)
        return [r.decode() for r in replies]
    if args.command == "pingpong":
        return pingpong(ch.stream_stream(method("Bidi"), **raw), args.count, timeout)
    if args.command == "big":
        payload = bytes(i % 251 for i in range(args.size))
        reply = ch.unary_unary(method("Unary"), **raw)(payload, timeout=timeout)
        name, _, echoed = reply.partition(b":")
        intact = "intact" if echoed == payload else "corrupt"
        return [name.decode(), str(len(echoed)), intact]
    if args.command == "concurrent":
        unary = ch.unary_unary(method("Unary"), **raw)
        calls = [
            unary.future(f"c{i}".encode(), timeout=timeout) for i in range(args.count)
        ]
        return [c.result().decode() for c in calls]
    if args.command == "cancel":
        future = ch.unary_unary(method("Slow"), **raw).future(str(args.ms).encode())
        time.sleep(0.3)
        future.cancel()
        return [future.result().decode()]  # raises CANCELLED
    if args.command == "fail":
        reply = ch.unary_unary(method("Fail"), **raw)(b"x", timeout=timeout)
        return [reply.decode()]
    if args.command == "slow":
        reply = ch.unary_unary(method("Slow"), **raw)(
            str(args.ms).encode(), timeout=timeout
        )
        return [reply.decode()]
    if args.command == "deadline":
        reply = ch.unary_unary(method("Deadline"), **raw)(b"", timeout=timeout)
        return [reply.decode()]
    if args.command == "health":
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(ch)
        reply = stub.Check(
            health_pb2.HealthCheckRequest(service=args.service), timeout=timeout
        )
        return [health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)]
    raise ValueError(args.command)


def pingpong(bidi, count, timeout):
    """Sends message i+1 only once the answer to message i arrived."""
    answered = queue.Queue()

    def requests():
        for i in range(count):
            yield f"m{i}".encode()
            # Blocks until the answer came back (or the call ended).
            if answered.get() is None:
                return

    replies = []
    try:
        for reply in bidi(requests(), timeout=timeout):
            replies.append(reply.decode())
            answered.put(True)
    finally:
        answered.put(None)
    return replies


def failure(code, details):
    return {"ok": False, "code": code, "details": details or "", "messages": []}


def main():
    args = parse_args()
    with channel(args) as ch:
        try:
            messages = call(ch, args)
        except grpc.RpcError as error:
            result = failure(error.code().name, error.details())
            print(json.dumps(result), flush=True)
            return 1
        except grpc.FutureCancelledError:
            result = failure("CANCELLED", "cancelled by this client")
            print(json.dumps(result), flush=True)
            return 1
    print(json.dumps({"ok": True, "code": "OK", "details": "", "messages": messages}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
