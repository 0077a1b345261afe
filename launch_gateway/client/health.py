"""Ask a gateway's standard gRPC health service (`grpc.health.v1.Health/Check`) with the SDK alone.

The gateway keeps two kinds of entry: `LIVENESS` is SERVING from start until shutdown (the process
serves, whatever Launch does: what liveness and startup probes ask), while `READINESS` ("") and
`launch_gateway.v1.EndpointService` are SERVING only when the gateway can reach Launch and is not
draining (what readiness probes and balancers ask).

grpcio-health-checking belongs to the server extra, so the two messages are built here from their
descriptor, in a private pool that never collides with `grpc_health`'s modules.
"""

from __future__ import annotations

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

LIVENESS = "liveness"
READINESS = ""
CHECK_METHOD = "/grpc.health.v1.Health/Check"

_STATUSES = ("UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN")  # grpc/health/v1/health.proto's numbers


def _health_messages() -> tuple[type[Message], type[Message]]:
    """HealthCheckRequest and HealthCheckResponse, as grpc/health/v1/health.proto declares them."""
    field = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="grpc/health/v1/health.proto", package="grpc.health.v1")
    file.syntax = "proto3"
    request = file.message_type.add(name="HealthCheckRequest")
    request.field.add(name="service", number=1, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    response = file.message_type.add(name="HealthCheckResponse")
    status = response.enum_type.add(name="ServingStatus")
    for number, name in enumerate(_STATUSES):
        status.value.add(name=name, number=number)
    response.field.add(
        name="status",
        number=1,
        type=field.TYPE_ENUM,
        type_name=".grpc.health.v1.HealthCheckResponse.ServingStatus",
        label=field.LABEL_OPTIONAL,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName("grpc.health.v1.HealthCheckRequest")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName("grpc.health.v1.HealthCheckResponse")),
    )


HealthCheckRequest, HealthCheckResponse = _health_messages()


async def check_health(channel: grpc.aio.Channel, service: str = READINESS, *, deadline: float | None = None) -> str:
    """The serving status of `service` by name: "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN" or "UNKNOWN".

    A gateway that does not answer raises `grpc.aio.AioRpcError` (for example UNAVAILABLE); an entry the
    gateway does not keep raises it with NOT_FOUND, as the health protocol says.
    """
    check = channel.unary_unary(
        CHECK_METHOD,
        request_serializer=HealthCheckRequest.SerializeToString,
        response_deserializer=HealthCheckResponse.FromString,
    )
    reply = await check(HealthCheckRequest(service=service), timeout=deadline)
    number: int = reply.status  # type: ignore[attr-defined]  # a field of the message built above
    return _STATUSES[number] if 0 <= number < len(_STATUSES) else f"UNKNOWN({number})"
