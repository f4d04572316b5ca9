"""The error table across a real gRPC hop: every class arrives as itself, with its message
and retry-after; a server that sends no trailer is still understood by its status."""

import grpc
import pytest
from grpc import aio

from cellwork import errors
from cellwork.discovery.instance import InstanceInfo
from cellwork.rpc.client import connect_client
from cellwork.testing import start_service
from cellwork.testing.echo import create_service, echo_stub
from cellwork.testing.v1 import echo_pb2, echo_pb2_grpc


@pytest.fixture
async def echo(nats_server):
    service = await start_service(create_service, nats_server.url, instance_id="echo-0")
    yield service
    await service.close()


@pytest.fixture
async def client(registry, echo):
    client = await connect_client(registry, "echo", echo_stub, caller="test")
    await client.balancer.wait_for_endpoints(1)
    yield client
    await client.close()


async def fail(client, payload: str) -> errors.CellworkError:
    with pytest.raises(errors.CellworkError) as caught:
        await client.call("Fail", echo_pb2.EchoRequest(payload=payload.encode()))
    return caught.value


async def test_every_class_of_the_table_arrives_as_itself_with_message_and_retry_after(
    client,
) -> None:
    sent, arrived = [], []
    for cls in errors.PUBLIC_ERRORS:
        for retry_after in (None, 2.5):
            suffix = "" if retry_after is None else f":{retry_after}"
            error = await fail(client, f"{cls.__name__}{suffix}")
            sent.append((cls, f"echo raised {cls.__name__}", retry_after))
            arrived.append((type(error), error.message, error.retry_after))
    assert arrived == sent


async def test_rate_limited_and_overloaded_stay_distinct_across_a_hop(client) -> None:
    limited = await fail(client, "ResourceExhausted:1")
    shed = await fail(client, "Overloaded:4")
    assert type(limited) is errors.ResourceExhausted and limited.http_status == 429
    assert type(shed) is errors.Overloaded and shed.http_status == 503
    assert (limited.retry_after, shed.retry_after) == (1.0, 4.0)


async def test_an_unexpected_failure_arrives_as_internal_without_its_details(client) -> None:
    error = await fail(client, "no such error")
    assert type(error) is errors.Internal
    assert "no such error" not in error.message


async def test_only_a_failed_call_carries_the_error_trailer(echo) -> None:
    async with aio.insecure_channel(echo.info.address) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        ok = stub.Echo(echo_pb2.EchoRequest(payload=b"x"), timeout=5)
        await ok
        ok_trailers = dict(await ok.trailing_metadata() or ())
        with pytest.raises(aio.AioRpcError) as failed:
            await stub.Fail(echo_pb2.EchoRequest(payload=b"Overloaded:2.5"), timeout=5)
    assert not [key for key in ok_trailers if key.startswith("x-cellwork-")]
    assert failed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    trailers = dict(failed.value.trailing_metadata())
    assert trailers[errors.ERROR_TRAILER] == "overloaded"
    assert trailers[errors.RETRY_AFTER_TRAILER] == "2.5"


class PlainEcho(echo_pb2_grpc.EchoServicer):
    """A gRPC server that knows nothing of cellwork: status and details, maybe a stray
    trailer, never cellwork's own."""

    async def Fail(self, request, context):
        status, _, trailer = request.payload.decode().partition(";")
        metadata = ((errors.ERROR_TRAILER, trailer),) if trailer else ()
        await context.abort(grpc.StatusCode[status], f"plain {status}", metadata)


@pytest.fixture
async def plain_client(registry):
    server = aio.server()
    echo_pb2_grpc.add_EchoServicer_to_server(PlainEcho(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await registry.put(
        InstanceInfo(service="plain", instance_id="plain-0", host="127.0.0.1", grpc_port=port)
    )
    client = await connect_client(registry, "plain", echo_stub)
    await client.balancer.wait_for_endpoints(1)
    yield client
    await client.close()
    await server.stop(None)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("RESOURCE_EXHAUSTED", errors.ResourceExhausted),
        ("NOT_FOUND", errors.NotFound),
        ("INVALID_ARGUMENT", errors.InvalidArgument),
        ("UNIMPLEMENTED", errors.Internal),
        ("RESOURCE_EXHAUSTED;not_found", errors.ResourceExhausted),  # names another status
        ("RESOURCE_EXHAUSTED;made_up", errors.ResourceExhausted),
    ],
)
async def test_a_server_without_the_trailer_is_understood_by_its_status(
    plain_client, payload, expected
) -> None:
    error = await fail(plain_client, payload)
    assert type(error) is expected
    assert error.message.startswith("plain ") and error.retry_after is None
