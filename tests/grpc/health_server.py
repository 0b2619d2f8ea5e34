"""A gRPC server that only answers grpc.health.v1.Health, for lb's health-check tests.

Usage: health_server.py PORT SERVING|NOT_SERVING
Listens on 127.0.0.1:PORT over plaintext HTTP/2 (h2c), says the whole server
("" service) has the given status, prints "ready" and serves until killed.
"""

import sys
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


def main():
    port, status = sys.argv[1], sys.argv[2]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = health.HealthServicer()
    servicer.set("", getattr(health_pb2.HealthCheckResponse, status))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
