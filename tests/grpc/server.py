#!/usr/bin/env python3
"""A gRPC test backend for lb's integration tests (tests/grpc.rs).

Serves service `lbtest.Echo` with raw-bytes messages (no proto codegen):

- Unary:        answers "<name>:<request>" so a test sees which backend answered
- ServerStream: the request is a decimal count N; answers N messages "<name>:<i>"
- Bidi:         echoes each message as "<name>:<message>"
- Fail:         aborts with INVALID_ARGUMENT, details "bad input"
- Slow:         sleeps the number of milliseconds in the request, then answers "<name>:slept";
                prints "cancelled Slow MS" on stdout if the call was cancelled meanwhile
- Deadline:     answers "<name>:<seconds left before the call's deadline>", or
                "<name>:none" when the call came without a deadline (grpc-timeout)

and the standard health service grpc.health.v1.Health, overall status SERVING
(or NOT_SERVING with --health NOT_SERVING).

Plaintext HTTP/2 (h2c) by default, TLS with --cert and --key. Prints "ready"
on stdout once it accepts calls. --port 0 lets the kernel pick the port; the
line is then "ready PORT".
"""

import argparse
import sys
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVICE = "lbtest.Echo"


def identity(data):
    return data


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--name", default="be")
    parser.add_argument("--cert", help="PEM certificate: serve TLS")
    parser.add_argument("--key", help="PEM private key for --cert")
    parser.add_argument(
        "--health", default="SERVING", choices=["SERVING", "NOT_SERVING"]
    )
    args = parser.parse_args()
    if bool(args.cert) != bool(args.key):
        parser.error("--cert and --key go together")
    return args


def echo_handlers(name):
    """The method handlers of lbtest.Echo, answering as backend `name`."""
    prefix = name.encode() + b":"

    def unary(request, context):
        return prefix + request

    def server_stream(request, context):
        count = int(request.decode() or "0")
        for i in range(count):
            yield prefix + str(i).encode()

    def bidi(request_iterator, context):
        for message in request_iterator:
            yield prefix + message

    def fail(request, context):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad input")

    def slow(request, context):
        ms = request.decode() or "0"
        time.sleep(int(ms) / 1000.0)
        if not context.is_active():
            # The client (or a proxy for it) cancelled the call meanwhile.
            print(f"cancelled Slow {ms}", flush=True)
        return prefix + b"slept"

    def deadline(request, context):
        left = context.time_remaining()
        if left is None or left > 1e9:  # grpcio's "no deadline" is a huge number
            return prefix + b"none"
        return prefix + f"{left:.3f}".encode()

    raw = dict(request_deserializer=identity, response_serializer=identity)
    return {
        "Unary": grpc.unary_unary_rpc_method_handler(unary, **raw),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream, **raw),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi, **raw),
        "Fail": grpc.unary_unary_rpc_method_handler(fail, **raw),
        "Slow": grpc.unary_unary_rpc_method_handler(slow, **raw),
        "Deadline": grpc.unary_unary_rpc_method_handler(deadline, **raw),
    }


def add_port(server, args):
    address = f"{args.host}:{args.port}"
    if not args.cert:
        return server.add_insecure_port(address)
    with open(args.key, "rb") as f:
        key = f.read()
    with open(args.cert, "rb") as f:
        cert = f.read()
    credentials = grpc.ssl_server_credentials([(key, cert)])
    return server.add_secure_port(address, credentials)


def main():
    args = parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, echo_handlers(args.name)),)
    )
    health_servicer = health.HealthServicer()
    status = getattr(health_pb2.HealthCheckResponse, args.health)
    health_servicer.set("", status)
    health_servicer.set(SERVICE, status)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = add_port(server, args)
    if port == 0:
        sys.exit(f"could not listen on {args.host}:{args.port}")
    server.start()
    print("ready" if args.port else f"ready {port}", flush=True)
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        server.stop(0)


if __name__ == "__main__":
    main()
