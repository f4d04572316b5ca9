"""Typed client modules generated from ``.proto`` descriptors. Pure: text in, text out.

For each ``.proto`` that declares services, ``x.proto`` gets ``x_client.py`` beside
its ``x_pb2.py``: one ``Client`` subclass per service with one ``async`` method per
RPC, named in snake_case, typed with the request and response messages::

    feed = service.client("feed", FeedClient)
    page = await feed.get_feed(feed_pb2.GetFeedRequest(user_id=user))   # -> FeedPage

A generated stub's methods are instance attributes made per channel, so they cannot
be named, typed or passed around before a channel exists; these methods can. Each
RPC's ``option idempotency_level`` (``NO_SIDE_EFFECTS`` or ``IDEMPOTENT``) is read
here and travels with the method, so the client (and its retries) know it without
the caller saying so.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import PurePosixPath

from google.protobuf import descriptor_pb2

_IDEMPOTENT_LEVELS = (
    descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS,
    descriptor_pb2.MethodOptions.IDEMPOTENT,
)
_SERVICE_FIELD = 6  # FileDescriptorProto.service
_METHOD_FIELD = 2  # ServiceDescriptorProto.method
CLIENT_SUFFIX = "_client.py"
# What a generated class inherits from ``Client`` or declares itself: an RPC whose
# method or constant would take one of these names is refused, not silently shadowing.
RESERVED_METHODS = frozenset(
    {
        "apply",
        "balancer",
        "breaker",
        "call",
        "close",
        "has_endpoints",
        "invoke",
        "on_close",
        "policy",
        "service",
        "stub_factory",
    }
)
RESERVED_CONSTANTS = frozenset({"IDEMPOTENT", "SERVICE"})


def snake_case(name: str) -> str:
    """``GetFeed`` -> ``get_feed``, ``ListHTTPRoutes`` -> ``list_http_routes``."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def constant_case(name: str) -> str:
    """``GetFeed`` -> ``GET_FEED``."""
    return snake_case(name).upper()


def module_of(proto_path: str, suffix: str) -> str:
    """``learnfeed/v1/feed.proto`` + ``_pb2`` -> ``learnfeed.v1.feed_pb2``."""
    path = PurePosixPath(proto_path)
    return ".".join([*path.parent.parts, path.stem + suffix])


@dataclass(frozen=True, slots=True)
class _Message:
    module: str  # the ``_pb2`` module that defines it
    python_name: str  # Outer.Inner for a nested message


def _index_messages(files: list[descriptor_pb2.FileDescriptorProto]) -> dict[str, _Message]:
    """Fully qualified message name (``.pkg.Msg``) -> where its Python class lives."""
    found: dict[str, _Message] = {}

    def walk(
        messages: list[descriptor_pb2.DescriptorProto], prefix: str, outer: str, module: str
    ) -> None:
        for message in messages:
            python_name = f"{outer}.{message.name}" if outer else message.name
            full = f"{prefix}.{message.name}"
            found[full] = _Message(module, python_name)
            walk(list(message.nested_type), full, python_name, module)

    for file in files:
        prefix = f".{file.package}" if file.package else ""
        walk(list(file.message_type), prefix, "", module_of(file.name, "_pb2"))
    return found


def _alias(module: str) -> str:
    return "_" + module.rpartition(".")[2]


