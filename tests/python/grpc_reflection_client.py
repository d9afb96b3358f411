#!/usr/bin/env python3
"""Calls a running router with the official Python grpcio client, discovering the API through gRPC
server reflection only (no generated code): Route, RouteStream, ListModels, and the standard health
service. Exits non-zero when a check fails.

    python3 tests/python/grpc_reflection_client.py 127.0.0.1:50051 [--ca CA.pem]

With --ca the channel is TLS, verified against that CA (server name `localhost`).
"""
import json
import sys

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.json_format import MessageToDict
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

try:
    from google.protobuf.message_factory import GetMessageClass
except ImportError:  # older protobuf
    from google.protobuf import message_factory

    def GetMessageClass(desc):
        return message_factory.MessageFactory().GetPrototype(desc)


def fetch_pool(channel, symbol):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    pool = descriptor_pool.DescriptorPool()
    seen = set()

    def add(files):
        for raw in files:
            fd = descriptor_pb2.FileDescriptorProto.FromString(raw)
            if fd.name in seen:
                continue
            seen.add(fd.name)
            for dep in fd.dependency:
                if dep not in seen:
                    add(request(file_by_filename=dep))
            pool.Add(fd)

    def request(**kw):
        resp = next(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(**kw)])))
        if resp.HasField("error_response"):
            raise SystemExit(f"reflection error: {resp.error_response.error_message}")
        return resp.file_descriptor_response.file_descriptor_proto

    services = next(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    names = [s.name for s in services.list_services_response.service]
    add(request(file_containing_symbol=symbol))
    return pool, names


def main():
    addr = sys.argv[1]
    if "--ca" in sys.argv:
        with open(sys.argv[sys.argv.index("--ca") + 1], "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        channel = grpc.secure_channel(addr, creds, options=[("grpc.ssl_target_name_override", "localhost")])
    else:
        channel = grpc.insecure_channel(addr)
    pool, names = fetch_pool(channel, "llmroute.v1.Router")
    assert "llmroute.v1.Router" in names, names
    assert "grpc.health.v1.Health" in names, names
    svc = pool.FindServiceByName("llmroute.v1.Router")

    def method(name):
        m = svc.methods_by_name[name]
        req_cls, resp_cls = GetMessageClass(m.input_type), GetMessageClass(m.output_type)
        path = f"/{svc.full_name}/{m.name}"
        if m.server_streaming:
            call = channel.unary_stream(path, req_cls.SerializeToString, resp_cls.FromString)
        else:
            call = channel.unary_unary(path, req_cls.SerializeToString, resp_cls.FromString)
        return req_cls, call

    out = {"services": names}
    req_cls, route = method("Route")
    reply = route(req_cls(prompt="Which planet is known as the Red Planet?", max_output_tokens=32), timeout=30)
    d = MessageToDict(reply, preserving_proto_field_name=True)
    assert d["model"], d
    assert d.get("dispatched") is True and d.get("answer"), d
    out["route"] = {k: d.get(k) for k in ("model", "answer", "cost_usd", "batch_id", "why")}

    decision = route(req_cls(prompt="Sort a list in Python.", dispatch=False), timeout=30)
    assert decision.model and not decision.dispatched and decision.cost_usd == 0.0
    out["decision_only_model"] = decision.model

    try:
        route(req_cls(prompt=""), timeout=10)
        raise SystemExit("empty prompt was accepted")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
        assert "prompt" in e.details(), e.details()
        out["empty_prompt"] = f"{e.code().name}: {e.details()}"

    req_cls, stream = method("RouteStream")
    kinds, pieces, done = [], [], None
    for ev in stream(req_cls(prompt="Name three primary colors.", max_output_tokens=32), timeout=30):
        kind = ev.WhichOneof("event")
        kinds.append(kind)
        if kind == "delta":
            pieces.append(ev.delta)
        elif kind == "done":
            done = ev.done
    assert kinds[0] == "start" and kinds[-1] == "done" and pieces, kinds
    assert "".join(pieces) == done.answer, (pieces, done.answer)
    out["stream_events"] = len(kinds)

    req_cls, models = method("ListModels")
    listed = models(req_cls(), timeout=10)
    out["models"] = [m.name for m in listed.models]
    assert listed.models

    health = health_pb2_grpc.HealthStub(channel)
    status = health.Check(health_pb2.HealthCheckRequest(service="llmroute.v1.Router"), timeout=10).status
    assert status == health_pb2.HealthCheckResponse.SERVING, status
    out["health"] = "SERVING"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
