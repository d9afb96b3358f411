#!/usr/bin/env python3
"""A real OTLP/gRPC trace receiver for the tests, built on the `opentelemetry-proto` package and
grpcio: it serves opentelemetry.proto.collector.trace.v1.TraceService/Export on 127.0.0.1 and
writes every span it receives as one JSON line (ids in hex, attributes as a plain map, status,
the resource's service.name) to --out.

    python3 tests/python/otlp_receiver.py --port PORT --out SPANS.jsonl

Prints `otlp receiving on 127.0.0.1:PORT` once it listens; runs until killed.
"""
import argparse
import json
import signal
import sys
import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


def value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, out):
        self.out = out
        self.lock = threading.Lock()

    def Export(self, request, context):
        with self.lock:
            for rs in request.resource_spans:
                service = {a.key: value(a.value) for a in rs.resource.attributes}.get("service.name")
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        rec = {
                            "service": service,
                            "scope": ss.scope.name,
                            "trace_id": s.trace_id.hex(),
                            "span_id": s.span_id.hex(),
                            "parent_span_id": s.parent_span_id.hex(),
                            "name": s.name,
                            "kind": s.kind,
                            "start": s.start_time_unix_nano,
                            "end": s.end_time_unix_nano,
                            "attributes": {a.key: value(a.value) for a in s.attributes},
                            "status": {"code": s.status.code, "message": s.status.message},
                        }
                        self.out.write(json.dumps(rec) + "\n")
            self.out.flush()
        return trace_service_pb2.ExportTraceServiceResponse()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    out = open(a.out, "a", encoding="utf-8")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Receiver(out), server)
    if server.add_insecure_port(f"127.0.0.1:{a.port}") == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{a.port}")
    server.start()
    print(f"otlp receiving on 127.0.0.1:{a.port}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: (server.stop(0), sys.exit(0)))
    server.wait_for_termination()


if __name__ == "__main__":
    main()
