"""Typed clients generated from descriptors: names, types, idempotency, what is skipped."""

from __future__ import annotations

import pytest
from google.protobuf import descriptor_pb2

from cellwork.rpc import Client
from cellwork.rpc.clientgen import (
    RESERVED_CONSTANTS,
    RESERVED_METHODS,
    client_module_path,
    render_client_module,
    snake_case,
)
from learnfeed.v1.catalog_client import CatalogClient
from learnfeed.v1.feed_client import FeedClient
from learnfeed.v1.identity_client import IdentityClient


@pytest.mark.parametrize(
    ("name", "snake"),
    [
        ("GetFeed", "get_feed"),
        ("ListHTTPRoutes", "list_http_routes"),
        ("Echo", "echo"),
        ("V2Thing", "v2_thing"),
    ],
)
def test_rpc_names_become_snake_case_methods(name, snake):
    assert snake_case(name) == snake


def sample_file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(name="shop/v1/orders.proto", package="shop.v1")
    outer = file.message_type.add(name="Order")
    outer.nested_type.add(name="Line")
    file.message_type.add(name="GetOrderRequest")
    service = file.service.add(name="Orders")
    get = service.method.add(
        name="GetOrder", input_type=".shop.v1.GetOrderRequest", output_type=".shop.v1.Order"
    )
    get.options.idempotency_level = descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS
    service.method.add(
        name="AddLine", input_type=".shop.v1.Order.Line", output_type=".shop.v1.Order"
    )
    service.method.add(
        name="Watch",
        input_type=".shop.v1.GetOrderRequest",
        output_type=".shop.v1.Order",
        server_streaming=True,
    )
    return file


def test_each_unary_rpc_gets_a_typed_method_and_its_idempotency():
    source = render_client_module(sample_file(), [sample_file()])
    assert source is not None
    compile(source, "orders_client.py", "exec")  # valid Python
    assert "class OrdersClient(Client[Any]):" in source
    assert "from shop.v1 import orders_pb2 as _orders_pb2" in source
    assert (
        "GET_ORDER: Method[_orders_pb2.GetOrderRequest, _orders_pb2.Order] = "
        'Method("GetOrder", idempotent=True)' in source
    )
    assert 'Method("AddLine", idempotent=False)' in source
    assert "request: _orders_pb2.Order.Line," in source  # a nested message
    assert 'IDEMPOTENT = frozenset({"GetOrder"})' in source
    assert "async def get_order(" in source and "async def add_line(" in source
    assert "watch" not in source.lower()  # streaming RPCs stay on the stub


def test_a_proto_without_services_gets_no_client_module():
    file = descriptor_pb2.FileDescriptorProto(name="shop/v1/events.proto", package="shop.v1")
    file.message_type.add(name="OrderPlaced")
    assert render_client_module(file, [file]) is None


def test_the_client_module_lies_beside_the_messages():
    assert str(client_module_path("shop/v1/orders.proto")) == "shop/v1/orders_client.py"


def test_generated_learnfeed_clients_carry_the_protos_idempotency():
    assert FeedClient.GET_FEED.idempotent and FeedClient.REQUEST_REFRESH.idempotent
    assert not FeedClient.PUT_FEED.idempotent
    assert {"GetItems", "GetEducators", "ListItems", "ListRecent"} == CatalogClient.IDEMPOTENT
    assert {"GetProfile", "ListFollows"} == IdentityClient.IDEMPOTENT
    assert not IdentityClient.SIGN_UP.idempotent


@pytest.mark.parametrize("name", ["Close", "Call", "Invoke", "HasEndpoints", "Service"])
def test_an_rpc_that_would_shadow_the_clients_own_names_is_refused(name):
    file = sample_file()
    file.service[0].method.add(
        name=name, input_type=".shop.v1.GetOrderRequest", output_type=".shop.v1.Order"
    )
    with pytest.raises(ValueError, match=f"rpc Orders.{name} would shadow"):
        render_client_module(file, [file])


def test_the_reserved_names_are_every_public_name_of_the_client():
    public = {name for name in dir(Client) if not name.startswith("_")}
    public |= {"balancer", "service"}  # instance attributes
    public |= {"stub_factory", "SERVICE"}  # what every generated class declares
    assert public == RESERVED_METHODS | RESERVED_CONSTANTS