def _comments(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    out = {}
    for location in file.source_code_info.location:
        text = location.leading_comments.strip()
        if text:
            out[tuple(location.path)] = " ".join(line.strip() for line in text.splitlines())
    return out


def _docstring(text: str, indent: str) -> str:
    words = text.replace("\\", "/").replace('"', "'").split()
    lines = textwrap.wrap(" ".join(words), width=88 - len(indent)) or [""]
    if len(lines) == 1:
        return f'{indent}"""{lines[0]}"""\n'
    body = "".join(f"{indent}{line}\n" for line in lines[1:])
    return f'{indent}"""{lines[0]}\n{body}{indent}"""\n'


def _method_source(
    method: descriptor_pb2.MethodDescriptorProto, request: str, response: str, doc: str
) -> tuple[str, str]:
    """The ``Method`` constant and the ``async def`` of one unary RPC."""
    idempotent = method.options.idempotency_level in _IDEMPOTENT_LEVELS
    constant = constant_case(method.name)
    declaration = (
        f"    {constant}: Method[{request}, {response}] = "
        f'Method("{method.name}", idempotent={idempotent})\n'
    )
    note = "Idempotent: retried on another instance when one is unavailable."
    body = (
        f"\n    async def {snake_case(method.name)}(\n"
        "        self,\n"
        f"        request: {request},\n"
        "        *,\n"
        "        timeout: float | None = None,\n"
        "        metadata: Metadata = (),\n"
        f"        fallback: Fallback[{response}] | None = None,\n"
        f"    ) -> {response}:\n"
        + _docstring(f"{doc} {note if idempotent else ''}", "        ")
        + f"        return await self.invoke(self.{constant}, request, "
        "timeout=timeout, metadata=metadata, fallback=fallback)\n"
    )
    return declaration, body


def _refuse_reserved(proto: str, service: str, method: str) -> None:
    if snake_case(method) in RESERVED_METHODS or constant_case(method) in RESERVED_CONSTANTS:
        raise ValueError(
            f"{proto}: rpc {service}.{method} would shadow the client's own "
            f"{snake_case(method)!r} or {constant_case(method)!r}: rename the rpc"
        )


def render_client_module(
    file: descriptor_pb2.FileDescriptorProto,
    every_file: list[descriptor_pb2.FileDescriptorProto],
) -> str | None:
    """The source of ``file``'s client module, or None when it declares no service."""
    if not file.service:
        return None
    messages = _index_messages(every_file)
    comments = _comments(file)
    grpc_module = module_of(file.name, "_pb2_grpc")
    imports = {grpc_module}
    classes: list[str] = []
    for s_index, service in enumerate(file.service):
        full_name = f"{file.package}.{service.name}" if file.package else service.name
        about = comments.get((_SERVICE_FIELD, s_index), "")
        declarations: list[str] = []
        bodies: list[str] = []
        idempotent: list[str] = []
        for m_index, method in enumerate(service.method):
            _refuse_reserved(file.name, service.name, method.name)
            if method.client_streaming or method.server_streaming:
                continue  # unary calls only: streams go through the stub directly
            request, response = messages[method.input_type], messages[method.output_type]
            for message in (request, response):
                imports.add(message.module)
            doc = comments.get((_SERVICE_FIELD, s_index, _METHOD_FIELD, m_index), "")
            declaration, body = _method_source(
                method,
                f"{_alias(request.module)}.{request.python_name}",
                f"{_alias(response.module)}.{response.python_name}",
                doc,
            )
            declarations.append(declaration)
            bodies.append(body)
            if method.options.idempotency_level in _IDEMPOTENT_LEVELS:
                idempotent.append(f'"{method.name}"')
        classes.append(
            f"class {service.name}Client(Client[Any]):\n"
            + _docstring(
                f"Calls ``{full_name}`` through cellwork's client (balanced, with deadlines "
                f"and retries of idempotent methods). {about}",
                "    ",
            )
            + f'\n    SERVICE = "{full_name}"\n'
            + "".join(declarations)
            + (f"    IDEMPOTENT = frozenset({{{', '.join(idempotent)}}})\n" if idempotent else "")
            + "\n    @staticmethod\n"
            + "    def stub_factory(channel: aio.Channel) -> Any:\n"
            + f"        return {_alias(grpc_module)}.{service.name}Stub(channel)\n"
            + "".join(bodies)
        )
    import_lines = "".join(
        f"from {module.rpartition('.')[0]} import {module.rpartition('.')[2]} as {_alias(module)}\n"
        for module in sorted(imports)
    )
    return (
        f'"""Typed cellwork clients of {file.name}.\n\n'
        "@generated by cellwork.rpc.protogen from the .proto: do not edit, run `make proto`.\n"
        '"""\n\n'
        "from __future__ import annotations\n\n"
        "from typing import Any\n\n"
        "from grpc import aio\n\n"
        "from cellwork.rpc import Client, Fallback, Metadata, Method\n"
        f"{import_lines}\n\n" + "\n\n".join(classes)
    )


def client_module_path(proto_path: str) -> PurePosixPath:
    """Where the client module of ``proto_path`` goes, relative to the output root."""
    path = PurePosixPath(proto_path)
    return path.parent / (path.stem + CLIENT_SUFFIX)
